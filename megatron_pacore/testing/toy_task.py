"""A synthetic verifiable task for the CPU training demo: small-integer arithmetic.

In the spirit of the paper's large-integer arithmetic, shrunk to what a 2-layer, 128-wide
model can learn in a minute on a CPU: "What is 7 + 5?", answer "12", graded by the math
grader like any benchmark answer. Rows are the benchmark files' form (`{"id", "problem",
"answer"}`), so `pacore infer`, `pacore eval` and the pool builder read them unchanged.

Train and held-out problems use DISJOINT operand pairs (an unordered pair {a, b} is in one
split only, so "3 + 5" held out means "5 + 3" is not trained on either): a held-out score
measures arithmetic the model was not shown, not recall. The same `ToyTask` and seed give
the same rows on every machine (Python's `random.Random`, no global state).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

OPERATIONS = {"add": "+", "mul": "*"}


@dataclass(frozen=True, kw_only=True)
class ToyTask:
    """Which arithmetic problems to draw."""

    operation: str = "add"
    """"add" (a + b) or "mul" (a * b)."""
    min_operand: int = 0
    """Smallest operand (inclusive)."""
    max_operand: int = 9
    """Largest operand (inclusive); single digits are single tokens of the tiny tokenizer."""
    heldout_fraction: float = 0.2
    """Share of the unordered operand pairs reserved for held-out problems."""
    seed: int = 0
    """Seed of the pair split and of every draw."""

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {sorted(OPERATIONS)}, got {self.operation!r}")
        if self.min_operand < 0 or self.max_operand < self.min_operand:
            raise ValueError(
                f"need 0 <= min_operand <= max_operand, got min_operand={self.min_operand}, "
                f"max_operand={self.max_operand}"
            )
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if len(self.pairs()) < 2:
            raise ValueError(f"operand range [{self.min_operand}, {self.max_operand}] has fewer than 2 pairs")

    def pairs(self) -> list[tuple[int, int]]:
        """Every unordered operand pair (a <= b), in a fixed order."""
        r = range(self.min_operand, self.max_operand + 1)
        return [(a, b) for a in r for b in r if a <= b]

    def split_pairs(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(train pairs, held-out pairs): a seeded shuffle of `pairs()`, cut by heldout_fraction."""
        pairs = self.pairs()
        random.Random(f"toy-split/{self.seed}").shuffle(pairs)
        n_held = min(len(pairs) - 1, max(1, round(len(pairs) * self.heldout_fraction)))
        return pairs[n_held:], pairs[:n_held]

    def answer(self, a: int, b: int) -> int:
        return a + b if self.operation == "add" else a * b

    def problem_text(self, a: int, b: int) -> str:
        return f"What is {a} {OPERATIONS[self.operation]} {b}?"


def make_problems(task: ToyTask, split: str, count: int) -> list[dict[str, Any]]:
    """`count` problem rows of `split` ("train" or "heldout"): seeded draws of its pairs, each
    in a random operand order; ids `toy-{split}-{i:05d}`. Problems repeat only once `count`
    exceeds the split's 2 x pairs orderings (each ordering is used before any is reused)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    train, held = task.split_pairs()
    pairs = train if split == "train" else held
    orderings = sorted({(a, b) for p in pairs for a, b in (p, p[::-1])})
    rng = random.Random(f"toy-{split}/{task.seed}")
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        batch = list(orderings)
        rng.shuffle(batch)
        for a, b in batch[: count - len(rows)]:
            rows.append({
                "id": f"toy-{split}-{len(rows):05d}",
                "problem": task.problem_text(a, b),
                "answer": str(task.answer(a, b)),
                "operands": [a, b],
            })
    return rows


def write_problems(path: Union[str, Path], rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSON lines (atomically: a temp file renamed), return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path
