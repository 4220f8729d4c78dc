"""`pacore eval` end to end on the tiny model with the in-process vLLM engine (shared with the
other integration tests): three AIME 2025 problems, widths [2, 1], 8 tokens per trajectory.

The tiny model is random, so accuracies are whatever they are; what is asserted is the
structure: request counts, sample sharing, token accounting, the report files, and that a
rerun (through the `pacore eval` command line) replays everything without starting an engine.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from megatron_pacore.cli import main
from megatron_pacore.eval.command import run_eval
from megatron_pacore.config import GenerationOptions
from megatron_pacore.eval.config import METHODS, EvalConfig
from megatron_pacore.types import SamplingSettings

pytestmark = pytest.mark.vllm
MAX_TOKENS = 8


async def test_eval_on_the_tiny_model_then_resume_from_the_command_line(vllm_engine, benchmarks_dir, tmp_path, capsys):
    report = tmp_path / "report"
    generation = GenerationOptions(model=vllm_engine.model, sampling=SamplingSettings(max_tokens=MAX_TOKENS))
    cfg = EvalConfig(report=str(report), benchmark=str(benchmarks_dir / "aime25.jsonl"),
                     widths=["2"], runs=1, limit=3, grade_workers=2, generation=generation)
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
