"""HF -> Megatron logits parity with `transformers`, every family, at TP=1, TP=2 and PP=2.

`qwen3_yarn` is the tiny Qwen3 with YaRN rope scaling (factor 4 over an original context of
32 tokens, so the 48-token test sequences are in the scaled regime).
"""
import json
import shutil

import pytest

from dist_launch import run_workers

FAMILIES = ("qwen3", "qwen2", "llama", "qwen3_yarn")
LAYOUTS = ("tp1", "tp2", "pp2")
# Ranks (of 2) that hold full logits: both at TP=1 (data parallel) and TP=2, the last stage at PP=2.
RANKS_WITH_LOGITS = {"tp1": 2, "tp2": 2, "pp2": 1}


def _yarn_copy(src, dst):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                              "original_max_position_embeddings": 32}
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def parity(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    models = {f: str(tiny_models[f]) for f in FAMILIES if f in tiny_models}
    models["qwen3_yarn"] = str(_yarn_copy(tiny_models["qwen3"], tmp / "qwen3_yarn"))
    return run_workers("worker_parity.py", ["--models", json.dumps(models)], tmp / "result.json")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_megatron_logits_match_transformers(parity, family, layout):
    r = parity[f"{family}/{layout}"]
    assert r["ranks"] == RANKS_WITH_LOGITS[layout], f"{family} {layout}: {r['ranks']} ranks produced logits"
    assert 0 <= r["max"] <= 1e-4, f"{family} {layout}: max |logit diff| = {r['max']}"
