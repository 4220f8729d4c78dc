"""PaCoRe inference end to end on the tiny model through the in-process vLLM engine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.text import assert_text_is_decoded_tokens
from megatron_pacore.config import GenerationOptions, InferConfig
from megatron_pacore.infer import run_infer
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.pacore.prompts import render_synthesis_prompt
from megatron_pacore.pacore.runner import PaCoReRunner, RunnerConfig
from megatron_pacore.pacore.schedule import RoundSchedule
from megatron_pacore.types import GenerationRequest, Problem, SamplingSettings

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine(vllm_engine):
    return vllm_engine


def problems(n):
    return [Problem(id=f"p{i}", messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
                    problem=f"What is {i} + {i}?") for i in range(n)]


async def test_one_request_returns_n_samples_with_exact_token_counts(engine):
    req = GenerationRequest("t", [{"role": "user", "content": "Count to three."}], 3,
                            SamplingSettings(max_tokens=12, ignore_eos=True))
    out = await engine.generate(req)
    assert len(out) == 3
    prompt = engine.encode_chat(req.messages)
    for c in out:
        assert c.completion_tokens == 12 == len(c.token_ids)
        assert c.finish_reason == "length"
        assert c.prompt_tokens == len(prompt)
        assert_text_is_decoded_tokens(c.text, engine.tokenizer.decode(c.token_ids))
    assert len({c.text for c in out}) > 1  # K distinct samples at temperature 1


async def test_runner_rounds_on_real_engine(engine):
    runner = PaCoReRunner(engine, RunnerConfig(schedule=RoundSchedule.from_widths("3"),
                                               sampling=SamplingSettings(max_tokens=16)))
    results = {r.id: r async for r in runner.run(problems(3))}
    assert sorted(results) == ["p0", "p1", "p2"]
    for pid, res in results.items():
        assert res.status == "ok", res.error
        assert [r.width for r in res.rounds] == [3, 1]
        assert [len(r.trajectories) for r in res.rounds] == [3, 1]
        tokens = [t.completion_tokens for r in res.rounds for t in r.trajectories]
        assert all(1 <= t <= 16 for t in tokens)
        assert res.test_time_tokens == sum(tokens)
        # Round 2's prompt is exactly the synthesis prompt of round 1's messages in the
        # recorded order: its token count proves what the engine was sent.
        refs = [res.rounds[0].trajectories[i].message for i in res.rounds[1].reference_order]
        usable = [t for t in res.rounds[0].trajectories if t.message]
        assert len(refs) == len(usable)
        chat = [{"role": "user", "content": render_synthesis_prompt(f"What is {pid[1:]} + {pid[1:]}?", refs)}]
        assert res.rounds[1].prompt_tokens == len(engine.encode_chat(chat))
        assert res.final_response == res.rounds[1].trajectories[0].text


async def test_infer_job_writes_rows_and_resumes_without_regenerating(engine, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": p.id, "problem": p.problem}) + "\n" for p in problems(3)))
    out = tmp_path / "out.jsonl"
    cfg = dict(input=str(inp), output=str(out), widths="2",
               generation=GenerationOptions(model=engine.model, sampling=SamplingSettings(max_tokens=8)))
    assert await run_infer(InferConfig(**cfg, limit=2), generator=engine) == 0
    first = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["id"] for r in first) == ["p0", "p1"]
    assert await run_infer(InferConfig(**cfg, resume=True), generator=engine) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert rows[:2] == first  # untouched
    assert [r["id"] for r in rows[2:]] == ["p2"]
    for r in rows:
        assert set(r) >= {"id", "final_response", "final_message", "rounds", "test_time_tokens", "seconds"}
        assert [len(x) for x in r["rounds"]] == [2, 1]
        assert r["test_time_tokens"] == sum(t["completion_tokens"] for rnd in r["rounds"] for t in rnd)


def test_pacore_command_runs_on_the_tiny_model(tiny_model, tmp_path):
    """The console entry point as a user runs it (its own engine, in a fresh process)."""
    inp = ROOT / "examples" / "data" / "sample_problems.jsonl"
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "megatron_pacore.cli", "infer", "--model", str(tiny_model), "--input", str(inp),
         "--output", str(out), "--level", "low", "--max-tokens", "16", "--limit", "2",
         "--vllm-arg", "max_model_len=4096"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert all([len(x) for x in r["rounds"]] == [4, 1] for r in rows)
    assert "done: 2 problems, 0 failed" in proc.stderr


async def test_seeded_runs_reproduce_and_differ_across_problems(engine):
    def run():
        runner = PaCoReRunner(engine, RunnerConfig(schedule=RoundSchedule.from_widths("2"),
                                                   sampling=SamplingSettings(max_tokens=12, seed=7)))
        return runner.run(problems(2))

    a = {r.id: [t.text for rnd in r.rounds for t in rnd.trajectories] async for r in run()}
    b = {r.id: [t.text for rnd in r.rounds for t in rnd.trajectories] async for r in run()}
    assert a == b
    assert a["p0"][:2] != a["p1"][:2]


async def test_message_token_bound_uses_the_engine_tokenizer(engine, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "q", "problem": "What is 3 + 4?"}) + "\n")
    out = tmp_path / "out.jsonl"
    cfg = InferConfig(input=str(inp), output=str(out), widths="3",
                      generation=GenerationOptions(model=engine.model, sampling=SamplingSettings(max_tokens=24),
                                                   max_message_tokens=5))
    assert await run_infer(cfg, generator=engine) == 0
    row = json.loads(out.read_text())
    tok = engine.tokenizer
    cut = 0
    for t in row["rounds"][0]:
        full = compact(t["text"])
        ids = tok.encode(full, add_special_tokens=False)
        if len(ids) > 5:  # the message is the decoded last 5 tokens of the compacted text
            assert t["message"] == tok.decode(ids[-5:])
            assert t["message_truncated_chars"] == len(full) - len(t["message"]) > 0
            cut += 1
        else:
            assert t["message"] == full and t["message_truncated_chars"] == 0
    assert cut >= 1  # 24-token samples are cut to 5
