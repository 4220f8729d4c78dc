"""`pacore eval` end to end on a scripted generator whose answers are known, so that every
metric is asserted as a number worked out by hand below.

Level "4" = rounds [4, 1]; two runs; four problems. First-round answers (each sample 10 tokens,
each synthesis 20 tokens):

    A (7):    7 7 7 7     single 1    majority 1    pass@4 1   synthesis 5 (wrong)  no-msg 7 (right)
    B (12):   3 3 5 12    single 1/4  majority 0    pass@4 1   synthesis 12 run 0, 4 run 1; no-msg 1
    C (1/2):  1 2 2 3     single 0    majority 0    pass@4 0   synthesis 0.5 (right: emergent); no-msg 2
    D (9):    9 4 9 4     single 1/2  majority 1/2  pass@4 1   synthesis 9;  no-msg 9

pacore per run: 3/4 and 2/4 -> 0.625 ± 0.125; majority 0.375; single 0.4375; pass@k 0.75;
no_messages 0.5. Tokens: single 10, majority/pass@k 40, pacore/no_messages 60.
"""
from __future__ import annotations

import json
import re

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.eval.command import run_eval
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.config import GenerationOptions, GradingOptions
from megatron_pacore.types import Completion, SamplingSettings

ANSWERS = {"A": "7", "B": "12", "C": r"\frac{1}{2}", "D": "9"}
FIRST = {"A": ["7", "7", "7", "7"], "B": ["3", "3", "5", "12"], "C": ["1", "2", "2", "3"], "D": ["9", "4", "9", "4"]}
SYNTHESIS = {"A": ["5", "5"], "B": ["12", "4"], "C": ["0.5", "0.5"], "D": ["9", "9"]}
NO_MESSAGES = {"A": "7", "B": "1", "C": "2", "D": "9"}


def reply(answer: str, tokens: int) -> Completion:
    text = f"<think>working it out</think>So the answer is $\\boxed{{{answer}}}$."
    return Completion(text=text, completion_tokens=tokens, prompt_tokens=5, finish_reason="stop")


def script(request, i, call):
    rid = request.request_id
    pid = rid[0]
    if m := re.fullmatch(r"(\w)/run(\d)/first", rid):
        return reply(FIRST[pid][i], 10)
    if m := re.fullmatch(r"(\w)/pool", rid):
        return reply(FIRST[pid][i % 4], 10)
    if m := re.fullmatch(r"(\w)\|run(\d)\|[\d,]+\|no_messages/r\d", rid):
        return reply(NO_MESSAGES[pid], 20)
    if m := re.fullmatch(r"(\w)\|run(\d)\|[\d,]+/r\d", rid):
        return reply(SYNTHESIS[pid][int(m.group(2))], 20)
    raise AssertionError(f"unexpected request {rid}")


@pytest.fixture
def benchmark(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": k, "problem": f"Problem {k}?", "answer": v}) + "\n"
                            for k, v in ANSWERS.items()))
    return path


def config(tmp_path, benchmark, max_tokens=None, **kw):
    kw.setdefault("widths", ["4"])
    kw.setdefault("runs", 2)
    generation = GenerationOptions(model="scripted", sampling=SamplingSettings(max_tokens=max_tokens))
    return EvalConfig(report=str(tmp_path / "report"), benchmark=str(benchmark), grading=GradingOptions(workers=2),
                      generation=generation, **kw)


def rows_by_method(metrics):
    return {(r["method"], r["level"]): r for r in metrics["methods"]}


async def test_accuracy_majority_and_emergence_are_the_hand_computed_numbers(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    metrics = await run_eval(config(tmp_path, benchmark), generator=gen, progress=False, retry_backoff_s=0)
    rows = rows_by_method(metrics)
    assert rows["pacore", "4"]["run_accuracies"] == [0.75, 0.5]
    assert rows["pacore", "4"]["accuracy"] == pytest.approx(0.625)
    assert rows["pacore", "4"]["stderr"] == pytest.approx(0.125)
    assert rows["majority", "4"]["accuracy"] == pytest.approx(0.375)
    assert rows["majority", "4"]["stderr"] == pytest.approx(0.0)
    assert rows["single", "-"]["accuracy"] == pytest.approx(0.4375)
    assert rows["pass_at_k", "4"]["accuracy"] == pytest.approx(0.75)
    assert rows["no_messages", "4"]["accuracy"] == pytest.approx(0.5)
    tokens = {key[0]: r["tokens"] for key, r in rows.items()}
    assert tokens == {"single": 10, "majority": 40, "pass_at_k": 40, "pacore": 60, "no_messages": 60}
    assert [r["widths"] for r in metrics["methods"]] == ["4,1", "1", "4", "4", "4,1"]
    assert metrics["message_accuracy"] == {"4": [pytest.approx(14 / 32), pytest.approx(0.625)]}
    e = metrics["emergence"]["4"]
    assert (e["instances"], e["all_inputs_wrong"], e["right_although_all_inputs_wrong"]) == (8, 2, 2)
    assert (e["emergent_correctness"], e["emergent_given_all_wrong"]) == (0.25, 1.0)
    assert (e["all_inputs_right"], e["wrong_although_all_inputs_right"], e["converse"]) == (2, 2, 0.25)


async def test_methods_share_first_round_samples_and_no_messages_sees_only_the_problem(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    await run_eval(config(tmp_path, benchmark), generator=gen, progress=False, retry_backoff_s=0)
    ids = [rid for rid, _, _, _ in gen.log]
    # One first-round request of n=4 per problem and run; the pipelines' round 1 never reaches
    # the engine (it is served the same samples).
    assert sorted(i for i in ids if i.endswith("/first")) == sorted(f"{p}/run{r}/first" for p in "ABCD" for r in (0, 1))
    assert not [i for i in ids if i.endswith("/r1")]
    assert len(ids) == 8 + 8 + 8  # first rounds, pacore finals, no-messages finals
    results = [json.loads(line) for line in (tmp_path / "report" / "results.jsonl").read_text().splitlines()]
    a0 = next(r for r in results if r["problem"] == "A" and r["run"] == 0)
    assert [s["extracted"] for s in a0["first_round"]] == ["7"] * 4
    for _, _, _, req in gen.log:
        if "|no_messages/" in req.request_id:
            assert req.messages == [{"role": "user", "content": f"Problem {req.request_id[0]}?"}]
        elif "/r2" in req.request_id:
            assert "Reference Responses" in req.messages[-1]["content"]
            assert req.messages[-1]["content"].count("So the answer is") == 4


async def test_three_rounds_no_messages_shares_the_intermediate_round(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    metrics = await run_eval(config(tmp_path, benchmark, widths=["4,2"], runs=1), generator=gen,
                             progress=False, retry_backoff_s=0)
    ids = [rid for rid, _, _, _ in gen.log]
    assert sorted(i for i in ids if "|no_messages/" in i) == [f"{p}|run0|4,2|no_messages/r3" for p in "ABCD"]
    assert len([i for i in ids if re.fullmatch(r"\w\|run0\|4,2/r2", i)]) == 4
    rows = rows_by_method(metrics)
    # pacore: final = SYNTHESIS run 0 -> A wrong, B, C, D right; tokens 40 + 2*20 + 20.
    assert rows["pacore", "4,2"]["accuracy"] == 0.75 and rows["pacore", "4,2"]["tokens"] == 100
    assert rows["no_messages", "4,2"]["tokens"] == 100
    assert rows["pacore", "4,2"]["widths"] == "4,2,1"
    assert len(metrics["message_accuracy"]["4,2"]) == 3


async def test_pool_is_generated_once_and_runs_draw_from_it(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    await run_eval(config(tmp_path, benchmark, pool=8, runs=3, methods=["pacore", "majority"]),
                   generator=gen, progress=False, retry_backoff_s=0)
    first = [req for rid, _, _, req in gen.log if rid.endswith("/pool")]
    assert sorted(r.request_id for r in first) == [f"{p}/pool" for p in "ABCD"] and {r.n for r in first} == {8}
    assert not [rid for rid, _, _, _ in gen.log if rid.endswith("/first")]
    results = [json.loads(line) for line in (tmp_path / "report" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 12
    draws = {}
    for r in results:
        got = [s["extracted"] for s in r["first_round"]]
        assert len(got) == 4 and all(x in FIRST[r["problem"]] for x in got)
        draws.setdefault(r["problem"], []).append(got)
    assert any(len({tuple(d) for d in runs}) > 1 for runs in draws.values())  # runs draw differently


async def test_rerun_with_the_same_directory_replays_and_generates_nothing(tmp_path, benchmark):
    first = ScriptedGenerator(script)
    m1 = await run_eval(config(tmp_path, benchmark), generator=first, progress=False, retry_backoff_s=0)
    again = ScriptedGenerator(script)
    m2 = await run_eval(config(tmp_path, benchmark), generator=again, progress=False, retry_backoff_s=0)
    assert again.log == []
    assert m2["generation"] == {"generated": 0, "replayed": len(first.log)}
    assert m2["methods"] == m1["methods"] and m2["emergence"] == m1["emergence"]
    assert m2["grading"] == {"math": "lenient"}  # the report says which math mode graded it
    assert "- grading: math lenient" in (tmp_path / "report" / "report.md").read_text()


async def test_rerun_continues_an_incomplete_directory(tmp_path, benchmark):
    """Only first rounds were generated (a run of the sampling methods); adding PaCoRe
    generates only the synthesis rounds."""
    first = ScriptedGenerator(script)
    await run_eval(config(tmp_path, benchmark, methods=["single", "majority"]), generator=first,
                   progress=False, retry_backoff_s=0)
    assert len(first.log) == 8
    more = ScriptedGenerator(script)
    metrics = await run_eval(config(tmp_path, benchmark), generator=more, progress=False, retry_backoff_s=0)
    assert not [rid for rid, _, _, _ in more.log if rid.endswith("/first")]
    assert len(more.log) == 16
    assert rows_by_method(metrics)["pacore", "4"]["accuracy"] == pytest.approx(0.625)


async def test_changed_generation_settings_in_the_same_directory_are_refused(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    await run_eval(config(tmp_path, benchmark, methods=["single"]), generator=gen, progress=False)
    with pytest.raises(ValueError, match=r"a report made with other settings \(max_tokens: None there, 64 here\)"):
        await run_eval(config(tmp_path, benchmark, methods=["single"], max_tokens=64), generator=gen, progress=False)


async def test_failed_samples_are_retried_and_a_failed_pipeline_counts_as_wrong(tmp_path, benchmark):
    def flaky(request, i, call):
        if request.request_id == "A/run0/first" and i == 0 and call == 0:
            return RuntimeError("engine hiccup")  # retried once, then fine
        if request.request_id.startswith("B|run0|4/"):
            return RuntimeError("always down")  # B's synthesis never succeeds in run 0
        return script(request, i, call)

    gen = ScriptedGenerator(flaky)
    metrics = await run_eval(config(tmp_path, benchmark, methods=["pacore", "single"]), generator=gen,
                             progress=False, retry_backoff_s=0)
    rows = rows_by_method(metrics)
    assert rows["single", "-"]["accuracy"] == pytest.approx(0.4375)  # the retry restored A's sample
    assert rows["pacore", "4"]["run_accuracies"] == [0.5, 0.5]  # B run 0 failed: wrong


async def test_report_files(tmp_path, benchmark):
    gen = ScriptedGenerator(script)
    await run_eval(config(tmp_path, benchmark), generator=gen, progress=False, retry_backoff_s=0)
    out = tmp_path / "report"
    for name in ("report.md", "metrics.json", "results.jsonl", "generations.jsonl", "config.json",
                 "accuracy_vs_tokens.png", "message_accuracy.png"):
        assert (out / name).is_file(), name
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| PaCoRe | 4 | 4,1 | 62.5 ± 12.5 (60) |" in md
    assert "| Majority vote | 4 | 4 | 37.5 ± 0.0 (40) |" in md
    assert "| Single sample | - | 1 | 43.8 ± 0.0 (10) |" in md
    assert "| 4 | 4,1 | 43.8 | 62.5 |" in md
    assert "| 4 | 8 | 25.0 | 2/2 | 25.0 | 2/2 |" in md
    assert "![accuracy vs test-time tokens](accuracy_vs_tokens.png)" in md
    assert len((out / "generations.jsonl").read_text().splitlines()) == 24
