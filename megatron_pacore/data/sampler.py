"""The training sampler: each PPO iteration's problems, message sets and synthesis prompts.

    sampler = MessageSampler(records, SamplerConfig(num_problems=16, min_messages=16, max_messages=24))
    batch = sampler.next_batch()          # 16 SynthesisPrompts, each to be sampled n=64 times
    ckpt["sampler"] = sampler.state_dict()
    ...
    sampler.load_state_dict(ckpt["sampler"])   # continues exactly where it was

Per iteration, for each of `num_problems` problems of the stage:
    |M| ~ U{min_messages, ..., max_messages}  (inclusive), clamped to the problem's pool size
    M   = |M| messages drawn WITHOUT replacement from the pool
    prompt = the problem's chat with P(x, M) in its last user turn (`prompts.round_messages`,
             the function inference uses), M in the order inference places a round's
             messages (`ordering.reference_order`, "released" by default)
and `samples_per_problem` responses are asked for at `temperature`.

The pool of a record is its cached responses compacted as inference compacts a round
(`compaction.compact`: the text after the last `</think>`), without the empty ones, which
inference drops too. A pool smaller than min_messages gives every message it has (the clamp);
an empty pool is an error when the sampler is built.

Epochs: problems are visited in a seeded permutation per epoch (permutation e is drawn from
(seed, e) alone), `num_problems` at a time; the tail of an epoch too short for a full batch is
skipped and the next epoch starts (a DistributedSampler with drop_last), so a batch never holds
a problem twice and every batch is full. Each epoch's permutation differs, so no problem is
skipped systematically.

Randomness is a function of (seed, epoch) for the order and (seed, iteration) for the message
draws, so the state is four integers and a fingerprint of the data: restoring it on the same
records continues the same sequence of batches exactly; on different records it is an error.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from megatron_pacore.data.train_records import TrainRecord
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.pacore.ordering import ORDERS, reference_order
from megatron_pacore.pacore.prompts import round_messages
from megatron_pacore.types import Chat, GenerationRequest, SamplingSettings

_ORDER_STREAM, _MESSAGE_STREAM = 0, 1


@dataclass(kw_only=True)
class SamplerConfig:
    """How each PPO iteration picks problems and message sets (paper: 16 x U(16, 24) x 64)."""

    num_problems: int = 16
    """Problems per iteration."""
    min_messages: int = 16
    """Smallest |M| (inclusive)."""
    max_messages: int = 24
    """Largest |M| (inclusive); |M| is uniform over min..max, then clamped to the pool size."""
    samples_per_problem: int = 64
    """Responses sampled per synthesis prompt."""
    temperature: float = 1.0
    """Sampling temperature of the rollout (paper: 1.0)."""
    reference_order: str = "released"
    """Order of M in the prompt: 'released' (as inference places messages) or 'random' (draw order)."""
    seed: int = 0
    """Seed of the epoch permutations and the message draws."""
    shuffle: bool = True
    """Visit problems in a seeded permutation per epoch; False = file order every epoch."""

    def __post_init__(self) -> None:
        if self.num_problems < 1:
            raise ValueError(f"sampler.num_problems must be >= 1, got {self.num_problems}")
        if self.min_messages < 1:
            raise ValueError(f"sampler.min_messages must be >= 1, got {self.min_messages}")
        if self.max_messages < self.min_messages:
            raise ValueError(f"sampler.max_messages must be >= sampler.min_messages={self.min_messages}, "
                             f"got {self.max_messages}")
        if self.samples_per_problem < 1:
            raise ValueError(f"sampler.samples_per_problem must be >= 1, got {self.samples_per_problem}")
        if not self.temperature > 0:
            raise ValueError(f"sampler.temperature must be > 0, got {self.temperature}")
        if self.reference_order not in ORDERS:
            raise ValueError(f"sampler.reference_order must be one of {ORDERS}, got {self.reference_order!r}")
        if self.seed < 0:
            raise ValueError(f"sampler.seed must be >= 0, got {self.seed}")


@dataclass
class SamplerState:
    """Where a sampler is: what a checkpoint stores (JSON-serialisable through to_dict)."""

    seed: int
    epoch: int
    """Epoch of the next batch."""
    cursor: int
    """Position of the next batch in the epoch's permutation."""
    iteration: int
    """Batches drawn so far."""
    fingerprint: str
    """Digest of the records' ids in order: restoring onto other data is refused."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplerState":
        try:
            return cls(seed=int(d["seed"]), epoch=int(d["epoch"]), cursor=int(d["cursor"]),
                       iteration=int(d["iteration"]), fingerprint=str(d["fingerprint"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"sampler state is malformed ({type(e).__name__}: {e}); got {d!r:.200}") from None


@dataclass(frozen=True)
class SynthesisPrompt:
    """One problem of an iteration with its message set and the chat to sample from."""

    record: TrainRecord
    messages: Chat
    """The chat sent to the engine: the problem's chat with P(x, M) in its last user turn."""
    reference_indices: list[int]
    """Indices into record.responses of the messages, in prompt order."""
    references: list[str]
    """The messages (compacted responses) as placed in the prompt."""
    n: int
    """Responses to sample."""
    temperature: float
    iteration: int

    @property
    def reference_correct(self) -> Optional[list[bool]]:
        """Correctness of each placed message (None if the pool is ungraded)."""
        if self.record.correct is None:
            return None
        return [self.record.correct[i] for i in self.reference_indices]

    def request(self, max_tokens: Optional[int] = None, seed: Optional[int] = None, top_p: float = 1.0) -> GenerationRequest:
        """The engine request: n samples of `messages` at this prompt's temperature."""
        sampling = SamplingSettings(max_tokens=max_tokens, temperature=self.temperature, top_p=top_p, seed=seed)
        return GenerationRequest(f"{self.record.id}/it{self.iteration}", self.messages, self.n, sampling)


def fingerprint(records: Sequence[TrainRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(r.id.encode("utf-8"))
        h.update(b"\0")
    return f"{len(records)}:{h.hexdigest()[:16]}"


class MessageSampler:
    """Draws each iteration's synthesis prompts from one curriculum stage's records (module doc).

    Raises (at construction):
        ValueError: fewer records than num_problems, or a record whose pool is empty.
    """

    def __init__(self, records: Sequence[TrainRecord], config: SamplerConfig,
                 state: Optional[SamplerState] = None) -> None:
        if len(records) < config.num_problems:
            raise ValueError(f"sampler.num_problems={config.num_problems} but the stage has only "
                             f"{len(records)} problems")
        self.records = list(records)
        self.config = config
        self._pools: list[tuple[list[int], list[str]]] = []
        for r in self.records:
            pool = [(i, compact(text)) for i, text in enumerate(r.responses)]
            pool = [(i, m) for i, m in pool if m]
            if not pool:
                raise ValueError(f"{r.source or r.id}: record {r.id!r} has no non-empty cached response "
                                 f"to draw messages from")
            self._pools.append(([i for i, _ in pool], [m for _, m in pool]))
        self._fingerprint = fingerprint(self.records)
        self._state = SamplerState(seed=config.seed, epoch=0, cursor=0, iteration=0, fingerprint=self._fingerprint)
        if state is not None:
            self.load_state(state)

    # -- state ---------------------------------------------------------------------------

    def state(self) -> SamplerState:
        return SamplerState(**asdict(self._state))

    def state_dict(self) -> dict[str, Any]:
        return self._state.to_dict()

    def load_state(self, state: SamplerState) -> None:
        """Continue from `state` (ValueError if it belongs to other data or another seed)."""
        if state.fingerprint != self._fingerprint:
            raise ValueError(f"sampler state was saved for other training data (fingerprint {state.fingerprint}, "
                             f"these records {self._fingerprint}); resume with the same stage data")
        if state.seed != self.config.seed:
            raise ValueError(f"sampler state was saved with sampler.seed={state.seed}, the config has "
                             f"sampler.seed={self.config.seed}")
        if state.epoch < 0 or state.iteration < 0 or not 0 <= state.cursor <= len(self.records):
            raise ValueError(f"sampler state out of range: {state}")
        self._state = SamplerState(**asdict(state))

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.load_state(SamplerState.from_dict(d))

    # -- drawing -------------------------------------------------------------------------

    def permutation(self, epoch: int) -> list[int]:
        """Record indices in the order epoch `epoch` visits them."""
        n = len(self.records)
        if not self.config.shuffle:
            return list(range(n))
        return np.random.default_rng([self.config.seed, _ORDER_STREAM, epoch]).permutation(n).tolist()

    def next_problems(self) -> list[int]:
        """Advance the position by one batch; the record indices of that batch."""
        s, k = self._state, self.config.num_problems
        if s.cursor + k > len(self.records):  # drop the short tail of the epoch
            s.epoch, s.cursor = s.epoch + 1, 0
        batch = self.permutation(s.epoch)[s.cursor: s.cursor + k]
        s.cursor += k
        return batch

    def next_batch(self) -> list[SynthesisPrompt]:
        """The next iteration's `num_problems` synthesis prompts."""
        iteration = self._state.iteration
        problems = self.next_problems()
        rng = np.random.default_rng([self.config.seed, _MESSAGE_STREAM, iteration])
        out = [self._prompt(self.records[p], self._pools[p], rng, iteration) for p in problems]
        self._state.iteration += 1
        return out

    def _prompt(self, record: TrainRecord, pool: tuple[list[int], list[str]], rng: np.random.Generator,
                iteration: int) -> SynthesisPrompt:
        cfg = self.config
        indices, messages = pool
        size = int(rng.integers(cfg.min_messages, cfg.max_messages + 1))
        size = min(size, len(indices))
        drawn = rng.choice(len(indices), size=size, replace=False).tolist()
        if cfg.reference_order == "released":
            # As the runner orders a round's messages: by the responses they come from.
            order = reference_order([record.responses[indices[j]] for j in drawn], "released")
            drawn = [drawn[i] for i in order]
        references = [messages[j] for j in drawn]
        return SynthesisPrompt(
            record=record,
            messages=round_messages(record.conversation, record.problem, references),
            reference_indices=[indices[j] for j in drawn],
            references=references,
            n=cfg.samples_per_problem,
            temperature=cfg.temperature,
            iteration=iteration,
        )
