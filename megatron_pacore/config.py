"""Typed configs: dataclasses with a docstring under each field and checks that name the field.

A job's config is composed of parts, each checked once where it is defined:

    InferConfig (`pacore infer`)            EvalConfig (`pacore eval`, in eval/config.py)
      input, output, level | widths,          report, benchmark, levels | widths, runs,
      resume, limit                           methods, pool, limit, ...
      generation: GenerationOptions           generation: GenerationOptions
        model, concurrency, max_retries, reference_order, max_message_tokens, vllm_args
        sampling: SamplingSettings (types.py)   max_tokens, temperature, top_p, seed
        server: ServerOptions                   served_model_name, stream
                                              grading: GradingOptions    workers, timeout_s

The curriculum tools' configs (data/pool_job.py, data/curriculum_filter.py,
data/synthesis_filter.py) compose the same GenerationOptions and GradingOptions.

The trainer's config (train_config.py) has a rollout part of its own instead: its engine is
colocated in the trainer's processes and built from the actor's model and layout.
YAML files are instances of these classes; `load_config` merges defaults, a YAML file,
command-line flags and dotted `key=value` overrides (e.g. `generation.sampling.seed=0`)
through omegaconf, so a misspelt key or a wrong type is an error naming it. The `pacore`
flags are derived from the same fields (config_cli.py), their docstrings becoming `--help`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Type, TypeVar

from megatron_pacore.pacore.ordering import ORDERS
from megatron_pacore.pacore.schedule import LEVELS, RoundSchedule
from megatron_pacore.types import SamplingSettings

T = TypeVar("T")


def check_at_least(name: str, value: Optional[float], low: float) -> None:
    """`value >= low` (None passes: the field is unset), else a ValueError naming the field."""
    if value is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def check_required(cfg: Any, *names: str) -> None:
    """Each of `names` set on `cfg` (not empty), else a ValueError naming the first missing."""
    for name in names:
        if not getattr(cfg, name):
            raise ValueError(f"{name} is required")


def check_above(name: str, value: Optional[float], low: float) -> None:
    """`value > low` (None passes), else a ValueError naming the field."""
    if value is not None and not value > low:
        raise ValueError(f"{name} must be > {low}, got {value}")


def check_one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(kw_only=True)
class ServerOptions:
    """How to talk to an OpenAI-compatible server (used when `model` is an http(s) URL)."""

    served_model_name: Optional[str] = None
    """server model name (default: the one model the server lists at /v1/models)"""
    stream: bool = False
    """stream server responses (long generations behind proxies that cut idle connections)"""


@dataclass(kw_only=True)
class GenerationOptions:
    """What generates the trajectories and how: shared by `pacore infer`, `pacore eval` and
    the curriculum tools. Every limit of these fields is checked here, once."""

    model: str = ""
    """checkpoint directory (in-process vLLM) or http(s):// server URL"""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """what each sample is asked for (max_tokens, temperature, top_p, seed)"""
    concurrency: int = 64
    """requests (each of n = K samples) in flight at once; for eval, per compute level"""
    max_retries: int = 3
    """extra attempts for a failed sample before it is recorded as failed"""
    reference_order: str = field(default="released", metadata={"choices": ORDERS})
    """order of the messages in a synthesis prompt: released (as the official release) or random"""
    max_message_tokens: Optional[int] = None
    """bound each message to its last N tokens (None: unbounded, as released)"""
    vllm_args: dict[str, Any] = field(default_factory=dict, metadata={"flag": "--vllm-arg"})
    """in-process engine options, KEY=VALUE, repeatable (tensor_parallel_size=2, max_model_len=131072,
    hf_overrides='{"rope_scaling": ...}', gpu_memory_utilization=0.9, ...)"""
    server: ServerOptions = field(default_factory=ServerOptions)
    """options for a server URL"""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model is required (a checkpoint directory or an http(s):// server URL)")
        check_at_least("concurrency", self.concurrency, 1)
        check_at_least("max_retries", self.max_retries, 0)
        check_one_of("reference_order", self.reference_order, ORDERS)
        check_at_least("max_message_tokens", self.max_message_tokens, 1)

    def engine_kwargs(self) -> dict[str, Any]:
        """The arguments of `inference.factory.make_generator` / `open_generator`."""
        return {"model": self.model, "vllm_args": self.vllm_args or None,
                "served_model_name": self.server.served_model_name, "stream": self.server.stream}

    def runner_config(self, schedule: RoundSchedule, **more: Any):
        """The PaCoRe runner's config for `schedule` from these options (`more`: the runner's
        own settings, retry_backoff_s and order_seed)."""
        from megatron_pacore.pacore.runner import RunnerConfig

        return RunnerConfig(schedule=schedule, sampling=self.sampling, max_in_flight=self.concurrency,
                            max_retries=self.max_retries, reference_order=self.reference_order,
                            max_message_tokens=self.max_message_tokens, **more)

    def settings(self) -> dict[str, Any]:
        """What decides the engine's answers, flat: model, the sampling fields, reference order
        and message bound. Jobs that resume keep (a subset of) these in their output directory
        (data/settings_file.py) and refuse a rerun that differs."""
        s = self.sampling
        return {"model": self.model, "max_tokens": s.max_tokens, "temperature": s.temperature, "top_p": s.top_p,
                "seed": s.seed, "reference_order": self.reference_order,
                "max_message_tokens": self.max_message_tokens}

    def settings_of(self, job: Any, names: Sequence[str]) -> dict[str, Any]:
        """The settings `names` of a job that resumes, flat, in that order: each from
        `settings()` where it is one of those, else the job config's own attribute."""
        flat = self.settings()
        return {name: flat[name] if name in flat else getattr(job, name) for name in names}

    def refuse(self, names: Sequence[str], job: str) -> None:
        """A ValueError naming the first of `names` set to other than its default: options that
        `job` has no use for are a mistake to report, not to ignore."""
        for f in dataclasses.fields(self):
            if f.name not in names:
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            if getattr(self, f.name) != default:
                raise ValueError(f"generation.{f.name}={getattr(self, f.name)!r}: {job} does not use it")


@dataclass(kw_only=True)
class GradingOptions:
    """How responses are graded: processes (math-verify) or concurrent sandboxes (code), and
    the time each response may take."""

    workers: Optional[int] = field(default=None, metadata={"flag": "--grade-workers"})
    """grading processes and concurrent code sandboxes (default: the CPU count)"""
    timeout_s: float = field(default=10.0, metadata={"flag": "--grade-timeout"})
    """seconds per graded math response"""

    def __post_init__(self) -> None:
        check_at_least("grading.workers", self.workers, 1)
        check_above("grading.timeout_s", self.timeout_s, 0)


@dataclass(kw_only=True)
class InferConfig:
    """`pacore infer`: multi-round PaCoRe inference over a file of problems."""

    input: str = ""
    """JSONL of {"id", "messages"} or {"id", "problem"} rows"""
    output: str = ""
    """JSONL, one row per problem, written as it finishes"""
    level: Optional[str] = field(default=None, metadata={"choices": sorted(LEVELS)})
    """compute level: low=[4,1] medium=[16,1] high=[32,4,1]"""
    widths: Optional[str] = None
    """instead of level: exploratory round widths, e.g. 32,4 (the final width 1 is appended)"""
    resume: bool = False
    """skip ids already in the output"""
    limit: Optional[int] = None
    """only the first N problems"""
    allow_failed: bool = False
    """exit 0 even when some problems failed (default: exit 1, after printing the count)"""
    generation: GenerationOptions
    """model, sampling, concurrency and engine"""

    def __post_init__(self) -> None:
        check_required(self, "input", "output")
        if (self.level is None) == (self.widths is None):
            raise ValueError("give exactly one of level (low|medium|high) or widths (e.g. '32,4')")
        if self.level is not None:
            check_one_of("level", self.level, sorted(LEVELS))
        self.schedule()  # widths are checked here
        check_at_least("limit", self.limit, 1)

    def schedule(self) -> RoundSchedule:
        if self.level is not None:
            return RoundSchedule.from_level(self.level)
        return RoundSchedule.from_widths(self.widths or "")


# -- building configs from YAML, flags and overrides -------------------------------------

def build(cls: Type[T], values: Mapping[str, Any]) -> T:
    """`cls(**values)`, with nested dataclass fields built from their dicts (missing ones from
    empty dicts, so that their own checks say what is required). Unknown keys are a
    ValueError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r} (fields: {sorted(names)})")
    kwargs = dict(values)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            given = kwargs.get(f.name)
            if given is None and f.default_factory is not dataclasses.MISSING and f.name not in kwargs:
                continue  # the field's own default
            if not isinstance(given, kind):
                kwargs[f.name] = build(kind, given or {})  # type: ignore[arg-type]
    return cls(**kwargs)


def load_config(cls: Type[T], yaml_path: Optional[str] = None, overrides: Sequence[str] = (),
                values: Optional[Mapping[str, Any]] = None) -> T:
    """Build `cls` from its defaults, then a YAML file, then `values` (nested dicts, e.g. the
    command-line flags), then dotted `key=value` overrides; each later one wins.

    omegaconf checks names and types against the dataclass; its errors are re-raised as a
    ValueError naming the offending key. The dataclasses' own __post_init__ checks run last.
    Without a YAML file or overrides, omegaconf is not needed (nor imported).
    """
    if not yaml_path and not overrides:
        return build(cls, dict(values or {}))
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        # A structured schema from the class (not an instance: __post_init__ would reject the
        # empty required fields before the YAML fills them) checks names and types.
        merged = OmegaConf.structured(cls)
        if yaml_path:
            merged = OmegaConf.merge(merged, OmegaConf.load(yaml_path))
        if values:
            merged = OmegaConf.merge(merged, OmegaConf.create(dict(values)))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ValueError(f"overrides must be dotted KEY=VALUE (e.g. generation.sampling.seed=0), got {bad[0]!r}")
            # A key with a list index (`stages.0.iterations=4`) cannot be merged as a dotlist
            # (it would become a dict keyed "0"): those go through OmegaConf.update, the rest
            # are merged as a dotlist (which also fills required nested configs).
            indexed = [o for o in overrides if any(p.strip().isdigit() for p in o.partition("=")[0].split("."))]
            plain = [o for o in overrides if o not in indexed]
            if plain:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(plain))
            if indexed:
                OmegaConf.set_readonly(merged, False)  # frozen dataclasses are read-only nodes
                for o in indexed:
                    key, _, text = o.partition("=")
                    value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]
                    OmegaConf.update(merged, key.strip(), value, merge=True)
        tree = OmegaConf.to_container(merged, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ValueError(f"bad config for {cls.__name__}: {e}") from None
    except OSError as e:
        raise ValueError(f"cannot read config {yaml_path}: {e}") from None
    return build(cls, _drop_missing(tree))  # type: ignore[arg-type]


def _drop_missing(tree: Any) -> Any:
    """omegaconf's '???' (a required nested config nothing filled) becomes absent."""
    if isinstance(tree, dict):
        return {k: _drop_missing(v) for k, v in tree.items() if v != "???"}
    return tree
