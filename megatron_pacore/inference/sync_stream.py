"""The weight sync's stream plumbing: timing the post-load processing and the export, and
producing the next bucket on a helper thread (`WeightSyncConfig.prefetch`).

Used by `rollout.ColocatedVLLM.sync_weights` (both paths) and `shard_load`; no vllm import.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterable

import torch

from megatron_pacore.inference.rollout_types import Bucket


class _RepackClock:
    """Seconds spent in the model's post-load processing (kernel layouts, CPU prepack).

    Wraps each layer's `quant_method.process_weights_after_loading` once, on the instance,
    so that the layerwise reload's calls are timed; the behaviour is unchanged.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._depth = 0
        seen: set[int] = set()
        for module in model.modules():
            qm = getattr(module, "quant_method", None)
            if qm is None or id(qm) in seen or not hasattr(qm, "process_weights_after_loading"):
                continue
            seen.add(id(qm))
            qm.process_weights_after_loading = self._timed(qm.process_weights_after_loading)

    def _timed(self, fn):
        def timed(*args, **kwargs):
            if self._depth:  # a nested call is already inside a timed one
                return fn(*args, **kwargs)
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self._depth -= 1
        return timed


class _TimedBuckets:
    """Iterates `buckets`, adding the seconds spent producing each one to `seconds`."""

    def __init__(self, buckets: Iterable[Bucket]) -> None:
        self.buckets = buckets
        self.seconds = 0.0

    def __iter__(self):
        it = iter(self.buckets)
        while True:
            t0 = time.perf_counter()
            bucket = next(it, None)
            self.seconds += time.perf_counter() - t0
            if bucket is None:
                return
            yield bucket


_END = object()


def _chain(first: Bucket, rest):
    """`first`, then the rest of the buckets; closing it closes `rest` too."""
    try:
        yield first
        yield from rest
    finally:
        if hasattr(rest, "close"):
            rest.close()


def _prefetched(buckets: Iterable[Bucket]):
    """Yield `buckets`, producing the next one on a helper thread meanwhile (queue of one).

    The export's collectives then run on that thread; the engine's load on this one issues
    none, so the two never interleave on a process group. Closing the generator (an error
    downstream) stops the helper after the bucket it is on and waits for it, so that no
    collective of it overlaps what this thread does next. The helper uses this thread's
    CUDA device (the current device is per thread).
    """
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    device = torch.cuda.current_device() if torch.cuda.is_available() else None

    def produce() -> None:
        try:
            if device is not None:
                torch.cuda.set_device(device)
            for bucket in buckets:
                q.put(bucket)
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # re-raised on the consumer's side
            q.put(e)

    helper = threading.Thread(target=produce, name="weight-sync-export", daemon=True)
    helper.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while helper.is_alive():
            try:
                q.get(timeout=0.1)  # unblock a pending put
            except queue.Empty:
                pass
        helper.join()
