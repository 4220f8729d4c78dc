"""`pacore eval` end to end on the tiny model with the in-process vLLM engine (shared with the
other integration tests): three AIME 2025 problems, widths [2, 1], 8 tokens per trajectory.

The tiny model is random, so accuracies are whatever they are; what is asserted is the
structure (request counts, sample sharing, token accounting, the report files), that every
number of metrics.json equals a recomputation from the raw records in generations.jsonl
(graded here, aggregated here, not by eval/metrics.py), and that a rerun (through the
`pacore eval` command line) replays everything without starting an engine.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from megatron_pacore.cli import main
from megatron_pacore.eval.command import run_eval
from megatron_pacore.config import GenerationOptions, GradingOptions
from megatron_pacore.eval.config import METHODS, EvalConfig
from megatron_pacore.types import SamplingSettings

pytestmark = pytest.mark.vllm
MAX_TOKENS = 8


async def test_eval_on_the_tiny_model_then_resume_from_the_command_line(vllm_engine, benchmarks_dir, tmp_path, capsys):
    report = tmp_path / "report"
    generation = GenerationOptions(model=vllm_engine.model, sampling=SamplingSettings(max_tokens=MAX_TOKENS))
    cfg = EvalConfig(report=str(report), benchmark=str(benchmarks_dir / "aime25.jsonl"),
                     widths=["2"], runs=1, limit=3, grading=GradingOptions(workers=2), generation=generation)
    metrics = await run_eval(cfg, generator=vllm_engine, progress=False)

    # 3 first-round requests (n=2), 3 PaCoRe finals, 3 no-messages finals.
    records = [json.loads(line) for line in (report / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 9 == metrics["generation"]["generated"]
    assert sorted(r["request_id"].split("/", 1)[1] for r in records) == ["r2"] * 6 + ["run0/first"] * 3
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert len(results) == 3 and metrics["problems"] == 3
    for row in results:
        assert len(row["first_round"]) == 2
        assert all(1 <= s["tokens"] <= MAX_TOKENS for s in row["first_round"])
        first_tokens = sum(s["tokens"] for s in row["first_round"])
        for method in ("pacore", "no_messages"):
            assert row[method]["status"] == "ok" and row[method]["round_widths"] == [2, 1]
            assert first_tokens < row[method]["tokens"] <= first_tokens + MAX_TOKENS
            assert row[method]["score"] in (0.0, 1.0)

    rows = {r["method"]: r for r in metrics["methods"]}
    assert sorted(rows) == sorted(METHODS)
    assert rows["single"]["tokens"] <= MAX_TOKENS
    assert rows["majority"]["tokens"] == rows["pass_at_k"]["tokens"] <= 2 * MAX_TOKENS
    assert rows["majority"]["tokens"] < rows["pacore"]["tokens"] <= rows["majority"]["tokens"] + MAX_TOKENS
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
    assert rows["pass_at_k"]["accuracy"] >= rows["majority"]["accuracy"]
    assert len(metrics["message_accuracy"]["2"]) == 2
    for name in ("report.md", "metrics.json", "accuracy_vs_tokens.png", "message_accuracy.png"):
        assert (report / name).stat().st_size > 0
    assert "| PaCoRe | 2 | 2,1 |" in (report / "report.md").read_text()

    # The report's numbers are a recomputation from the raw records (generations.jsonl) and
    # the benchmark's answers, done here independently of eval/metrics.py.
    assert metrics == json.loads((report / "metrics.json").read_text())
    expected = recompute_from_generations(records, cfg)
    for method, want in expected["methods"].items():
        got = rows[method]
        assert got["accuracy"] == pytest.approx(want["accuracy"]), method
        assert got["run_accuracies"] == pytest.approx([want["accuracy"]]), method
        assert got["tokens"] == pytest.approx(want["tokens"]), method
        assert got["problems"] == 3 and got["stderr"] is None
    assert metrics["message_accuracy"]["2"] == pytest.approx(expected["message_accuracy"])
    by_problem = {r["problem"]: r for r in results}
    for pid, want in expected["per_problem"].items():
        assert [s["tokens"] for s in by_problem[pid]["first_round"]] == want["first_tokens"]
        assert [s["score"] for s in by_problem[pid]["first_round"]] == want["first_scores"]
        assert by_problem[pid]["pacore"]["score"] == want["pacore_score"]
        assert by_problem[pid]["pacore"]["final_message"] == want["pacore_message"]

    # Rerun through the CLI (in a thread: it runs its own event loop) with the same DIR:
    # everything is replayed, no engine starts (an in-process start alone takes longer).
    start = time.monotonic()
    code = await asyncio.to_thread(main, ["eval", "--model", generation.model, "--benchmark", cfg.benchmark, "--widths", "2",
                 "--limit", "3", "--max-tokens", str(MAX_TOKENS), "--report", str(report), "--grade-workers", "2"])
    assert code == 0 and time.monotonic() - start < 20
    again = json.loads((report / "metrics.json").read_text())
    assert again["generation"] == {"generated": 0, "replayed": 9}
    assert again["methods"] == metrics["methods"]
    assert "report:" in capsys.readouterr().out


def recompute_from_generations(records, cfg):
    """Every number of the report for widths [2, 1], one run, from the recorded completions:
    each problem's first-round request (n=2), its PaCoRe final and its no-messages final."""
    from megatron_pacore.data.io import read_problems
    from megatron_pacore.pacore.compaction import compact
    from megatron_pacore.rewards.math import MathGrader

    answers = {p.id: p.answer for p in read_problems(cfg.benchmark, limit=cfg.limit)}
    assert all(r["call"] == 0 for r in records)  # no retries: one record per request
    by_id = {r["request_id"]: r["completions"] for r in records}
    first = {pid: by_id[f"{pid}/run0/first"] for pid in answers}
    finals = {(pid, m): by_id[f"{pid}|run0|2{'|no_messages' if m == 'no_messages' else ''}/r2"][0]
              for pid in answers for m in ("pacore", "no_messages")}
    texts = [(pid, c["text"]) for pid in answers for c in first[pid]] + [(pid, c["text"]) for (pid, _), c in finals.items()]
    with MathGrader(workers=2) as grader:
        verdicts = grader.grade([compact(t) for _, t in texts], [answers[pid] for pid, _ in texts])
    verdict = {(pid, t): v for (pid, t), v in zip(texts, verdicts)}

    def score(pid, c):
        return verdict[pid, c["text"]].score

    def vote(pid):  # two samples: both right 1; one right against a wrong answer a tie (1/2)
        right = [score(pid, c) == 1.0 for c in first[pid]]
        if all(right):
            return 1.0
        if any(right):
            other = next(c for c, ok in zip(first[pid], right) if not ok)
            return 0.5 if verdict[pid, other["text"]].extracted else 1.0
        return 0.0

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    first_tokens = {pid: sum(c["completion_tokens"] for c in first[pid]) for pid in answers}
    methods = {
        "single": dict(accuracy=mean(mean(score(pid, c) for c in first[pid]) for pid in answers),
                       tokens=mean(first_tokens[pid] / 2 for pid in answers)),
        "majority": dict(accuracy=mean(vote(pid) for pid in answers), tokens=mean(first_tokens.values())),
        "pass_at_k": dict(accuracy=mean(float(any(score(pid, c) == 1.0 for c in first[pid])) for pid in answers),
                          tokens=mean(first_tokens.values())),
    }
    for m in ("pacore", "no_messages"):
        methods[m] = dict(accuracy=mean(score(pid, finals[pid, m]) for pid in answers),
                          tokens=mean(first_tokens[pid] + finals[pid, m]["completion_tokens"] for pid in answers))
    round1 = [score(pid, c) for pid in answers for c in first[pid]]
    round2 = [score(pid, finals[pid, "pacore"]) for pid in answers]
    per_problem = {
        pid: dict(first_tokens=[c["completion_tokens"] for c in first[pid]],
                  first_scores=[score(pid, c) for c in first[pid]],
                  pacore_score=score(pid, finals[pid, "pacore"]),
                  pacore_message=compact(finals[pid, "pacore"]["text"]))
        for pid in answers
    }
    return {"methods": methods, "message_accuracy": [mean(round1), mean(round2)], "per_problem": per_problem}
