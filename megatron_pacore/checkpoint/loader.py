"""Load a Hugging Face checkpoint straight into this rank's Megatron model shard.

Each rank reads, tensor by tensor, only what its pipeline stage holds, applies the family
table's transform and keeps its tensor-parallel slice: peak extra memory is one global tensor
(the largest is the embedding, V x h). The critic's value head has no Hugging Face
counterpart and keeps its own initialisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from megatron_pacore.checkpoint.hf_io import HFCheckpoint, dims_of
from megatron_pacore.checkpoint.mapping import OUTPUT, canonical_name, rule_index
from megatron_pacore.checkpoint.transforms import shard, to_global


def layer_offset(model) -> int:
    """Global index of this pipeline stage's first layer (0 on the first stage)."""
    layers = model.decoder.layers
    return layers[0].layer_number - 1 if len(layers) else 0


def unwrap(model):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def megatron_names(model) -> dict[str, str]:
    """canonical name -> local parameter name, for this rank's stage."""
    model = unwrap(model)
    offset = layer_offset(model)
    skip_head = getattr(model, "is_critic", False)
    out = {}
    for name, _ in model.named_parameters():
        cname = canonical_name(name, offset)
        if skip_head and cname.startswith("output_layer."):
            continue
        out[cname] = name
    return out


@torch.no_grad()
def load_hf_weights(model, hf: Union[str, Path, HFCheckpoint], tp: int, tp_rank: int) -> int:
    """Copy a Hugging Face checkpoint into `model` (this rank's stage and TP shard).

    Returns the number of parameters loaded.

    Raises:
        ValueError: the checkpoint misses tensors or has unknown ones, a shape differs, or
            the model has a parameter the family table does not cover.
    """
    hf = hf if isinstance(hf, HFCheckpoint) else HFCheckpoint(hf)
    hf.check()
    gpt = unwrap(model)
    cfg = hf.config
    index = rule_index(hf.family, hf.tie_word_embeddings, cfg.num_hidden_layers)
    dims = dims_of(cfg, gpt.padded_vocab_size)
    params = dict(gpt.named_parameters())
    count = 0
    for cname, local in megatron_names(gpt).items():
        if cname not in index:
            raise ValueError(f"Megatron parameter {local} ({cname}) is not in the {hf.family.name} table")
        rule, layer = index[cname]
        if cname == OUTPUT and hf.tie_word_embeddings and not getattr(gpt, "share_embeddings_and_output_weights", False):
            raise ValueError("checkpoint ties embeddings but the model does not")
        full = to_global(rule, [hf.get(n) for n in rule.hf_names(layer)], dims)
        piece = shard(rule, full, tp, tp_rank)
        param = params[local]
        if tuple(piece.shape) != tuple(param.shape):
            raise ValueError(f"{cname}: checkpoint gives shape {tuple(piece.shape)} for this rank, "
                             f"model has {tuple(param.shape)}")
        param.data.copy_(piece.to(param.dtype))
        count += 1
    return count
