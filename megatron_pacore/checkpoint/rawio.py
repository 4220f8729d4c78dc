"""Positioned reads straight into tensors, and a cache of open read-only files.

Shared by the safetensors reader (`hf_io.HFCheckpoint`) and the torch_dist reader
(`dcp_read.PieceReader`): reading into a caller's buffer with `os.preadv` avoids both the page
faults of fresh allocations and the whole-file mappings that make a converter look as large
as the model.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import torch


class OpenFiles:
    """Read-only descriptors of files under `root`, opened on first use and kept open.
    Thread-safe: the converter reads ahead from a second thread."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            with self._lock:
                fd = self._fds.get(name)
                if fd is None:
                    fd = self._fds[name] = os.open(self.root / name, os.O_RDONLY)
        return fd

    def close(self) -> None:
        """Close every descriptor (later reads reopen them as needed)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def pread_into(fd: int, out: torch.Tensor, offset: int, where: str) -> None:
    """Fill the contiguous tensor `out` with the bytes at `offset` of `fd`; ValueError naming
    `where` if the file ends first."""
    want = out.numel() * out.element_size()
    if not want:
        return
    view = memoryview(out.view(-1).view(torch.uint8).numpy())
    done = 0
    while done < want:
        got = os.preadv(fd, [view[done:]], offset + done)
        if not got:
            raise ValueError(f"{where}: file truncated at offset {offset + done}")
        done += got
