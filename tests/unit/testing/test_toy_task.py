"""The toy arithmetic task: deterministic rows, disjoint splits, answers the math grader pays."""
from __future__ import annotations

import json
import re

import pytest

from megatron_pacore.data.io import read_problems
from megatron_pacore.rewards.math import MathGrader
from megatron_pacore.testing.toy_task import ToyTask, make_problems, write_problems
from megatron_pacore.testing.warm_start import WarmStartConfig, make_examples, plain_target, token_batches


def test_same_seed_same_rows_other_seed_other_rows():
    task = ToyTask(seed=5)
    assert make_problems(task, "train", 40) == make_problems(ToyTask(seed=5), "train", 40)
    assert make_problems(task, "train", 40) != make_problems(ToyTask(seed=6), "train", 40)
    first = make_problems(task, "heldout", 3)[0]
    a, b = first["operands"]
    assert first["problem"] == f"What is {a} + {b}?" and first["answer"] == str(a + b)
    assert first["id"] == "toy-heldout-00000"


def test_heldout_prompts_are_never_train_prompts():
    task = ToyTask(max_operand=9, heldout_fraction=0.2)  # heldout_split="ordering"
    train = {tuple(r["operands"]) for r in make_problems(task, "train", 500)}
    held = {tuple(r["operands"]) for r in make_problems(task, "heldout", 500)}
    assert len(train) + len(held) == 100 and len(held) == 9 and train.isdisjoint(held)
    # Each held-out prompt is the other order of a trained pair.
    assert all((b, a) in train and a != b for a, b in held)


def test_pair_split_holds_out_whole_pairs_in_either_order():
    task = ToyTask(max_operand=9, heldout_fraction=0.2, heldout_split="pair")
    train, held = task.split_pairs()
    assert len(train) + len(held) == 55 and len(held) == 11
    seen = {frozenset(r["operands"]) for r in make_problems(task, "train", 500)}
    held_seen = {frozenset(r["operands"]) for r in make_problems(task, "heldout", 500)}
    assert seen.isdisjoint(held_seen)
    assert held_seen == {frozenset(p) for p in held}


def test_every_ordering_is_drawn_before_any_repeats():
    task = ToyTask(max_operand=3, heldout_fraction=0.3)
    train, _ = task.split_orderings()
    rows = make_problems(task, "train", len(train))
    assert {tuple(r["operands"]) for r in rows} == set(train)


def test_multiplication_and_bad_settings():
    row = make_problems(ToyTask(operation="mul", min_operand=2, max_operand=5), "train", 1)[0]
    a, b = row["operands"]
    assert row["answer"] == str(a * b) and " * " in row["problem"]
    with pytest.raises(ValueError, match="operation must be one of"):
        ToyTask(operation="div")
    with pytest.raises(ValueError, match="max_operand"):
        ToyTask(min_operand=4, max_operand=2)
    with pytest.raises(ValueError, match="heldout_split must be"):
        ToyTask(heldout_split="random")
    with pytest.raises(ValueError, match="split must be"):
        make_problems(ToyTask(), "test", 1)


def test_rows_are_read_as_problems_and_targets_are_graded_by_the_math_grader(tmp_path):
    task = ToyTask()
    rows = make_problems(task, "heldout", 4)
    path = write_problems(tmp_path / "heldout.jsonl", rows)
    problems = read_problems(path)
    assert [p.id for p in problems] == [r["id"] for r in rows]
    assert json.loads(path.read_text().splitlines()[0])["answer"] == rows[0]["answer"]
    from megatron_pacore.pacore.compaction import compact

    right = [compact(plain_target(task, *r["operands"], int(r["answer"]))) for r in rows]
    wrong = [compact(plain_target(task, *r["operands"], int(r["answer"]) + 1)) for r in rows]
    with MathGrader(workers=1) as grader:
        scores = grader.scores(right + wrong, [p.answer for p in problems] * 2)
    assert scores == [1.0] * 4 + [0.0] * 4


def test_warm_start_examples_only_use_train_pairs_and_are_noisy_as_configured():
    task = ToyTask()
    _, held = task.split_orderings()
    held = set(held)
    cfg = WarmStartConfig(p_correct=0.4)  # the noisy option
    plain = make_examples(task, cfg, "plain", 2000)
    right = 0
    for chat, target in plain:
        a, b = (int(x) for x in chat[0]["content"][len("What is "):-1].split(" + "))
        assert (a, b) not in held
        right += target.endswith(f"\\boxed{{{a + b}}}")
    assert 0.35 < right / len(plain) < 0.45
    synth = make_examples(task, cfg, "synthesis", 400)
    adopted_share = []
    for chat, target in synth:
        refs = re.findall(r"\nReference \d+:\n\n\\boxed\{(\d+)\}\n", chat[0]["content"])
        assert cfg.min_references <= len(refs) <= cfg.max_references
        a, b = (int(x) for x in target.split("<think>")[1].split("</think>")[0].split(" + "))
        assert target == f"<think>{a} + {b}</think>\n\\boxed{{{target.rsplit('{', 1)[1][:-1]}}}"
        answer = target.rsplit("{", 1)[1].rstrip("}")
        assert answer in refs  # it adopts one reference's answer...
        adopted_share.append(refs.count(answer) / len(refs))
    # ...chosen uniformly: an answer given by a share s of the references is adopted with
    # probability s, so the mean share of the adopted answer exceeds the mean share of a
    # uniformly chosen distinct answer and stays below 1.
    assert 0.5 < sum(adopted_share) / len(adopted_share) < 0.95


def test_token_batches_respect_the_budget():
    items = [([0] * n, 1) for n in (10, 10, 30, 5, 40, 40)]
    groups = token_batches(items, 60)
    assert [len(g) for g in groups] == [2, 2, 1, 1]
    assert all(len(g) * max(len(i[0]) for i in g) <= 60 for g in groups)
    assert sum(len(g) for g in groups) == len(items)
