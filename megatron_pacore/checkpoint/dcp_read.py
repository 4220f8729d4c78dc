"""Streaming reads of the torch_dist format behind Megatron's dist_checkpointing.

`PieceReader` reads chosen chunks (e.g. one layer of a stacked tensor) of any torch_dist
checkpoint, whatever TP/PP layout wrote it: plain tensor records are read with one positioned
read straight into the destination; anything unusual falls back to torch.distributed.checkpoint.
The write side is `dcp_stream.py`.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from megatron_pacore.checkpoint.rawio import OpenFiles, pread_into



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
    """Reads chunks of tensors from a torch_dist checkpoint directory (metadata read once).

    Each stored chunk is one torch.save archive inside a .distcp file. Where the archive holds
    a plain little-endian tensor (what both this module and Megatron write) its bytes are read
    with one positioned read straight into the destination (or into one scratch chunk, then
    copied, when the destination region or the stored chunk is strided); anything else goes
    through torch.distributed.checkpoint's reader.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / ".metadata").is_file():
            raise ValueError(f"{self.path} is not a Megatron distributed checkpoint (no .metadata)")
        self._reader = FileSystemReader(str(self.path))
        self.metadata = self._reader.read_metadata()
        self._reader.set_up_storage_reader(self.metadata, True)
        self._files = OpenFiles(self.path)
        self._records: dict = {}

    def tensors(self) -> dict[str, TensorStorageMetadata]:
        """Every tensor key -> its storage metadata (global size, dtype, chunks)."""
        return {k: v for k, v in self.metadata.state_dict_metadata.items()
                if isinstance(v, TensorStorageMetadata)}

    def read(self, requests: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
             alloc: Optional[Callable[[tuple[int, ...], torch.dtype], torch.Tensor]] = None) -> list[torch.Tensor]:
        """Read (key, offsets, shape) chunks; returns one tensor per request, in order.

        `alloc(shape, dtype)` supplies the contiguous destination tensors (default torch.empty),
        e.g. recycled buffers."""
        tensors = self.tensors()
        dests: dict[str, torch.Tensor] = {}
        items = []
        out = []
        for i, (key, offsets, shape) in enumerate(requests):
            if key not in tensors:
                raise ValueError(f"{self.path}: tensor {key!r} is missing")
            md = tensors[key]
            dest = (alloc or _empty)(tuple(shape), md.properties.dtype)
            if tuple(dest.shape) != tuple(shape) or dest.dtype != md.properties.dtype or not dest.is_contiguous():
                raise ValueError(f"alloc gave {tuple(dest.shape)} {dest.dtype} for {tuple(shape)} {md.properties.dtype}")
            rid = f"{i}:{key}"
            dests[rid] = dest
            out.append(dest)
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(shape))
            covered = 0
            for item in create_read_items_for_chunk_list(key, md, [chunk]):
                region = _region(dest, item.dest_offsets, item.lengths)
                covered += region.numel()
                if not self._read_direct(item, region, md.properties.dtype):
                    items.append(dataclasses.replace(item, dest_index=MetadataIndex(
                        rid, item.dest_index.offset, item.dest_index.index)))
            if covered != dest.numel():
                raise ValueError(f"{self.path}: {key} at {tuple(offsets)} size {tuple(shape)} is not "
                                 f"fully stored (global size {tuple(md.size)})")
        if items:
            self._reader.read_data(LoadPlan(items), _ChunkPlanner(dests)).wait()
        return out

    def close(self) -> None:
        self._files.close()

    def _fd(self, relative_path: str) -> int:
        return self._files.fd(relative_path)

    def _record(self, index: MetadataIndex):
        """(fd, absolute data offset, size, stride, storage offset, storage numel) of a stored
        plain tensor, or None when the record is anything else."""
        if index in self._records:
            return self._records[index]
        found = None
        info = self.metadata.storage_data.get(index)
        if info is not None and not getattr(info, "transform_descriptors", None):
            try:
                found = _plain_tensor_record(self._fd(info.relative_path), info.offset, info.length)
            except Exception:
                found = None
        self._records[index] = found
        return found

    def _read_direct(self, item, region: torch.Tensor, dtype: torch.dtype) -> bool:
        """Fill `region` from `item`'s stored chunk with positioned reads; False if not plain."""
        rec = self._record(item.storage_index)
        if rec is None:
            return False
        fd, data_offset, stored_dtype, size, stride, storage_offset, storage_numel = rec
        if stored_dtype != dtype or storage_offset + _span(size, stride) > storage_numel:
            return False
        elem = torch.empty((), dtype=dtype).element_size()
        if list(stride) == _contiguous_strides(size):
            start, count = _contiguous_range(size, item.storage_offsets, item.lengths)
            if count is not None and region.is_contiguous():
                pread_into(fd, region, data_offset + (storage_offset + start) * elem, str(self.path))
                return True
        # General case: the stored span the region reaches, once, then a strided copy.
        if any(st < 0 for st in stride):
            return False
        first = storage_offset + sum(o * st for o, st in zip(item.storage_offsets, stride))
        scratch = torch.empty(_span(item.lengths, stride), dtype=dtype)
        pread_into(fd, scratch, data_offset + first * elem, str(self.path))
        region.copy_(scratch.as_strided(tuple(item.lengths), tuple(stride)))
        return True


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


def _contiguous_strides(size) -> list[int]:
    strides, acc = [], 1
    for s in reversed(list(size)):
        strides.append(acc)
        acc *= s
    return list(reversed(strides))


def _span(size, stride) -> int:
    """Elements of storage a tensor of `size`/`stride` (offset 0) reaches."""
    if any(s == 0 for s in size):
        return 0
    return 1 + sum((s - 1) * st for s, st in zip(size, stride))


def _contiguous_range(size, offsets, lengths):
    """(first element, count) when region offsets/lengths of a contiguous tensor of `size` is
    one contiguous run of elements, else (0, None)."""
    size, offsets, lengths = list(size), list(offsets), list(lengths)
    # Trailing dims must be whole after the first partial one; dims before it of length 1.
    partial = next((i for i in range(len(size)) if lengths[i] != size[i]), len(size))
    if any(lengths[i] != size[i] or offsets[i] for i in range(partial + 1, len(size))):
        return 0, None
    if any(lengths[i] != 1 for i in range(partial)):
        return 0, None
    strides = _contiguous_strides(size)
    start = sum(o * st for o, st in zip(offsets, strides))
    count = 1
    for n in lengths:
        count *= n
    return start, count


class _Slice(io.RawIOBase):
    """Read-only file-like view of bytes [base, base + length) of an open file (positioned reads)."""

    def __init__(self, fd: int, base: int, length: int):
        super().__init__()
        self._fd, self._base, self._length, self._pos = fd, base, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._length - self._pos))
        got = os.preadv(self._fd, [memoryview(b).cast("B")[:n]], self._base + self._pos) if n else 0
        self._pos += got
        return got


_STORAGE_DTYPES = {name: dtype for dtype, name in torch.storage._dtype_to_storage_type_map().items()}


class _TensorPickle(pickle.Unpickler):
    """Reads a torch.save data.pkl of one plain tensor without building it."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorPickle._rebuilt
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return ("dtype", _STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"storage {pid!r}")
        return pid

    @staticmethod
    def _rebuilt(storage, storage_offset, size, stride, requires_grad=False, hooks=None, *rest):
        if hooks or rest and any(rest):
            raise pickle.UnpicklingError("tensor with hooks or metadata")
        return ("tensor", storage, storage_offset, tuple(size), tuple(stride))


def _plain_tensor_record(fd: int, offset: int, length: int):
    """Locate the data of a torch.save archive at [offset, offset + length) holding one plain
    little-endian CPU tensor; None when it holds anything else."""
    zf = torch._C.PyTorchFileReader(_Slice(fd, offset, length))
    records = set(zf.get_all_records())
    prefix = ""
    if "data.pkl" not in records:
        pkl = [r for r in records if r.endswith("/data.pkl")]
        if len(pkl) != 1:
            return None
        prefix = pkl[0][: -len("data.pkl")]
    if prefix + "byteorder" in records and bytes(zf.get_record(prefix + "byteorder")) != b"little":
        return None
    if prefix + "byteorder" not in records and sys.byteorder != "little":
        return None
    obj = _TensorPickle(io.BytesIO(bytes(zf.get_record(prefix + "data.pkl")))).load()
    if not (isinstance(obj, tuple) and obj and obj[0] == "tensor"):
        return None
    _, storage, storage_offset, size, stride = obj
    _, stype, key, location, numel = storage
    if not (isinstance(stype, tuple) and stype[0] == "dtype"):
        return None
    data = prefix + f"data/{key}"
    if data not in records:
        return None
    return (fd, offset + zf.get_record_offset(data), stype[1], size, stride, storage_offset, numel)
