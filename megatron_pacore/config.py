"""Typed configs: dataclasses with a one-line doc per field and checks that name the field.

YAML files are instances of them; `key=value` (dotted) overrides come from the command line,
merged through omegaconf so that a misspelt key or a wrong type is an error naming it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Type, TypeVar

from megatron_pacore.pacore.ordering import ORDERS
from megatron_pacore.pacore.schedule import LEVELS, RoundSchedule

T = TypeVar("T")


@dataclass
class InferConfig:
    """`pacore infer`: multi-round PaCoRe inference over a file of problems."""

    model: str = ""  # checkpoint directory (in-process vLLM) or http(s):// server URL
    input: str = ""  # JSONL of {"id", "messages"} or {"id", "problem"} rows
    output: str = ""  # JSONL, one row per finished problem
    level: Optional[str] = None  # compute level: low | medium | high
    widths: Optional[str] = None  # exploratory widths, e.g. "32,4" (final 1 appended)
    max_tokens: Optional[int] = None  # per trajectory; None: up to the model's context
    temperature: float = 1.0  # sampling temperature (the paper samples at 1.0)
    top_p: float = 1.0  # nucleus sampling
    seed: Optional[int] = None  # base sampling seed (per problem and round it is varied)
    concurrency: int = 64  # requests (each n = K samples) in flight
    max_retries: int = 3  # extra attempts for a failed sample
    resume: bool = False  # skip ids already in the output
    reference_order: str = "released"  # released | random
    max_message_tokens: Optional[int] = None  # bound on a message (keeps its tail); None as released
    limit: Optional[int] = None  # only the first N problems
    vllm_args: dict[str, Any] = field(default_factory=dict)  # in-process engine options
    served_model_name: Optional[str] = None  # server model name (default: discovered)
    stream: bool = False  # stream from the server (long generations behind proxies)
    allow_failed: bool = False  # exit 0 even when some problems failed (default: exit 1)

    def __post_init__(self) -> None:
        for name in ("model", "input", "output"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if (self.level is None) == (self.widths is None):
            raise ValueError("give exactly one of level (low|medium|high) or widths (e.g. '32,4')")
        if self.level is not None and self.level not in LEVELS:
            raise ValueError(f"level must be one of {sorted(LEVELS)}, got {self.level!r}")
        self.schedule()  # widths are checked here
        check_generation_fields(self)

    def schedule(self) -> RoundSchedule:
        if self.level is not None:
            return RoundSchedule.from_level(self.level)
        return RoundSchedule.from_widths(self.widths or "")


def check_generation_fields(cfg: Any) -> None:
    """The checks of the generation fields that `pacore infer` and `pacore eval` share
    (InferConfig, EvalConfig): each error names the field."""
    for name in ("max_tokens", "limit", "max_message_tokens"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if cfg.concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {cfg.concurrency}")
    if cfg.max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {cfg.max_retries}")
    if cfg.reference_order not in ORDERS:
        raise ValueError(f"reference_order must be one of {ORDERS}, got {cfg.reference_order!r}")


def load_config(cls: Type[T], yaml_path: Optional[str] = None, overrides: Sequence[str] = ()) -> T:
    """Build `cls` from defaults, then a YAML file, then dotted `key=value` overrides.

    omegaconf checks names and types against the dataclass; its errors are re-raised as a
    ValueError naming the offending key. The dataclass's own __post_init__ checks run last.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        # A structured schema from the class (not an instance: __post_init__ would reject the
        # empty required fields before the YAML fills them) checks names and types.
        merged = OmegaConf.structured(cls)
        if yaml_path:
            merged = OmegaConf.merge(merged, OmegaConf.load(yaml_path))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        values = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f"bad config for {cls.__name__}: {e}") from None
    return cls(**values)  # type: ignore[arg-type]

