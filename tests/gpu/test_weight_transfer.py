"""GPU weight sync: the colocated engine with sleep mode ('reload' of CUDA tensors) and vLLM's
CUDA IPC transfer to an engine in its own process. Skipped without CUDA (tests/gpu/conftest.py).
Each phase runs in its own process (vLLM's external launcher wants torchrun's environment)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(phase, tiny_model, tmp_path_factory):
    result = tmp_path_factory.mktemp(f"wt_{phase}") / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ROOT / "tests" / "gpu" / "worker_rollout_gpu.py"), "--model", str(tiny_model),
           "--result", str(result), "--phase", phase]
    env = dict(os.environ, PYTHONPATH=str(ROOT), NVIDIA_TF32_OVERRIDE="0")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(result.read_text())


@pytest.mark.vllm
def test_colocated_engine_sleeps_and_loads_cuda_tensors_in_place(tiny_model, tmp_path_factory):
    r = _run("colocated", tiny_model, tmp_path_factory)
    assert r["sleep_enabled"]
    assert r["check"]["method"] == "parameters" and r["check"]["tensors"] == r["tensors"]
    assert r["before"] > 1e-3, r
    assert r["after"] <= 1e-4, r


@pytest.mark.vllm
def test_cuda_ipc_transfer_updates_an_engine_in_another_process(tiny_model, tmp_path_factory):
    r = _run("ipc", tiny_model, tmp_path_factory)
    assert r["before"] > 1e-3, r
    assert r["after"] <= 1e-4, r
