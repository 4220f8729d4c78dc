"""Resume records, sample sharing, the eval config and the `pacore eval` command line."""
from __future__ import annotations

import json

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.cli import main
from megatron_pacore.config import GenerationOptions
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.eval.sampling import SharingGenerator
from megatron_pacore.eval.store import GENERATIONS, RecordingGenerator
from megatron_pacore.types import Completion, GenerationRequest, SamplingSettings


def request(rid="p/r1", n=2, content="q", max_tokens=None):
    return GenerationRequest(rid, [{"role": "user", "content": content}], n, SamplingSettings(max_tokens=max_tokens))


def counting():
    return ScriptedGenerator(lambda req, i, call: f"{req.request_id} sample {i} call {call}")


async def test_recorded_calls_are_replayed_in_a_new_session(tmp_path):
    gen = counting()
    rec = RecordingGenerator(gen, tmp_path)
    first = await rec.generate(request())
    retry = await rec.generate(request(n=1))  # call 1 of the same id: a retry
    await rec.close()
    again = RecordingGenerator(None, tmp_path)  # no engine: everything must come from disk
    assert again.stored == 2
    assert [c.text for c in await again.generate(request())] == [c.text for c in first]
    assert [c.text for c in await again.generate(request(n=1))] == [c.text for c in retry]
    assert again.replayed == 2 and again.generated == 0
    with pytest.raises(RuntimeError, match="not recorded"):
        await again.generate(request("p/r2"))


async def test_a_different_request_under_a_recorded_key_is_generated_again(tmp_path):
    rec = RecordingGenerator(counting(), tmp_path)
    await rec.generate(request(max_tokens=8))
    await rec.close()
    gen = counting()
    rec = RecordingGenerator(gen, tmp_path)
    await rec.generate(request(max_tokens=16))
    assert (rec.generated, rec.replayed, len(gen.log)) == (1, 0, 1)


async def test_a_torn_last_line_is_dropped_and_other_damage_is_an_error(tmp_path):
    rec = RecordingGenerator(counting(), tmp_path)
    await rec.generate(request())
    await rec.close()
    path = tmp_path / GENERATIONS
    path.write_text(path.read_text() + '{"request_id": "p/r2", "ca')
    assert RecordingGenerator(None, tmp_path).stored == 1
    assert len(path.read_text().splitlines()) == 1
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(ValueError, match=f"{GENERATIONS}:1: unreadable"):
        RecordingGenerator(None, tmp_path)


async def test_failed_requests_are_not_recorded(tmp_path):
    gen = ScriptedGenerator(lambda r, i, c: "x", raise_for=lambda r, call: RuntimeError("down"))
    rec = RecordingGenerator(gen, tmp_path)
    with pytest.raises(RuntimeError, match="down"):
        await rec.generate(request())
    assert rec.stored == 0 and not (tmp_path / GENERATIONS).read_text()


async def test_sharing_serves_once_and_replaces_chats():
    gen = counting()
    share = SharingGenerator(gen)
    shared = [Completion(text="a"), Completion(text="b")]
    share.share("p/r1", shared)
    share.replace_chat("p/r2", [{"role": "user", "content": "only the problem"}])
    assert await share.generate(request()) == shared
    assert [c.text for c in await share.generate(request(n=1))] == ["p/r1 sample 0 call 0"]  # a retry
    await share.generate(request("p/r2", n=1, content="synthesis prompt"))
    assert gen.log[-1][3].messages == [{"role": "user", "content": "only the problem"}]
    share.share("p/r3", shared)
    with pytest.raises(RuntimeError, match="2 shared samples for n=3"):
        await share.generate(request("p/r3", n=3))


def test_config_checks_name_the_field(tmp_path):
    base = dict(report=str(tmp_path), generation=GenerationOptions(model="m"))
    assert EvalConfig(**base).levels == ["low"]
    with pytest.raises(ValueError, match="levels: 'huge'"):
        EvalConfig(**base, levels=["huge"])
    with pytest.raises(ValueError, match="not both"):
        EvalConfig(**base, levels=["low"], widths=["4"])
    with pytest.raises(ValueError, match="methods: 'vote'"):
        EvalConfig(**base, methods=["vote"])
    with pytest.raises(ValueError, match=r"pool must be >= the widest first round \(16\), got 8"):
        EvalConfig(**base, levels=["low", "medium"], pool=8)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        EvalConfig(**base, runs=0)
    with pytest.raises(ValueError, match="compute levels repeat"):
        EvalConfig(**base, widths=["4", "4"])
    with pytest.raises(ValueError, match="comma-separated positive integers"):
        EvalConfig(**base, widths=["4,x"])
    levels = EvalConfig(**base, widths=["4", "32,4"]).compute_levels()
    assert [(lv.name, lv.schedule.widths) for lv in levels] == [("4", (4, 1)), ("32,4", (32, 4, 1))]


def run_cli(argv, capsys):
    code = main(["eval", *argv])
    return code, capsys.readouterr().err


def test_cli_errors_name_the_problem_before_any_engine_starts(tmp_path, capsys):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "a", "problem": "x"}) + "\n")
    report = str(tmp_path / "r")
    code, err = run_cli(["--model", "none", "--report", report, "--benchmark", str(bench)], capsys)
    assert code == 2 and "b.jsonl:1: row 'a' has no 'answer' (math) or 'tests' (code)" in err
    code, err = run_cli(["--model", "none", "--report", report, "--benchmark", str(tmp_path / "missing.jsonl")], capsys)
    assert code == 2 and "input file not found" in err
    code, err = run_cli(["--model", "none", "--report", report, "--methods", "pacore,vote"], capsys)
    assert code == 2 and "methods: 'vote'" in err
    code, err = run_cli(["--model", "none", "--report", report, "--levels", "low", "--pool", "2"], capsys)
    assert code == 2 and "pool must be >=" in err


def test_cli_reports_a_missing_model_directory(tmp_path, capsys):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "a", "problem": "x", "answer": "1"}) + "\n")
    code, err = run_cli(["--model", str(tmp_path / "no_model"), "--report", str(tmp_path / "r"),
                         "--benchmark", str(bench), "--widths", "2"], capsys)
    assert code == 2 and "model directory not found" in err
