"""Distributed checkpoints: conversion loads at TP=2 and PP=2, a TP=2 save loads at TP=1,
HF -> Megatron(TP=2) -> HF is bit-identical, and mismatched checkpoints fail clearly."""
import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from dist_launch import run_workers

FAMILIES = ("qwen3", "qwen2", "llama")


def _wide_qwen3(src, dst):
    """The tiny Qwen3 with intermediate_size 192 instead of 256 (same family, other shapes)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["intermediate_size"] = 192
    (dst / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(dst / "model.safetensors"))
    for k in list(t):
        if "gate_proj" in k or "up_proj" in k:
            t[k] = t[k][:192].contiguous()
        elif "down_proj" in k:
            t[k] = t[k][:, :192].contiguous()
    save_file(t, str(dst / "model.safetensors"))
    return dst


def _edited(src, dst, edit):
    shutil.copytree(src, dst)
    t = load_file(str(dst / "model.safetensors"))
    edit(t)
    save_file(t, str(dst / "model.safetensors"))
    return str(dst)


@pytest.fixture(scope="module")
def checkpoints(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    wide = _wide_qwen3(tiny_models["qwen3"], tmp / "wide")
    models = {f: str(tiny_models[f]) for f in FAMILIES}
    embed = "model.embed_tokens.weight"
    bad = {  # the tiny qwen3 ties its embeddings; llama does not
        "extra_tensor": _edited(tiny_models["llama"], tmp / "extra",
                                lambda t: t.__setitem__("model.layers.1.mlp.extra_proj.weight", t["model.norm.weight"] * 0)),
        "tied_head_differs": _edited(tiny_models["qwen3"], tmp / "tied_differs",
                                     lambda t: t.__setitem__("lm_head.weight", t[embed] * 2)),
        "tied_head_copy": _edited(tiny_models["qwen3"], tmp / "tied_copy",
                                  lambda t: t.__setitem__("lm_head.weight", t[embed].clone())),
    }
    return run_workers("worker_checkpoint.py", ["--models", json.dumps(models), "--wide", str(wide),
                                                "--bad", json.dumps(bad), "--work", str(tmp)], tmp / "result.json")


def _diff(measured: dict, ranks: int) -> float:
    """The max |diff| of a `rank_outputs.gather_max` record, after checking how many of the 2
    ranks had logits (both at TP=2 and at TP=1 (data parallel), the last stage alone at PP=2)."""
    assert measured["ranks"] == ranks, measured
    return measured["max"]


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_checkpoint_matches_transformers_at_tp2_and_pp2(checkpoints, family):
    assert _diff(checkpoints[f"{family}/converted_tp2_vs_hf"], ranks=2) <= 1e-4
    assert _diff(checkpoints[f"{family}/converted_pp2_vs_hf"], ranks=1) <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_tp2_checkpoint_loaded_at_tp1_gives_the_same_logits(checkpoints, family):
    assert _diff(checkpoints[f"{family}/saved_tp2_loaded_tp1_vs_tp2"], ranks=2) <= 1e-5
    assert _diff(checkpoints[f"{family}/saved_tp2_loaded_tp1_vs_hf"], ranks=2) <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_to_megatron_tp2_to_hf_is_bit_identical(checkpoints, family):
    assert checkpoints[f"{family}/export_of_converted_identical"] is True
    assert checkpoints[f"{family}/export_of_saved_identical"] is True


def test_checkpoint_of_another_family_is_refused_by_name(checkpoints):
    assert "holds a qwen2 model; this model is qwen3" in checkpoints["wrong_family"]


def test_checkpoint_of_another_shape_is_refused_with_the_key(checkpoints):
    msg = checkpoints["wrong_shape"]
    assert "does not fit this model" in msg and "linear_fc1.weight" in msg, msg


def test_critic_checkpoint_saved_at_tp2_restores_its_value_head_at_tp1(checkpoints):
    assert checkpoints["critic_tp2_loaded_tp1_values_diff"] <= 1e-5


def test_critic_heads_start_different_so_the_restore_check_is_not_vacuous(checkpoints):
    assert checkpoints["critic_heads_differ_before_load"] > 1e-4


def test_critic_refuses_an_actor_checkpoint_naming_the_value_head(checkpoints):
    msg = checkpoints["critic_from_actor_checkpoint"]
    assert "tensors missing for this model" in msg and "value_head.weight" in msg, msg


def test_checkpoint_holding_optimizer_state_loads_the_model(checkpoints):
    diff = checkpoints["optimizer_state_checkpoint_logits_diff"]
    assert isinstance(diff, float) and diff <= 1e-5, diff


def test_loader_names_a_tensor_the_table_would_leave_unused(checkpoints):
    msg = checkpoints["extra_tensor"]
    assert "unknown ['model.layers.1.mlp.extra_proj.weight']" in msg, msg


def test_loader_refuses_a_tied_checkpoint_whose_lm_head_is_not_the_embedding(checkpoints):
    msg = checkpoints["tied_head_differs"]
    assert "unknown ['lm_head.weight']" in msg and "not a copy of the embedding" in msg, msg


def test_loader_accepts_a_tied_checkpoint_carrying_a_copy_of_the_embedding_as_lm_head(checkpoints):
    assert checkpoints["tied_head_copy"].startswith("loaded "), checkpoints["tied_head_copy"]
