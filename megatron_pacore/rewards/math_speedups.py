"""Three hot spots of math-verify made cheap, with the same results: installed in grading processes.

Profiled on benchmarks/grading_throughput.py's items (cProfile, strict mode), three costs
stood out that buy nothing:

1. **Numbers built by parsing Python source.** latex2sympy2 and math-verify turn every number
   token into `sympy.Number("123")`, and sympy reads a string by running its Python-expression
   parser (`parse_expr`, which executes `from sympy import *` on every call): ~0.3 ms per
   number, about 4 numbers per item, a fifth of all grading time. `_number` builds the same
   object directly (`Integer(int(s))`, `Float(s)`, identical value, type and precision; tests
   compare them) for plain digit strings, and hands every other string to `sympy.Number`
   (which also keeps its errors: `"0123"` is a SympifyError there, and here).
2. **`simplify(a - b)` on answers that are plainly different.** After its cheaper checks fail,
   math-verify's `sympy_symbolic_eq` simplifies the difference to see if it is zero; on a
   wrong radical or power that is 10-25 ms, most of a wrong item's cost. `_symbolic_eq` first
   evaluates `a - b` to 30 digits when both sides are constant expressions (no free symbols,
   no floats, not matrices, sets or relations): a difference above 1e-20 of their magnitude
   cannot simplify to zero, so it answers False at once; otherwise (equal to 30 digits, not
   constant, anything that raises) the original runs unchanged.
3. **Full-context prediction in the LaTeX parser.** latex2sympy2's ANTLR parser runs in LL
   mode, whose context-sensitive prediction is most of the parse. ANTLR's two-stage strategy
   parses in SLL mode first, which (ANTLR's PredictionMode docs) either returns the same parse
   tree as LL or reports a syntax error; on any error the string is parsed again exactly as
   the library does (LL), so the tree, or the error, is the library's own. ~30% of a parse.

`install()` replaces these names in the libraries' modules, once per process, only where they
are what this module expects (else it leaves them, and grading is only slower). The grading
pool's workers install them at start; `grade_one` does too, so in-process grading matches.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Callable

_PLAIN_INTEGER = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_PLAIN_DECIMAL = re.compile(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*", re.ASCII)
# Relative size of a difference that no rounding of 30-digit evaluations can produce.
_DIFFERENT = 1e-20

_installed = False
_lock = threading.Lock()
# (owner, attribute, the library's own value) of every name install() replaced.
_originals: list[tuple[Any, str, Any]] = []


def make_number(original: Callable[..., Any]) -> Callable[..., Any]:
    """`sympy.Number` that builds plain digit strings directly (see the module doc)."""
    from sympy import Float, Integer

    def number(*obj: Any) -> Any:
        if len(obj) == 1 and isinstance(obj[0], str):
            s = obj[0]
            if _PLAIN_INTEGER.fullmatch(s):
                return Integer(int(s))
            if _PLAIN_DECIMAL.fullmatch(s):
                return Float(s)
        return original(*obj)

    number.__wrapped__ = original  # type: ignore[attr-defined]
    return number


def provably_different(a: Any, b: Any) -> bool:
    """True when `a` and `b` are constant sympy expressions whose 30-digit values differ by
    more than 1e-20 of their magnitude (so `simplify(a - b)` cannot be 0); False when that is
    not shown, including every expression with a symbol or a float and any error."""
    from sympy import Expr, Float

    try:
        if not (isinstance(a, Expr) and isinstance(b, Expr)):
            return False
        if a.free_symbols or b.free_symbols or a.has(Float) or b.has(Float):
            return False
        va, vb, diff = a.evalf(30), b.evalf(30), (a - b).evalf(30)
        if not (va.is_Number and vb.is_Number and diff.is_Number) or not (va.is_finite and vb.is_finite):
            return False  # complex, infinite or unevaluated: leave it to simplify
        scale = max(1, abs(va), abs(vb))
        return bool(abs(diff) > _DIFFERENT * scale)
    except Exception:
        return False


def make_symbolic_eq(original: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """math-verify's `sympy_symbolic_eq` with the numeric shortcut of the module doc."""

    def symbolic_eq(a: Any, b: Any) -> bool:
        if provably_different(a, b):
            return False
        return original(a, b)

    symbolic_eq.__wrapped__ = original  # type: ignore[attr-defined]
    return symbolic_eq


def make_two_stage(original_create: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """latex2sympy2's `create_parser` whose parser's `math()` (the whole parse) runs in SLL
    mode and, on any error, is done again by a parser made the library's way (LL)."""
    from antlr4.atn.PredictionMode import PredictionMode

    def create_parser(self: Any, latex_str: str) -> Any:
        parser = original_create(self, latex_str)
        parser._interp.predictionMode = PredictionMode.SLL
        sll_math = parser.math

        def math() -> Any:
            try:
                return sll_math()
            except Exception:  # a syntax error in SLL: maybe only SLL's; LL decides
                return original_create(self, latex_str).math()

        parser.math = math
        return parser

    create_parser.__wrapped__ = original_create  # type: ignore[attr-defined]
    return create_parser


def install() -> bool:
    """Install both speed-ups in this process (idempotent); False if the libraries are not
    the versions they were written for (nothing is changed then)."""
    global _installed
    if _installed:
        return True
    with _lock:
        if _installed:
            return True
        import sympy
        import latex2sympy2_extended.latex2sympy2 as l2s
        import math_verify.grader as grader
        import math_verify.parser as parser

        if not (l2s.Number is sympy.Number and parser.Number is sympy.Number
                and callable(getattr(l2s._Latex2Sympy, "parse_number", None))
                and callable(getattr(l2s._Latex2Sympy, "create_parser", None))
                and callable(getattr(grader, "sympy_symbolic_eq", None))):
            return False
        number = make_number(sympy.Number)
        original_parse_number = l2s._Latex2Sympy.parse_number

        def parse_number(self: Any, text: str) -> Any:
            """The converter's own clean-up (commas, leading zeros), then `number`."""
            text = text.replace(",", "")
            if text.isdigit():
                text = text.lstrip("0") or "0"
            if _PLAIN_INTEGER.fullmatch(text) or _PLAIN_DECIMAL.fullmatch(text):
                return number(text)
            return original_parse_number(self, text)

        replacements = [
            (l2s, "Number", number),  # convert_number (numbers with thousands commas)
            (parser, "Number", number),  # math-verify's own number extraction
            (l2s._Latex2Sympy, "parse_number", parse_number),
            (l2s._Latex2Sympy, "create_parser", make_two_stage(l2s._Latex2Sympy.create_parser)),
            (grader, "sympy_symbolic_eq", make_symbolic_eq(grader.sympy_symbolic_eq)),
        ]
        for owner, name, value in replacements:
            _originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)
        _installed = True
        return True


def installed() -> bool:
    """Whether install() has run in this process."""
    return _installed


def originals() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, original value) of each replaced name, for tests that compare the
    libraries with and without the speed-ups."""
    return list(_originals)
