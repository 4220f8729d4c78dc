"""The named special cases of the mapping tables, as pure tensor functions.

Shapes use: V vocabulary, Vp padded vocabulary, h hidden size, d head dim, nq query heads,
ng query groups (key/value heads), f MLP intermediate size, T tensor-parallel size.

HF -> Megatron goes in two steps, so that the converter can write TP-independent global
tensors and the loader can cut one rank's shard:
  `to_global(rule, tensors, ...)`   HF tensors -> the global Megatron tensor (TP=1 layout,
                                    which is also the dist_checkpointing layout);
  `shard(rule, global, tp, rank)`   global tensor -> one TP rank's slice.
Megatron -> HF inverts them: `unshard` (concatenate TP shards) then `to_hf`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_pacore.checkpoint.mapping import Rule


@dataclass(frozen=True)
class Dims:
    """The sizes the transforms need, read from a Hugging Face config."""

    num_heads: int
    num_groups: int
    head_dim: int
    vocab_size: int
    padded_vocab_size: int

    @property
    def heads_per_group(self) -> int:
        return self.num_heads // self.num_groups


def padded_vocab_size(vocab_size: int, tp: int, divisible_by: int = 128) -> int:
    """Smallest multiple of divisible_by * tp that is >= vocab_size (Megatron-LM's rule)."""
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


def interleave_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: Dims) -> torch.Tensor:
    """q [nq*d, ...], k [ng*d, ...], v [ng*d, ...] -> [ng*(nq/ng + 2)*d, ...].

    Megatron's fused QKV rows are grouped per query group g: the nq/ng query heads of g, then
    k_g, then v_g. Works for weights ([rows, h]) and biases ([rows]).
    """
    ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
    rest = q.shape[1:]
    if q.shape[0] != ng * hpg * d or k.shape[0] != ng * d or v.shape[0] != ng * d:
        raise ValueError(
            f"q/k/v rows {q.shape[0]}/{k.shape[0]}/{v.shape[0]} do not match heads={dims.num_heads}, "
            f"kv_heads={ng}, head_dim={d}"
        )
    qg = q.reshape(ng, hpg * d, *rest)
    kg = k.reshape(ng, d, *rest)
    vg = v.reshape(ng, d, *rest)
    return torch.cat([qg, kg, vg], dim=1).reshape(ng * (hpg + 2) * d, *rest)


def split_qkv(qkv: torch.Tensor, dims: Dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `interleave_qkv`: [ng*(nq/ng + 2)*d, ...] -> q, k, v."""
    ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
    rest = qkv.shape[1:]
    grouped = qkv.reshape(ng, (hpg + 2) * d, *rest)
    q, k, v = torch.split(grouped, [hpg * d, d, d], dim=1)
    return (q.reshape(ng * hpg * d, *rest).contiguous(), k.reshape(ng * d, *rest).contiguous(),
            v.reshape(ng * d, *rest).contiguous())


def pad_vocab(weight: torch.Tensor, padded: int) -> torch.Tensor:
    """[V, h] -> [Vp, h] with zero rows appended."""
    if weight.shape[0] > padded:
        raise ValueError(f"vocabulary of {weight.shape[0]} rows exceeds padded size {padded}")
    if weight.shape[0] == padded:
        return weight
    return torch.cat([weight, weight.new_zeros(padded - weight.shape[0], *weight.shape[1:])])


def to_global(rule: Rule, tensors: list[torch.Tensor], dims: Dims) -> torch.Tensor:
    """Hugging Face tensors of one rule -> the global (TP=1) Megatron tensor."""
    if rule.transform == "qkv":
        return interleave_qkv(*tensors, dims)
    if rule.transform == "gate_up":
        return torch.cat(tensors, dim=0)
    if rule.transform in ("vocab", "tied"):
        return pad_vocab(tensors[0], dims.padded_vocab_size)
    return tensors[0]


def shard(rule: Rule, full: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    """Global Megatron tensor -> the slice held by tensor-parallel `rank` of `tp`.

    gate_up: fc1 [2f, h] = [gate; up] -> [gate_r; up_r] of [2f/T, h], the per-shard layout
    Megatron's fused SwiGLU expects. Everything else: contiguous chunk `rank` along tp_axis.
    """
    if rule.tp_axis is None or tp == 1:
        return full
    if rule.transform == "gate_up":
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp, dim=0)[rank], up.chunk(tp, dim=0)[rank]], dim=0)
    size = full.shape[rule.tp_axis]
    if size % tp:
        raise ValueError(f"{rule.megatron}: axis {rule.tp_axis} of size {size} does not split over tp={tp}")
    return full.chunk(tp, dim=rule.tp_axis)[rank]


def unshard(rule: Rule, shards: list[torch.Tensor]) -> torch.Tensor:
    """TP shards (rank order) -> the global Megatron tensor; inverse of `shard`."""
    if rule.tp_axis is None or len(shards) == 1:
        return shards[0]
    if rule.transform == "gate_up":
        halves = [s.chunk(2, dim=0) for s in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(shards, dim=rule.tp_axis)


def to_hf(rule: Rule, full: torch.Tensor, dims: Dims) -> list[torch.Tensor]:
    """Global Megatron tensor -> the Hugging Face tensors of the rule, in `rule.hf` order."""
    if rule.transform == "qkv":
        return list(split_qkv(full, dims))
    if rule.transform == "gate_up":
        return [t.contiguous() for t in full.chunk(2, dim=0)]
    if rule.transform in ("vocab", "tied"):
        return [full[: dims.vocab_size].contiguous()]
    return [full]
