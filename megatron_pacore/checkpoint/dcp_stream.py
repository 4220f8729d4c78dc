"""Streaming reads and writes of the torch_dist format behind Megatron's dist_checkpointing.

Megatron-Core's `dist_checkpointing.save` needs every tensor of the model in memory at once.
The converter instead describes the checkpoint as `Piece`s (key, global shape, chunk offsets,
chunk shape, dtype) whose data is made on demand, and hands them to torch.distributed.checkpoint
through a planner that resolves each piece only when the writer reaches it: with one writer
thread, at most one piece is alive at a time. The layout (keys, global shapes, layers stacked
on a leading axis) is exactly what `GPTModel.sharded_state_dict()` asks for, so
`dist_checkpointing.load` reads the result at any TP/PP.

`PieceReader` is the inverse: it reads chosen chunks (e.g. one layer of a stacked tensor) of
any torch_dist checkpoint, whatever TP/PP layout wrote it.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata, MetadataIndex, TensorProperties, TensorStorageMetadata)
from torch.distributed.checkpoint.planner import (
    LoadPlan, SavePlan, TensorWriteData, WriteItem, WriteItemType)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list


@dataclass(frozen=True)
class Piece:
    """One chunk of one checkpoint tensor; `make()` returns its data, shape `shape`."""

    key: str
    global_shape: tuple[int, ...]
    offsets: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


class _LazySavePlanner(DefaultSavePlanner):
    """Plans the write items from pieces and makes each piece's data only in resolve_data."""

    def __init__(self, pieces: list[Piece], on_piece: Optional[Callable[[Piece], None]] = None):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._pieces = {(p.key, tuple(p.offsets)): p for p in pieces}
        self._order = pieces
        self._on_piece = on_piece

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

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor:
        piece = self._pieces[(write_item.index.fqn, tuple(write_item.index.offset))]
        data = piece.make()
        if tuple(data.shape) != tuple(piece.shape) or data.dtype != piece.dtype:
            raise ValueError(f"{piece.key}@{piece.offsets}: made {tuple(data.shape)} {data.dtype}, "
                             f"planned {piece.shape} {piece.dtype}")
        if self._on_piece is not None:
            self._on_piece(piece)
        return data.contiguous()


def write_pieces(out: str | Path, pieces: list[Piece], process_group=None,
                 on_piece: Optional[Callable[[Piece], None]] = None) -> None:
    """Write `pieces` (this rank's share) as one torch_dist checkpoint in `out`.

    Under torch.distributed every rank passes its own pieces and rank 0 writes the metadata;
    without it the call is local (no_dist).
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    # One writer thread keeps the pieces in plan order, one alive at a time. No fsync per file
    # (sync_files=False): like a plain safetensors save, durability is left to the OS.
    writer = FileSystemWriter(str(out), single_file_per_rank=True, thread_count=1, overwrite=True,
                              sync_files=False)
    no_dist = not dist.is_initialized()
    with warnings.catch_warnings():  # "torch.distributed is disabled ... single process": intended
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({}, storage_writer=writer, planner=_LazySavePlanner(pieces, on_piece),
                 process_group=process_group, no_dist=no_dist)


def _region(t: torch.Tensor, offsets, lengths) -> torch.Tensor:
    """View of `t` at `offsets` with sizes `lengths`."""
    return t[tuple(slice(o, o + n) for o, n in zip(offsets, lengths))]


class _ChunkPlanner(DefaultLoadPlanner):
    """Resolves read items into preallocated destination tensors keyed by request id."""

    def __init__(self, dests: dict[str, torch.Tensor]):
        super().__init__()
        self._dests = dests

    def resolve_tensor(self, read_item):
        return _region(self._dests[read_item.dest_index.fqn], read_item.dest_offsets, read_item.lengths)

    def commit_tensor(self, read_item, tensor) -> None:
        pass


class PieceReader:
    """Reads chunks of tensors from a torch_dist checkpoint directory (metadata read once)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / ".metadata").is_file():
            raise ValueError(f"{self.path} is not a Megatron distributed checkpoint (no .metadata)")
        self._reader = FileSystemReader(str(self.path))
        self.metadata = self._reader.read_metadata()
        self._reader.set_up_storage_reader(self.metadata, True)

    def tensors(self) -> dict[str, TensorStorageMetadata]:
        """Every tensor key -> its storage metadata (global size, dtype, chunks)."""
        return {k: v for k, v in self.metadata.state_dict_metadata.items()
                if isinstance(v, TensorStorageMetadata)}

    def read(self, requests: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[torch.Tensor]:
        """Read (key, offsets, shape) chunks; returns one tensor per request, in order."""
        tensors = self.tensors()
        dests: dict[str, torch.Tensor] = {}
        items = []
        out = []
        for i, (key, offsets, shape) in enumerate(requests):
            if key not in tensors:
                raise ValueError(f"{self.path}: tensor {key!r} is missing")
            md = tensors[key]
            dest = torch.empty(shape, dtype=md.properties.dtype)
            rid = f"{i}:{key}"
            dests[rid] = dest
            out.append(dest)
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(shape))
            covered = 0
            for item in create_read_items_for_chunk_list(key, md, [chunk]):
                covered += _region(dest, item.dest_offsets, item.lengths).numel()
                items.append(dataclasses.replace(item, dest_index=MetadataIndex(
                    rid, item.dest_index.offset, item.dest_index.index)))
            if covered != dest.numel():
                raise ValueError(f"{self.path}: {key} at {tuple(offsets)} size {tuple(shape)} is not "
                                 f"fully stored (global size {tuple(md.size)})")
        self._reader.read_data(LoadPlan(items), _ChunkPlanner(dests)).wait()
        return out
