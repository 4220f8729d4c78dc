"""Live TP/PP-sharded model -> Hugging Face-named tensors, in buckets of bounded bytes.

    for bucket in export_buckets(actor, groups, bucket_bytes=512 << 20, dtype=torch.bfloat16):
        engine_reload(bucket)      # e.g. worker.model_runner.reload_weights(weights_iterator=...)

The family table drives it, as it drives the converter: for each Megatron tensor (in the
order embedding, layer 0 ... layer L-1, final norm, output layer) the stage that owns it
all-gathers the TP shards, undoes the per-shard layouts (`unshard`) and splits it into the
Hugging Face tensors (`to_hf`: QKV de-interleaved, fc1 into gate/up, vocabulary trimmed). With
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

from megatron_pacore.checkpoint.hf_io import dims_of, expected_shapes
from megatron_pacore.checkpoint.loader import megatron_names, unwrap
from megatron_pacore.checkpoint.mapping import EMBEDDING, family_for
from megatron_pacore.checkpoint.transforms import to_hf, unshard
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


def export_hf_tensors(model, groups: ParallelGroups,
                      dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (Hugging Face name, full tensor) for the whole model on every rank.

    Tensors have Hugging Face shapes (unpadded vocabulary) and `dtype` (default: the model's).
    """
    gpt = unwrap(model)
    cfg = gpt.hf_config
    family = family_for(cfg)
    tie = bool(getattr(cfg, "tie_word_embeddings", False))
    dims = dims_of(cfg, gpt.padded_vocab_size)
    hf_shapes = expected_shapes(cfg)
    tp, pp = groups.config.tp, groups.config.pp
    stages = _stage_layers(gpt, groups)
    pp_ranks = dist.get_process_group_ranks(groups.pp_group) if pp > 1 else [dist.get_rank()]
    local = megatron_names(gpt)
    params = dict(gpt.named_parameters())
    model_dtype = next(iter(params.values())).dtype
    out_dtype = dtype or model_dtype
    rules = [r for r in family.rules_for(tie) if r.transform != "tied"]
    order = [(r, None) for r in rules if r.megatron == EMBEDDING]
    order += [(r, layer) for layer in range(cfg.num_hidden_layers) for r in rules if r.per_layer]
    order += [(r, None) for r in rules if not r.per_layer and r.megatron != EMBEDDING]
    for rule, layer in order:
        if layer is not None:
            owner = next(s for s, rng in enumerate(stages) if layer in rng)
        else:
            owner = 0 if rule.megatron == EMBEDDING else pp - 1
        names = rule.hf_names(layer)
        if groups.pp_rank == owner:
            shard = params[local[rule.megatron_name(layer)]].detach()
            if rule.tp_axis is not None and tp > 1:
                parts = [torch.empty_like(shard) for _ in range(tp)]
                dist.all_gather(parts, shard.contiguous(), group=groups.tp_group)
                shard = unshard(rule, parts)
            tensors = [t.to(out_dtype).contiguous() for t in to_hf(rule, shard, dims)]
        else:
            tensors = [torch.empty(hf_shapes[n], dtype=out_dtype, device=groups.device) for n in names]
        if pp > 1:
            for t in tensors:
                dist.broadcast(t, src=pp_ranks[owner], group=groups.pp_group)
        for name, t in zip(names, tensors):
            yield name, t


def export_buckets(model, groups: ParallelGroups, bucket_bytes: int = 512 << 20,
                   dtype: Optional[torch.dtype] = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group `export_hf_tensors` into lists of at most `bucket_bytes` (a larger tensor alone).

    Raises:
        ValueError: bucket_bytes < 1.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in export_hf_tensors(model, groups, dtype):
        nbytes = t.numel() * t.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, t))
        size += nbytes
    if bucket:
        yield bucket
