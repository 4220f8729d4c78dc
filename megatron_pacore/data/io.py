"""Reading problems and writing results as JSON lines.

Input rows come in two forms:
  - the official release's: {"id": ..., "messages": [{"role": "user", "content": ...}, ...]}
  - the benchmarks':        {"id": ..., "problem": "...", "answer": "...", ...}
Every error names the file and the 1-based line number, or the row's id.

Results are appended one line per finished problem and flushed at once (data/jsonl.py), so a
crash loses at most the problem in flight; `--resume` reads the ids already written and skips
them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from megatron_pacore.data.jsonl import JsonlAppender
from megatron_pacore.pacore.prompts import last_user_index
from megatron_pacore.types import Problem

PathLike = Union[str, os.PathLike]


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; ValueError naming file:line if bad."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def problem_from_row(row: dict[str, Any], where: str) -> Problem:
    """One Problem from a row of either input form. `where` is "file:line" for errors."""
    if "id" not in row:
        raise ValueError(f"{where}: row has no 'id'")
    pid = str(row["id"])
    answer = row.get("answer")
    if answer is None and isinstance(row.get("ground_truth"), dict):
        answer = row["ground_truth"].get("answer")
    metadata = {k: v for k, v in row.items() if k not in ("id", "messages", "problem", "answer")}
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError(f"{where}: row {pid!r}: 'messages' must be a list of {{role, content}} turns")
        try:
            i = last_user_index(messages)
        except ValueError:
            raise ValueError(f"{where}: row {pid!r}: 'messages' has no user turn") from None
        content = messages[i].get("content")
        if not isinstance(content, str):
            raise ValueError(f"{where}: row {pid!r}: the last user turn's content must be a string")
        return Problem(id=pid, messages=messages, problem=content,
                       answer=None if answer is None else str(answer), metadata=metadata)
    if isinstance(row.get("problem"), str):
        text = row["problem"]
        return Problem(id=pid, messages=[{"role": "user", "content": text}], problem=text,
                       answer=None if answer is None else str(answer), metadata=metadata)
    raise ValueError(f"{where}: row {pid!r} has neither 'messages' nor a string 'problem'")


def read_problems(path: PathLike, limit: Optional[int] = None) -> list[Problem]:
    """All problems of a JSONL file (the first `limit` if given). Duplicate ids are an error:
    results are keyed by id, and resume would skip the second one."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        problem = problem_from_row(row, f"{path}:{lineno}")
        if problem.id in seen:
            raise ValueError(f"{path}:{lineno}: duplicate id {problem.id!r} (first on line {seen[problem.id]})")
        seen[problem.id] = lineno
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    return problems


class JsonlWriter:
    """Appends one JSON object per line and flushes each, so nothing written is lost.

    With `resume=True` the existing file is kept and `done_ids` holds the ids it already has
    (a torn last line from a crash is dropped and rewritten: data/jsonl.py); without, an
    existing non-empty file is an error rather than silently overwritten.
    """

    def __init__(self, path: PathLike, resume: bool = False, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key
        if self.path.exists() and self.path.stat().st_size > 0 and not resume:
            raise ValueError(f"output {self.path} exists; pass --resume to continue it or choose another path")
        self._out = JsonlAppender(self.path, lambda row: str(row[key]), what="row of the output being resumed")
        self.done_ids: set[str] = set(self._out.records)

    def write(self, row: dict[str, Any]) -> None:
        self._out.append(row)
        self.done_ids.add(str(row[self.key]))

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl(path: PathLike, rows: Iterable[dict[str, Any]]) -> None:
    with Path(path).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
