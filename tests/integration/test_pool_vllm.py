"""The pool builder and the demo's prepare step on a real vLLM engine, and the warm start's
effect measured with real sampling."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_pacore.data.io import read_problems
from megatron_pacore.data.train_records import read_train_records
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.rewards.math import MathGrader
from megatron_pacore.testing.tiny_demo import TinyDemoConfig, prepare_tiny_demo
from megatron_pacore.testing.toy_task import ToyTask
from megatron_pacore.testing.warm_start import WarmStartConfig


def sampled_accuracy(model_dir: Path, problems, samples: int = 16, seed: int = 0) -> float:
    """Share of right answers of `samples` temperature-1.0 samples per problem (transformers
    sampling on CPU, the chat template as vLLM renders it), graded by the math grader."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    chats = [tok.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)
             for p in problems for _ in range(samples)]
    enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=30,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    answers = [p.answer for p in problems for _ in range(samples)]
    with MathGrader(workers=1) as grader:
        scores = grader.scores([compact(t) if "</think>" in t else "" for t in texts], answers)
    return sum(scores) / len(scores)


@pytest.mark.vllm
def test_prepare_builds_graded_pools_on_vllm_and_the_warm_start_beats_the_random_model(tmp_path):
    cfg = TinyDemoConfig(
        cache_dir=str(tmp_path / "demo"), num_train=12, num_heldout=12, num_messages=4,
        warm=WarmStartConfig(), vllm_args={"max_model_len": 1024, "enforce_eager": True, "seed": 0},
    )
    paths = prepare_tiny_demo(cfg)
    manifest = json.loads(paths.manifest.read_text())["steps"]
    assert set(manifest) == {"base", "problems", "policy", "pool", "stage1"}

    # Pools: one record per train problem, 4 graded messages each, grades that regrade equal.
    records = read_train_records(paths.pool)
    problems = {p.id: p for p in read_problems(paths.train_problems)}
    assert {r.id for r in records} == set(problems)
    messages, answers, recorded = [], [], []
    for r in records:
        assert len(r.responses) == 4 and len(r.correct) == 4
        assert r.answer == problems[r.id].answer and r.conversation == problems[r.id].messages
        assert r.metadata["message_accuracy"] == pytest.approx(sum(r.correct) / 4)
        messages += [compact(t) for t in r.responses]
        answers += [r.answer] * 4
        recorded += r.correct
    with MathGrader(workers=1) as grader:
        assert [s == 1.0 for s in grader.scores(messages, answers)] == recorded
    assert sum(recorded) > 0  # the warm-started policy is right sometimes...
    stage1 = read_train_records(paths.stage1)
    assert all(0 < r.message_accuracy < 1 for r in stage1)
    assert len(stage1) == sum(0 < r.message_accuracy < 1 for r in records)

    # A second call finds everything made: nothing is regenerated.
    before = paths.pool.read_text()
    prepare_tiny_demo(cfg)
    assert paths.pool.read_text() == before
    assert json.loads(paths.manifest.read_text())["steps"] == manifest

    # Above the random model (which never answers in the paid format) on the train problems,
    # and on the held-out prompts the warm start never saw.
    train = list(problems.values())
    heldout = read_problems(paths.heldout_problems)
    random_train, random_held = (sampled_accuracy(paths.base_model, ps, samples=4) for ps in (train, heldout))
    warm_train, warm_held = (sampled_accuracy(paths.policy, ps) for ps in (train, heldout))
    assert random_train == 0.0 and random_held == 0.0
    assert warm_train >= 0.15, warm_train
    assert warm_held > random_held, warm_held
