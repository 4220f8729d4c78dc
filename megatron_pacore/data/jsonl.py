"""Append-only JSON-lines files that survive a crash: the one helper behind every resume.

A job appends one JSON object per line and flushes each at once, so a crash loses at most the
line being written. Opening such a file again (`JsonlAppender`) reads back every complete
record; a torn last line (the crash's) is dropped and cut from the file so that appending
goes on from a clean line; damage anywhere else is a ValueError naming file:line, since it
means the file is not what the job wrote. Used by `pacore infer`'s output (data/io.py) and
by `pacore eval`'s generation records (eval/store.py).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar, Union

PathLike = Union[str, os.PathLike]
T = TypeVar("T")


class JsonlAppender(Generic[T]):
    """An open JSONL file for appending, with the records it already held in `records`.

    Args:
        path: the file; it and its directory are created if missing.
        parse: a row (dict) to a record; a KeyError, TypeError or ValueError it raises marks
            the line unreadable, like malformed JSON.
        what: what a line holds, for errors ("generation record").
    """

    def __init__(self, path: PathLike, parse: Callable[[dict[str, Any]], T], what: str = "record") -> None:
        self.path = Path(path)
        self.what = what
        self.records: list[T] = []
        if self.path.exists() and self.path.stat().st_size > 0:
            self._recover(parse)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def _recover(self, parse: Callable[[dict[str, Any]], T]) -> None:
        with self.path.open(encoding="utf-8") as f:
            lines = f.readlines()
        keep = 0  # complete lines to keep
        for i, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise TypeError(f"expected a JSON object, got {type(row).__name__}")
                record = parse(row)
            except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
                if i == len(lines):  # the torn last line of an interrupted run
                    break
                raise ValueError(f"{self.path}:{i}: unreadable {self.what} ({type(e).__name__}: {e})") from None
            self.records.append(record)
            keep = i
        if keep != len(lines) or not lines[-1].endswith("\n"):
            with self.path.open("w", encoding="utf-8") as f:
                f.writelines(line if line.endswith("\n") else line + "\n" for line in lines[:keep])

    def append(self, row: dict[str, Any]) -> None:
        """Write one record and flush it."""
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
