"""Actor config from a Hugging Face config: layout checks, RoPE frequencies, user errors."""
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig

from megatron_pacore.training.models import ModelOptions, transformer_config
from megatron_pacore.training.parallel import ParallelConfig, ParallelGroups
from megatron_pacore.training.rope import hf_rope


def _groups(**kw):
    cfg = ParallelConfig(device="cpu", **kw)
    return ParallelGroups(config=cfg, world_size=cfg.model_parallel_size, dp=1, tp_rank=0, pp_rank=0,
                          cp_rank=0, dp_rank=0, pg_collection=None)


@pytest.mark.parametrize("kwargs,field", [
    (dict(tp=0), "parallel.tp"), (dict(pp=-1), "parallel.pp"), (dict(device="tpu"), "parallel.device")])
def test_parallel_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ParallelConfig(**kwargs)


def test_auto_device_resolves_to_cuda_when_available_else_cpu():
    auto = ParallelConfig(tp=2)
    assert auto.device == "auto"
    resolved = auto.resolved()
    assert resolved.device == ("cuda" if torch.cuda.is_available() else "cpu") and resolved.tp == 2
    cpu = ParallelConfig(device="cpu")
    assert cpu.resolved() is cpu


@pytest.mark.parametrize("kwargs,field", [
    (dict(precision="fp64"), "model.precision"),
    (dict(fp8="e5m2"), "model.fp8"),
    (dict(fp8="hybrid", transformer_engine=False), "model.fp8"),
    (dict(fp8_recipe="fancy"), "model.fp8_recipe"),
    (dict(recompute_granularity="full"), "model.recompute_method"),
    (dict(recompute_granularity="some"), "model.recompute_granularity")])
def test_model_options_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelOptions(**kwargs)


def test_qwen3_config_maps_gqa_qk_norm_and_head_dim(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["qwen3"])
    tc = transformer_config(hf, _groups(tp=2), ModelOptions(precision="fp32"))
    assert (tc.num_layers, tc.hidden_size, tc.ffn_hidden_size) == (2, 128, 256)
    assert (tc.num_attention_heads, tc.num_query_groups, tc.kv_channels) == (4, 2, 64)
    assert tc.qk_layernorm and not tc.add_qkv_bias and tc.gated_linear_unit
    assert tc.normalization == "RMSNorm" and tc.layernorm_epsilon == 1e-6
    assert tc.softmax_scale == pytest.approx(1 / 8)
    assert tc.params_dtype == torch.float32 and tc.use_cpu_initialization


def test_qwen2_has_qkv_bias(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["qwen2"])
    tc = transformer_config(hf, _groups(), ModelOptions(precision="fp32"))
    assert tc.add_qkv_bias and not tc.qk_layernorm and tc.kv_channels == 64


def test_layout_that_does_not_divide_the_model_is_refused(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["qwen3"])
    with pytest.raises(ValueError, match="parallel.tp=4 must divide num_key_value_heads=2"):
        transformer_config(hf, _groups(tp=4), ModelOptions(precision="fp32"))
    with pytest.raises(ValueError, match="parallel.pp=4 must divide num_hidden_layers=2"):
        transformer_config(hf, _groups(pp=4), ModelOptions(precision="fp32"))


def test_gpu_only_options_are_refused_on_cpu(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["qwen3"])
    with pytest.raises(ValueError, match="model.sequence_parallel"):
        transformer_config(hf, _groups(tp=2), ModelOptions(precision="fp32", sequence_parallel=True))
    with pytest.raises(ValueError, match="transformer_engine"):
        transformer_config(hf, _groups(), ModelOptions(transformer_engine=True))
    with pytest.raises(ValueError, match="parallel.cp"):
        transformer_config(hf, _groups(cp=2), ModelOptions())
    with pytest.raises(ValueError, match="model.fp8 needs the Transformer Engine spec"):
        transformer_config(hf, _groups(), ModelOptions(fp8="hybrid"))


def test_recompute_options_reach_the_transformer_config(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["llama"])
    tc = transformer_config(hf, _groups(), ModelOptions(
        precision="fp32", recompute_granularity="full", recompute_method="block", recompute_num_layers=1))
    assert (tc.recompute_granularity, tc.recompute_method, tc.recompute_num_layers) == ("full", "block", 1)
    tc = transformer_config(hf, _groups(), ModelOptions(
        precision="fp32", recompute_granularity="selective", recompute_modules=("core_attn", "mlp")))
    assert tc.recompute_granularity == "selective" and tc.recompute_modules == ["core_attn", "mlp"]


def test_llama3_rope_uses_the_configs_original_context(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["llama"])
    inv_freq, scale = hf_rope(hf)
    plain = 1.0 / (500_000.0 ** (torch.arange(0, 64, 2).float() / 64))
    assert scale == 1.0
    assert torch.equal(inv_freq[:4], plain[:4])  # high frequencies untouched
    # Wavelengths above original_max_position_embeddings=1024 are divided by factor 8.
    long = 2 * math.pi / plain > 1024
    assert long.any() and torch.allclose(inv_freq[long], plain[long] / 8)


def test_yarn_attention_factor_goes_into_softmax_scale(tiny_models):
    hf = AutoConfig.from_pretrained(tiny_models["qwen3"])
    hf.rope_parameters = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                          "original_max_position_embeddings": 32}
    _, m = hf_rope(hf)
    assert m == pytest.approx(0.1 * math.log(4) + 1)
    tc = transformer_config(hf, _groups(), ModelOptions(precision="fp32"))
    assert tc.softmax_scale == pytest.approx(m * m / 8)


def test_unsupported_rope_type_is_named():
    cfg = SimpleNamespace(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4}, head_dim=64)
    with pytest.raises(ValueError, match="rope_type='dynamic'"):
        hf_rope(cfg)
