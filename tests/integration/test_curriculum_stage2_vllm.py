"""`build_curriculum.py filter --stage 2` end to end on a real in-process vLLM engine serving
the tiny model: synthesis prompts over each pool, generation, strict grading, the keep/remove
decision and the resume, through the command line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from megatron_pacore.data.synthesis_filter import MEASURE_FILE
from megatron_pacore.data.train_records import TrainRecord, read_train_records, write_train_records
from megatron_pacore.rewards.math import MathGrader

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import build_curriculum  # noqa: E402


def toy_record(rid: str, a: int, b: int, answers: list[int]) -> TrainRecord:
    responses = [f"<think>{a} + {b} = {x}</think>\n\\boxed{{{x}}}" for x in answers]
    return TrainRecord(id=rid, conversation=[{"role": "user", "content": f"What is {a} + {b}?"}],
                       responses=responses, answer=str(a + b), correct=[x == a + b for x in answers])


@pytest.mark.vllm
def test_stage2_filter_measures_a_checkpoint_on_real_vllm(tmp_path, tiny_model, capsys):
    records = [toy_record("right", 2, 3, [5, 5, 5, 5]), toy_record("wrong", 4, 4, [7, 9, 6, 7]),
               toy_record("mixed", 3, 6, [9, 8, 9, 10])]
    src, out = tmp_path / "stage1.jsonl", tmp_path / "stage2"
    write_train_records(src, records)
    argv = ["filter", "--stage", "2", "--checkpoint", str(tiny_model), "--samples", "3", "--min-messages", "2",
            "--max-messages", "3", "--max-tokens", "16", "--input", str(src), "--out", str(out),
            "--grade-workers", "1", "--save-responses", "--vllm-arg", "max_model_len=1024",
            "--vllm-arg", "enforce_eager=true", "--vllm-arg", "seed=0"]
    assert build_curriculum.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["complete"] and summary["measured"] == 3 and summary["failed_samples"] == 0
    assert summary["completion_tokens"] > 0

    rows = {r["id"]: r for r in map(json.loads, (out / MEASURE_FILE).read_text().splitlines())}
    assert set(rows) == {"right", "wrong", "mixed"}
    answers = {r.id: r.answer for r in records}
    with MathGrader(workers=1, strict=True) as grader:  # the recorded verdicts regrade equal
        for rid, row in rows.items():
            assert len(row["responses"]) == 3 and len(row["reference_indices"]) == 3
            assert all(2 <= len(refs) <= 3 and max(refs) < 4 for refs in row["reference_indices"])
            scores = grader.scores(row["responses"], [answers[rid]] * 3, row["finish_reasons"])
            assert [s == 1.0 for s in scores] == row["correct"]
            assert row["synthesis_accuracy"] == sum(row["correct"]) / 3

    kept = {r.id for r in read_train_records(out / "kept.jsonl")}
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert kept == {rid for rid, row in rows.items() if 0 < row["synthesis_accuracy"] < 1}
    assert {r["id"] for r in removed} == set(rows) - kept
    for r in removed:  # (the random tiny model scores 0; the keep path: tests/unit/data/test_synthesis_filter.py)
        assert r["reason"] == "synthesis_accuracy" and r["synthesis_accuracy"] == rows[r["id"]]["synthesis_accuracy"]

    # Resume: everything is measured, so the rerun starts no engine and changes nothing.
    before = (out / MEASURE_FILE).read_text()
    assert build_curriculum.main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["skipped"] == 3 and again["measured"] == 0
    assert (out / MEASURE_FILE).read_text() == before
