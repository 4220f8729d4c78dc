"""The test harness inside the sandbox: runs a solution, then its assert tests, so that the
verdict cannot be forged or skipped by the solution. Standard library only.

`_sandbox_boot.py` executes this file into a private namespace (never a module in
`sys.modules`) when the sandbox server starts, i.e. before any solution runs, and calls
`make_harness()` once. What it guards against, and how:

- Overridden builtins (`builtins.exec = lambda *a: None` skips the tests): every builtin the
  harness uses is captured here, before any solution exists; the tests run with a private
  copy of the pristine builtins; and before each call the test code makes, the harness checks
  that the builtins and the modules tests lean on (math, operator, re, ...) still hold the
  objects they held at start, else the verdict is `sandbox_violation`.
- Rigged comparisons (an object whose `__eq__` always answers True, or an int subclass doing
  so): the test code is rewritten through its AST so that every value reaching a comparison
  (except `is`), an arithmetic operator, a truth test (assert, if, while, and/or/not) or an
  argument of a trusted builtin must be plain data: exactly None, bool, int, float, complex,
  str, bytes, range, a pristine builtin type, or a list/tuple/set/frozenset/dict of those,
  recursively. Comparisons of plain data run in C; the solution cannot take part in them. A
  solution's callable handed to a trusted builtin (`map(f, xs)`, `sorted(key=f)`) is wrapped
  so that what it returns is checked the same way. A non-plain value is a wrong answer.
  Limit, on purpose: tests that compare objects (Counter, Fraction, user classes) fail.
- Forged verdicts (`{"status": "ok"}` written to every inherited fd, then `os._exit(0)`): a
  verdict line carries a per-run nonce that only the harness holds; the supervisor ignores
  lines without it and treats any other writing to the channel as a violation. The nonce
  lives in closures the solution cannot reach because the audit hook (`_sandbox_audit.py`)
  refuses frame access, gc object walks, ctypes and tracing, and `sys._getframe` is removed.
"""
import ast
import builtins
import sys
import types

# Modules whose callables tests use and the harness trusts; their dicts are checked for
# tampering before every call of the test code.
TRUSTED_MODULES = ("builtins", "math", "cmath", "operator", "itertools", "functools", "heapq", "bisect",
                   "re", "string")
_PREFIX = "__pacore_"


class _Rewriter(ast.NodeTransformer):
    """Routes the values of test code through the plain-data checks (see module doc)."""

    def _wrap(self, fn, node):
        return ast.copy_location(ast.Call(ast.Name(_PREFIX + fn, ast.Load()), [node], []), node)

    def visit_Call(self, node):
        self.generic_visit(node)
        node.func = self._wrap("call", node.func)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            return node
        node.left = self._wrap("plain", node.left)
        node.comparators = [self._wrap("plain", c) for c in node.comparators]
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        node.left, node.right = self._wrap("plain", node.left), self._wrap("plain", node.right)
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        node.operand = self._wrap("plain", node.operand)
        return node

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        node.values = [self._wrap("plain", v) for v in node.values]
        return node

    def _test(self, node):
        self.generic_visit(node)
        node.test = self._wrap("plain", node.test)
        return node

    visit_Assert = visit_If = visit_While = visit_IfExp = _test

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.ifs = [self._wrap("plain", c) for c in node.ifs]
        return node

    def visit_Import(self, node):
        out = []
        for alias in node.names:
            if "." in alias.name:
                return node
            call = ast.Call(ast.Name(_PREFIX + "import", ast.Load()), [ast.Constant(alias.name)], [])
            out.append(ast.copy_location(ast.Assign([ast.Name(alias.asname or alias.name, ast.Store())], call), node))
        return out

    def visit_ImportFrom(self, node):
        if node.level or node.module is None or "." in node.module or any(a.name == "*" for a in node.names):
            return node
        out = []
        for alias in node.names:
            call = ast.Call(ast.Name(_PREFIX + "from", ast.Load()), [ast.Constant(node.module), ast.Constant(alias.name)], [])
            out.append(ast.copy_location(ast.Assign([ast.Name(alias.asname or alias.name, ast.Store())], call), node))
        return out


def rewrite(test_code, filename="test.py"):
    """The code object of `test_code` with the plain-data checks; SyntaxError as compile's."""
    tree = _Rewriter().visit(ast.parse(test_code, filename, "exec"))
    return compile(ast.fix_missing_locations(tree), filename, "exec")


class NotPlain(AssertionError):
    """A value the solution produced reached a check without being plain data."""


class Tampered(Exception):
    """The solution replaced a builtin or a trusted module's attribute."""


def make_harness():
    """Captures everything the harness needs while the interpreter is pristine; returns
    `run(source, test_code, report, audit_on)`, see `run`'s docstring."""
    import importlib

    modules = {name: importlib.import_module(name) for name in TRUSTED_MODULES}
    all_modules = sys.modules
    snapshot = [(name, m, m.__dict__, dict(m.__dict__)) for name, m in modules.items()]
    builtins_copy = dict(builtins.__dict__)
    _type, _id, _len, _str, _repr, _callable = type, id, len, str, repr, callable
    _exec, _compile, _print = exec, compile, print
    FunctionType, GeneratorType = types.FunctionType, types.GeneratorType
    type_name = type.__dict__["__name__"].__get__
    code_of = FunctionType.__dict__["__code__"].__get__
    gen_code = GeneratorType.__dict__["gi_code"].__get__
    self_of = types.BuiltinFunctionType.__dict__["__self__"].__get__
    trusted = {}
    for _, _, _, saved in snapshot:
        for value in saved.values():
            if _callable(value):
                trusted[_id(value)] = value
    builtin_types = {_id(t): t for t in builtins_copy.values() if _type(t) is type}
    # Sets of ids: membership compares ints, never a (possibly rigged) type's __eq__.
    atoms = {_id(t) for t in (type(None), bool, int, float, complex, str, bytes, range, type(...),
                              modules["re"].Match, modules["re"].Pattern)}
    list_like = {_id(t) for t in (list, tuple, set, frozenset)}
    iterators = {_id(t): t for t in (
        type(iter([])), type(iter(())), type(iter("")), type(iter(b"")), type(iter(range(0))), type(iter(set())),
        type(iter({})), type({}.keys()), type({}.values()), type({}.items()), type(iter({}.values())),
        type(iter({}.items())), type(reversed([])), zip, map, filter, enumerate, reversed)}
    test_codes = {}
    missing = object()

    def tampered():
        for name, module, live, saved in snapshot:
            if all_modules.get(name) is not module:
                return f"sys.modules[{name!r}] was replaced"
            for key, value in saved.items():
                if live.get(key, missing) is not value:
                    return f"{name}.{key} was replaced"
        return None

    def plain(value):
        """`value` itself if it is plain data (recursively), else NotPlain."""
        stack, seen = [value], set()
        while stack:
            x = stack.pop()
            t = _type(x)
            if _id(t) in atoms:
                continue
            if _id(t) in list_like:
                if _id(x) not in seen:
                    seen.add(_id(x))
                    stack.extend(x)
                continue
            if t is dict:
                if _id(x) not in seen:
                    seen.add(_id(x))
                    stack.extend(x.keys())
                    stack.extend(x.values())
                continue
            if t is type and builtin_types.get(_id(x)) is x:
                continue
            raise NotPlain(f"the solution produced a value of type {type_name(t)!r} where plain data "
                           f"(numbers, strings, lists, tuples, dicts, sets) is required")
        return value

    def guarded(fn):
        """A solution callable handed to a trusted builtin: its results must be plain."""
        def call(*args, **kwargs):
            return plain(fn(*args, **kwargs))
        return call

    def argument(x):
        t = _type(x)
        if t is FunctionType and _id(code_of(x)) in test_codes:
            return x
        if t is GeneratorType and _id(gen_code(x)) in test_codes:
            return x
        if trusted.get(_id(x)) is x or iterators.get(_id(t)) is t:
            return x
        if t is type and builtin_types.get(_id(x)) is x:
            return x
        if _callable(x) and t is not type:
            try:
                plain(x)
            except NotPlain:
                return guarded(x)
        return plain(x)

    def is_trusted(fn):
        if trusted.get(_id(fn)) is fn:
            return True
        t = _type(fn)
        if t is types.BuiltinMethodType:  # a method of a plain object: [1, 2].count
            owner = self_of(fn)
            if _type(owner) is types.ModuleType:
                return False  # module functions are trusted by identity only (above)
            try:
                plain(owner)
            except NotPlain:
                return False
            return True
        return False

    def call(fn):
        """What the rewritten test calls instead of `fn` (see module doc)."""
        why = tampered()
        if why is not None:
            raise Tampered(why)
        t = _type(fn)
        if t is FunctionType and _id(code_of(fn)) in test_codes:
            return fn
        if is_trusted(fn):
            def checked(*args, **kwargs):
                return fn(*[argument(a) for a in args], **{k: argument(v) for k, v in kwargs.items()})
            return checked
        return fn  # the solution's own callable: what it returns is checked where it is used

    def import_(name):
        if name in modules:
            return modules[name]
        return builtins_copy["__import__"](name, None, None, (), 0)

    saved_dicts = {name: saved for name, _, _, saved in snapshot}

    def from_(module, name):
        if module in modules:
            return saved_dicts[module][name]
        return getattr(builtins_copy["__import__"](module, None, None, (name,), 0), name)

    def collect_codes(code):
        test_codes[_id(code)] = code
        for const in code.co_consts:
            if _type(const) is types.CodeType:
                collect_codes(const)

    def run(source, test_code, report, exit_):
        """Runs `source` as `__main__`, then `test_code` (if any) rewritten, and reports one
        verdict through `report(status, detail)` before `exit_(code)`:
        ok | wrong_answer | runtime_error | memory | output_limit | sandbox_violation.
        Never returns."""
        import errno
        import os

        stdout_flush, stderr_flush, write = sys.stdout.flush, sys.stderr.flush, os.write
        tb_next = types.TracebackType.__dict__["tb_next"].__get__
        tb_lineno = types.TracebackType.__dict__["tb_lineno"].__get__
        exc_tb = BaseException.__dict__["__traceback__"].__get__

        def fail(e):
            """Reports the program's exception. The traceback is printed from line numbers
            only: reading its frames would be a frame access, which the audit hook refuses."""
            name = type_name(_type(e))
            if _type(e) is MemoryError:
                report("memory", "MemoryError")
            elif isinstance(e, OSError) and _type(e.errno) is int and e.errno == errno.EFBIG:
                report("output_limit", "file size limit reached")
            else:
                try:
                    message = _str(e)
                    detail = f"{name}: {message}" if message else name
                except BaseException:
                    detail = name
                lines, tb = [], exc_tb(e)
                while tb is not None and _len(lines) < 100:
                    lines.append(tb_lineno(tb))
                    tb = tb_next(tb)
                flush()
                try:
                    write(2, f"Traceback (line numbers): {lines}\n{detail}\n".encode("utf-8", "replace"))
                except OSError:
                    pass
                report("runtime_error", detail[:300])
            flush()
            exit_(1)

        def flush():
            for f in (stdout_flush, stderr_flush):
                try:
                    f()
                except BaseException:
                    pass

        try:
            test_program = None if test_code is None else rewrite(test_code)
        except SyntaxError as e:
            report("setup_error", f"the test does not compile: {e}")
            exit_(0)
        if test_program is not None:
            collect_codes(test_program)
        main = types.ModuleType("__main__")
        namespace = main.__dict__
        namespace["__builtins__"] = builtins
        all_modules["__main__"] = main  # `import __main__` is the solution, never the harness
        try:
            code = _compile(source, "solution.py", "exec")
            _exec(code, namespace)
        except SystemExit as e:
            if e.code not in (None, 0):
                report("runtime_error", f"exit status {e.code}"[:300])
                flush()
                exit_(1)
            if test_program is not None:
                report("runtime_error", "the solution exited before the test ran")
                exit_(1)
        except BaseException as e:
            fail(e)
        if test_program is not None:
            test_ns = {k: v for k, v in namespace.items() if not k.startswith(_PREFIX)}
            for name, module in modules.items():  # a test that uses the solution's `import math`
                value = test_ns.get(name, missing)  # gets the real module, never a stand-in
                if value is not missing and value is not module:
                    try:
                        plain(value)
                    except NotPlain:
                        test_ns[name] = module
            test_ns.update({"__builtins__": dict(builtins_copy), "__name__": "__main__",
                            _PREFIX + "call": call, _PREFIX + "plain": plain,
                            _PREFIX + "import": import_, _PREFIX + "from": from_})
            try:
                _exec(test_program, test_ns)
            except Tampered as e:
                report("sandbox_violation", _str(e)[:300])
                exit_(1)
            except NotPlain as e:
                report("wrong_answer", _str(e)[:300])
                exit_(1)
            except AssertionError as e:
                try:
                    detail = _str(e) if _type(e) is AssertionError else type_name(_type(e))
                except BaseException:
                    detail = "AssertionError"
                report("wrong_answer", f"assertion failed: {detail}"[:300])
                exit_(1)
            except SystemExit as e:
                report("runtime_error", "the test exited")
                exit_(1)
            except BaseException as e:
                fail(e)
            why = tampered()
            if why is not None:
                report("sandbox_violation", why[:300])
                exit_(1)
        try:
            stdout_flush()
        except BaseException as e:
            fail(e)
        report("ok", "")
        exit_(0)

    return run
