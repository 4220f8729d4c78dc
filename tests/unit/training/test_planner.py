"""The parallelism planner: hand-computed byte counts, the rules it picks layouts by, and the
Qwen3-8B / 131k-token plan through tools/plan_parallelism.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_pacore.training.planner import (Layout, ModelShape, PlanConfig, activation_bytes,
                                              candidate_layouts, choose_layout, estimate,
                                              layer_activation_bytes, state_bytes, vllm_bytes)

ROOT = Path(__file__).resolve().parents[3]
QWEN3_8B = ROOT / "tests" / "fixtures" / "qwen3-8b"
SMALL = ModelShape(hidden=64, layers=4, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=1000, tied=False)


def _qwen3_8b() -> ModelShape:
    sys.path.insert(0, str(ROOT / "tools"))
    from plan_parallelism import load_hf_config

    return ModelShape.from_hf(load_hf_config(str(QWEN3_8B)))


def test_qwen3_8b_has_its_published_parameter_count():
    shape = _qwen3_8b()
    assert (shape.qk_norm, shape.qkv_bias, shape.tied) == (True, False, False)
    assert shape.total_params() == pytest.approx(8.19e9, rel=0.005)  # "8.2B" (6.95B non-embedding)


def test_layer_params_split_gemms_over_tp_and_replicate_norms():
    # qkv (4+4)*16*64 = 8192, proj 4096, MLP 3*128*64 = 24576 -> 36864 sharded; norms 2*64.
    assert SMALL.layer_params(1) == 36864 + 128
    assert SMALL.layer_params(2) == 36864 // 2 + 128


def test_state_bytes_follow_the_distributed_optimizer_table():
    layout = Layout(tp=1, pp=1, cp=2, dp=2)
    n = 4 * SMALL.layer_params(1) + 1024 * 64 + 64 + 1024 * 64  # padded vocab 1024, untied head
    s = state_bytes(SMALL, layout, PlanConfig(seq_len=64), critic=False)
    assert s == {"params": 2 * n, "grads": 4 * n, "optimizer": 12 * n // 4}  # sharded over dp*cp = 4
    fp32 = state_bytes(SMALL, layout, PlanConfig(seq_len=64, precision="fp32"), critic=False)
    assert fp32["optimizer"] == 8 * n // 4  # no main copy of fp32 parameters
    critic = state_bytes(SMALL, layout, PlanConfig(seq_len=64), critic=True)
    assert critic["params"] == 2 * (n - 1024 * 64 + 65)  # value head h + 1 instead of the output layer


def test_activations_per_layer_by_hand_and_split_by_tp_and_cp():
    cfg = PlanConfig(seq_len=1024)
    per_token = 4 * 64 + 2 * 64 + 2 * 32 + 3 * 128  # 4h + 2ad + 2gd + 3f elements
    assert layer_activation_bytes(SMALL, Layout(tp=1, pp=1, cp=1, dp=1), cfg) == 1024 * per_token * 2
    assert layer_activation_bytes(SMALL, Layout(tp=2, pp=1, cp=2, dp=1), cfg) == 1024 * per_token * 2 // 4


def test_full_recompute_keeps_layer_inputs_and_pipelining_keeps_pp_micro_batches():
    cfg = PlanConfig(seq_len=1024)
    one = Layout(tp=1, pp=1, cp=1, dp=1)
    sel = activation_bytes(SMALL, one, cfg, "selective", critic=True)["layers"]
    full = activation_bytes(SMALL, one, cfg, "full", critic=True)["layers"]
    per_layer = layer_activation_bytes(SMALL, one, cfg)
    assert sel == 4 * per_layer
    assert full == 4 * 1024 * 64 * 2 + per_layer
    # 1F1B: stage 0 of pp=2 holds 2 micro-batches of its 2 layers: no saving over pp=1.
    assert activation_bytes(SMALL, Layout(tp=1, pp=2, cp=1, dp=1), cfg, "selective", critic=True)["layers"] == sel
    logits = activation_bytes(SMALL, one, cfg, "selective", critic=False)["logits"]
    assert logits == 1024 * 1024 * 10  # [s, V_pad] in bf16 + fp32 log-softmax + its gradient


def test_vllm_kv_cache_counts_kv_heads_per_rank():
    shape = _qwen3_8b()
    cfg = PlanConfig(seq_len=131072, nodes=1, rollout_batch=16)
    kv1 = vllm_bytes(shape, Layout(tp=1, pp=1, cp=1, dp=8), PlanConfig(seq_len=131072, vllm_tp=1))
    assert kv1["kv_cache_per_sequence"] == 2 * 36 * 8 * 128 * 2 * 131072
    kv8 = vllm_bytes(shape, Layout(tp=8, pp=1, cp=1, dp=1), cfg)
    assert kv8["kv_cache_per_sequence"] == kv1["kv_cache_per_sequence"] // 8
    assert kv8["kv_cache"] == 16 * kv8["kv_cache_per_sequence"]  # one engine holds all 16
    assert kv8["weights"] == pytest.approx(shape.total_params() * 2 / 8, rel=1e-6)


def test_candidates_obey_megatrons_divisibility_rules():
    for layout in candidate_layouts(SMALL, PlanConfig(seq_len=1000, nodes=2)):
        assert SMALL.kv_heads % layout.tp == 0 and SMALL.layers % layout.pp == 0
        assert layout.cp == 1 or 1000 % (2 * layout.cp) == 0
        assert layout.tp * layout.pp * layout.cp * layout.dp == 16
    assert max(lay.cp for lay in candidate_layouts(SMALL, PlanConfig(seq_len=1000, nodes=2))) == 4  # 1000 % 16 != 0


def test_qwen3_8b_at_131k_tokens_fits_on_one_and_on_eight_h100_nodes():
    shape = _qwen3_8b()
    for nodes in (1, 8):
        plan = choose_layout(shape, PlanConfig(seq_len=131072, gpus_per_node=8, gpu_mem_gb=80, nodes=nodes))
        mem = plan.memory
        assert mem.fits and mem.training_peak <= 0.9 * 80e9 and mem.rollout_sequences >= 1
        assert plan.layout.tp * plan.layout.pp * plan.layout.cp * plan.layout.dp == 8 * nodes
        # What does not fit is refused: the same layout with the other recompute, if it differs.
        other = estimate(shape, plan.layout, PlanConfig(seq_len=131072, nodes=nodes), "selective")
        assert plan.recompute == "selective" or not other.fits


def test_no_layout_fits_is_a_clear_error():
    with pytest.raises(ValueError, match="no layout of 1 node.*add nodes"):
        choose_layout(_qwen3_8b(), PlanConfig(seq_len=131072, gpus_per_node=1, gpu_mem_gb=16))


def test_cli_json_prints_the_layout_and_bytes_per_component():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "plan_parallelism.py"), "--model", str(QWEN3_8B),
                          "--seq-len", "131072", "--gpus-per-node", "8", "--gpu-mem", "80", "--nodes", "8",
                          "--json"], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    plan = json.loads(out.stdout)
    assert plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"] == 64 and plan["fits"]
    parts = plan["bytes_per_gpu"]
    for key in ("actor/params", "actor/grads", "actor/optimizer", "actor/activations", "actor/logits",
                "critic/params", "critic/grads", "critic/optimizer", "critic/activations",
                "vllm/weights", "vllm/kv_cache"):
        assert isinstance(parts[key], int) and parts[key] > 0, key
    assert plan["training_peak"] <= plan["usable"] and plan["rollout_peak"] <= plan["usable"]
