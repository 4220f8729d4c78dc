"""Streaming Hugging Face <-> Megatron distributed checkpoint conversion.

HF -> Megatron: every Megatron tensor of the family table becomes `Piece`s (one per layer for
layer tensors, stacked on a leading layer axis as Megatron stores them) made on demand from
the safetensors files and written through `dcp_stream.write_pieces`. Under torchrun the pieces
are dealt round-robin over the ranks, each writing its own file.

Megatron -> HF: for each layer (and the embedding, final norm and output layer) the global
tensors are read with `PieceReader` and turned back into Hugging Face tensors that
`HFStreamWriter` appends to pre-planned safetensors shards.

Both directions overlap reading with writing on a second thread and recycle their buffers
(fresh memory costs a page fault per 4 KiB, about as much as reading the bytes), and make no
intermediate copies: HF -> Megatron reads the Hugging Face rows straight into their place in
the Megatron tensor (QKV interleave, [gate; up], vocabulary padding); Megatron -> HF reads each
stored chunk with one positioned read into its buffer and writes the QKV split as row blocks.

Memory bound (per process, on top of the interpreter): HF -> Megatron holds at most four
pieces of one size (the one being written, the one read ahead, two recycled), plus the last
piece of each Megatron key that torch.distributed.checkpoint's writer keeps referenced; a
piece is one layer's tensor of one key, the largest the padded embedding (Vp x h). Megatron ->
HF holds at most three steps' global tensors (one being written, one being read, one free for
reuse), a step being one layer, or the embedding, or the final norm and output layer (Vp x h).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import torch

from megatron_pacore.checkpoint.dcp_read import PieceReader
from megatron_pacore.checkpoint.dcp_stream import Piece, write_pieces
from megatron_pacore.checkpoint.dist import (
    CheckpointInfo, check_megatron, global_shape, hf_config_of, read_info, stored_key, stored_rules, write_info)
from megatron_pacore.checkpoint.hf_io import (
    HFCheckpoint, HFStreamWriter, copy_side_files, dims_of, expected_shapes)
from megatron_pacore.checkpoint.mapping import EMBEDDING, family_for
from megatron_pacore.checkpoint.transforms import Dims, padded_vocab_size, to_global, to_hf

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_layout(hf_config, tp: int, pp: int) -> None:
    """The same divisibility rules the model builder applies, raised before any writing."""
    from megatron_pacore.training.rope import num_query_groups_of  # no megatron import there

    groups = num_query_groups_of(hf_config)
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

            direct = all(hf.get_dtype(n) == src_dtype for n in names)

            def make(rule=rule, names=names, dt=src_dtype, stacked=rule.per_layer, shape=shape, direct=direct):
                if direct:
                    t = read_global(hf, rule, names, shape, dims)
                else:
                    t = to_global(rule, [hf.get(n) for n in names], dims).to(dt)
                return t.unsqueeze(0) if stacked else t

            def make_into(out, rule=rule, names=names, shape=shape):
                read_global(hf, rule, names, shape, dims, out=out.view(shape))
                return out

            into = make_into if direct else None
            if rule.per_layer:
                pieces.append(Piece(stored_key(rule), (num_layers, *shape), (layer,) + (0,) * len(shape),
                                    (1, *shape), src_dtype, make, into))
            else:
                pieces.append(Piece(stored_key(rule), shape, (0,) * len(shape), shape, src_dtype, make, into))
    return pieces


def read_global(hf: HFCheckpoint, rule, names: tuple[str, ...], shape: tuple[int, ...], dims: Dims,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`to_global(rule, [hf.get(n) for n in names], dims)` without the intermediate tensors.

    The Hugging Face rows are read straight into their place in one preallocated global
    tensor (positioned reads; the QKV interleave is one read per query group and tensor, the
    vocabulary padding a zero fill), so no concatenation copies are made.
    """
    if out is None:
        out = torch.empty(shape, dtype=hf.get_dtype(names[0]))
    elif tuple(out.shape) != tuple(shape) or out.dtype != hf.get_dtype(names[0]) or not out.is_contiguous():
        raise ValueError(f"{names}: buffer {tuple(out.shape)} {out.dtype} for {shape} {hf.get_dtype(names[0])}")
    if rule.transform == "qkv":
        ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
        q, k, v = names
        if (hf.shape(q)[0] != ng * hpg * d or hf.shape(k)[0] != ng * d or hf.shape(v)[0] != ng * d
                or out.shape[0] != ng * (hpg + 2) * d):
            raise ValueError(f"{q}/{k}/{v}: rows {hf.shape(q)[0]}/{hf.shape(k)[0]}/{hf.shape(v)[0]} do not "
                             f"match heads={dims.num_heads}, kv_heads={ng}, head_dim={d}")
        grouped = out.view(ng, (hpg + 2) * d, *out.shape[1:])
        for g in range(ng):
            hf.read_rows(q, grouped[g, : hpg * d], g * hpg * d)
            hf.read_rows(k, grouped[g, hpg * d: (hpg + 1) * d], g * d)
            hf.read_rows(v, grouped[g, (hpg + 1) * d:], g * d)
    elif rule.transform == "gate_up":
        row = 0
        for n in names:
            rows = hf.shape(n)[0]
            hf.read_rows(n, out[row: row + rows])
            row += rows
        if row != out.shape[0]:
            raise ValueError(f"{names}: {row} rows, planned {out.shape[0]}")
    elif rule.transform in ("vocab", "tied"):
        rows = hf.shape(names[0])[0]
        if rows > out.shape[0]:
            raise ValueError(f"vocabulary of {rows} rows exceeds padded size {out.shape[0]}")
        hf.read_rows(names[0], out[:rows])
        out[rows:].zero_()
    else:
        hf.read_rows(names[0], out)
    return out


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


def hf_parts(rule, full: torch.Tensor, dims: Dims) -> list[list[torch.Tensor]]:
    """`to_hf(rule, full, dims)` as row blocks of views of `full` (for
    `HFStreamWriter.write_parts`): the QKV split is one block per query group, not a copy."""
    if rule.transform == "qkv":
        ng, hpg, d = dims.num_groups, dims.heads_per_group, dims.head_dim
        grouped = full.view(ng, (hpg + 2) * d, *full.shape[1:])
        return [[grouped[g, : hpg * d] for g in range(ng)],
                [grouped[g, hpg * d: (hpg + 1) * d] for g in range(ng)],
                [grouped[g, (hpg + 1) * d:] for g in range(ng)]]
    if rule.transform == "gate_up":
        return [[t] for t in full.chunk(2, dim=0)]
    if rule.transform in ("vocab", "tied"):
        return [[full[: dims.vocab_size]]]
    return [[full]]


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

    def requests_of(layer, group) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        requests = []
        for rule in group:
            size = tuple(stored[stored_key(rule)].size)
            if rule.per_layer:
                requests.append((stored_key(rule), (layer,) + (0,) * (len(size) - 1), (1, *size[1:])))
            else:
                requests.append((stored_key(rule), (0,) * len(size), size))
        return requests

    def write_step(outputs: list[tuple[str, list[torch.Tensor]]]) -> None:
        for name, parts in outputs:
            writer.write_parts(name, parts)

    # One step's Hugging Face tensors are written on a second thread while the next step is
    # read and split, and a written step's read buffers are reused by the step after next
    # (layers all have the same shapes), so no fresh memory is faulted in per layer: at most
    # three steps' buffers exist (one written, one read, one free).
    free: dict[tuple, list[torch.Tensor]] = {}

    def alloc(shape, dt) -> torch.Tensor:
        bufs = free.get((shape, dt))
        return bufs.pop() if bufs else torch.empty(shape, dtype=dt)

    pending: Optional[tuple[Future, list[torch.Tensor]]] = None
    with ThreadPoolExecutor(1, thread_name_prefix="hf-writer") as pool:
        try:
            for i, (layer, group) in enumerate(steps):
                tensors = reader.read(requests_of(layer, group), alloc=alloc)
                outputs = []
                for rule, full in zip(group, tensors):
                    full = full[0] if rule.per_layer else full
                    names = rule.hf_names(layer)
                    if out_dtype is not None and out_dtype != full.dtype:
                        outputs += [(n, [t.to(out_dtype)]) for n, t in zip(names, to_hf(rule, full, dims))]
                    else:
                        outputs += list(zip(names, hf_parts(rule, full, dims)))
                full = None
                if pending is not None:
                    pending[0].result()
                    nxt = {(tuple(s), stored[k].properties.dtype)
                           for k, _, s in (requests_of(*steps[i + 1]) if i + 1 < len(steps) else [])}
                    for buf in pending[1]:
                        key = (tuple(buf.shape), buf.dtype)
                        if key in nxt:
                            free.setdefault(key, []).append(buf)
                    for key in [k for k in free if k not in nxt]:
                        del free[key]
                pending = (pool.submit(write_step, outputs), tensors)
                del outputs, tensors
                if progress is not None:
                    progress(f"layer {layer}" if layer is not None else "embeddings/head")
            if pending is not None:
                pending[0].result()
        finally:
            if pending is not None:
                pending[0].cancel()
            pending = None
            free.clear()
            reader.close()
    writer.close()
    copy_side_files(Path(ckpt) / "hf", out)
    if out_dtype is not None:
        cfg = hf_config_of(ckpt)
        cfg.dtype = out_dtype
        cfg.save_pretrained(out)
    return Path(out)
