"""The package's import boundaries, read from the source with `ast` (nothing is imported).

Every `import` / `from ... import` statement of every module under megatron_pacore/ counts,
those inside functions (lazy imports) included, and so do `importlib.import_module("...")` /
`__import__("...")` calls with a literal name. A module's *part* is the package or module
directly under megatron_pacore/ that holds it (`eval`, `training`, `cli`, `config`, ...).

  - no import cycle between parts;
  - `vllm` is imported only in inference/;
  - `megatron.core` (also `from megatron import core`, or `megatron` itself) only in training/
    and checkpoint/;
  - algorithms/ imports neither vllm nor megatron (its functions are pure tensor math).

The walker itself is checked on small sources first, so that a walker that finds nothing
cannot pass the boundary checks.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "megatron_pacore"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
MEGATRON_ALLOWED = ("training", "checkpoint")
VLLM_ALLOWED = ("inference",)


@dataclass(frozen=True)
class Import:
    """One imported module name, where it was written, and the part of the importer."""

    module: str
    """Absolute dotted name, e.g. `megatron.core.models.gpt` or `megatron_pacore.eval.report`."""
    file: str
    """Path relative to the package's parent, e.g. `megatron_pacore/eval/command.py`."""
    line: int
    part: str
    """The importer's part, e.g. `eval`."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.module}"


def module_name(path: Path, root: Path) -> str:
    """megatron_pacore/eval/command.py -> megatron_pacore.eval.command (__init__ -> package)."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str, submodules: set[str]) -> str | None:
    """The part of `megatron_pacore.<part>...`; None for the root package or a name outside."""
    pieces = module.split(".")
    if pieces[0] != PACKAGE or len(pieces) < 2 or pieces[1] not in submodules:
        return None
    return pieces[1]


def imports_of(source: str, module: str, is_package: bool, file: str, part: str) -> list[Import]:
    """Every module `source` imports, anywhere in it, as absolute dotted names.

    `from X import a, b` yields X and X.a, X.b (a may be a submodule: `from megatron import
    core`, `from megatron_pacore import config`); relative imports are resolved against
    `module` (a package's `from . import x` is relative to the package itself).
    """
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=file)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not is_package:
                    anchor = anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            fn = node.func
            callee = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if callee in ("import_module", "__import__"):
                names = [node.args[0].value]
        found += [Import(n, file, node.lineno, part) for n in names if n]
    return found


def walk(root: Path) -> tuple[list[Import], set[str]]:
    """All imports of the package under `root`, and the names of its parts."""
    submodules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    submodules |= {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        part = part_of(module, submodules) or "__init__"
        file = str(path.relative_to(root.parent))
        found += imports_of(path.read_text(), module, path.name == "__init__.py", file, part)
    return found, submodules


def part_edges(found: list[Import], submodules: set[str]) -> dict[tuple[str, str], list[Import]]:
    """(importer part, imported part) -> the imports that make the edge; self-edges dropped."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in found:
        target = part_of(imp.module, submodules)
        if target is not None and target != imp.part and imp.part != "__init__":
            edges.setdefault((imp.part, target), []).append(imp)
    return edges


def cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """Strongly connected components of more than one part (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def is_megatron(module: str) -> bool:
    return module.split(".")[0] == "megatron"


def is_vllm(module: str) -> bool:
    return module.split(".")[0] == "vllm"


def _walk_tree(tmp_path: Path, files: dict[str, str]) -> tuple[list[Import], set[str]]:
    root = tmp_path / PACKAGE
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return walk(root)


# --- the walker ---------------------------------------------------------------------------

def test_walker_sees_lazy_from_and_relative_imports(tmp_path):
    found, parts = _walk_tree(tmp_path, {
        "a/__init__.py": "from . import inner\n",
        "a/inner.py": "def f():\n    from megatron import core\n    from ..b import thing\n",
        "b.py": "import importlib\ndef g():\n    return importlib.import_module('vllm.config')\n",
        "c/__init__.py": "",
        "c/x.py": "from .y import z\nimport megatron_pacore.a.inner as m\n",
    })
    assert parts == {"a", "b", "c"}
    got = {(i.file, i.module, i.part) for i in found}
    assert ("megatron_pacore/a/__init__.py", "megatron_pacore.a.inner", "a") in got
    assert ("megatron_pacore/a/inner.py", "megatron.core", "a") in got  # lazy, `from megatron import core`
    assert ("megatron_pacore/a/inner.py", "megatron_pacore.b", "a") in got  # `from ..b import`
    assert ("megatron_pacore/b.py", "vllm.config", "b") in got  # import_module("...")
    assert ("megatron_pacore/c/x.py", "megatron_pacore.c.y", "c") in got
    edges = part_edges(found, parts)
    assert set(edges) == {("a", "b"), ("c", "a")}
    assert cycles(edges) == []


def test_walker_finds_a_cycle_through_three_parts(tmp_path):
    found, parts = _walk_tree(tmp_path, {
        "a.py": "import megatron_pacore.b\n",
        "b.py": "def f():\n    from megatron_pacore.c import x\n",
        "c/__init__.py": "def g():\n    from megatron_pacore import a\n",
        "d.py": "from megatron_pacore import a\n",
    })
    assert cycles(part_edges(found, parts)) == [["a", "b", "c"]]


# --- the package --------------------------------------------------------------------------

class Walked(tuple):
    """(imports, parts) of the package; a short repr for failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self[0])} imports in parts {sorted(self[1])}>"


@pytest.fixture(scope="module")
def package():
    found, parts = walk(ROOT)
    # The walk is not vacuous: it sees the package's own known imports.
    assert {"inference", "training", "checkpoint", "algorithms", "eval", "cli"} <= parts
    assert any(is_vllm(i.module) and i.part == "inference" for i in found)
    assert any(is_megatron(i.module) and i.part == "training" for i in found)
    return Walked((found, parts))


def test_no_import_cycle_between_parts(package):
    found, parts = package
    edges = part_edges(found, parts)
    bad = []
    for comp in cycles(edges):
        members = set(comp)
        why = []  # one line per import statement (`from X import a, b` lists X, X.a, X.b)
        for (a, b), imps in sorted(edges.items()):
            if a in members and b in members:
                seen = {}
                for i in imps:
                    seen.setdefault((i.file, i.line), i)
                why += [str(i) for i in seen.values()]
        bad.append(f"cycle {' <-> '.join(comp)}:\n    " + "\n    ".join(why))
    assert not bad, "\n".join(bad)


def test_only_inference_imports_vllm(package):
    found, _ = package
    bad = [str(i) for i in found if is_vllm(i.module) and i.part not in VLLM_ALLOWED]
    assert not bad, "vllm imported outside inference/:\n" + "\n".join(bad)


def test_only_training_and_checkpoint_import_megatron_core(package):
    found, _ = package
    bad = [str(i) for i in found if is_megatron(i.module) and i.part not in MEGATRON_ALLOWED]
    assert not bad, "megatron imported outside training/ and checkpoint/:\n" + "\n".join(bad)


def test_algorithms_imports_neither_vllm_nor_megatron(package):
    found, _ = package
    bad = [str(i) for i in found if i.part == "algorithms" and (is_vllm(i.module) or is_megatron(i.module))]
    assert not bad, "\n".join(bad)
