"""Decontamination: training problems that share a word n-gram with a benchmark problem.

    index = BenchmarkIndex.from_files(["aime25.jsonl", "hmmt25.jsonl"], n=13)
    hit = index.match(record.problem)     # None, or which benchmark file and problem

Both sides are normalised to words (`text_norm.words`: NFKC, lower case, punctuation and
markup dropped) and a training problem is contaminated when any of its word n-grams (13 by
default, the usual choice since GPT-3's contamination study) is one of a benchmark problem's.
A benchmark problem shorter than n words has no n-gram; it matches a training problem whose
whole word sequence equals it.

Benchmark files are JSONL in the form of the project's benchmark files (`{"id", "problem",
"answer", ...}`); the text is read from `problem` (or `prompt` or `question`, as code and QA
benchmarks name it, or the last user turn of `messages`). A row without a text is a
ValueError naming file:line and the field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

from megatron_pacore.data.io import iter_jsonl
from megatron_pacore.data.text_norm import words

PathLike = Union[str, os.PathLike]
TEXT_FIELDS = ("problem", "prompt", "question")


@dataclass(frozen=True)
class Contamination:
    """Where a training problem overlaps a benchmark: the file, the benchmark problem's id,
    and the shared n-gram (words joined by spaces)."""

    benchmark_file: str
    benchmark_id: str
    ngram: str


def benchmark_texts(path: PathLike) -> list[tuple[str, str]]:
    """(id, text) of every row of a benchmark JSONL file (module doc for the fields)."""
    out = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        text = next((row[k] for k in TEXT_FIELDS if isinstance(row.get(k), str)), None)
        if text is None and isinstance(row.get("messages"), list):
            users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            text = users[-1] if users and isinstance(users[-1], str) else None
        if text is None or not text.strip():
            raise ValueError(f"{where}: field 'problem': a benchmark row needs its text in one of "
                             f"{list(TEXT_FIELDS)} or 'messages'")
        rid = row.get("id", f"line-{lineno}")
        if not isinstance(rid, (str, int)):
            raise ValueError(f"{where}: field 'id': must be a string or an integer, got {rid!r:.40}")
        out.append((str(rid), text))
    return out


def ngrams(seq: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(seq[i: i + n]) for i in range(len(seq) - n + 1))


class BenchmarkIndex:
    """Every word n-gram of the benchmark problems, each with the first (file, id) it came
    from; `match` looks a training problem's n-grams up in it (module doc)."""

    def __init__(self, n: int = 13) -> None:
        if n < 1:
            raise ValueError(f"contamination_ngram must be >= 1, got {n}")
        self.n = n
        self._grams: dict[tuple[str, ...], tuple[str, str]] = {}
        self._short: dict[tuple[str, ...], tuple[str, str]] = {}  # whole texts under n words
        self.files: list[str] = []
        self.problems = 0

    @classmethod
    def from_files(cls, paths: Iterable[PathLike], n: int = 13) -> "BenchmarkIndex":
        index = cls(n)
        for p in paths:
            index.add_file(p)
        return index

    def add_file(self, path: PathLike) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"benchmark file not found: {path}")
        name = str(path)
        for rid, text in benchmark_texts(path):
            self.add(name, rid, text)
        self.files.append(name)

    def add(self, file: str, rid: str, text: str) -> None:
        ws = words(text)
        self.problems += 1
        if len(ws) < self.n:
            self._short.setdefault(tuple(ws), (file, rid))
            return
        for g in ngrams(ws, self.n):
            self._grams.setdefault(g, (file, rid))

    def match(self, text: str) -> Optional[Contamination]:
        """The first benchmark overlap of `text` (in its word order), or None."""
        ws = words(text)
        short = self._short.get(tuple(ws))
        if short is not None:
            return Contamination(benchmark_file=short[0], benchmark_id=short[1], ngram=" ".join(ws))
        for g in ngrams(ws, self.n):
            hit = self._grams.get(g)
            if hit is not None:
                return Contamination(benchmark_file=hit[0], benchmark_id=hit[1], ngram=" ".join(g))
        return None
