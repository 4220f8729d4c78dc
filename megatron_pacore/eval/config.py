"""EvalConfig: what `pacore eval` measures, on which model and benchmark, and where it writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from megatron_pacore.config import check_generation_fields
from megatron_pacore.pacore.schedule import LEVELS, RoundSchedule

METHODS = ("pacore", "single", "majority", "pass_at_k", "no_messages")
DEFAULT_BENCHMARK = "../shared/data/benchmarks/aime25.jsonl"
# Fields that decide what the engine is asked; a report DIR keeps them fixed across reruns.
GENERATION_FIELDS = ("model", "benchmark", "max_tokens", "temperature", "top_p", "seed", "pool",
                     "reference_order", "max_message_tokens")


@dataclass(frozen=True)
class Level:
    """One compute level: a name for tables ("low", or the widths "32,4") and its schedule."""

    name: str
    schedule: RoundSchedule

    @property
    def first_width(self) -> int:
        return self.schedule.widths[0]


@dataclass
class EvalConfig:
    """`pacore eval`: PaCoRe against self-consistency on one benchmark, with a report."""

    model: str = ""  # checkpoint directory (in-process vLLM) or http(s):// server URL
    report: str = ""  # output directory: results as they finish, report.md, metrics.json, plots
    benchmark: str = DEFAULT_BENCHMARK  # JSONL of {"id", "problem", "answer"} rows
    levels: Optional[list[str]] = None  # compute levels: low | medium | high
    widths: Optional[list[str]] = None  # instead of levels: exploratory widths per level, e.g. ["4", "32,4"]
    runs: int = 1  # independent repetitions; accuracy is averaged over them, with its standard error
    methods: list[str] = field(default_factory=lambda: list(METHODS))  # subset of METHODS
    pool: Optional[int] = None  # generate P first-round trajectories per problem once; runs draw from it
    max_tokens: Optional[int] = None  # per trajectory
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling
    seed: Optional[int] = None  # sampling seed (varied per request); also seeds the pool draws
    concurrency: int = 64  # requests in flight per compute level
    max_retries: int = 3  # extra attempts for a failed sample
    reference_order: str = "released"  # order of messages in synthesis prompts
    max_message_tokens: Optional[int] = None  # bound on a message; None as released
    limit: Optional[int] = None  # only the first N problems
    vllm_args: dict[str, Any] = field(default_factory=dict)  # in-process engine options
    served_model_name: Optional[str] = None  # server model name (default: discovered)
    grade_workers: Optional[int] = None  # math grading processes (default: CPU count)
    grade_timeout_s: float = 10.0  # per-response grading limit

    def __post_init__(self) -> None:
        for name in ("model", "report", "benchmark"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if self.levels is None and self.widths is None:
            self.levels = ["low"]
        if self.levels is not None and self.widths is not None:
            raise ValueError("give levels (low,medium,high) or widths (e.g. 4 32,4), not both")
        for lvl in self.levels or []:
            if lvl not in LEVELS:
                raise ValueError(f"levels: {lvl!r} is not one of {sorted(LEVELS)}")
        self.compute_levels()  # widths are checked here
        if not self.methods:
            raise ValueError(f"methods must name at least one of {METHODS}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"methods: {m!r} is not one of {METHODS}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        widest = max(level.first_width for level in self.compute_levels())
        if self.pool is not None and self.pool < widest:
            raise ValueError(f"pool must be >= the widest first round ({widest}), got {self.pool}")
        check_generation_fields(self)
        if self.grade_timeout_s <= 0:
            raise ValueError(f"grade_timeout_s must be > 0, got {self.grade_timeout_s}")

    def compute_levels(self) -> list[Level]:
        """The levels in the order given; duplicates are an error (they would share results)."""
        if self.widths is not None:
            levels = [Level(str(RoundSchedule.from_widths(w)).rsplit(",", 1)[0], RoundSchedule.from_widths(w))
                      for w in self.widths]
        else:
            levels = [Level(name, RoundSchedule.from_level(name)) for name in self.levels or []]
        if not levels:
            raise ValueError("give at least one compute level")
        names = [level.name for level in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"compute levels repeat: {names}")
        return levels

    @property
    def synthesis_methods(self) -> list[str]:
        """The methods that need synthesis rounds (the others use first-round samples only)."""
        return [m for m in self.methods if m in ("pacore", "no_messages")]

    def generation_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GENERATION_FIELDS}
