"""Round schedules: how many parallel trajectories each round samples.

A schedule is the list of widths K = [K_1, ..., K_R] with K_R = 1: the final round produces
the single answer. Users give the widths of the exploratory rounds ("32,4") or a compute
level of the paper; the final width 1 is always appended, as in the official release.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

LEVELS: dict[str, tuple[int, ...]] = {
    "low": (4,),
    "medium": (16,),
    "high": (32, 4),
}


@dataclass(frozen=True)
class RoundSchedule:
    """Widths of every round, the last one always 1."""

    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("a round schedule needs at least one round")
        for i, k in enumerate(self.widths):
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ValueError(
                    f"round {i + 1} width must be a positive integer, got {k!r}"
                )
        if self.widths[-1] != 1:
            raise ValueError(
                f"the final round must have width 1 (it produces the answer), got {self.widths[-1]}"
            )

    @classmethod
    def from_widths(cls, widths: Union[str, Sequence[int]]) -> "RoundSchedule":
        """Exploratory widths ("32,4" or [32, 4]); the final width 1 is appended."""
        if isinstance(widths, str):
            parts = [p.strip() for p in widths.split(",")]
            if not widths.strip() or any(p == "" for p in parts):
                raise ValueError(
                    f"widths must be comma-separated positive integers like '32,4', got {widths!r}"
                )
            try:
                values = [int(p) for p in parts]
            except ValueError:
                raise ValueError(
                    f"widths must be comma-separated positive integers like '32,4', got {widths!r}"
                ) from None
        else:
            values = list(widths)
        if not values:
            raise ValueError("widths must name at least one exploratory round, e.g. '4'")
        for k in values:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ValueError(f"every width must be a positive integer, got {k!r} in {widths!r}")
        return cls(tuple(values) + (1,))

    @classmethod
    def from_level(cls, level: str) -> "RoundSchedule":
        """A compute level of the paper: low = [4, 1], medium = [16, 1], high = [32, 4, 1]."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
        return cls(LEVELS[level] + (1,))

    @property
    def num_rounds(self) -> int:
        return len(self.widths)

    @property
    def total_trajectories(self) -> int:
        return sum(self.widths)

    def __str__(self) -> str:
        return ",".join(str(k) for k in self.widths)
