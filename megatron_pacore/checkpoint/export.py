"""Live TP/PP-sharded model -> Hugging Face-named tensors, in buckets of bounded bytes.

    actor, info = build_actor(hf_config, groups, opts)          # training.models
    for bucket in export_buckets(actor, info, groups, bucket_bytes=512 << 20, dtype=torch.bfloat16):
        engine_reload(bucket)      # e.g. worker.model_runner.reload_weights(weights_iterator=...)

The family table drives it, as it drives the converter: for each Megatron tensor (in the
table's layer order: embedding, layer 0 ... layer L-1, final norm, output layer) the stage
that owns it all-gathers the TP shards, undoes the per-shard layouts (`Mapping.unshard`) and
splits it into the Hugging Face tensors (`Mapping.hf_tensors`: QKV de-interleaved, fc1 into
gate/up, vocabulary trimmed). With
PP > 1 the owner broadcasts them over the pipeline group, so that every rank yields the full
model, which is what a colocated inference engine on each rank needs. A tied output layer is
not exported (Hugging Face ties it to the embedding).

Memory: one bucket (<= bucket_bytes, or a single larger tensor) plus one gathered tensor.
All ranks of the model-parallel group must iterate the generator together (collectives).

`export_buckets` returns an `ActorExport`: iterated, it is the bucket stream above (the gather
path, which every engine takes: any engine TP, PP > 1, the 'ipc' / 'nccl' transfers to other
processes). It also carries what a colocated engine needs to choose the per-rank path
instead (`rank_export`: no gather, each rank converts its own shard), which it takes when its
TP group is the actor's and PP = 1 (`inference.rollout.ColocatedVLLM.sync_weights`).
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.distributed as dist

from megatron_pacore.checkpoint.hf_io import expected_shapes
from megatron_pacore.checkpoint.loader import megatron_parameters
from megatron_pacore.checkpoint.mapping import Table
from megatron_pacore.checkpoint.rank_export import EngineLayout, export_rank_shards
from megatron_pacore.hf_config import dims_of
from megatron_pacore.training.models import ModelInfo, unwrap
from megatron_pacore.training.parallel import ParallelGroups


def _stage_layers(gpt, groups: ParallelGroups) -> list[range]:
    """Global layer range held by each pipeline stage, in stage order."""
    layers = gpt.decoder.layers
    mine = (layers[0].layer_number - 1, len(layers)) if len(layers) else (0, 0)
    if groups.config.pp == 1:
        return [range(mine[0], mine[0] + mine[1])]
    allg: list = [None] * groups.config.pp
    dist.all_gather_object(allg, mine, group=groups.pp_group)
    return [range(o, o + n) for o, n in allg]


def export_hf_tensors(model, info: ModelInfo, groups: ParallelGroups,
                      dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (Hugging Face name, full tensor) for the whole actor on every rank.

    Tensors have Hugging Face shapes (unpadded vocabulary) and `dtype` (default: the model's).

    Raises:
        ValueError: the model is a critic (its value head has no Hugging Face counterpart).
    """
    if info.is_critic:
        raise ValueError("export_hf_tensors: only the actor has Hugging Face weights; this model is the critic")
    gpt = unwrap(model)
    cfg = info.hf_config
    table = Table.for_config(cfg).stored()
    dims = dims_of(cfg, info.padded_vocab_size)
    hf_shapes = expected_shapes(cfg)
    tp, pp = groups.config.tp, groups.config.pp
    stages = _stage_layers(gpt, groups)
    pp_ranks = dist.get_process_group_ranks(groups.pp_group) if pp > 1 else [dist.get_rank()]
    params = megatron_parameters(gpt, info)
    out_dtype = dtype or next(gpt.parameters()).dtype
    steps = table.by_layer()
    for i, (layer, mappings) in enumerate(steps):
        if layer is not None:
            owner = next(s for s, rng in enumerate(stages) if layer in rng)
        else:  # before the layers: the first stage (embedding); after them: the last
            owner = 0 if i == 0 else pp - 1
        for m in mappings:
            names = m.hf_names(layer)
            if groups.pp_rank == owner:
                shard = params[m.megatron_name(layer)][1].detach()
                if m.tp_axis is not None and tp > 1:
                    parts = [torch.empty_like(shard) for _ in range(tp)]
                    dist.all_gather(parts, shard.contiguous(), group=groups.tp_group)
                    shard = m.unshard(parts)
                tensors = [t.to(out_dtype).contiguous() for t in m.hf_tensors(shard, dims)]
            else:
                tensors = [torch.empty(hf_shapes[n], dtype=out_dtype, device=groups.device) for n in names]
            if pp > 1:
                for t in tensors:
                    dist.broadcast(t, src=pp_ranks[owner], group=groups.pp_group)
            yield from zip(names, tensors)


class ActorExport:
    """The actor's weights for one sync: the bucket stream, or per-rank shards on request.

    Iterating it yields `export_hf_tensors` grouped into lists of at most `bucket_bytes`
    (a larger tensor alone), full Hugging Face tensors on every rank (the gather path).
    `rank_shards(engine_layout)` yields instead this rank's slices (`rank_export`), for an
    engine whose TP group is `tp_ranks` and which holds no pipeline split (`pp == 1`).
    Use one or the other, once: each is one pass of collectives over the model-parallel group.
    """

    def __init__(self, model, info: ModelInfo, groups: ParallelGroups, bucket_bytes: int,
                 dtype: Optional[torch.dtype]) -> None:
        self.model, self.info, self.groups, self.bucket_bytes = model, info, groups, bucket_bytes
        self.dtype: torch.dtype = dtype or next(unwrap(model).parameters()).dtype
        """The dtype every exported tensor has."""
        self.tp, self.pp = groups.config.tp, groups.config.pp
        self.tp_rank = groups.tp_rank
        self.tp_ranks: list[int] = (dist.get_process_group_ranks(groups.tp_group)
                                    if dist.is_initialized() else [0])
        """Global ranks of this rank's TP group, in TP-rank order."""
        self._it: Optional[Iterator[list[tuple[str, torch.Tensor]]]] = None

    def __iter__(self) -> Iterator[list[tuple[str, torch.Tensor]]]:
        return self

    def __next__(self) -> list[tuple[str, torch.Tensor]]:
        if self._it is None:
            self._it = self._buckets()
        return next(self._it)

    def close(self) -> None:
        if self._it is not None:
            self._it.close()

    def _buckets(self) -> Iterator[list[tuple[str, torch.Tensor]]]:
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        for name, t in export_hf_tensors(self.model, self.info, self.groups, self.dtype):
            nbytes = t.numel() * t.element_size()
            if bucket and size + nbytes > self.bucket_bytes:
                yield bucket
                bucket, size = [], 0
            bucket.append((name, t))
            size += nbytes
        if bucket:
            yield bucket

    def rank_shards(self, engine_layout: EngineLayout):
        """(HF name, `HFShard`) of this rank's engine slices (`rank_export.export_rank_shards`)."""
        return export_rank_shards(self.model, self.info, self.groups, engine_layout, self.dtype)


def export_buckets(model, info: ModelInfo, groups: ParallelGroups, bucket_bytes: int = 512 << 20,
                   dtype: Optional[torch.dtype] = None) -> ActorExport:
    """The actor's export for one weight sync (`ActorExport`): iterate it for buckets of
    Hugging Face-named full tensors of at most `bucket_bytes` (a larger tensor alone).

    Raises:
        ValueError: bucket_bytes < 1.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    return ActorExport(model, info, groups, bucket_bytes, dtype)
