"""The GPU model paths on one GPU: TE layer spec parity, FP8 recipe from the config, bf16,
selective recomputation. Skipped without CUDA (tests/gpu/conftest.py)."""
import pytest
import torch

FAMILIES = ("qwen3", "qwen2", "llama")


@pytest.fixture(scope="module")
def groups():
    """A world of one on this GPU; torn down afterwards so that NCCL, Megatron's groups and the
    RANK/WORLD_SIZE variables `initialize_parallel` sets do not leak into later tests."""
    import os

    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.get(k) for k in names}
    yield initialize_parallel(ParallelConfig(tp=1, device="cuda"))
    destroy_parallel()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _actor(hf_dir, groups, **opts):
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.models import ModelOptions, build_actor

    hf = HFCheckpoint(hf_dir)
    model, info = build_actor(hf.config, groups, ModelOptions(**opts))
    load_hf_weights(model, info, hf, 1, 0)
    return model.cuda(), hf.config


def _reference_logits(hf_dir, ids):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        return ref(ids.cuda()).logits


def _ids(vocab, b=2, s=64, seed=0):
    from megatron_pacore.checkpoint.verify import random_tokens

    return random_tokens(vocab, b, s, seed)


@pytest.mark.parametrize("family", FAMILIES)
def test_te_spec_actor_matches_transformers_in_fp32(tiny_models, groups, family):
    from megatron.core.extensions.transformer_engine import TELayerNormColumnParallelLinear

    model, cfg = _actor(tiny_models[family], groups, precision="fp32")
    assert isinstance(model.decoder.layers[0].self_attention.linear_qkv, TELayerNormColumnParallelLinear)
    model.eval()
    ids = _ids(cfg.vocab_size)
    pos = torch.arange(ids.shape[1]).expand_as(ids).cuda()
    with torch.no_grad():
        logits = model(ids.cuda(), pos, None)[..., : cfg.vocab_size]
    assert (logits - _reference_logits(tiny_models[family], ids)).abs().max().item() <= 1e-3


def test_bf16_logprobs_stay_close_to_fp32(tiny_model, groups):
    from megatron_pacore.training.logprobs import token_logprobs

    ids = _ids(1002)
    pos = torch.arange(ids.shape[1]).expand_as(ids).cuda()
    out = {}
    for precision in ("fp32", "bf16"):
        model, cfg = _actor(tiny_model, groups, precision=precision)
        model.eval()
        with torch.no_grad():
            out[precision], _ = token_logprobs(model(ids.cuda(), pos, None), ids.cuda(), cfg.vocab_size)
    assert (out["bf16"] - out["fp32"]).abs().mean().item() <= 0.05


def test_fp8_recipe_and_margin_come_from_the_config(tiny_model, groups):
    from megatron.core.fp8_utils import get_fp8_recipe

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability >= 8.9 (Ada/Hopper)")
    opts = dict(precision="bf16", fp8="hybrid", fp8_recipe="delayed", fp8_margin=2,
                fp8_amax_history_len=16, fp8_amax_compute_algo="max")
    model, cfg = _actor(tiny_model, groups, **opts)
    recipe = get_fp8_recipe(model.config)
    assert (recipe.margin, recipe.amax_history_len, recipe.amax_compute_algo) == (2, 16, "max")
    assert model.config.fp8 == "hybrid"
    bf16, _ = _actor(tiny_model, groups, precision="bf16")
    ids = _ids(cfg.vocab_size, b=2, s=64)
    pos = torch.arange(ids.shape[1]).expand_as(ids).cuda()
    model.train()
    for _ in range(3):  # delayed scaling: later steps use the amax history of earlier ones
        model.zero_grad(set_to_none=True)
        logits = model(ids.cuda(), pos, None)
        logits.float().pow(2).mean().backward()
    with torch.no_grad():
        ref = bf16(ids.cuda(), pos, None)
    diff = (logits.detach().float() - ref.float()).abs()
    assert torch.isfinite(logits).all()
    assert diff.max().item() > 0  # the FP8 GEMMs did run
    assert diff.mean().item() <= 0.25 * ref.float().abs().mean().item()
    assert model.decoder.layers[0].mlp.linear_fc2.weight.grad.abs().sum() > 0


def test_selective_recompute_keeps_gradients(tiny_model, groups):
    grads = []
    for opts in (dict(precision="fp32"),
                 dict(precision="fp32", recompute_granularity="selective", recompute_modules=("core_attn",)),
                 dict(precision="fp32", recompute_granularity="full", recompute_method="block",
                      recompute_num_layers=1)):
        model, cfg = _actor(tiny_model, groups, **opts)
        model.train()
        ids = _ids(cfg.vocab_size)
        pos = torch.arange(ids.shape[1]).expand_as(ids).cuda()
        model(ids.cuda(), pos, None).float().pow(2).mean().backward()
        grads.append(model.decoder.layers[0].self_attention.linear_qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5) and torch.allclose(grads[0], grads[2], atol=1e-5)
