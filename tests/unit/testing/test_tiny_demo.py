"""prepare_tiny_demo: what it makes, that a rerun makes nothing, that a changed setting redoes
only what depends on it (pools from a scripted generator; the real engine is in
tests/integration/test_pool_vllm.py)."""
from __future__ import annotations

import json

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.data.train_records import read_train_records
from megatron_pacore.testing.tiny_demo import TinyDemoConfig, prepare_tiny_demo
from megatron_pacore.testing.warm_start import WarmStartConfig


def script(request, i, call):
    """Right on sample 0 of problems whose id ends in an even digit, else off by one."""
    a, b = (int(x) for x in request.messages[-1]["content"][len("What is "):-1].split(" + "))
    even = int(request.request_id.split("/")[0][-1]) % 2 == 0
    return f"<think>{a} + {b}</think>\n\\boxed{{{a + b + (0 if (i == 0 and even) else 1)}}}"


def test_prepare_makes_everything_once_and_redoes_only_what_changed(tmp_path):
    cfg = TinyDemoConfig(cache_dir=str(tmp_path), num_train=10, num_heldout=4, num_messages=3,
                         warm=WarmStartConfig(steps=2, batch_tokens=256, copy_target=None))
    gen = ScriptedGenerator(script)
    paths = prepare_tiny_demo(cfg, generator=gen)
    assert (paths.base_model / "config.json").is_file() and (paths.policy / "model.safetensors").is_file()
    assert (paths.policy / "tokenizer.json").is_file()
    assert len(paths.train_problems.read_text().splitlines()) == 10
    assert len(paths.heldout_problems.read_text().splitlines()) == 4
    records = read_train_records(paths.pool)
    assert len(records) == 10 and sum(gen.calls.values()) == 10
    for r in records:
        even = int(r.id[-1]) % 2 == 0
        assert r.correct == [even, False, False]
    stage1 = read_train_records(paths.stage1)
    assert sorted(r.id for r in stage1) == sorted(r.id for r in records if int(r.id[-1]) % 2 == 0)

    steps = json.loads(paths.manifest.read_text())["steps"]
    policy_mtime = (paths.policy / "model.safetensors").stat().st_mtime_ns
    prepare_tiny_demo(cfg, generator=gen)
    assert sum(gen.calls.values()) == 10  # nothing regenerated
    assert json.loads(paths.manifest.read_text())["steps"] == steps

    # Fewer messages per pool: the pools are rebuilt, the policy is kept.
    prepare_tiny_demo(TinyDemoConfig(**{**cfg.__dict__, "num_messages": 2}), generator=gen)
    assert (paths.policy / "model.safetensors").stat().st_mtime_ns == policy_mtime
    assert all(len(r.responses) == 2 for r in read_train_records(paths.pool))
    assert sum(gen.calls.values()) == 20


def test_warm_start_stops_at_the_target_expected_accuracy(tiny_model, tmp_path):
    from megatron_pacore.testing.toy_task import ToyTask
    from megatron_pacore.testing.warm_start import warm_start

    cfg = WarmStartConfig(steps=40, batch_tokens=256, min_steps=5, check_every=5, target_accuracy=1e-4,
                          copy_target=1e-3, synthesis_steps=20)
    summary = warm_start(tiny_model, tmp_path / "policy", ToyTask(), cfg)
    # A random model already gives the right answers ~1e-3 of its probability: the first check
    # stops phase 1; it puts more than 1e-3 on its references' answers too (a few answers out of
    # a ~200-token vocabulary, then "}"), so phase 2 stops at its first check, before any step.
    assert summary["steps"] == summary["steps_plain_phase"] == 5 and 1e-4 <= summary["expected_accuracy"] < 0.05
    assert 1e-3 <= summary["copy"]["fidelity"] < 0.05
    assert json.loads((tmp_path / "policy" / "warm_start.json").read_text())["steps"] == 5


class _Uniform:
    """A "model" whose next-token distribution is uniform over `vocab` tokens everywhere."""

    training = False

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, input_ids, attention_mask):
        import torch
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_copy_fidelity_sums_the_answer_probabilities_it_claims(tiny_model):
    """Under a uniform model every answer string of n tokens (the digits and "}") has
    probability V^-n, so fidelity = sum over the distinct reference answers of V^-n(x) and
    expected_reward = V^-n(right); reference_accuracy is the cases' mean right share."""
    import random

    from transformers import AutoTokenizer

    from megatron_pacore.testing.toy_task import ToyTask
    from megatron_pacore.testing.warm_start import copy_fidelity, make_problems, synthesis_case

    tok = AutoTokenizer.from_pretrained(tiny_model)
    vocab = len(tok)
    task, cfg = ToyTask(), WarmStartConfig()
    got = copy_fidelity(_Uniform(vocab), tok, task, cfg, count=16)
    # The same seeded cases, drawn again here.
    rng = random.Random(f"warm-start/probe/{cfg.seed}")
    rows = make_problems(task, "train", len(task.split_orderings()[0]))
    fid = exp = acc = 0.0
    for _ in range(16):
        row = rows[rng.randrange(len(rows))]
        right = task.answer(*row["operands"])
        _, answers = synthesis_case(rng, cfg, row["problem"], right)
        p = lambda x: vocab ** -len(tok.encode(f"{x}}}", add_special_tokens=False))  # noqa: E731
        fid += sum(p(x) for x in set(answers))
        exp += p(right)
        acc += answers.count(right) / len(answers)
    assert got["fidelity"] == pytest.approx(fid / 16, rel=1e-4)
    assert got["expected_reward"] == pytest.approx(exp / 16, rel=1e-4)
    assert got["reference_accuracy"] == pytest.approx(acc / 16)
    assert 0 < got["reference_accuracy"] < 1
