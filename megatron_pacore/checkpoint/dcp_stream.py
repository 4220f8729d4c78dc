"""Streaming writes of the torch_dist format behind Megatron's dist_checkpointing.

Megatron-Core's `dist_checkpointing.save` needs every tensor of the model in memory at once.
The converter instead describes the checkpoint as `Piece`s (key, global shape, chunk offsets,
chunk shape, dtype) whose data is made on demand, and hands them to torch.distributed.checkpoint
through a planner that resolves each piece only when the writer reaches it. One writer thread
writes the pieces in plan order while the planner makes the next one on a read-ahead thread,
filling, where the piece offers `make_into`, a buffer of an already written piece of the same
size: at most four pieces of one size are alive (written, being written, read ahead, free),
plus the last piece of each key, which torch.distributed.checkpoint's writer keeps referenced
(it only reads it back for the safetensors format, never used here). Records are written
without CRC-32 (torch.load does not check it). The layout (keys, global shapes, layers stacked
on a leading axis) is exactly what `GPTModel.sharded_state_dict()` asks for, so
`dist_checkpointing.load` reads the result at any TP/PP.

The read side, `PieceReader`, is in `dcp_read.py`.
"""
from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType


@dataclass(frozen=True)
class Piece:
    """One chunk of one checkpoint tensor; `make()` returns its data, shape `shape`."""

    key: str
    global_shape: tuple[int, ...]
    offsets: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]
    make_into: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    """Optional: fill a given contiguous tensor of `shape`/`dtype` (reused between pieces) and
    return it; lets the writer recycle buffers instead of faulting in fresh memory per piece."""

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


class _LazySavePlanner(DefaultSavePlanner):
    """Plans the write items from pieces and makes each piece's data only in resolve_data.

    While the writer thread writes one piece, the next piece (in plan order) is made on a
    read-ahead thread, so reading and transforming overlap writing: at most two pieces are
    made and not yet written at any time.
    """

    def __init__(self, pieces: list[Piece], on_piece: Optional[Callable[[Piece], None]] = None):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._pieces = {(p.key, tuple(p.offsets)): p for p in pieces}
        self._order = pieces
        self._next = {(a.key, tuple(a.offsets)): b for a, b in zip(pieces, pieces[1:])}
        self._on_piece = on_piece
        self._pool: Optional[ThreadPoolExecutor] = None
        self._ahead: Optional[tuple[tuple, Future]] = None
        self._position = {(p.key, tuple(p.offsets)): i for i, p in enumerate(pieces)}
        self._last = -1  # plan position of the last piece asked for
        self._in_order = True  # buffers are recycled only while pieces are asked in plan order
        self._lent: list[tuple[int, torch.Tensor]] = []  # (plan position, buffer) handed out
        self._free: list[torch.Tensor] = []

    def create_local_plan(self) -> SavePlan:
        items = []
        for p in self._order:
            offsets = torch.Size(p.offsets)
            items.append(WriteItem(
                index=MetadataIndex(p.key, offsets),
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(p.shape)),
                    properties=TensorProperties(dtype=p.dtype),
                    size=torch.Size(p.global_shape),
                ),
            ))
        self.plan = SavePlan(items)
        return self.plan

    def _make(self, piece: Piece, buffer: Optional[torch.Tensor] = None) -> torch.Tensor:
        data = piece.make() if buffer is None else piece.make_into(buffer)
        if tuple(data.shape) != tuple(piece.shape) or data.dtype != piece.dtype:
            raise ValueError(f"{piece.key}@{piece.offsets}: made {tuple(data.shape)} {data.dtype}, "
                             f"planned {piece.shape} {piece.dtype}")
        return data.contiguous()

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor:
        key = (write_item.index.fqn, tuple(write_item.index.offset))
        piece = self._pieces[key]
        ahead, self._ahead = self._ahead, None
        pos = self._position[key]
        if pos != self._last + 1:
            self._in_order = False
            self._lent.clear()
            self._free.clear()
        self._last = pos
        if self._in_order:
            # The writer has written every piece asked for two or more calls ago (one ago with
            # the serial loader; DCP's overlapping loader asks for the next before writing
            # the current one): their buffers can be filled again.
            done = [b for p, b in self._lent if p <= pos - 2]
            self._lent = [(p, b) for p, b in self._lent if p > pos - 2]
            self._free.extend(b.reshape(-1).view(torch.uint8) for b in done if b.numel())
        if ahead is not None and ahead[0] == key:
            data = ahead[1].result()
        else:
            if ahead is not None:  # asked out of plan order: drop the read-ahead
                ahead[1].result()
            data = self._make(piece, self._buffer(piece, pos))
        nxt = self._next.get(key)
        if nxt is not None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="piece-read-ahead")
            self._ahead = ((nxt.key, tuple(nxt.offsets)),
                           self._pool.submit(self._make, nxt, self._buffer(nxt, pos + 1)))
        # Keep only free buffers the coming pieces can use (same byte size as the next one).
        if nxt is not None:
            self._free = [b for b in self._free if b.nbytes == nxt.nbytes]
        else:
            self._free = []
        if self._on_piece is not None:
            self._on_piece(piece)
        return data

    def _buffer(self, piece: Piece, pos: int) -> Optional[torch.Tensor]:
        """A free buffer of the piece's size (or a new one) when it can be made in place."""
        if piece.make_into is None or not self._in_order:
            return None
        for i, b in enumerate(self._free):
            if b.nbytes == piece.nbytes:
                buf = self._free.pop(i).view(piece.dtype).reshape(piece.shape)
                break
        else:
            buf = torch.empty(piece.shape, dtype=piece.dtype)
        self._lent.append((pos, buf))
        return buf

    def close(self) -> None:
        """Wait for and drop any read-ahead, stop the read-ahead thread."""
        self._lent, self._free = [], []
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead[1].result()
            except Exception:
                pass
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def write_pieces(out: str | Path, pieces: list[Piece], process_group=None,
                 on_piece: Optional[Callable[[Piece], None]] = None) -> None:
    """Write `pieces` (this rank's share) as one torch_dist checkpoint in `out`.

    Under torch.distributed every rank passes its own pieces and rank 0 writes the metadata;
    without it the call is local (no_dist).
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    # One writer thread keeps the pieces in plan order (the planner reads the next one ahead).
    # No fsync per file (sync_files=False): like a plain safetensors save, durability is left
    # to the OS. No CRC-32 per torch.save record either (torch.load does not check it; the
    # checksum pass costs as much as a copy of the bytes).
    writer = FileSystemWriter(str(out), single_file_per_rank=True, thread_count=1, overwrite=True,
                              sync_files=False)
    no_dist = not dist.is_initialized()
    planner = _LazySavePlanner(pieces, on_piece)
    crc = _crc32_options(False)
    try:
        with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended
            warnings.simplefilter("ignore", UserWarning)
            dcp.save({}, storage_writer=writer, planner=planner,
                     process_group=process_group, no_dist=no_dist)
    finally:
        planner.close()
        _crc32_options(crc)


def _crc32_options(compute: Optional[bool]) -> Optional[bool]:
    """Set whether torch.save computes CRC-32s (None: leave it); returns the previous setting."""
    import torch.serialization as ser

    if compute is None or not hasattr(ser, "set_crc32_options"):
        return None
    previous = ser.get_crc32_options()
    ser.set_crc32_options(compute)
    return previous
