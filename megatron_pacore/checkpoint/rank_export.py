"""Per-rank weight-sync export: each TP rank's own Megatron shard as the engine's slices, no gather.

    want = engine_layout                  # (HF name, full HF shape) -> (axis, start, stop)
    for name, shard in export_rank_shards(actor, info, groups, want, dtype=torch.bfloat16):
        ...                               # shard: `HFShard` of the slice this rank's engine holds

For a colocated engine whose tensor-parallel group is the actor's (same size, the same
processes: vLLM external launcher with tensor_parallel_size = the actor's TP), each rank
already holds what its engine slice needs, in another layout. The family table's mappings
turn the rank's shard into its slices of the Hugging Face tensors (`Mapping.to_hf_shard`:
QKV de-interleaved into the rank's q / k / v rows, fc1 into gate / up rows, row-parallel
columns and replicated tensors as they are), as views: nothing is gathered or copied.

Where the engine's slice differs from the actor's (Megatron pads the vocabulary to a
multiple of 128 x TP, vLLM to 64 with its own split, so the embedding / output-layer
boundaries between ranks differ), the rows are re-sliced inside the TP group: each rank
sends only the rows another rank's engine wants and it holds (point-to-point, e.g. 64 rows of
the Qwen2.5 embedding at TP=2), the rest stays views. Any other difference (a split along
another axis, an engine slice no actor rank holds) is a ValueError: that engine needs the
gather path (`export.export_buckets`).

Applies with PP = 1 only (every rank holds all layers); all ranks of the TP group must
iterate together (one small all-gather of the layout first, then point-to-point exchanges).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist

from megatron_pacore.checkpoint.hf_io import expected_shapes
from megatron_pacore.checkpoint.loader import megatron_parameters
from megatron_pacore.checkpoint.mapping import Table
from megatron_pacore.types import HFShard
from megatron_pacore.hf_config import dims_of
from megatron_pacore.training.models import ModelInfo, unwrap
from megatron_pacore.training.parallel import ParallelGroups

Span = tuple[Optional[int], int, int]
"""(axis or None for the whole tensor, start, stop) of one rank's slice of an HF tensor."""
EngineLayout = Callable[[str, tuple[int, ...]], Span]
"""(HF name, full HF shape) -> the span this rank's engine holds of that tensor."""


def _rank_shards(model, info: ModelInfo, groups: ParallelGroups) -> list[tuple[str, HFShard]]:
    """(HF name, this rank's HFShard) for every stored tensor, in the table's layer order."""
    gpt = unwrap(model)
    cfg = info.hf_config
    dims = dims_of(cfg, info.padded_vocab_size)
    params = megatron_parameters(gpt, info)
    tp, rank = groups.config.tp, groups.tp_rank
    out = []
    for layer, mappings in Table.for_config(cfg).stored().by_layer():
        for m in mappings:
            local = params[m.megatron_name(layer)][1].detach()
            out += zip(m.hf_names(layer), m.to_hf_shard(local, dims, tp, rank))
    return out


def _overlap(a: Span, b: Span) -> tuple[int, int]:
    return max(a[1], b[1]), min(a[2], b[2])


def _reslice(name: str, shard: HFShard, held: list[Span], wanted: list[Span], me: int,
             groups: ParallelGroups) -> HFShard:
    """The rows `wanted[me]` of `name` (axis 0) from the ranks that hold them (`held`):
    views of this rank's rows plus the rows received from the others."""
    w_axis, w0, w1 = wanted[me]
    local = shard.parts[0] if len(shard.parts) == 1 else torch.cat(shard.parts)
    h0 = held[me][1]
    reqs, pieces, sent = [], [], []
    for r in range(len(held)):
        peer = dist.get_global_rank(groups.tp_group, r)
        lo, hi = _overlap(held[me], wanted[r])
        if r != me and hi > lo:
            sent.append(local[lo - h0: hi - h0].contiguous())  # alive until the sends complete
            reqs.append(dist.isend(sent[-1], peer, group=groups.tp_group))
        lo, hi = _overlap(held[r], wanted[me])
        if hi <= lo:
            continue
        if r == me:
            pieces.append((lo, local[lo - h0: hi - h0]))
        else:
            buf = torch.empty((hi - lo, *local.shape[1:]), dtype=local.dtype, device=local.device)
            reqs.append(dist.irecv(buf, peer, group=groups.tp_group))
            pieces.append((lo, buf))
    for req in reqs:
        req.wait()
    pieces.sort(key=lambda p: p[0])
    row = w0
    for lo, t in pieces:
        if lo != row:
            break
        row += t.shape[0]
    if row != w1:
        raise ValueError(f"{name}: the engine's rows [{w0}, {w1}) are not all held by the actor's TP "
                         f"group (actor ranks hold {held}); use the gather path (export_buckets)")
    return HFShard(w_axis, w0, w1, tuple(t for _, t in pieces))


def export_rank_shards(model, info: ModelInfo, groups: ParallelGroups, engine_layout: EngineLayout,
                       dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, HFShard]]:
    """Yield (HF name, `HFShard` of the slice this rank's engine holds), table order.

    `engine_layout(name, full_shape)` says which slice the engine holds on this rank. Parts
    are views of the actor's parameters where the dtype is `dtype` already (default: the
    model's), otherwise cast copies; the consumer must copy them before the actor changes.

    Raises:
        ValueError: PP > 1, the critic, or an engine slice the actor's TP group cannot give
            without a gather (named), checked before anything is yielded where it can be.
    """
    if info.is_critic:
        raise ValueError("export_rank_shards: only the actor has Hugging Face weights; this model is the critic")
    if groups.config.pp != 1:
        raise ValueError(f"export_rank_shards needs PP=1 (each rank holding every layer), got pp={groups.config.pp}; "
                         "use export_buckets")
    shards = _rank_shards(model, info, groups)
    shapes = expected_shapes(info.hf_config)
    mine = {name: (s.span, tuple(engine_layout(name, tuple(shapes[name])))) for name, s in shards}
    tp = groups.config.tp
    every: list = [None] * tp
    dist.all_gather_object(every, mine, group=groups.tp_group)
    me = groups.tp_rank
    plan: dict[str, Optional[tuple[list[Span], list[Span]]]] = {}
    for name, s in shards:
        held = [every[r][name][0] for r in range(tp)]
        wanted = [every[r][name][1] for r in range(tp)]
        if held == wanted:
            plan[name] = None
        elif all(h[0] == 0 and w[0] == 0 for h, w in zip(held, wanted)):
            plan[name] = (held, wanted)  # rows split differently (the vocabulary's padding)
        else:
            raise ValueError(f"{name}: the engine's slices {wanted} (axis, start, stop per rank) and the "
                             f"actor's {held} differ in more than their row boundaries; use the gather "
                             "path (export_buckets)")
    out_dtype = dtype or next(unwrap(model).parameters()).dtype
    for name, s in shards:
        if any(p.dtype != out_dtype for p in s.parts):
            s = HFShard(s.axis, s.start, s.stop, tuple(p.to(out_dtype) for p in s.parts))
        if plan[name] is not None:
            s = _reslice(name, s, *plan[name], me, groups)
        yield name, s
