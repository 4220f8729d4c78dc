"""Grading the messages of an evaluation: math by math-verify, code in the sandbox.

    with EvalGraders(workers=2, timeout_s=10.0) as graders:
        verdicts = graders.grade([(problem, message), ...])   # MathVerdict | CodeVerdict each

A message is always a compacted text (C(w), the text after the last `</think>`). A math
problem is graded by `rewards.math.MathGrader` (lenient mode) against its `answer`. A code
problem is graded by `rewards.code.CodeGrader`, unchanged: the last ```python block of the
message runs on every test of the problem's `tests` in its own sandboxed process, with the
harness's integrity checks; the message is right (score 1) only when every test passes (the
paper's binary reward; `pass_rate` is kept too). Each grader starts on first use, so a math
benchmark never starts sandboxes and a code benchmark never starts math-verify workers.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from megatron_pacore.eval.benchmarks import is_code
from megatron_pacore.rewards.code import CodeResult
from megatron_pacore.rewards.math import MathVerdict
from megatron_pacore.types import Problem


@dataclass(frozen=True)
class CodeVerdict:
    """The grade of one message of a code problem.

    `score` 1.0 when every test passed, else 0.0; `reason` "correct", "wrong" or "no_code" (no
    complete ```python block); `extracted` the program that ran; `program` its normal form
    (`normalize_program`: what majority vote groups by); `verdicts` one of
    rewards.code.VERDICTS per test; `isolation` the sandbox's isolation level.
    """

    score: float
    reason: str
    extracted: Optional[str]
    program: Optional[str]
    pass_rate: float
    verdicts: tuple[str, ...]
    isolation: Optional[str] = None


Verdict = Union[MathVerdict, CodeVerdict]


class _StripDocstrings(ast.NodeTransformer):
    """Drops the docstring of the module and of every function and class."""

    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def normalize_program(code: str) -> str:
    """A canonical spelling of a program, for counting votes: parsed and unparsed by `ast`
    (comments, blank lines, layout and quote style vanish) with docstrings removed (a model
    that copies the prompt's docstring and one that does not wrote the same function). Code
    that does not parse falls back to its lines with trailing whitespace and blank lines
    dropped."""
    try:
        tree = _StripDocstrings().visit(ast.parse(code))
        return ast.unparse(ast.fix_missing_locations(tree))
    except (SyntaxError, ValueError, RecursionError):
        return "\n".join(line.rstrip() for line in code.splitlines() if line.strip())


def code_verdict(result: CodeResult) -> CodeVerdict:
    """The eval's view of the grader's result of one message."""
    if result.code is None:
        return CodeVerdict(0.0, "no_code", None, None, 0.0, tuple(result.verdicts), result.isolation)
    passed = result.pass_rate == 1.0
    return CodeVerdict(1.0 if passed else 0.0, "correct" if passed else "wrong", result.code,
                       normalize_program(result.code), result.pass_rate, tuple(result.verdicts), result.isolation)


class EvalGraders:
    """The math and code graders of one evaluation, each started on first use.

    Args:
        workers: math-verify processes and concurrent sandboxes (default: the CPU count).
        timeout_s: seconds per math response.
        require_isolation: code: refuse to run programs without bubblewrap's namespaces
            (rewards.code.CodeGrader); off, a weaker sandbox is used and recorded.
    """

    def __init__(self, workers: Optional[int] = None, timeout_s: float = 10.0, require_isolation: bool = True) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.require_isolation = require_isolation
        self._math: Any = None
        self._code: Any = None

    def _math_grader(self):
        if self._math is None:
            from megatron_pacore.rewards.math import MathGrader

            self._math = MathGrader(workers=self.workers, timeout_s=self.timeout_s)
        return self._math

    def _code_grader(self):
        if self._code is None:
            from megatron_pacore.rewards.code import CodeGrader

            self._code = CodeGrader(workers=self.workers, require_isolation=self.require_isolation)
        return self._code

    def grade(self, items: Sequence[tuple[Problem, str]]) -> list[Verdict]:
        """One verdict per (problem, compacted message), in order; math and code in one call
        each."""
        out: list[Optional[Verdict]] = [None] * len(items)
        math_idx = [i for i, (p, _) in enumerate(items) if not is_code(p)]
        code_idx = [i for i, (p, _) in enumerate(items) if is_code(p)]
        if math_idx:
            verdicts = self._math_grader().grade([items[i][1] for i in math_idx],
                                                 [items[i][0].answer or "" for i in math_idx])
            for i, v in zip(math_idx, verdicts):
                out[i] = v
        if code_idx:
            results = self._code_grader().grade_many([(items[i][1], items[i][0].metadata["tests"]) for i in code_idx])
            for i, r in zip(code_idx, results):
                out[i] = code_verdict(r)
        assert all(v is not None for v in out)
        return out  # type: ignore[return-value]

    def summary(self) -> dict[str, str]:
        """What graded this evaluation, for the report: the math mode, the sandbox's isolation."""
        out = {}
        if self._math is not None:
            out["math"] = self._math.mode
        if self._code is not None:
            out["code"] = self._code.isolation
        return out

    def close(self) -> None:
        for grader in (self._math, self._code):
            if grader is not None:
                grader.close()

    def __enter__(self) -> "EvalGraders":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
