"""The multi-round runner against a scripted generator: rounds, retries, failures, pipelining."""
import asyncio

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.pacore.prompts import render_synthesis_prompt
from megatron_pacore.pacore.runner import PaCoReRunner, RunnerConfig
from megatron_pacore.pacore.schedule import RoundSchedule
from megatron_pacore.types import Problem, SamplingSettings


def problem(pid="p1", text="What is 2+2?", system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return Problem(id=pid, messages=msgs, problem=text)


def runner(gen, widths="3", **kw):
    kw.setdefault("retry_backoff_s", 0.0)
    return PaCoReRunner(gen, RunnerConfig(schedule=RoundSchedule.from_widths(widths), **kw))


def round_of(request) -> int:
    return int(request.request_id.rsplit("/r", 1)[1])


async def collect(r, problems):
    return {res.id: res async for res in r.run(problems)}


async def test_rounds_widths_and_synthesis_prompt_from_compacted_messages():
    def script(req, i, call):
        return f"<think>t{i}</think>ans{i} r{round_of(req)}"

    gen = ScriptedGenerator(script)
    res = await runner(gen, "3,2").run_problem(problem(system="sys"))
    assert [r.width for r in res.rounds] == [3, 2, 1]
    assert [req.n for _, _, _, req in gen.log] == [3, 2, 1]
    first, second, third = (req for _, _, _, req in gen.log)
    assert first.messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2+2?"}]
    # round 2 sees round 1's compacted messages in the recorded order
    order = res.rounds[1].reference_order
    assert sorted(order) == [0, 1, 2]
    refs = [f"ans{i} r1" for i in order]
    assert second.messages[0] == {"role": "system", "content": "sys"}
    assert second.messages[1]["content"] == render_synthesis_prompt("What is 2+2?", refs)
    assert third.messages[1]["content"] == render_synthesis_prompt(
        "What is 2+2?", [f"ans{i} r2" for i in res.rounds[2].reference_order])
    assert res.final_response == "<think>t0</think>ans0 r3"
    assert res.final_message == "ans0 r3"
    assert res.status == "ok"


async def test_token_accounting_per_trajectory_round_and_problem():
    gen = ScriptedGenerator(lambda req, i, c: " ".join(["w"] * (i + 1 + round_of(req))))
    res = await runner(gen, "4").run_problem(problem())
    assert [t.completion_tokens for t in res.rounds[0].trajectories] == [2, 3, 4, 5]
    assert res.rounds[0].completion_tokens == 14
    assert res.rounds[1].completion_tokens == 3
    assert res.test_time_tokens == 17
    row = res.to_json()
    assert row["test_time_tokens"] == 17
    assert [len(r) for r in row["rounds"]] == [4, 1]
    assert set(row["rounds"][0][0]) >= {"text", "message", "completion_tokens", "finish_reason", "error"}


async def test_failed_samples_are_retried_alone_then_succeed():
    def script(req, i, call):
        if round_of(req) == 1 and call == 0 and i in (1, 2):
            return RuntimeError("engine hiccup")
        return f"ok{i}-{call}"

    gen = ScriptedGenerator(script)
    res = await runner(gen, "4", max_retries=2).run_problem(problem())
    r1 = [req for rid, _, _, req in gen.log if rid.endswith("/r1")]
    assert [req.n for req in r1] == [4, 2]  # only the two failures are asked for again
    trajs = res.rounds[0].trajectories
    assert all(t.ok for t in trajs)
    assert [t.attempts for t in trajs] == [1, 2, 2, 1]
    assert [t.text for t in trajs] == ["ok0-0", "ok0-1", "ok1-1", "ok3-0"]


async def test_sample_that_keeps_failing_is_recorded_and_round_proceeds_with_the_rest():
    def script(req, i, call):
        if round_of(req) == 1 and (call > 0 or i == 0):
            return RuntimeError("bad sample")
        return f"m{i}"

    gen = ScriptedGenerator(script)
    res = await runner(gen, "3", max_retries=2).run_problem(problem())
    trajs = res.rounds[0].trajectories
    assert trajs[0].error == "RuntimeError: bad sample" and trajs[0].attempts == 3
    assert [t.ok for t in trajs] == [False, True, True]
    assert sorted(res.rounds[1].reference_order) == [1, 2]
    last = gen.log[-1][3]
    assert "Reference 2:" in last.messages[-1]["content"]
    assert "Reference 3:" not in last.messages[-1]["content"]
    assert res.status == "degraded" and res.failed_samples == [1, 0]
    row = res.to_json()
    assert (row["status"], row["failed_samples"]) == ("degraded", [1, 0])


async def test_whole_request_exception_is_retried():
    def fail_first(req, call):
        return ConnectionError("server went away") if call == 0 else None

    gen = ScriptedGenerator(lambda req, i, c: f"a{i}", raise_for=fail_first)
    res = await runner(gen, "2", max_retries=1).run_problem(problem())
    assert res.status == "ok"
    assert all(t.attempts == 2 for t in res.rounds[0].trajectories)


async def test_problem_with_no_messages_is_marked_failed_with_reason():
    gen = ScriptedGenerator(lambda req, i, c: TimeoutError("took too long"))
    res = await runner(gen, "2", max_retries=1).run_problem(problem())
    assert res.status == "failed"
    assert res.error == "round 1: all 2 trajectories failed (TimeoutError: took too long)"
    assert res.final_response is None
    assert len(res.rounds) == 1 and all(t.error for t in res.rounds[0].trajectories)


async def test_empty_messages_are_not_references_and_all_empty_fails():
    gen = ScriptedGenerator(lambda req, i, c: "<think>only thinking</think>")
    res = await runner(gen, "2").run_problem(problem())
    assert res.status == "failed"
    assert res.error == "round 1: no trajectory produced a non-empty message"


async def test_final_round_failure_marks_problem_failed():
    gen = ScriptedGenerator(lambda req, i, c: ValueError("too long") if round_of(req) == 2 else "m")
    res = await runner(gen, "2", max_retries=0).run_problem(problem())
    assert res.status == "failed" and res.error.startswith("round 2: all 1 trajectories failed")


async def test_next_round_starts_without_waiting_for_other_problems():
    # p_slow's round 1 takes 0.4 s; p_fast's rounds take 0.01 s each and must all finish first.
    gen = ScriptedGenerator(lambda req, i, c: f"m{i}",
                            delay=lambda req: 0.4 if req.request_id == "slow/r1" else 0.01)
    results = [res.id async for res in runner(gen, "2,2").run([problem("slow"), problem("fast")])]
    assert results == ["fast", "slow"]  # yielded as each finishes
    ends = {rid: end for rid, _, end, _ in gen.log}
    starts = {rid: start for rid, start, _, _ in gen.log}
    assert ends["fast/r3"] < ends["slow/r1"]
    assert starts["fast/r2"] < ends["slow/r1"]


async def test_in_flight_requests_are_bounded():
    gen = ScriptedGenerator(lambda req, i, c: "m", delay=lambda req: 0.02)
    r = runner(gen, "2", max_in_flight=3)
    out = await collect(r, [problem(f"p{i}") for i in range(10)])
    assert len(out) == 10 and all(res.status == "ok" for res in out.values())
    assert gen.max_in_flight == 3


async def test_released_reference_order_is_recorded_and_reproducible():
    lengths = [5, 1, 3, 8]
    gen = ScriptedGenerator(lambda req, i, c: "x" * lengths[i] if round_of(req) == 1 else "final")
    res = await runner(gen, "4").run_problem(problem())
    # lengths sorted: [1, 2, 0, 3]; Random(42).shuffle of that list gives [0, 2, 3, 1]
    assert res.rounds[1].reference_order == [0, 2, 3, 1]
    assert res.rounds[0].reference_order == []


async def test_released_order_sorts_and_shuffles_all_k_then_drops_failed_and_empty():
    # As the release: sample 1 failed (text ""), sample 4 is empty; all six are sorted by
    # length and shuffled by Random(42), then those two are dropped. Dropping them first
    # would give [0, 5, 3, 2].
    texts = ["ccc", RuntimeError("lost"), "a", "bbbbb", "", "dd"]
    gen = ScriptedGenerator(lambda req, i, c: texts[i] if round_of(req) == 1 else "final")
    res = await runner(gen, "6", max_retries=0).run_problem(problem())
    assert res.rounds[1].reference_order == [5, 2, 0, 3]
    content = gen.log[-1][3].messages[-1]["content"]
    assert content.index("Reference 1:\ndd\n") < content.index("Reference 2:\na\n") < \
        content.index("Reference 3:\nccc\n") < content.index("Reference 4:\nbbbbb\n")
    assert "Reference 5:" not in content
    assert res.status == "degraded" and res.failed_samples == [1, 0]


async def test_all_samples_ok_is_status_ok_with_zero_failed_samples():
    gen = ScriptedGenerator(lambda req, i, c: f"m{i}")
    res = await runner(gen, "2,2").run_problem(problem())
    assert (res.status, res.failed_samples) == ("ok", [0, 0, 0])


async def test_an_exception_in_one_problems_callback_fails_that_problem_only():
    def on_round(problem_id, record):
        if problem_id == "bad" and record.round == 1:
            raise KeyError("progress bar broke")

    gen = ScriptedGenerator(lambda req, i, c: f"m{i}", delay=lambda req: 0.01)
    r = PaCoReRunner(gen, RunnerConfig(schedule=RoundSchedule.from_widths("2"), retry_backoff_s=0.0),
                     on_round=on_round)
    out = await collect(r, [problem("a"), problem("bad"), problem("b")])
    assert out["bad"].status == "failed"
    assert out["bad"].error == "round 1: on_round callback raised KeyError: 'progress bar broke'"
    assert len(out["bad"].rounds) == 1
    assert (out["a"].status, out["b"].status) == ("ok", "ok")
    assert out["a"].final_message == "m0"


async def test_an_exception_inside_one_problems_run_fails_that_problem_only():
    def tokenize(text):
        if "boom" in text:
            raise RuntimeError("tokenizer crashed")
        return text.split()

    gen = ScriptedGenerator(lambda req, i, c: "boom" if req.request_id.startswith("bad/") else "fine")
    r = PaCoReRunner(gen, RunnerConfig(schedule=RoundSchedule.from_widths("2"), max_message_tokens=5,
                                       retry_backoff_s=0.0),
                     tokenize=tokenize, detokenize=" ".join)
    out = await collect(r, [problem("a"), problem("bad")])
    assert (out["bad"].status, out["bad"].error) == ("failed", "RuntimeError: tokenizer crashed")
    assert out["a"].status == "ok"


async def test_seed_is_varied_per_problem_and_round_but_reproducible():
    gen = ScriptedGenerator(lambda req, i, c: "m")
    r = runner(gen, "2", sampling=SamplingSettings(max_tokens=8, seed=123))
    await collect(r, [problem("a"), problem("b")])
    seeds = {rid: req.sampling.seed for rid, _, _, req in gen.log}
    assert len(set(seeds.values())) == 4
    gen2 = ScriptedGenerator(lambda req, i, c: "m")
    await collect(runner(gen2, "2", sampling=SamplingSettings(max_tokens=8, seed=123)), [problem("a"), problem("b")])
    assert seeds == {rid: req.sampling.seed for rid, _, _, req in gen2.log}


async def test_message_bound_keeps_tail_and_is_recorded():
    gen = ScriptedGenerator(lambda req, i, c: "</think>one two three four")
    res = await runner(gen, "1", max_message_tokens=2).run_problem(problem())
    t = res.rounds[0].trajectories[0]
    assert t.message == "three four" and t.message_truncated_chars == len("one two ")
    assert "\nReference 1:\nthree four\n" in gen.log[-1][3].messages[-1]["content"]


def test_runner_config_rejects_bad_values():
    # The user-facing limits (concurrency, max_retries, reference_order, max_message_tokens)
    # are checked by config.GenerationOptions: tests/unit/test_config.py.
    s = RoundSchedule.from_level("low")
    with pytest.raises(ValueError, match="retry_backoff_s"):
        RunnerConfig(schedule=s, retry_backoff_s=-1.0)
