"""A synthetic verifiable task for the CPU training demo: small-integer arithmetic.

In the spirit of the paper's large-integer arithmetic, shrunk to what a 2-layer, 128-wide
model can learn in a minute on a CPU: "What is 7 + 5?", answer "12", graded by the math
grader like any benchmark answer. Rows are the benchmark files' form (`{"id", "problem",
"answer"}`), so `pacore infer`, `pacore eval` and the pool builder read them unchanged.

Held-out problems are never training prompts. How they differ is `heldout_split`:
- "ordering" (default): a held-out problem is one operand ORDER of a pair whose other order is
  trained ("5 + 3" held out, "3 + 5" trained): the held-out score measures whether what was
  learnt transfers to prompts never seen. A 2-layer model that learns the sums as a table
  does transfer part of it this way; it transfers nothing to unseen pairs.
- "pair": held-out problems use unordered pairs absent from training in either order.
The same `ToyTask` and seed give the same rows on every machine (`random.Random`, no global
state).
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
    """Share of the unordered operand pairs (of distinct operands, for "ordering") that give
    held-out problems."""
    heldout_split: str = "ordering"
    """"ordering" (one order of a pair held out, the other trained) or "pair" (whole pairs)."""
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
        if self.heldout_split not in ("ordering", "pair"):
            raise ValueError(f"heldout_split must be 'ordering' or 'pair', got {self.heldout_split!r}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if len(self.pairs()) < 2:
            raise ValueError(f"operand range [{self.min_operand}, {self.max_operand}] has fewer than 2 pairs")

    def pairs(self) -> list[tuple[int, int]]:
        """Every unordered operand pair (a <= b), in a fixed order."""
        r = range(self.min_operand, self.max_operand + 1)
        return [(a, b) for a in r for b in r if a <= b]

    def split_pairs(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(train pairs, held-out pairs) for heldout_split "pair": a seeded shuffle of
        `pairs()`, cut by heldout_fraction."""
        pairs = self.pairs()
        random.Random(f"toy-split/{self.seed}").shuffle(pairs)
        n_held = min(len(pairs) - 1, max(1, round(len(pairs) * self.heldout_fraction)))
        return pairs[n_held:], pairs[:n_held]

    def split_orderings(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(train orderings, held-out orderings), each sorted: every (a, b) prompt is in one."""
        if self.heldout_split == "pair":
            train, held = self.split_pairs()
            both = lambda pairs: sorted({o for p in pairs for o in (p, p[::-1])})  # noqa: E731
            return both(train), both(held)
        rng = random.Random(f"toy-split/{self.seed}")
        distinct = [p for p in self.pairs() if p[0] != p[1]]
        rng.shuffle(distinct)
        n_held = min(len(distinct), max(1, round(len(distinct) * self.heldout_fraction)))
        held = {p if rng.random() < 0.5 else p[::-1] for p in distinct[:n_held]}
        every = {o for p in self.pairs() for o in (p, p[::-1])}
        return sorted(every - held), sorted(held)

    def answer(self, a: int, b: int) -> int:
        return a + b if self.operation == "add" else a * b

    def problem_text(self, a: int, b: int) -> str:
        return f"What is {a} {OPERATIONS[self.operation]} {b}?"


def make_problems(task: ToyTask, split: str, count: int) -> list[dict[str, Any]]:
    """`count` problem rows of `split` ("train" or "heldout"): seeded draws of its pairs, each
    in a random operand order; ids `toy-{split}-{i:05d}`. Problems repeat only once `count`
    exceeds the split's orderings (each ordering is used before any is reused)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    train, held = task.split_orderings()
    orderings = train if split == "train" else held
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
