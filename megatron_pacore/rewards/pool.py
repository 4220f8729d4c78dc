"""A process pool in which every item has its own deadline.

Graders call libraries that can hang on a pathological input (sympy simplifying a tower of
exponents, a regex blowing up). math-verify's own timeouts use `signal.alarm`, which only
works in the main thread of the main interpreter (DESIGN.md section 3), and
`concurrent.futures` cannot kill one stuck worker. So this pool runs the items itself: each
worker gets one item at a time over its own pipe; a worker that passes the item's deadline is
killed and replaced, the item is reported as `timeout`, and the caller never hangs. A worker
that dies (segfault, OOM kill) is replaced too and its item reported as `crash`.

A worker says "ready" once its initializer has run, and only then gets items: the deadline
measures the item, never the start of a replacement. Workers start from the `forkserver`
context: they never inherit the threads of the caller (vLLM and torch start many), and the
server preloads the heavy modules once, so a replacement starts in milliseconds.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Optional, Sequence

_CONTEXT = "forkserver"
_READY = "ready"
# A worker that is not ready in this time (or dies starting) is replaced; after this many
# failed starts in a row the pool gives up with an error instead of looping.
START_TIMEOUT_S = 120.0
MAX_FAILED_STARTS = 3


@dataclass(frozen=True)
class Outcome:
    """The result of one item: `value` when `error` is None; else `error` is "timeout",
    "crash: ..." (the worker died) or "exception: ..." (the function raised)."""

    value: Any = None
    error: Optional[str] = None


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _worker_main(conn: Connection, target: str, initializer: Optional[str]) -> None:
    """One worker: initialize, say ready, then receive (index, args) and send (index, ok,
    value) until None."""
    if initializer:
        _resolve(initializer)()
    fn = _resolve(target)
    conn.send(_READY)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        index, args = msg
        try:
            conn.send((index, True, fn(*args)))
        except Exception as e:  # the function's own failure: report it, keep serving
            conn.send((index, False, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))


class _Worker:
    """One process and the parent's end of its pipe."""

    def __init__(self, ctx: Any, target: str, initializer: Optional[str]) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, target, initializer), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.index: Optional[int] = None  # item in progress
        self.deadline = time.monotonic() + START_TIMEOUT_S  # to be ready, then to finish the item

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=1)
        self.kill()


class TimeoutPool:
    """Runs `target(*args)` for many argument tuples on `workers` processes, each call under
    its own wall-clock `timeout_s`.

    Args:
        target: "module:function", importable in a fresh process.
        workers: processes; they start on first use and live until `close()`.
        timeout_s: per-item deadline, counted from when the item is handed to a ready worker.
        initializer: optional "module:function" each worker calls once at start.
        preload: modules the fork server imports once for all workers (besides those of
            target and initializer); only honoured if it is the first pool to start it.
    """

    def __init__(self, target: str, workers: int, timeout_s: float, initializer: Optional[str] = None,
                 preload: Sequence[str] = ()) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.target = target
        self.initializer = initializer
        self.preload = list(preload)
        self.num_workers = workers
        self.timeout_s = timeout_s
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one map at a time; callers may be threads
        self._ctx: Any = None
        self.restarts = 0
        self._failed_starts = 0

    def _start(self) -> None:
        if self._ctx is None:
            ctx = mp.get_context(_CONTEXT)
            modules = [*self.preload, self.target.partition(":")[0]]
            if self.initializer:
                modules.append(self.initializer.partition(":")[0])
            ctx.set_forkserver_preload(modules)
            self._ctx = ctx
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker(self._ctx, self.target, self.initializer))

    def _replace(self, worker: _Worker) -> None:
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= MAX_FAILED_STARTS:
                raise RuntimeError(f"workers of {self.target} fail to start (exit code {worker.proc.exitcode})")
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker(self._ctx, self.target, self.initializer))
        self.restarts += 1

    def map(self, items: Sequence[tuple]) -> list[Outcome]:
        """One Outcome per argument tuple, in order. Never raises for a bad item."""
        results: list[Optional[Outcome]] = [None] * len(items)
        if not items:
            return []
        with self._lock:
            self._start()
            todo = list(range(len(items)))
            todo.reverse()  # pop() from the end hands items out in order
            while todo or any(w.index is not None for w in self._workers):
                for w in list(self._workers):
                    if w.ready and w.index is None and todo:
                        i = todo.pop()
                        try:
                            w.conn.send((i, items[i]))
                        except (OSError, ValueError):  # died while idle: replace, retry item
                            todo.append(i)
                            self._replace(w)
                            continue
                        w.index, w.deadline = i, time.monotonic() + self.timeout_s
                # Wait on workers that are starting or busy, until the nearest deadline.
                waiting = {w.conn: w for w in self._workers if not w.ready or w.index is not None}
                nearest = min(w.deadline for w in waiting.values())
                for conn in wait(list(waiting), timeout=max(0.0, nearest - time.monotonic())):
                    w = waiting[conn]  # type: ignore[index]
                    try:
                        msg = conn.recv()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        w.proc.join(timeout=1)  # the pipe closes just before the exit is seen
                        if w.index is not None:
                            results[w.index] = Outcome(error=f"crash: worker exited with {w.proc.exitcode}")
                        self._replace(w)
                        continue
                    if msg == _READY:
                        w.ready, self._failed_starts = True, 0
                        continue
                    _, ok, value = msg
                    results[w.index] = Outcome(value=value) if ok else Outcome(error=f"exception: {value}")  # type: ignore[index]
                    w.index = None
                now = time.monotonic()
                for w in list(self._workers):
                    if (w.index is not None or not w.ready) and w.deadline <= now:
                        if w.index is not None:
                            results[w.index] = Outcome(error="timeout")
                        self._replace(w)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stops every worker; the pool restarts them if used again."""
        with self._lock:
            for w in self._workers:
                w.stop()
            self._workers = []

    def __enter__(self) -> "TimeoutPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
