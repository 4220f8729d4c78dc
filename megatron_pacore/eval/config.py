"""EvalConfig: what `pacore eval` measures, on which model and benchmark, and where it writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from megatron_pacore.config import GenerationOptions, GradingOptions, check_at_least, check_required
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


def _csv(text: str) -> list[str]:
    """"low,medium" -> ["low", "medium"] (the flag form of a list)."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(kw_only=True)
class EvalConfig:
    """`pacore eval`: PaCoRe against self-consistency on one benchmark, with a report."""

    report: str = field(default="", metadata={"metavar": "DIR"})
    """report directory: results as they finish, report.md, metrics.json, plots; rerun with it to resume"""
    benchmark: str = DEFAULT_BENCHMARK
    """`humaneval`, or a JSONL of {id, problem, answer} (math) or {id, problem, tests} (code) rows"""
    levels: Optional[list[str]] = field(default=None, metadata={"type": _csv})
    """compute levels, comma-separated, of high, low, medium (default: low)"""
    widths: Optional[list[str]] = field(default=None, metadata={"nargs": "+"})
    """instead of levels: exploratory widths per level, e.g. --widths 4 16 32,4"""
    runs: int = 1
    """independent runs; accuracy is their mean, with its standard error"""
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"type": _csv})
    """comma-separated subset of pacore,single,majority,pass_at_k,no_messages"""
    pool: Optional[int] = field(default=None, metadata={"metavar": "P"})
    """generate P first-round samples per problem once; each run draws from them"""
    limit: Optional[int] = None
    """only the first N problems of the benchmark"""
    allow_weak_sandbox: bool = False
    """code: grade without bubblewrap's namespaces when it is unavailable (the level is recorded)"""
    generation: GenerationOptions
    """model, sampling, concurrency and engine"""
    grading: GradingOptions = field(default_factory=GradingOptions)
    """grading processes (math) or concurrent sandboxes (code), and time per response"""

    def __post_init__(self) -> None:
        check_required(self, "report", "benchmark")
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
        check_at_least("runs", self.runs, 1)
        check_at_least("limit", self.limit, 1)
        widest = max(level.first_width for level in self.compute_levels())
        if self.pool is not None and self.pool < widest:
            raise ValueError(f"pool must be >= the widest first round ({widest}), got {self.pool}")

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
        """What decides the engine's answers (GENERATION_FIELDS), flat, as in a report DIR's
        config.json."""
        return self.generation.settings_of(self, GENERATION_FIELDS)
