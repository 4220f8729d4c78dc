"""The kinds of HF <-> Megatron tensor mapping, one class each; the family tables list them.

A mapping ties one Megatron tensor to the Hugging Face tensor(s) it is made of and owns
everything about that pair:

  global_shape(hf_shapes, dims)   shape of the global (TP=1) Megatron tensor, which is also the
                                  dist_checkpointing layout;
  from_hf(src, names, dims, out)  HF rows read straight into their place in the global tensor
                                  (no intermediate copies; `src` is an `HFSource`);
  to_hf(full, dims)               the global tensor as HF tensors, each a list of row blocks
                                  (views of `full`, for `HFStreamWriter.write_parts`);
  hf_tensors(full, dims)          the same as contiguous tensors;
  shard(full, tp, rank)           one tensor-parallel rank's slice;  unshard(shards) inverts it;
  to_hf_shard(local, dims, tp, rank)
                                  one rank's Megatron shard as that rank's slice of each HF
                                  tensor (`HFShard`: rows or columns [start, stop) along an axis,
                                  as views of `local`), with no gather: what a colocated engine
                                  of the same TP (vLLM) holds per rank, or close to it (the
                                  vocabulary's padding differs; `checkpoint.rank_export`).

Kinds (shapes use `hf_config.Dims`' letters, f the MLP width, T the TP size):
  Copy        same tensor, optionally split along `tp_axis`.
  QKV         q [nq*d, ...], k [ng*d, ...], v [ng*d, ...] -> [ng*(nq/ng + 2)*d, ...]: rows grouped
              per query group g, [q heads of g; k_g; v_g] (Megatron's fused layout); TP splits
              whole groups. Weights and biases alike.
  GatedMLP    gate [f, h], up [f, h] -> fc1 [2f, h] = [gate; up] globally; each TP shard is
              [gate_r; up_r] of [2f/T, h], the per-shard layout Megatron's fused SwiGLU expects.
  VocabPadded [V, h] -> [Vp, h], zero rows appended; trimmed again on the way back.
  Tied        the output layer of a tied model: read from the input embedding, padded like it,
              and with no tensor of its own in a Megatron checkpoint or an HF export.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Protocol

import torch

from megatron_pacore.hf_config import Dims
from megatron_pacore.types import HFShard

Shape = tuple[int, ...]


class HFSource(Protocol):
    """Where Hugging Face tensors are read from (`hf_io.HFCheckpoint`, `TensorSource`)."""

    def shape(self, name: str) -> Shape: ...

    def get_dtype(self, name: str) -> torch.dtype: ...

    def read_rows(self, name: str, out: torch.Tensor, start: int = 0) -> torch.Tensor: ...


class TensorSource:
    """An `HFSource` over tensors in memory, {HF name: tensor}."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def shape(self, name: str) -> Shape:
        return tuple(self.tensors[name].shape)

    def get_dtype(self, name: str) -> torch.dtype:
        return self.tensors[name].dtype

    def read_rows(self, name: str, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        t = self.tensors[name]
        out.copy_(t[start: start + out.shape[0]] if t.dim() else t)
        return out


def _read(src: HFSource, name: str, out: torch.Tensor, start: int = 0) -> None:
    """Rows [start, start + len(out)) of `name` into `out`, cast if the stored dtype differs."""
    if src.get_dtype(name) == out.dtype:
        src.read_rows(name, out, start)
    else:
        out.copy_(src.read_rows(name, torch.empty(out.shape, dtype=src.get_dtype(name)), start))


@dataclass(frozen=True)
class Mapping:
    """One Megatron tensor and the Hugging Face tensors it is built from (kind: `Copy`)."""

    megatron: str
    """Canonical Megatron name; `{layer}` stands for the global layer index."""
    hf: tuple[str, ...]
    """Hugging Face names, in the order the mapping takes them."""
    tp_axis: Optional[int] = None
    """Axis split across tensor-parallel ranks; None when replicated."""

    stored: ClassVar[bool] = True
    """Has a tensor of its own in Megatron checkpoints and in Hugging Face exports."""

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.megatron

    def megatron_name(self, layer: Optional[int] = None) -> str:
        return self.megatron.format(layer=layer) if self.per_layer else self.megatron

    def hf_names(self, layer: Optional[int] = None) -> tuple[str, ...]:
        return tuple(n.format(layer=layer) for n in self.hf) if self.per_layer else self.hf

    @property
    def stored_key(self) -> str:
        """Key under which dist_checkpointing stores the tensor (layers stacked on axis 0)."""
        return self.megatron.replace("{layer}.", "") if self.per_layer else self.megatron

    def global_shape(self, hf_shapes: list[Shape], dims: Dims) -> Shape:
        return tuple(hf_shapes[0])

    def from_hf(self, src: HFSource, names: tuple[str, ...], dims: Dims,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The global Megatron tensor, read into `out` (contiguous, of `global_shape`) or into a
        new tensor of the first HF tensor's dtype."""
        shape = self.global_shape([src.shape(n) for n in names], dims)
        if out is None:
            out = torch.empty(shape, dtype=src.get_dtype(names[0]))
        elif tuple(out.shape) != shape or not out.is_contiguous():
            raise ValueError(f"{names}: buffer {tuple(out.shape)} for global shape {shape}")
        self._read_into(src, names, dims, out)
        return out

    def _read_into(self, src: HFSource, names: tuple[str, ...], dims: Dims, out: torch.Tensor) -> None:
        _read(src, names[0], out)

    def to_hf(self, full: torch.Tensor, dims: Dims) -> list[list[torch.Tensor]]:
        return [[full]]

    def hf_tensors(self, full: torch.Tensor, dims: Dims) -> list[torch.Tensor]:
        """`to_hf` with each Hugging Face tensor as one contiguous tensor."""
        return [parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)
                for parts in self.to_hf(full, dims)]

    def shard(self, full: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
        if self.tp_axis is None or tp == 1:
            return full
        size = full.shape[self.tp_axis]
        if size % tp:
            raise ValueError(f"{self.megatron}: axis {self.tp_axis} of size {size} does not split over tp={tp}")
        return full.chunk(tp, dim=self.tp_axis)[rank]

    def unshard(self, shards: list[torch.Tensor]) -> torch.Tensor:
        """TP shards (rank order) -> the global tensor; inverse of `shard`."""
        if self.tp_axis is None or len(shards) == 1:
            return shards[0]
        return torch.cat(shards, dim=self.tp_axis)

    def to_hf_shard(self, local: torch.Tensor, dims: Dims, tp: int, rank: int) -> list[HFShard]:
        """This rank's shard `local` (of `shard(full, tp, rank)`'s shape) as its slice of each
        HF tensor, in `hf` order: a split tensor is the indices [rank*n, (rank+1)*n) of
        `tp_axis` (n = local size), a replicated one the whole tensor."""
        if self.tp_axis is None:
            return [HFShard(None, 0, local.shape[0], (local,))]
        n = local.shape[self.tp_axis]
        return [HFShard(self.tp_axis, rank * n, (rank + 1) * n, (local,))]


Copy = Mapping


@dataclass(frozen=True)
class QKV(Mapping):
    """q, k, v -> Megatron's fused QKV, interleaved per query group."""

    def global_shape(self, hf_shapes: list[Shape], dims: Dims) -> Shape:
        q, k, v = (s[0] for s in hf_shapes)
        ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
        if q != ng * hpg * d or k != ng * d or v != ng * d:
            raise ValueError(f"{self.megatron}: q/k/v rows {q}/{k}/{v} do not match "
                             f"heads={dims.num_heads}, kv_heads={ng}, head_dim={d}")
        return (q + k + v, *hf_shapes[0][1:])

    def _read_into(self, src, names, dims, out) -> None:
        ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
        q, k, v = names
        grouped = out.view(ng, (hpg + 2) * d, *out.shape[1:])
        for g in range(ng):
            _read(src, q, grouped[g, : hpg * d], g * hpg * d)
            _read(src, k, grouped[g, hpg * d: (hpg + 1) * d], g * d)
            _read(src, v, grouped[g, (hpg + 1) * d:], g * d)

    def to_hf(self, full, dims) -> list[list[torch.Tensor]]:
        ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
        grouped = full.view(ng, (hpg + 2) * d, *full.shape[1:])
        return [[grouped[g, : hpg * d] for g in range(ng)],
                [grouped[g, hpg * d: (hpg + 1) * d] for g in range(ng)],
                [grouped[g, (hpg + 1) * d:] for g in range(ng)]]

    def to_hf_shard(self, local, dims, tp, rank) -> list[HFShard]:
        """The rank's ng/T query groups [q heads of g; k_g; v_g] -> rows of q [nq/T*d], k and
        v [ng/T*d] starting at the rank's first group (one block per group, views)."""
        hpg, d = dims.heads_per_group, dims.head_dim
        ng = local.shape[0] // ((hpg + 2) * d)
        if ng * (hpg + 2) * d != local.shape[0] or ng * tp != dims.num_groups:
            raise ValueError(f"{self.megatron}: shard of {local.shape[0]} rows is not {dims.num_groups}/{tp} "
                             f"query groups of {(hpg + 2) * d} rows")
        blocks = self.to_hf(local, Dims(dims.num_heads // tp, ng, d, dims.vocab_size, dims.padded_vocab_size))
        q0, kv0 = rank * ng * hpg * d, rank * ng * d
        return [HFShard(0, q0, q0 + ng * hpg * d, tuple(blocks[0])),
                HFShard(0, kv0, kv0 + ng * d, tuple(blocks[1])),
                HFShard(0, kv0, kv0 + ng * d, tuple(blocks[2]))]


@dataclass(frozen=True)
class GatedMLP(Mapping):
    """gate, up -> fc1: [gate; up] globally, [gate_r; up_r] per TP shard."""

    def global_shape(self, hf_shapes, dims) -> Shape:
        return (sum(s[0] for s in hf_shapes), *hf_shapes[0][1:])

    def _read_into(self, src, names, dims, out) -> None:
        row = 0
        for n in names:
            rows = src.shape(n)[0]
            _read(src, n, out[row: row + rows])
            row += rows

    def to_hf(self, full, dims) -> list[list[torch.Tensor]]:
        return [[t] for t in full.chunk(2, dim=0)]

    def shard(self, full, tp, rank) -> torch.Tensor:
        if self.tp_axis is None or tp == 1:
            return full
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp, dim=0)[rank], up.chunk(tp, dim=0)[rank]], dim=0)

    def unshard(self, shards) -> torch.Tensor:
        if self.tp_axis is None or len(shards) == 1:
            return shards[0]
        halves = [s.chunk(2, dim=0) for s in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)

    def to_hf_shard(self, local, dims, tp, rank) -> list[HFShard]:
        """[gate_r; up_r] of [2f/T, h] -> rows [rank*f/T, (rank+1)*f/T) of gate and of up."""
        if self.tp_axis is None:
            tp, rank = 1, 0
        gate, up = local.chunk(2, dim=0)
        n = gate.shape[0]
        return [HFShard(0, rank * n, (rank + 1) * n, (gate,)), HFShard(0, rank * n, (rank + 1) * n, (up,))]


@dataclass(frozen=True)
class VocabPadded(Mapping):
    """[V, h] -> [Vp, h] with zero rows appended; trimmed to V on the way back."""

    def global_shape(self, hf_shapes, dims) -> Shape:
        rows = hf_shapes[0][0]
        if rows > dims.padded_vocab_size:
            raise ValueError(f"vocabulary of {rows} rows exceeds padded size {dims.padded_vocab_size}")
        return (dims.padded_vocab_size, *hf_shapes[0][1:])

    def _read_into(self, src, names, dims, out) -> None:
        rows = src.shape(names[0])[0]
        _read(src, names[0], out[:rows])
        out[rows:].zero_()

    def to_hf(self, full, dims) -> list[list[torch.Tensor]]:
        return [[full[: dims.vocab_size]]]

    def to_hf_shard(self, local, dims, tp, rank) -> list[HFShard]:
        """Rows [rank*Vp/T, (rank+1)*Vp/T) of the padded table, clipped to the V real rows
        (the last ranks may hold padding only: an empty slice)."""
        n = local.shape[0]
        start, stop = min(rank * n, dims.vocab_size), min((rank + 1) * n, dims.vocab_size)
        return [HFShard(0, start, stop, (local[: stop - start],))]


@dataclass(frozen=True)
class Tied(Mapping):
    """The output layer of a tied model: the input embedding, padded like it, with no tensor
    of its own (a Megatron checkpoint and an HF export hold only the embedding)."""

    stored: ClassVar[bool] = False
    global_shape = VocabPadded.global_shape
    _read_into = VocabPadded._read_into
    to_hf = VocabPadded.to_hf
    to_hf_shard = VocabPadded.to_hf_shard
