"""Streaming Hugging Face <-> Megatron distributed checkpoint conversion.

HF -> Megatron: every Megatron tensor of the family table becomes `Piece`s (one per layer for
layer tensors, stacked on a leading layer axis as Megatron stores them) made on demand from
the safetensors files and written through `dcp_stream.write_pieces`. Under torchrun the pieces
are dealt round-robin over the ranks, each writing its own file.

Megatron -> HF: for each layer (and the embedding, final norm and output layer) the global
tensors are read with `PieceReader` and turned back into Hugging Face tensors that
`HFStreamWriter` appends to pre-planned safetensors shards.

Memory bound (per process, on top of the interpreter): HF -> Megatron holds one piece, i.e.
at most 3 Hugging Face tensors of one layer plus their transformed copy (the largest is the
padded embedding, Vp x h); Megatron -> HF holds one layer's global tensors plus their HF
split, about 2 x (one layer), or the embedding and output layer (2 x Vp x h).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch

from megatron_pacore.checkpoint.dcp_stream import Piece, PieceReader, write_pieces
from megatron_pacore.checkpoint.dist import (
    CheckpointInfo, check_megatron, global_shape, hf_config_of, read_info, stored_key, stored_rules, write_info)
from megatron_pacore.checkpoint.hf_io import (
    HFCheckpoint, HFStreamWriter, copy_side_files, dims_of, expected_shapes)
from megatron_pacore.checkpoint.mapping import EMBEDDING, family_for
from megatron_pacore.checkpoint.transforms import Dims, padded_vocab_size, to_global, to_hf

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_layout(hf_config, tp: int, pp: int) -> None:
    """The same divisibility rules the model builder applies, raised before any writing."""
    groups = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    if tp < 1 or groups % tp:
        raise ValueError(f"--tp {tp} must divide num_key_value_heads={groups}")
    if pp < 1 or hf_config.num_hidden_layers % pp:
        raise ValueError(f"--pp {pp} must divide num_hidden_layers={hf_config.num_hidden_layers}")


def megatron_pieces(hf: HFCheckpoint, dims: Dims, dtype: Optional[torch.dtype]) -> list[Piece]:
    """Every piece of the Megatron checkpoint of `hf`, data made lazily."""
    pieces = []
    num_layers = hf.config.num_hidden_layers
    for rule in stored_rules(hf.family, hf.tie_word_embeddings):
        for layer in (range(num_layers) if rule.per_layer else [None]):
            names = rule.hf_names(layer)
            shape = global_shape(rule, [hf.shape(n) for n in names], dims)
            src_dtype = dtype or hf.get_dtype(names[0])

            def make(rule=rule, names=names, dt=src_dtype, stacked=rule.per_layer):
                t = to_global(rule, [hf.get(n) for n in names], dims).to(dt)
                return t.unsqueeze(0) if stacked else t

            if rule.per_layer:
                pieces.append(Piece(stored_key(rule), (num_layers, *shape), (layer,) + (0,) * len(shape),
                                    (1, *shape), src_dtype, make))
            else:
                pieces.append(Piece(stored_key(rule), shape, (0,) * len(shape), shape, src_dtype, make))
    return pieces


def hf_to_megatron(hf_dir: str | Path, out: str | Path, tp: int = 1, pp: int = 1,
                   dtype: Optional[str] = None, rank: int = 0, world: int = 1,
                   progress: Optional[Callable[[Piece], None]] = None) -> CheckpointInfo:
    """Convert a Hugging Face checkpoint into a Megatron distributed checkpoint, streaming.

    `tp` fixes the vocabulary padding (a multiple of 128 * tp; the checkpoint then loads at any
    TP dividing it); `pp` is checked and recorded. Under torch.distributed pass this rank's
    `rank`/`world`: the pieces are split between the ranks.

    Raises:
        ValueError: unknown family, missing/unknown/misshaped tensors, or a layout that does
            not divide the model.
    """
    hf = HFCheckpoint(hf_dir)
    hf.check()
    check_layout(hf.config, tp, pp)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    dims = dims_of(hf.config, padded_vocab_size(hf.config.vocab_size, tp))
    pieces = megatron_pieces(hf, dims, DTYPES.get(dtype))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_pieces(out, pieces[rank::world], on_piece=progress)
    stored_dtype = {v: k for k, v in DTYPES.items()}.get(pieces[0].dtype, str(pieces[0].dtype))
    info = CheckpointInfo(family=hf.family.name, padded_vocab_size=dims.padded_vocab_size,
                          num_layers=hf.config.num_hidden_layers, tp=tp, pp=pp, dtype=stored_dtype)
    if rank == 0:
        write_info(out, info, hf_dir=hf.path)
    return info


def megatron_to_hf(ckpt: str | Path, out: str | Path, shard_bytes: int = 4 << 30,
                   dtype: Optional[str] = None,
                   progress: Optional[Callable[[str], None]] = None) -> Path:
    """Export a Megatron distributed checkpoint (any TP/PP it was saved at) to Hugging Face.

    Writes safetensors shards, their index, the config and the tokenizer files.
    """
    info = read_info(ckpt)
    hf_config = hf_config_of(ckpt)
    family = family_for(hf_config)
    if family.name != info.family:
        raise ValueError(f"{ckpt}: megatron_pacore.json says {info.family}, config.json says {family.name}")
    dims = dims_of(hf_config, info.padded_vocab_size)
    reader = PieceReader(ckpt)
    check_megatron(reader, family, hf_config, dims)
    stored = reader.tensors()
    out_dtype = DTYPES.get(dtype) if dtype else None
    tie = bool(getattr(hf_config, "tie_word_embeddings", False))
    rules = stored_rules(family, tie)
    num_layers = hf_config.num_hidden_layers
    steps = [(None, [r for r in rules if r.megatron == EMBEDDING])]
    steps += [(layer, [r for r in rules if r.per_layer]) for layer in range(num_layers)]
    steps += [(None, [r for r in rules if not r.per_layer and r.megatron != EMBEDDING])]
    hf_shapes = expected_shapes(hf_config)
    plan = []
    for layer, group in steps:
        for rule in group:
            dt = out_dtype or stored[stored_key(rule)].properties.dtype
            plan += [(n, hf_shapes[n], dt) for n in rule.hf_names(layer)]
    writer = HFStreamWriter(out, plan, shard_bytes=shard_bytes)
    for layer, group in steps:
        requests = []
        for rule in group:
            size = tuple(stored[stored_key(rule)].size)
            if rule.per_layer:
                requests.append((stored_key(rule), (layer,) + (0,) * (len(size) - 1), (1, *size[1:])))
            else:
                requests.append((stored_key(rule), (0,) * len(size), size))
        tensors = reader.read(requests)
        for rule, full in zip(group, tensors):
            full = full[0] if rule.per_layer else full
            for name, t in zip(rule.hf_names(layer), to_hf(rule, full, dims)):
                writer.write(name, t.to(out_dtype) if out_dtype else t)
        if progress is not None:
            progress(f"layer {layer}" if layer is not None else "embeddings/head")
        del tensors
    writer.close()
    copy_side_files(Path(ckpt) / "hf", out)
    if out_dtype is not None:
        cfg = hf_config_of(ckpt)
        cfg.dtype = out_dtype
        cfg.save_pretrained(out)
    return Path(out)
