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
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.distributed as dist

from megatron_pacore.checkpoint.hf_io import expected_shapes
from megatron_pacore.checkpoint.loader import megatron_parameters
from megatron_pacore.checkpoint.mapping import Table
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


def export_buckets(model, info: ModelInfo, groups: ParallelGroups, bucket_bytes: int = 512 << 20,
                   dtype: Optional[torch.dtype] = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group `export_hf_tensors` into lists of at most `bucket_bytes` (a larger tensor alone).

    Raises:
        ValueError: bucket_bytes < 1.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in export_hf_tensors(model, info, groups, dtype):
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket
