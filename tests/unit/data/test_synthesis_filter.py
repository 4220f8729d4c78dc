"""Curriculum stage 2 with a scripted generator and the real strict grader: the prompts are
the trainer's synthesis prompts, the accuracy is measured per problem, 0 < it < 1 is kept,
and the job resumes."""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.config import build
from megatron_pacore.data.pool import PoolGrader
from megatron_pacore.data.synthesis_filter import (
    MEASURE_FILE,
    Stage2FilterConfig,
    run_stage2,
    synthesis_prompts,
)
from megatron_pacore.data.train_records import TrainRecord, read_train_records, write_train_records
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.pacore.prompts import render_synthesis_prompt

BOX = re.compile(r"\\boxed\{(\d+)\}")


def toy_record(rid: str, a: int, b: int, answers: list[int]) -> TrainRecord:
    responses = [f"<think>{a} + {b} = {x}</think>\n\\boxed{{{x}}}" for x in answers]
    return TrainRecord(id=rid, conversation=[{"role": "user", "content": f"What is {a} + {b}?"}],
                       responses=responses, answer=str(a + b), correct=[x == a + b for x in answers],
                       metadata={"message_accuracy": sum(x == a + b for x in answers) / len(answers)})


RECORDS = [
    toy_record("all-right", 2, 3, [5] * 6),
    toy_record("all-wrong", 4, 4, [7, 9, 6, 7, 9, 6]),
    toy_record("mixed", 3, 6, [9, 8, 9, 10, 7, 9]),
]


def copy_first_reference(request, i, call):
    """Answers with the first reference's boxed answer (finished thinking: strict-gradable)."""
    text = request.messages[-1]["content"]
    first = text.split("Reference 1:\n", 1)[1]
    return f"<think>copy the first</think>\\boxed{{{BOX.search(first).group(1)}}}"


@pytest.fixture(scope="module")
def grader():
    g = PoolGrader(workers=1, strict=True)
    yield g
    g.close()


def config(tmp_path: Path, generation: dict | None = None, **kw) -> Stage2FilterConfig:
    """The test's config; `generation` holds GenerationOptions fields besides the model."""
    src = tmp_path / "stage1.jsonl"
    if not src.exists():
        write_train_records(src, RECORDS)
    fields = dict(input=str(src), out=str(tmp_path / "stage2"), samples=8, min_messages=2, max_messages=4,
                  generation={"model": "scripted", **(generation or {})})
    return build(Stage2FilterConfig, {**fields, **kw})


def measurements(cfg) -> dict[str, dict]:
    rows = [json.loads(line) for line in (Path(cfg.out) / MEASURE_FILE).read_text().splitlines()]
    return {r["id"]: r for r in rows}


def test_prompts_are_the_trainers_synthesis_prompts_over_pool_messages(tmp_path):
    cfg = config(tmp_path)
    rec = RECORDS[2]
    prompts = synthesis_prompts(rec, cfg)
    assert len(prompts) == 8 and all(p.n == 1 for p in prompts)
    pool = [compact(t) for t in rec.responses]
    for p in prompts:
        assert 2 <= len(p.references) <= 4 and len(set(p.reference_indices)) == len(p.references)
        assert p.references == [pool[i] for i in p.reference_indices]
        assert p.messages == [{"role": "user", "content": render_synthesis_prompt(rec.problem, p.references)}]
    assert len({tuple(p.reference_indices) for p in prompts}) > 1  # each prompt draws its own set
    assert [p.reference_indices for p in synthesis_prompts(rec, cfg)] == [p.reference_indices for p in prompts]


def test_measures_each_problem_and_keeps_accuracy_strictly_between_0_and_1(tmp_path, grader):
    cfg = config(tmp_path, save_responses=True)
    gen = ScriptedGenerator(copy_first_reference)
    summary = asyncio.run(run_stage2(cfg, generator=gen, grade=grader.grade))
    assert summary["complete"] and summary["measured"] == 3 and len(gen.log) == 3 * 8
    m = measurements(cfg)
    assert m["all-right"]["synthesis_accuracy"] == 1.0 and m["all-wrong"]["synthesis_accuracy"] == 0.0
    # The copier is right exactly when the first placed reference is a right message.
    mixed = RECORDS[2]
    expected = [mixed.correct[refs[0]] for refs in m["mixed"]["reference_indices"]]
    assert m["mixed"]["correct"] == expected and m["mixed"]["synthesis_accuracy"] == sum(expected) / 8
    assert 0 < sum(expected) < 8  # (seeded draws: both kinds of first reference occur)
    assert all(BOX.search(r) for r in m["mixed"]["responses"])

    out = Path(cfg.out)
    kept = read_train_records(out / "kept.jsonl")
    assert [r.id for r in kept] == ["mixed"] and kept[0].metadata["synthesis_accuracy"] == sum(expected) / 8
    assert kept[0].responses == mixed.responses and kept[0].correct == mixed.correct
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"], r["synthesis_accuracy"]) for r in removed] == [
        ("all-right", "synthesis_accuracy", 1.0), ("all-wrong", "synthesis_accuracy", 0.0)]
    assert json.loads((out / "summary.json").read_text())["removed_by_reason"] == {"synthesis_accuracy": 2}

    # Everything measured: a rerun generates nothing and writes the same files.
    again = ScriptedGenerator(copy_first_reference)
    summary = asyncio.run(run_stage2(cfg, generator=again, grade=grader.grade))
    assert summary["skipped"] == 3 and summary["measured"] == 0 and again.log == []
    assert [r.id for r in read_train_records(out / "kept.jsonl")] == ["mixed"]


def test_a_failed_problem_is_retried_by_the_next_run(tmp_path, grader):
    cfg = config(tmp_path, generation=dict(max_retries=0))
    broken = ScriptedGenerator(lambda r, i, c: RuntimeError("engine down") if r.request_id.startswith("mixed/")
                               else copy_first_reference(r, i, c))
    summary = asyncio.run(run_stage2(cfg, generator=broken, grade=grader.grade))
    assert not summary["complete"] and summary["failed_problems"] == 1 and summary["unmeasured"] == 1
    assert set(measurements(cfg)) == {"all-right", "all-wrong"}
    assert not (Path(cfg.out) / "kept.jsonl").exists()  # no partial stage file
    fixed = ScriptedGenerator(copy_first_reference)
    summary = asyncio.run(run_stage2(cfg, generator=fixed, grade=grader.grade))
    assert summary["complete"] and summary["skipped"] == 2 and summary["measured"] == 1
    assert {r[0].split("/")[0] for r in fixed.log} == {"mixed"}
    assert (Path(cfg.out) / "kept.jsonl").exists()


def test_other_settings_on_the_same_output_are_refused(tmp_path, grader):
    cfg = config(tmp_path)
    asyncio.run(run_stage2(cfg, generator=ScriptedGenerator(copy_first_reference), grade=grader.grade))
    with pytest.raises(ValueError, match=r"other settings \(samples: 8 there, 4 here\)"):
        asyncio.run(run_stage2(config(tmp_path, samples=4), generator=ScriptedGenerator(copy_first_reference),
                               grade=grader.grade))


def test_an_empty_pool_fails_before_any_generation(tmp_path, grader):
    src = tmp_path / "stage1.jsonl"
    write_train_records(src, [RECORDS[0], TrainRecord(id="empty", conversation=[{"role": "user", "content": "q"}],
                                                      responses=["<think>only thinking</think>"], answer="1")])
    gen = ScriptedGenerator(copy_first_reference)
    with pytest.raises(ValueError, match="record 'empty' has no non-empty cached response"):
        asyncio.run(run_stage2(config(tmp_path), generator=gen, grade=grader.grade))
    assert gen.log == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(samples=0), "samples must be >= 1"),
    (dict(min_messages=0), "min_messages must be >= 1"),
    (dict(min_messages=5, max_messages=4), "max_messages must be >= min_messages=5"),
    (dict(generation=dict(model="")), "model is required"),
    (dict(generation=dict(model="ckpt", sampling=dict(temperature=-1.0))), "temperature must be >= 0"),
    (dict(generation=dict(model="ckpt", max_message_tokens=64)), "generation.max_message_tokens=64: stage 2"),
    (dict(grading=dict(timeout_s=0)), "grading.timeout_s must be > 0"),
])
def test_bad_config_names_the_field(tmp_path, kwargs, message):
    base = dict(input="in.jsonl", out=str(tmp_path), generation=dict(model="ckpt"))
    with pytest.raises(ValueError, match=message):
        build(Stage2FilterConfig, {**base, **kwargs})


def test_the_reference_order_is_the_trainers_sampler_setting(tmp_path):
    """generation.reference_order reaches the sampler: `random` shuffles the drawn messages,
    `released` (the default) puts them in the release's order; the same draws either way."""
    from megatron_pacore.pacore.ordering import reference_order

    rec = RECORDS[2]
    released = synthesis_prompts(rec, config(tmp_path))
    shuffled = synthesis_prompts(rec, config(tmp_path, generation=dict(reference_order="random")))
    for r, s in zip(released, shuffled):  # the same draw; released = the draw put in the release's order
        order = reference_order([rec.responses[i] for i in s.reference_indices], "released")
        assert r.reference_indices == [s.reference_indices[i] for i in order]
    assert [p.reference_indices for p in shuffled] != [p.reference_indices for p in released]


def test_a_directory_from_before_reference_order_was_recorded_resumes(tmp_path, grader):
    """stage2.config.json files written without `reference_order` were made with the released
    order: they resume with it and refuse `random`."""
    cfg = config(tmp_path)
    asyncio.run(run_stage2(cfg, generator=ScriptedGenerator(copy_first_reference), grade=grader.grade))
    path = Path(cfg.out) / "stage2.config.json"
    old = json.loads(path.read_text())
    assert old.pop("reference_order") == "released" and old["checkpoint"] == "scripted"
    path.write_text(json.dumps(old))
    again = ScriptedGenerator(copy_first_reference)
    assert asyncio.run(run_stage2(cfg, generator=again, grade=grader.grade))["complete"] and again.log == []
    with pytest.raises(ValueError, match=r"reference_order: 'released' there, 'random' here"):
        asyncio.run(run_stage2(config(tmp_path, generation=dict(reference_order="random")),
                               generator=again, grade=grader.grade))
