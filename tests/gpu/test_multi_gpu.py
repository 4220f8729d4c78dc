"""Sequence parallelism (TP=2, TE) and context parallelism (CP=2) on two GPUs against
`transformers`. Skipped without CUDA or with fewer than 2 GPUs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")


@pytest.fixture(scope="module")
def measured(tiny_model, tmp_path_factory):
    result = tmp_path_factory.mktemp("gpu2") / "result.json"
    # python -m torch.distributed.run: in NGC images `torchrun` is not next to sys.executable.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "gpu" / "worker_tp_sp_cp.py"), "--model", str(tiny_model), "--result", str(result)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), NVIDIA_TF32_OVERRIDE="0")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(result.read_text())


def test_sequence_parallel_tp2_logprobs_match_transformers(measured):
    assert measured["sp/logprob_mean_diff"] <= 0.05


def test_sequence_parallel_critic_values_are_gathered_to_full_length(measured):
    assert measured["sp/values_shape_ok"]
    assert measured["sp/head_grad_allreduced_equal"]


def test_context_parallel_logprobs_match_transformers(measured):
    assert measured["cp/logprob_mean_diff"] <= 0.05
