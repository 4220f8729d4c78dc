"""Sequence packing: variable-length sequences into micro-batches with no padding compute.

    plan = plan_micro_batches(lengths, dp_size, max_tokens)     # balancing.py; same on every rank
    packed = [pack(seqs, idx, pad_to_multiple=8) for idx in plan.micro_batches[dp_rank]]
    ... model forward on packed[i].input_ids [1, T] ...
    per_sequence = unpack(per_token_output, packed[i])            # back to [n_i] each

Each sequence (prompt + response) is laid end to end in one row [1, T] of the micro-batch.
Attention stays inside a sequence: on GPU through THD / packed-sequence attention with
`cu_seqlens` and `cu_seqlens_padded` (the `cu_seqlens_q/kv` and `cu_seqlens_q/kv_padded` of
Megatron's PackedSeqParams, with `max_seqlen`); on CPU through a block-diagonal causal mask.
Positions restart at 0 for every sequence, so rotary embeddings see each sequence as if it
were alone, and a model gives every token the same output packed or not.

Token alignment is that of training/logprobs.py: a per-token field at position t describes
token t (log pi(token t | tokens before), V(s_t)), computed from the output at t - 1. In a
packed row the output before a sequence's first token belongs to the previous sequence, so
that first position is meaningless; it is a prompt token (a response needs a prompt), which
`pack` checks, and the response mask hides it.

Which sequences share a micro-batch, and on which data-parallel rank, is decided by
`balancing.plan_micro_batches`; `pack` makes one micro-batch from its indices.

Padding (the rules for TP/SP/CP/FP8 live in training/seqlen.py; here they are arguments):
- `pad_to_multiple`: the row is extended to a multiple by a trailing segment of `pad_token_id`
  tokens that attends only to itself, is not a response token, and is one more entry of the
  cu_seqlens;
- `pad_sequence_to_multiple`: each sequence's slot is padded to a multiple (THD attention with
  context parallelism needs every sequence divisible by 2 * CP): `cu_seqlens` then holds the
  real lengths and `cu_seqlens_padded` the slots' offsets, as TE's THD attention takes them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Sequence

import torch

from megatron_pacore.data.balancing import round_up


@dataclass(kw_only=True)
class PerTokenFields:
    """The trainer's per-token fields, declared once for a sequence and for a packed row.

    Each is [n] over a `TokenSequence`'s tokens, aligned to token positions (module doc), and
    [1, T] over a `PackedMicroBatch`'s row (padding positions False / 0); `pack` carries every
    field from the one to the other. Fields left None are absent from both.
    """

    response_mask: torch.Tensor
    """bool, True on the response tokens (the ones the loss sees)."""
    rollout_logprobs: Optional[torch.Tensor] = None
    """fp32 vLLM's log-probs of the sampled tokens."""
    old_logprobs: Optional[torch.Tensor] = None
    """fp32 Megatron's log-probs before the update."""
    ref_logprobs: Optional[torch.Tensor] = None
    """fp32 reference-model log-probs (only with a KL term)."""
    old_values: Optional[torch.Tensor] = None
    """fp32 critic values V(s_t) before the update."""
    advantages: Optional[torch.Tensor] = None
    """fp32."""
    returns: Optional[torch.Tensor] = None
    """fp32 value targets."""
    is_weights: Optional[torch.Tensor] = None
    """fp32 truncated importance weights."""


PER_TOKEN_FIELDS = tuple(f.name for f in fields(PerTokenFields))


@dataclass
class TokenSequence(PerTokenFields):
    """One sequence for the trainer: prompt + response tokens and their per-token fields.

    Every tensor is [n] over the sequence's tokens, aligned to token positions (module doc).
    """

    input_ids: torch.Tensor
    """[n] int64 prompt then response token ids."""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @classmethod
    def from_prompt_response(cls, prompt_ids: Sequence[int], response_ids: Sequence[int],
                             rollout_logprobs: Optional[Sequence[float]] = None) -> "TokenSequence":
        """A sequence from a rollout: prompt token ids, the sampled response token ids and, if
        given, the engine's log-prob of each sampled token (one per response token), placed at
        the response positions (0 over the prompt).

        Raises:
            ValueError: an empty prompt, or a log-prob count that differs from the response's.
        """
        if len(prompt_ids) == 0:
            raise ValueError("a sequence needs at least one prompt token")
        n_p, n_r = len(prompt_ids), len(response_ids)
        ids = torch.tensor(list(prompt_ids) + list(response_ids), dtype=torch.long)
        mask = torch.zeros(n_p + n_r, dtype=torch.bool)
        mask[n_p:] = True
        lp = None
        if rollout_logprobs is not None:
            if len(rollout_logprobs) != n_r:
                raise ValueError(f"{len(rollout_logprobs)} rollout log-probs for {n_r} response tokens")
            lp = torch.zeros(n_p + n_r, dtype=torch.float32)
            lp[n_p:] = torch.tensor(list(rollout_logprobs), dtype=torch.float32)
        return cls(input_ids=ids, response_mask=mask, rollout_logprobs=lp)


@dataclass
class PackedMicroBatch(PerTokenFields):
    """Sequences laid end to end in one row.

    input_ids:          [1, T] int64, T = tokens + padding.
    position_ids:       [1, T] int64, restarting at 0 at every segment.
    cu_seqlens:         [k + 1] int32 cumulative REAL lengths of the segments (the
                        cu_seqlens_q/kv of packed attention).
    cu_seqlens_padded:  [k + 1] int32 segment offsets in the row, T last (cu_seqlens_q/kv_padded
                        of THD attention; equal to cu_seqlens without per-sequence padding).
                        k = number of sequences, plus one for a trailing padding segment.
    indices:            the sequences' indices in the list given to `pack`, in row order.
    lengths:            their real lengths.
    num_padding:        padding tokens in the row (inside the sequences' slots and at the end).
    per-token fields (`PerTokenFields`: response_mask, old_logprobs, ...): [1, T], padding
                        positions False / 0.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    cu_seqlens_padded: torch.Tensor
    indices: list[int]
    lengths: list[int]
    num_padding: int

    @property
    def num_tokens(self) -> int:
        """T, the row's length including padding."""
        return int(self.input_ids.shape[1])

    @property
    def max_seqlen(self) -> int:
        """Longest segment slot (the max_seqlen_q/kv of packed attention)."""
        return int((self.cu_seqlens_padded[1:] - self.cu_seqlens_padded[:-1]).max().item())

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum().item())

    def attention_mask(self) -> torch.Tensor:
        """Block-diagonal causal mask [1, 1, T, T] bool, True = masked (Megatron's convention):
        token i attends to j iff j <= i and both lie in the same segment slot. O(T^2) memory:
        for CPU and tests; GPUs use the cu_seqlens."""
        return block_causal_mask(self.cu_seqlens_padded)


def block_causal_mask(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[1, 1, T, T] bool, True where attention is masked, from segment offsets cu_seqlens [k + 1]."""
    cu = cu_seqlens.tolist()
    total = cu[-1]
    segment = torch.repeat_interleave(torch.arange(len(cu) - 1), torch.tensor([b - a for a, b in zip(cu, cu[1:])]))
    same = segment.unsqueeze(0) == segment.unsqueeze(1)
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    return ~(same & causal).view(1, 1, total, total)


def packed_length(lengths: Sequence[int], pad_to_multiple: int = 1, pad_sequence_to_multiple: int = 1) -> int:
    """T of the row `pack` makes from sequences of these lengths."""
    return round_up(sum(round_up(int(n), pad_sequence_to_multiple) for n in lengths), pad_to_multiple)


def pack(sequences: Sequence[TokenSequence], indices: Sequence[int], pad_to_multiple: int = 1,
         pad_sequence_to_multiple: int = 1, pad_token_id: int = 0) -> PackedMicroBatch:
    """Concatenate `sequences[i]` for i in `indices` (in that order) into one micro-batch.

    Args:
        pad_to_multiple: the row's length T is made a multiple of this by a trailing padding
            segment (e.g. sequence parallelism needs T divisible by TP).
        pad_sequence_to_multiple: every sequence's slot is padded to a multiple of this (THD
            attention with context parallelism needs each sequence divisible by 2 * CP); the
            padding follows the sequence's tokens inside its slot.
        pad_token_id: the token id of padding positions.
    Raises:
        ValueError: empty `indices`, a sequence with no tokens, fields of the wrong length,
            a field present on some sequences but not others, or a sequence starting with a
            response token (its first token has no context inside the sequence).
    """
    if pad_to_multiple < 1 or pad_sequence_to_multiple < 1:
        raise ValueError(f"pad_to_multiple and pad_sequence_to_multiple must be >= 1, got "
                         f"{pad_to_multiple} and {pad_sequence_to_multiple}")
    if not indices:
        raise ValueError("a micro-batch needs at least one sequence")
    chosen = [sequences[i] for i in indices]
    for i, seq in zip(indices, chosen):
        _check_sequence(seq, i)
    lengths = [len(s) for s in chosen]
    slots = [round_up(n, pad_sequence_to_multiple) for n in lengths]
    total = packed_length(lengths, pad_to_multiple, pad_sequence_to_multiple)
    tail = total - sum(slots)
    real = lengths + ([tail] if tail else [])
    slot_sizes = slots + ([tail] if tail else [])
    cu_seqlens = torch.tensor([0] + list(_cumsum(real)), dtype=torch.int32)
    cu_padded = torch.tensor([0] + list(_cumsum(slot_sizes)), dtype=torch.int32)
    positions = torch.cat([torch.arange(n) for n in slot_sizes])

    def cat(name: str, fill) -> Optional[torch.Tensor]:
        parts = [getattr(s, name) for s in chosen]
        present = [p is not None for p in parts]
        if not any(present):
            return None
        if not all(present):
            missing = [i for i, p in zip(indices, present) if not p]
            raise ValueError(f"field {name!r} is set on some sequences but not on sequences {missing[:5]}")
        out = torch.full((total,), fill, dtype=parts[0].dtype)
        for part, offset in zip(parts, cu_padded.tolist()):
            out[offset: offset + part.shape[0]] = part
        return out.unsqueeze(0)

    per_token = {name: cat(name, False if name == "response_mask" else 0) for name in PER_TOKEN_FIELDS}
    return PackedMicroBatch(
        input_ids=cat("input_ids", pad_token_id),
        position_ids=positions.unsqueeze(0),
        cu_seqlens=cu_seqlens,
        cu_seqlens_padded=cu_padded,
        indices=list(indices),
        lengths=lengths,
        num_padding=total - sum(lengths),
        **per_token,
    )


def _cumsum(xs: Sequence[int]) -> list[int]:
    out, acc = [], 0
    for x in xs:
        acc += x
        out.append(acc)
    return out


def _check_sequence(seq: TokenSequence, index: int) -> None:
    n = len(seq)
    if seq.input_ids.dim() != 1 or n == 0:
        raise ValueError(f"sequence {index}: input_ids must be a non-empty 1-D tensor, got shape {tuple(seq.input_ids.shape)}")
    for name in PER_TOKEN_FIELDS:
        t = getattr(seq, name)
        if t is not None and tuple(t.shape) != (n,):
            raise ValueError(f"sequence {index}: {name} has shape {tuple(t.shape)}, expected ({n},) like input_ids")
    if bool(seq.response_mask[0]):
        raise ValueError(f"sequence {index}: the first token is a response token; a sequence must start with "
                         f"at least one prompt token")


def unpack(x: torch.Tensor, batch: PackedMicroBatch) -> list[torch.Tensor]:
    """Per-token output of a packed micro-batch -> one tensor per sequence, in row order.

    Args:
        x: [1, T, ...] or [T, ...] (e.g. log-probs [1, T], logits [1, T, V]).
    Returns:
        [n_i, ...] for each sequence of batch.indices (padding dropped); views of x.
    """
    if x.dim() >= 2 and x.shape[0] == 1 and x.shape[1] == batch.num_tokens:
        x = x[0]
    if x.shape[0] != batch.num_tokens:
        raise ValueError(f"output has {x.shape[0]} positions, the micro-batch {batch.num_tokens}")
    offsets = batch.cu_seqlens_padded.tolist()
    return [x[o: o + n] for o, n in zip(offsets, batch.lengths)]


def unpack_all(outputs: Sequence[torch.Tensor], batches: Sequence[PackedMicroBatch],
               num_sequences: int) -> list[Optional[torch.Tensor]]:
    """Outputs of several micro-batches -> a list indexed like the original sequences
    (None for sequences in none of `batches`, e.g. those of other ranks)."""
    out: list[Optional[torch.Tensor]] = [None] * num_sequences
    for x, batch in zip(outputs, batches, strict=True):
        for i, part in zip(batch.indices, unpack(x, batch)):
            out[i] = part
    return out
