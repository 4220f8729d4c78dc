"""prepare_tiny_demo: what it makes, that a rerun makes nothing, that a changed setting redoes
only what depends on it (pools from a scripted generator; the real engine is in
tests/integration/test_pool_vllm.py)."""
from __future__ import annotations

import json

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
                         warm=WarmStartConfig(steps=2, batch_tokens=256))
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

    cfg = WarmStartConfig(steps=40, batch_tokens=256, min_steps=5, check_every=5, target_accuracy=1e-4)
    summary = warm_start(tiny_model, tmp_path / "policy", ToyTask(), cfg)
    # A random model already gives the right answers ~1e-3 of its probability: the first check stops it.
    assert summary["steps"] == 5 and 1e-4 <= summary["expected_accuracy"] < 0.05
    assert json.loads((tmp_path / "policy" / "warm_start.json").read_text())["steps"] == 5
