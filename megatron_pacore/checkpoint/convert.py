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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from megatron_pacore.checkpoint.dcp_read import PieceReader
from megatron_pacore.checkpoint.dcp_stream import Piece, write_pieces
from megatron_pacore.checkpoint.dist import CheckpointInfo, check_megatron, hf_config_of, read_info, write_info
from megatron_pacore.checkpoint.hf_io import HFCheckpoint, HFStreamWriter, copy_side_files, expected_shapes
from megatron_pacore.checkpoint.mapping import Table
from megatron_pacore.checkpoint.transforms import Mapping
from megatron_pacore.hf_config import DTYPES, Dims, dims_of, family_for, num_query_groups_of, padded_vocab_size


def check_layout(hf_config, tp: int, pp: int) -> None:
    """The same divisibility rules the model builder applies, raised before any writing."""
    groups = num_query_groups_of(hf_config)
    if tp < 1 or groups % tp:
        raise ValueError(f"--tp {tp} must divide num_key_value_heads={groups}")
    if pp < 1 or hf_config.num_hidden_layers % pp:
        raise ValueError(f"--pp {pp} must divide num_hidden_layers={hf_config.num_hidden_layers}")


def dtype_of(name: Optional[str]) -> Optional[torch.dtype]:
    """`--dtype` name -> torch dtype (None: keep the stored dtype)."""
    if name is not None and name not in DTYPES:
        raise ValueError(f"--dtype must be one of {tuple(DTYPES)}, got {name!r}")
    return DTYPES[name] if name else None


def megatron_pieces(hf: HFCheckpoint, dims: Dims, dtype: Optional[torch.dtype]) -> list[Piece]:
    """Every piece of the Megatron checkpoint of `hf` in the table's stored-key order, data
    made lazily (`Mapping.from_hf` reads the HF rows straight into the piece's buffer)."""
    pieces = []
    table = hf.table.stored()
    for m, layer in table.by_key():
        names = m.hf_names(layer)
        shape = m.global_shape([hf.shape(n) for n in names], dims)
        dt = dtype or hf.get_dtype(names[0])

        def make_into(out, m=m, names=names, shape=shape):
            m.from_hf(hf, names, dims, out=out.view(shape))
            return out

        def make(m=m, names=names, shape=shape, dt=dt, stacked=m.per_layer):
            t = m.from_hf(hf, names, dims, out=torch.empty(shape, dtype=dt))
            return t.unsqueeze(0) if stacked else t

        if m.per_layer:
            pieces.append(Piece(m.stored_key, (table.num_layers, *shape), (layer,) + (0,) * len(shape),
                                (1, *shape), dt, make, make_into))
        else:
            pieces.append(Piece(m.stored_key, shape, (0,) * len(shape), shape, dt, make, make_into))
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
    dims = dims_of(hf.config, padded_vocab_size(hf.config.vocab_size, tp))
    pieces = megatron_pieces(hf, dims, dtype_of(dtype))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_pieces(out, pieces[rank::world], on_piece=progress)
    stored_dtype = {v: k for k, v in DTYPES.items()}.get(pieces[0].dtype, str(pieces[0].dtype))
    info = CheckpointInfo(family=hf.family.name, padded_vocab_size=dims.padded_vocab_size,
                          num_layers=hf.config.num_hidden_layers, tp=tp, pp=pp, dtype=stored_dtype)
    if rank == 0:
        write_info(out, info, hf_dir=hf.path)
    return info


@dataclass(frozen=True)
class _Step:
    """One unit of the export, read together and written together: a layer, or the tensors
    before (embedding) or after (final norm, output layer) the layers."""

    label: str
    layer: Optional[int]
    mappings: tuple[Mapping, ...]
    requests: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    """(stored key, chunk offsets, chunk sizes) for `PieceReader.read`; one layer of a stacked key."""
    outputs: tuple[tuple[str, tuple[int, ...], torch.dtype], ...]
    """(HF name, shape, dtype) written by the step, in order."""


def _plan(table: Table, stored: dict, hf_shapes: dict, out_dtype: Optional[torch.dtype]) -> list[_Step]:
    """The export's steps in the table's layer order (embedding, layers, rest)."""
    steps = []
    for layer, mappings in table.by_layer():
        requests, outputs = [], []
        for m in mappings:
            size = tuple(stored[m.stored_key].size)
            if m.per_layer:
                requests.append((m.stored_key, (layer,) + (0,) * (len(size) - 1), (1, *size[1:])))
            else:
                requests.append((m.stored_key, (0,) * len(size), size))
            dt = out_dtype or stored[m.stored_key].properties.dtype
            outputs += [(n, hf_shapes[n], dt) for n in m.hf_names(layer)]
        steps.append(_Step(f"layer {layer}" if layer is not None else "embeddings/head", layer,
                           tuple(mappings), tuple(requests), tuple(outputs)))
    return steps


def _hf_parts(step: _Step, tensors: list[torch.Tensor], dims: Dims,
              out_dtype: Optional[torch.dtype]) -> list[tuple[str, list[torch.Tensor]]]:
    """A step's global tensors as Hugging Face tensors, each a list of row blocks: views of
    the read buffers (the QKV split is one block per query group), cast block by block."""
    outputs = []
    for m, full in zip(step.mappings, tensors):
        full = full[0] if m.per_layer else full
        for name, parts in zip(m.hf_names(step.layer), m.to_hf(full, dims)):
            if out_dtype is not None and out_dtype != full.dtype:
                parts = [p.to(out_dtype) for p in parts]
            outputs.append((name, parts))
    return outputs


class _Buffers:
    """Read buffers handed back after their step is written and reused by a later step of the
    same shapes (layers all have the same shapes), so no fresh memory is faulted in per layer."""

    def __init__(self):
        self._free: dict[tuple, list[torch.Tensor]] = {}

    def take(self, shape, dtype) -> torch.Tensor:
        bufs = self._free.get((tuple(shape), dtype))
        return bufs.pop() if bufs else torch.empty(shape, dtype=dtype)

    def give_back(self, tensors: list[torch.Tensor], keep: set[tuple]) -> None:
        """Keep the buffers whose (shape, dtype) is in `keep` (the next step's); drop the rest."""
        for buf in tensors:
            key = (tuple(buf.shape), buf.dtype)
            if key in keep:
                self._free.setdefault(key, []).append(buf)
        for key in [k for k in self._free if k not in keep]:
            del self._free[key]

    def clear(self) -> None:
        self._free.clear()


def _stream(steps: list[_Step], reader: PieceReader, writer: HFStreamWriter, dims: Dims,
            out_dtype: Optional[torch.dtype], stored: dict, progress: Optional[Callable[[str], None]]) -> None:
    """Read step i+1 while step i is written on a second thread; at most three steps' read
    buffers exist (one being written, one being read, one free for reuse)."""
    buffers = _Buffers()

    def write(outputs):
        for name, parts in outputs:
            writer.write_parts(name, parts)

    def shapes_of(step: Optional[_Step]) -> set[tuple]:
        return set() if step is None else {(tuple(s), stored[k].properties.dtype) for k, _, s in step.requests}

    pending: Optional[tuple[Future, list[torch.Tensor]]] = None
    with ThreadPoolExecutor(1, thread_name_prefix="hf-writer") as pool:
        try:
            for i, step in enumerate(steps):
                tensors = reader.read(list(step.requests), alloc=buffers.take)
                outputs = _hf_parts(step, tensors, dims, out_dtype)
                if pending is not None:
                    pending[0].result()
                    buffers.give_back(pending[1], shapes_of(steps[i + 1] if i + 1 < len(steps) else None))
                pending = (pool.submit(write, outputs), tensors)
                del outputs, tensors
                if progress is not None:
                    progress(step.label)
            if pending is not None:
                pending[0].result()
        finally:
            if pending is not None:
                pending[0].cancel()
            pending = None
            buffers.clear()


def megatron_to_hf(ckpt: str | Path, out: str | Path, shard_bytes: int = 4 << 30,
                   dtype: Optional[str] = None,
                   progress: Optional[Callable[[str], None]] = None) -> Path:
    """Export a Megatron distributed checkpoint (any TP/PP it was saved at) to Hugging Face.

    Writes safetensors shards, their index, the config and the tokenizer files: plan the
    steps and the shards, then read each step and write it.
    """
    info = read_info(ckpt)
    hf_config = hf_config_of(ckpt)
    family = family_for(hf_config)
    if family.name != info.family:
        raise ValueError(f"{ckpt}: megatron_pacore.json says {info.family}, config.json says {family.name}")
    out_dtype = dtype_of(dtype)
    dims = dims_of(hf_config, info.padded_vocab_size)
    reader = PieceReader(ckpt)
    try:
        check_megatron(reader, hf_config, dims)
        stored = reader.tensors()
        steps = _plan(Table.for_config(hf_config).stored(), stored, expected_shapes(hf_config), out_dtype)
        writer = HFStreamWriter(out, [o for step in steps for o in step.outputs], shard_bytes=shard_bytes)
        _stream(steps, reader, writer, dims, out_dtype, stored, progress)
    finally:
        reader.close()
    writer.close()
    copy_side_files(Path(ckpt) / "hf", out)
    if out_dtype is not None:
        hf_config.dtype = out_dtype
        hf_config.save_pretrained(out)
    return Path(out)
