"""Sandboxed execution of one Python program: the host side.

A `Sandbox` is a long-lived server process (`_sandbox_boot.py`, started once, forked per run)
bound to a uid of its own; `SandboxPool` hands sandboxes to concurrent callers. For each run
the host prepares a private run directory (a work directory owned by the sandbox uid, the
program, its stdin, files for its stdout/stderr), sends the server one JSON line, and reads
back the supervisor's report. The isolation layers are described in `_sandbox_boot.py`; here
we choose the outermost one and add a last-resort deadline: a server that does not answer in
time is killed with its process group and replaced.

Isolation levels (ISOLATION_LEVELS), recorded in every report and verdict:
- "bwrap": the server runs inside bubblewrap (Debian package `bubblewrap`): mount, PID, IPC,
  UTS and network namespaces, plus a user namespace when not root; a read-only root holding
  only the Python runtime (the base interpreter, its standard library without
  site-packages, the system's shared libraries); a private read-only /tmp; /proc of its own
  PID namespace, whose init is the server itself (`--as-pid-1`: a program cannot signal it
  even under the same uid); no_new_privs. As root the program also gets a uid of its own.
- "unshare": the previous mechanism, per run: network + mount namespaces with every mount
  read-only (as root: a uid of its own; off root: inside a user namespace).
- "audit-hook": no namespaces could be made; only the in-process audit hook guards.
"auto" (the default) takes "bwrap" when it works and otherwise falls back with a loud
one-time warning; `CodeGrader(require_isolation=True)` refuses to run without "bwrap".

Verdicts are decided in `code.py`; this module only runs programs.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from megatron_pacore.rewards.isolation import _BOOT, _ENV, ISOLATION_LEVELS, bwrap_command, resolve_isolation

__all__ = ["ISOLATION_LEVELS", "Execution", "Sandbox", "SandboxLimits", "SandboxPool", "default_pool", "isolation"]
_UID_BASE = 100_000
_UIDS_PER_PROCESS = 64


@dataclass(frozen=True)
class SandboxLimits:
    """What one test execution may use."""

    # CPU seconds (RLIMIT_CPU, rounded up to whole seconds).
    cpu_s: float = 2.0
    # Wall-clock seconds before the program is killed; None: 2 * cpu_s + 1.
    wall_s: Optional[float] = None
    # Address space (RLIMIT_AS), MiB.
    memory_mb: int = 1024
    # Stack (RLIMIT_STACK), MiB: deep recursion needs more than the usual 8.
    stack_mb: int = 256
    # Processes and threads of the sandbox uid (RLIMIT_NPROC).
    processes: int = 16
    # Largest file, stdout included (RLIMIT_FSIZE), bytes.
    output_bytes: int = 16 << 20
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_mb", "stack_mb", "processes", "output_bytes", "open_files"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {value!r}")
        if self.wall_s is not None and not self.wall_s > 0:
            raise ValueError(f"SandboxLimits.wall_s must be > 0 or None, got {self.wall_s!r}")

    @property
    def wall_timeout_s(self) -> float:
        return self.wall_s if self.wall_s is not None else 2 * self.cpu_s + 1


@dataclass(frozen=True)
class Execution:
    """What one run produced: the supervisor's `report` (status, signal, wall/cpu seconds,
    guards in force), and the program's stdout and stderr (capped)."""

    report: dict
    stdout: str
    stderr: str


class _Uids:
    """Sandbox uids, unique among live processes (the host pid is part of them), so that
    RLIMIT_NPROC and the kill-by-uid sweep see only one sandbox's processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._next = 0

    def acquire(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._next >= _UIDS_PER_PROCESS:
                raise RuntimeError(f"more than {_UIDS_PER_PROCESS} sandboxes in one process")
            self._next += 1
            return _UID_BASE + os.getpid() * _UIDS_PER_PROCESS + self._next - 1

    def release(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)


_UIDS = _Uids()


def sandbox_uids() -> range:
    """Every uid this process may give a sandbox (tests look for leftover processes)."""
    lo = _UID_BASE + os.getpid() * _UIDS_PER_PROCESS
    return range(lo, lo + _UIDS_PER_PROCESS)


def _hidden_dirs() -> list[str]:
    """Directories the program must not see: the home of the user running the grader."""
    home = os.path.realpath(os.path.expanduser("~"))
    return [home] if home != "/" else []


def _python_dirs() -> list[str]:
    """The interpreter's directories (stdlib, extension modules, site-packages): they stay
    visible when they lie inside a hidden directory, e.g. a pyenv Python under /root."""
    dirs = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix}
    dirs.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted({os.path.realpath(d) for d in dirs})


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


class Sandbox:
    """One sandbox server, used by one thread at a time; `level` is "bwrap" or "unshare"
    (resolved from `isolation`, see the module docstring)."""

    def __init__(self, isolation: str = "auto") -> None:
        self.level = resolve_isolation(isolation)
        self.uid = _UIDS.acquire()
        self.timed_out = False  # the last request got no answer in time (else: the server died)
        self._proc: Optional[subprocess.Popen] = None
        self._buffer = b""
        # Run directories live here; under bwrap this is the only host directory bound in.
        self._root = tempfile.mkdtemp(prefix="pacore-sandbox-")
        os.chmod(self._root, 0o711)

    def _server(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if self.level == "bwrap":
                argv = bwrap_command(self._root, self.uid)
            else:
                argv = [sys.executable, "-I", "-B", _BOOT, str(self.uid)]
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=_ENV, start_new_session=True, close_fds=True,
            )
            self._buffer = b""
        return self._proc

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._proc = None

    def _request(self, cfg: dict, timeout: float) -> Optional[dict]:
        """Sends one run and waits for its report; None if the server did not answer in time
        (`timed_out`) or died. Either way it is killed; the next request starts a new one."""
        self.timed_out = False
        proc = self._server()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(cfg) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            self._kill()
            return None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.timed_out = True
                self._kill()
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._kill()
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def execute(self, source: str, test_code: Optional[str], stdin: str, limits: SandboxLimits,
                audit_hook: bool = True) -> Execution:
        """Runs `source` (then `test_code`, if given, in its namespace) with `stdin`.
        `audit_hook=False` only for tests of the kernel layers: without the hook the harness
        cannot keep its verdict from the program."""
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self._root))
        try:
            os.chmod(run_dir, 0o711)
            work = run_dir / "work"
            work.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(work, self.uid, self.uid)
            (run_dir / "solution.py").write_text(source, encoding="utf-8")
            (run_dir / "stdin").write_text(stdin, encoding="utf-8")
            for name in ("stdout", "stderr"):
                (run_dir / name).touch(mode=0o600)
            cfg = {
                "source_path": str(run_dir / "solution.py"),
                "test_code": test_code,
                "work_dir": str(work),
                "stdin_path": str(run_dir / "stdin"),
                "stdout_path": str(run_dir / "stdout"),
                "stderr_path": str(run_dir / "stderr"),
                "env": {**_ENV, "HOME": str(work), "TMPDIR": str(work)},
                "limits": {**asdict(limits), "wall_s": limits.wall_timeout_s},
                "hide": _hidden_dirs(),
                "expose": _python_dirs(),
                "level": self.level,
                "audit_hook": audit_hook,
            }
            report = self._request(cfg, limits.wall_timeout_s + 10)
            if report is None and not self.timed_out:  # the server died: once more on a new one
                report = self._request(cfg, limits.wall_timeout_s + 10)
            if report is None:
                report = {"status": None, "wall_timeout": True, "wall_s": limits.wall_timeout_s, "cpu_s": 0.0,
                          "isolation": self.level}
            elif report.get("status") == "setup_error":
                raise RuntimeError(f"the sandbox could not run the program: {report.get('detail')}")
            return Execution(report, _read(run_dir / "stdout", limits.output_bytes + 1), _read(run_dir / "stderr", 1 << 16))
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()  # EOF: the server returns
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._kill()
        shutil.rmtree(self._root, ignore_errors=True)
        _UIDS.release(self.uid)


class SandboxPool:
    """Up to `size` sandboxes for concurrent callers; each caller holds one for one run."""

    def __init__(self, size: int, isolation: str = "auto") -> None:
        if size < 1:
            raise ValueError(f"sandbox pool size must be >= 1, got {size}")
        self.size = size
        self.level = resolve_isolation(isolation)
        self._free: list[Sandbox] = []
        self._all: list[Sandbox] = []
        self._cond = threading.Condition()

    @contextmanager
    def sandbox(self) -> Iterator[Sandbox]:
        with self._cond:
            while not self._free and len(self._all) >= self.size:
                self._cond.wait()
            if self._free:
                box = self._free.pop()
            else:
                box = Sandbox(self.level)
                self._all.append(box)
        try:
            yield box
        finally:
            with self._cond:
                self._free.append(box)
                self._cond.notify()

    def execute(self, source: str, test_code: Optional[str], stdin: str, limits: SandboxLimits,
                audit_hook: bool = True) -> Execution:
        with self.sandbox() as box:
            return box.execute(source, test_code, stdin, limits, audit_hook)

    def close(self) -> None:
        with self._cond:
            for box in self._all:
                box.close()
            self._all, self._free = [], []


_default_pool: Optional[SandboxPool] = None
_default_lock = threading.Lock()


def default_pool() -> SandboxPool:
    """The process-wide pool (one sandbox per CPU), started on first use, closed at exit."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = SandboxPool(os.cpu_count() or 1)
            atexit.register(_default_pool.close)
        return _default_pool


def isolation(pool: Optional[SandboxPool] = None) -> dict[str, str]:
    """Which guards this machine gives a sandbox, found by running an empty program:
    {"isolation": one of ISOLATION_LEVELS, "network": "netns" | "audit-hook",
    "filesystem": "bwrap-minimal-root" | "read-only-mounts" | "read-only-mounts-except-N" |
    "audit-hook"}."""
    report = (pool or default_pool()).execute("", None, "", SandboxLimits()).report
    return {"isolation": report.get("isolation", "?"), "network": report.get("network", "?"),
            "filesystem": report.get("filesystem", "?")}
