"""`pacore infer` exit status: non-zero when any problem failed (unless allowed), with the
count printed; degraded problems are reported but do not fail the job."""
import asyncio
import json

from helpers.scripted import ScriptedGenerator
from megatron_pacore.config import GenerationOptions, InferConfig
from megatron_pacore.infer import run_infer


def job(tmp_path, **kw):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"q{i}"}) + "\n" for i in range(3)))
    return InferConfig(input=str(src), output=str(tmp_path / "out.jsonl"), widths="2",
                       generation=GenerationOptions(model="scripted", max_retries=0), **kw)


def script(req, i, call):
    if req.request_id.startswith("p1/"):
        return RuntimeError("engine lost the request")
    if req.request_id == "p2/r1" and i == 0:
        return RuntimeError("one sample lost")
    return f"answer {i}"


def rows(cfg):
    return {r["id"]: r for r in map(json.loads, open(cfg.output))}


def test_a_failed_problem_makes_infer_exit_non_zero_with_the_count(tmp_path, capsys):
    cfg = job(tmp_path)
    code = asyncio.run(run_infer(cfg, ScriptedGenerator(script)))
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 3 problems failed, 1 degraded" in err and "--allow-failed" in err
    out = rows(cfg)
    assert [out[p]["status"] for p in ("p0", "p1", "p2")] == ["ok", "failed", "degraded"]
    assert out["p2"]["failed_samples"] == [1, 0] and out["p0"]["failed_samples"] == [0, 0]


def test_allow_failed_exits_zero(tmp_path, capsys):
    cfg = job(tmp_path, allow_failed=True)
    assert asyncio.run(run_infer(cfg, ScriptedGenerator(script))) == 0
    assert "1 of 3 problems failed" in capsys.readouterr().err


def test_degraded_problems_alone_exit_zero(tmp_path, capsys):
    cfg = job(tmp_path)
    gen = ScriptedGenerator(lambda req, i, c: RuntimeError("x") if i == 1 and req.request_id.endswith("/r1") else "a")
    assert asyncio.run(run_infer(cfg, gen)) == 0
    assert "0 of 3 problems failed, 3 degraded" in capsys.readouterr().err
    assert {r["status"] for r in rows(cfg).values()} == {"degraded"}


def test_allow_failed_flag_reaches_the_config():
    from megatron_pacore.cli import build_parser
    from megatron_pacore.config import InferConfig
    from megatron_pacore.config_cli import config_from_args

    base = ["infer", "--model", "m", "--input", "i", "--output", "o", "--level", "low"]
    parser = build_parser()
    assert config_from_args(InferConfig, parser.parse_args(base)).allow_failed is False
    assert config_from_args(InferConfig, parser.parse_args(base + ["--allow-failed"])).allow_failed is True
