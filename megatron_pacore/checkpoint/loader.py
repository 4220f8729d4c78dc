"""Load a Hugging Face checkpoint straight into this rank's Megatron model shard.

Each rank reads, tensor by tensor, only what its pipeline stage holds, builds the global
tensor with the family table's mapping (`from_hf`) and keeps its tensor-parallel slice
(`shard`): peak extra memory is one global tensor (the largest is the embedding, Vp x h).
The checkpoint is checked first: every tensor it holds must be one the table reads. The
critic's value head has no Hugging Face counterpart and keeps its own initialisation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from megatron_pacore.checkpoint.hf_io import HFCheckpoint
from megatron_pacore.checkpoint.mapping import canonical_name
from megatron_pacore.hf_config import dims_of
from megatron_pacore.training.models import ModelInfo, unwrap


def layer_offset(model) -> int:
    """Global index of this pipeline stage's first layer (0 on the first stage)."""
    layers = unwrap(model).decoder.layers
    return layers[0].layer_number - 1 if len(layers) else 0


def megatron_parameters(model, info: ModelInfo) -> dict[str, tuple[str, torch.nn.Parameter]]:
    """canonical Megatron name -> (local parameter name, parameter) for this rank's stage: every
    parameter the HF <-> Megatron tables map (the critic's value head is not one of them)."""
    module = unwrap(model)
    named = module.gpt_named_parameters() if info.is_critic else module.named_parameters()
    offset = layer_offset(module)
    return {canonical_name(name, offset): (name, p) for name, p in named}


@torch.no_grad()
def load_hf_weights(model, info: ModelInfo, hf: Union[str, Path, HFCheckpoint], tp: int, tp_rank: int) -> int:
    """Copy a Hugging Face checkpoint into `model` (this rank's stage and TP shard).

    Returns the number of parameters loaded.

    Raises:
        ValueError: the checkpoint misses tensors, holds tensors the table does not read, a
            shape differs, or the model has a parameter the family table does not cover.
    """
    hf = hf if isinstance(hf, HFCheckpoint) else HFCheckpoint(hf)
    hf.check()
    if hf.family != info.family:
        raise ValueError(f"{hf.path} holds a {hf.family.name} model; this model is {info.family.name}")
    table = hf.table
    if table.tied and not info.tied and not info.is_critic:
        raise ValueError("checkpoint ties embeddings but the model does not")
    index = table.index()
    dims = dims_of(hf.config, info.padded_vocab_size)
    count = 0
    for cname, (local, param) in megatron_parameters(model, info).items():
        if cname not in index:
            raise ValueError(f"Megatron parameter {local} ({cname}) is not in the {hf.family.name} table")
        mapping, layer = index[cname]
        full = mapping.from_hf(hf, mapping.hf_names(layer), dims)
        piece = mapping.shard(full, tp, tp_rank)
        if tuple(piece.shape) != tuple(param.shape):
            raise ValueError(f"{cname}: checkpoint gives shape {tuple(piece.shape)} for this rank, "
                             f"model has {tuple(param.shape)}")
        param.data.copy_(piece.to(param.dtype))
        count += 1
    return count

