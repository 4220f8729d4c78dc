"""Vocab-parallel log-probs, entropy and their gradient; the critic's values and gradients."""
import json

import pytest

from dist_launch import run_workers

FAMILIES = ("qwen3", "qwen2", "llama")
# Ranks (of 2) with output: both at TP=2, the last pipeline stage alone at PP=2.
RANKS_WITH_OUTPUT = {"tp2": 2, "pp2": 1}


def _max(measured: dict, layout: str) -> float:
    """The max of a `rank_outputs.gather_max` record, after checking which ranks measured."""
    assert measured["ranks"] == RANKS_WITH_OUTPUT[layout], measured
    return measured["max"]


@pytest.fixture(scope="module")
def measured(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logprobs")
    models = {f: str(tiny_models[f]) for f in FAMILIES}
    return run_workers("worker_logprobs.py", ["--models", json.dumps(models)], tmp / "result.json")


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logprobs_and_entropy_at_temperature_match_full_vocab_softmax(measured, family, layout):
    assert _max(measured[f"{family}/{layout}/logprob_max_diff"], layout) <= 1e-4
    assert _max(measured[f"{family}/{layout}/entropy_max_diff"], layout) <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_into_vocab_parallel_logits_matches_autograd(measured, family):
    assert measured[f"{family}/tp2/grad_scale"] > 1e-3  # the comparison is not vacuous
    assert measured[f"{family}/tp2/grad_max_diff"] <= 1e-5


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_critic_values_have_token_shape_and_come_from_the_actor_backbone(measured, family, layout):
    assert _max(measured[f"{family}/critic_{layout}/shape_wrong"], layout) == 0.0
    assert _max(measured[f"{family}/critic_{layout}/value_max_diff"], layout) <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_critic_head_and_backbone_receive_gradients(measured, family):
    assert measured[f"{family}/critic/head_grad_norm"] > 0
    assert measured[f"{family}/critic/backbone_grad_norm"] > 0
    assert measured[f"{family}/critic/head_grad_same_on_tp_ranks"]


def test_full_activation_recompute_gives_the_same_gradients(measured):
    assert measured["qwen3/recompute_grad_scale"] > 1e-3
    assert measured["qwen3/recompute_grad_max_diff"] <= 1e-6


def test_critic_trains_through_megatron_ddp_and_the_pipeline_schedule(measured):
    assert measured["qwen2/critic_pp2_ddp_min_stage_grad"] > 0
