"""Weight-sync export: a TP=2 or PP=2 model yields the Hugging Face tensors, in bounded buckets,
identical to the checkpoint it was loaded from, on every rank; at TP=2 each rank's per-rank
export equals its slices of the checkpoint in an engine's layout whose vocabulary rows split
unlike Megatron's (re-sliced between the ranks); with PP=2 it is refused."""
import json

import pytest

from dist_launch import run_workers

FAMILIES = ("qwen3", "qwen2", "llama")


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    models = {f: str(tiny_models[f]) for f in FAMILIES}
    return run_workers("worker_export.py", ["--models", json.dumps(models)], tmp / "result.json")


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_export_buckets_reproduce_the_hf_checkpoint(exported, family, layout):
    r = exported[f"{family}/{layout}"]
    assert r["identical"], r
    assert r["bounded"] and r["several_buckets"], r
    assert r["bf16"], r
    assert r["order"][0] == "model.embed_tokens.weight"


@pytest.mark.parametrize("family", FAMILIES)
def test_rank_shards_are_the_engines_slices_of_the_hf_checkpoint(exported, family):
    r = exported[f"{family}/tp2"]
    assert r["rank_shards_exact"] and r["rank_shards_all_names"], r
    # Rank 0's engine rows [0, 504) of the 1002, of Megatron's [0, 512) of 1024: re-sliced.
    assert r["padded_vocab"] == 1024 and r["embedding_span"] == [0, 0, 504], r
    # Each rank moves about half the model (norms are whole on both), nothing gathered.
    assert 0.45 < r["rank_shards_fraction"] < 0.6, r


@pytest.mark.parametrize("family", FAMILIES)
def test_rank_shards_are_refused_with_pipeline_stages(exported, family):
    assert "needs PP=1" in exported[f"{family}/pp2"]["rank_shards_error"], exported[f"{family}/pp2"]
