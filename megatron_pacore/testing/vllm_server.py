"""A real `vllm serve` of a tiny model on 127.0.0.1, for the HTTP tests and benchmarks.

    proc = start_vllm_server(model_dir, port, log_path)
    wait_healthy(proc, port, log_path)
    ...
    stop_process_group(proc)

Each flag is there for start-up time only (~16 s on 2 CPU cores): `--enforce-eager` skips the
torch.compile warm-up (~20 s), and `--distributed-executor-backend uni` with
VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps engine core and worker in the server process instead
of two spawned processes (~7 s each to import vLLM). The HTTP API and the engine are the ones
a multi-process server runs. The server runs in its own session (process group), so that
stopping it stops everything it started.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file (or why there are none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def start_vllm_server(model: str, port: int, log_path: Path, max_model_len: int = 4096) -> subprocess.Popen:
    """Start the OpenAI-compatible server of `model` on 127.0.0.1:`port` (fp32, seed 0),
    stdout and stderr into `log_path`."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", str(max_model_len), "--seed", "0",
           "--enforce-eager", "--distributed-executor-backend", "uni"]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_healthy(proc: subprocess.Popen, port: int, log_path: Path, deadline_s: float = 240.0) -> None:
    """Return once GET /health answers 200; RuntimeError with the command and the log's tail
    if the server exits first or is not healthy within `deadline_s`."""
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"vLLM server exited with code {proc.returncode} before it was healthy.\n"
                f"command: {' '.join(proc.args)}\nlog tail ({log_path}):\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > end:
            raise RuntimeError(
                f"vLLM server at {url} not healthy after {deadline_s:.0f} s.\n"
                f"command: {' '.join(proc.args)}\nlog tail ({log_path}):\n{log_tail(log_path)}")
        time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process's group, SIGKILL it if it lingers past 20 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
