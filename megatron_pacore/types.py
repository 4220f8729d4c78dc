"""Records that cross package lines.

Each arrow of the architecture (DESIGN.md section 2) carries one of these typed records; no
package passes another a dict of tensors keyed by strings. They are plain dataclasses so that
they serialise to JSON lines with `dataclasses.asdict` and back with `from_dict`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # annotations only: this module stays torch-free (CLI start-up)
    import torch

Chat = list[dict[str, Any]]
"""An OpenAI-style chat: a list of {"role": ..., "content": ...} turns."""


@dataclass(frozen=True)
class Problem:
    """One problem to reason about.

    `messages` is the chat sent in round 1 (the last user turn holds the problem); `problem` is
    the original problem text that every later synthesis prompt is built from.
    """

    id: str
    messages: Chat
    problem: str
    answer: Optional[str] = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """What each sample is asked for; a subset of vLLM's SamplingParams. The sampling part of
    every generating config (config.GenerationOptions.sampling); its limits are checked here."""

    max_tokens: Optional[int] = None
    """tokens per trajectory (None: up to the model's context)"""
    temperature: float = 1.0
    """sampling temperature (the paper samples at 1.0)"""
    top_p: float = 1.0
    """nucleus sampling: keep the smallest set of tokens with this total probability"""
    seed: Optional[int] = None
    """base sampling seed, varied per problem and round (None: unseeded)"""
    ignore_eos: bool = field(default=False, metadata={"cli": False})
    """benchmarks only: generate exactly max_tokens tokens"""

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class GenerationRequest:
    """K samples of one chat. The K identical prompts of a round travel as one request with
    n=K so that the engine shares their prefix."""

    request_id: str
    messages: Chat
    n: int
    sampling: SamplingSettings


@dataclass(kw_only=True)
class Completion:
    """One sample returned by a Generator.

    `text` is what the model said (for a server with a reasoning parser: the `content`, with
    the thinking in `reasoning`); `error` is set, and `text` empty, when the sample failed.
    """

    text: str
    completion_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: Optional[str] = None
    reasoning: Optional[str] = None
    error: Optional[str] = None
    token_ids: Optional[list[int]] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(kw_only=True)
class Trajectory(Completion):
    """One sampled trajectory of one round: the engine's Completion and what the method made
    of it, its compacted message C(w) and the attempts it took.

    Two records, not one, because a Generator knows nothing of the method (it returns
    Completions: no message, no attempts), while a round needs both. A Trajectory IS a
    Completion, so a recorded one goes back wherever a sample is expected (eval shares
    recorded rounds with later pipelines) with no conversion; `of` is the one converter.
    """

    message: str = ""
    attempts: int = 1
    # Characters cut from the front of `message` by the max_message_tokens bound (0: not cut).
    message_truncated_chars: int = 0

    @classmethod
    def of(cls, completion: Completion, message: str, attempts: int = 1,
           message_truncated_chars: int = 0) -> "Trajectory":
        """The trajectory of a sample: every Completion field of `completion`, plus these."""
        sample = {f.name: getattr(completion, f.name) for f in fields(Completion)}
        return cls(**sample, message=message, attempts=attempts, message_truncated_chars=message_truncated_chars)


@dataclass
class RoundRecord:
    """All trajectories of one round of one problem, and how its prompt was built."""

    round: int
    width: int
    trajectories: list[Trajectory]
    # Indices into the previous round's trajectories, in the order their messages were
    # placed in this round's synthesis prompt (empty for round 1).
    reference_order: list[int] = field(default_factory=list)
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.trajectories)

    @property
    def messages(self) -> list[str]:
        return [t.message for t in self.trajectories if t.ok]


@dataclass
class ProblemResult:
    """The outcome of the whole multi-round pipeline on one problem."""

    id: str
    rounds: list[RoundRecord]
    final_response: Optional[str]
    final_message: Optional[str]
    seconds: float
    # "ok"; "degraded": finished, but some samples failed after their retries (see
    # failed_samples); "failed": no final response (see error).
    status: str = "ok"
    error: Optional[str] = None
    answer: Optional[str] = None

    @property
    def failed_samples(self) -> list[int]:
        """Failed trajectories (after retries) per round."""
        return [sum(not t.ok for t in r.trajectories) for r in self.rounds]

    @property
    def test_time_tokens(self) -> int:
        """Test-time compute: every completion token of every round (paper, section 4)."""
        return sum(r.completion_tokens for r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        """The output row of `pacore infer` (one JSON line per problem)."""
        return {
            "id": self.id,
            "status": self.status,
            "error": self.error,
            "failed_samples": self.failed_samples,
            "final_response": self.final_response,
            "final_message": self.final_message,
            "rounds": [
                [
                    {
                        "text": t.text,
                        "message": t.message,
                        "completion_tokens": t.completion_tokens,
                        "finish_reason": t.finish_reason,
                        "error": t.error,
                        "prompt_tokens": t.prompt_tokens,
                        "reasoning": t.reasoning,
                        "attempts": t.attempts,
                        "message_truncated_chars": t.message_truncated_chars,
                    }
                    for t in r.trajectories
                ]
                for r in self.rounds
            ],
            "round_info": [
                {
                    "round": r.round,
                    "width": r.width,
                    "reference_order": r.reference_order,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                }
                for r in self.rounds
            ],
            "test_time_tokens": self.test_time_tokens,
            "seconds": round(self.seconds, 3),
            "answer": self.answer,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "ProblemResult":
        infos = row.get("round_info") or [{} for _ in row["rounds"]]
        rounds = []
        for i, (trajs, info) in enumerate(zip(row["rounds"], infos)):
            rounds.append(
                RoundRecord(
                    round=info.get("round", i + 1),
                    width=info.get("width", len(trajs)),
                    trajectories=[Trajectory(**t) for t in trajs],
                    reference_order=info.get("reference_order", []),
                    prompt_tokens=info.get("prompt_tokens", 0),
                )
            )
        return cls(
            id=row["id"],
            rounds=rounds,
            final_response=row.get("final_response"),
            final_message=row.get("final_message"),
            seconds=row.get("seconds", 0.0),
            status=row.get("status", "ok"),
            error=row.get("error"),
            answer=row.get("answer"),
        )


def as_dict(record: Any) -> dict[str, Any]:
    """dataclasses.asdict, named for the call sites that serialise records."""
    return asdict(record)


@dataclass(frozen=True)
class HFShard:
    """One tensor-parallel rank's slice of one Hugging Face tensor, without a copy: what the
    actor's per-rank export (checkpoint.rank_export) hands the engine's loader
    (inference.shard_load).

    The slice is indices [start, stop) of the HF tensor along `axis` (None: the whole tensor,
    replicated on every rank); `parts` are row blocks (dim 0) that stacked in order make it,
    e.g. one block per query group of Megatron's interleaved QKV, views of the rank's shard.
    """

    axis: Optional[int]
    start: int
    stop: int
    parts: tuple["torch.Tensor", ...]

    @property
    def span(self) -> tuple[Optional[int], int, int]:
        """(axis, start, stop): where the slice sits in the HF tensor."""
        return (self.axis, self.start, self.stop)

    @property
    def rows(self) -> int:
        return sum(p.shape[0] for p in self.parts)
