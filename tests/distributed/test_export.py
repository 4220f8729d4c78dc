"""Weight-sync export: a TP=2 or PP=2 model yields the Hugging Face tensors, in bounded buckets,
identical to the checkpoint it was loaded from, on every rank."""
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
