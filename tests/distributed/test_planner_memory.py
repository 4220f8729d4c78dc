"""The planner's parameter, gradient and distributed-optimizer estimates agree within 20% with
what the real Megatron model + DDP + DistributedOptimizer allocate on CPU for the tiny models."""
import json

import pytest

from dist_launch import run_workers


@pytest.fixture(scope="module")
def measured(tiny_models, tmp_path_factory):
    models = {k: str(v) for k, v in tiny_models.items() if k in ("qwen3", "qwen2")}
    return run_workers("worker_memory.py", ["--models", json.dumps(models)],
                       tmp_path_factory.mktemp("planner") / "result.json")


def test_state_bytes_match_megatron_within_20_percent(measured):
    assert len(measured) == 2 * 2 * 2 * 2  # layouts x families x roles x precisions
    for key, r in measured.items():
        for part in ("params", "grads", "optimizer"):
            m, e = r["measured"][part], r["estimated"][part]
            assert m > 0 and abs(e - m) <= 0.2 * m, (key, part, m, e)


def test_optimizer_states_shard_over_data_parallel_ranks(measured):
    # DP=2 halves the Adam states and main copies per rank; TP=2 halves everything.
    for family in ("qwen3", "qwen2"):
        dp2 = measured[f"tp1_dp2/{family}/actor/bf16"]["measured"]
        tp2 = measured[f"tp2_dp1/{family}/actor/bf16"]["measured"]
        assert dp2["optimizer"] == pytest.approx(3 * dp2["params"], rel=0.05)  # 12/2 bytes per 2-byte param
        assert tp2["optimizer"] == pytest.approx(6 * tp2["params"], rel=0.05)  # dp=1: 12 bytes per 2
        assert dp2["grads"] == pytest.approx(2 * dp2["params"], rel=0.05)       # fp32 grads of bf16 params
