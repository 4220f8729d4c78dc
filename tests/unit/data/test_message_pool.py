"""The message pool builder with a scripted generator and the real graders."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from helpers.scripted import ScriptedGenerator
from megatron_pacore.data.train_records import read_train_records
from megatron_pacore.data.pool import (
    PoolBuildConfig,
    PoolGrader,
    build_pool,
    merge_pools,
    parse_shard,
    pool_path,
    read_pool_problems,
    shard_of,
)
from megatron_pacore.data.pool_job import PoolJobConfig, check_config_file, merge_shards
from megatron_pacore.config import GenerationOptions, GradingOptions
from megatron_pacore.types import SamplingSettings


def load_tool():
    """tools/build_curriculum.py as a module (tools/ is not a package)."""
    import importlib.util

    tool = Path(__file__).resolve().parents[3] / "tools" / "build_curriculum.py"
    spec = importlib.util.spec_from_file_location("build_curriculum", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def problems_file(tmp_path) -> Path:
    rows = [{"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i), "source": "toy"} for i in range(8)]
    return write_rows(tmp_path / "problems.jsonl", rows)


def answer_of(request) -> int:
    """The right answer of a scripted request: twice the number in the question."""
    text = request.messages[-1]["content"]
    return 2 * int(text.split()[2])


def script(request, i, call):
    """Sample i answers right when i % 3 == 0; the thinking holds a decoy box."""
    right = answer_of(request)
    got = right if i % 3 == 0 else right + 1
    return f"<think>maybe \\boxed{{{right + 7}}}</think>\nso \\boxed{{{got}}}"


@pytest.fixture(scope="module")
def grader():
    g = PoolGrader(workers=2)
    yield g
    g.close()


def build(problems_file, out, grader, cfg=PoolBuildConfig(num_messages=6), gen=None):
    gen = gen or ScriptedGenerator(script)
    stats = asyncio.run(build_pool(read_pool_problems(problems_file), gen, out, cfg, grade=grader.grade))
    return stats, gen


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_pool_records_per_message_correctness_of_the_compacted_message(problems_file, tmp_path, grader):
    out = tmp_path / "pool.jsonl"
    stats, _ = build(problems_file, out, grader)
    records = {r.id: r for r in read_train_records(out)}  # the trainer's reader accepts the rows
    assert len(records) == 8 and stats.built == 8 and stats.messages == 48
    rec = records["p3"]
    # Only the box after </think> counts: samples 0 and 3 are right, the decoy never is.
    assert rec.correct == [True, False, False, True, False, False]
    assert rec.message_accuracy == pytest.approx(1 / 3)
    assert rec.metadata["message_accuracy"] == pytest.approx(1 / 3)
    assert rec.metadata["source"] == "toy"
    assert rec.answer == "6" and rec.domain == "math"
    assert rec.conversation == [{"role": "user", "content": "What is 3 + 3?"}]
    assert rec.responses[0] == "<think>maybe \\boxed{13}</think>\nso \\boxed{6}"  # verbatim
    row = by_id(out)["p3"]
    assert set(row) == {"id", "domain", "conversation", "responses", "ground_truth", "correct", "source",
                        "message_accuracy"}
    assert stats.summary()["mean_message_accuracy"] == pytest.approx(1 / 3, abs=1e-4)


def test_resume_after_torn_last_line_regenerates_only_the_torn_problem(problems_file, tmp_path, grader):
    out = tmp_path / "pool.jsonl"
    build(problems_file, out, grader)
    full = by_id(out)
    lines = out.read_text().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["id"]
    out.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a crash mid-write
    stats, gen = build(problems_file, out, grader)
    assert stats.skipped == 7 and stats.built == 1
    assert list(gen.calls) == [f"{torn_id}/pool"]
    assert by_id(out) == full
    assert len(out.read_text().splitlines()) == 8


def test_shards_split_deterministically_and_merge_equals_an_unsharded_run(problems_file, tmp_path, grader):
    whole = tmp_path / "whole" / "pool.jsonl"
    build(problems_file, whole, grader, PoolBuildConfig(num_messages=6, sampling=SamplingSettings(seed=3)))
    shard_files = []
    for i in range(3):
        cfg = PoolBuildConfig(num_messages=6, sampling=SamplingSettings(seed=3), shard=(i, 3))
        path = pool_path(tmp_path / "shards", (i, 3))
        stats, gen = build(problems_file, path, grader, cfg)
        ids = {rid.split("/")[0] for rid in gen.calls}
        assert ids == {f"p{k}" for k in range(8) if shard_of(f"p{k}", 3) == i}
        shard_files.append(path)
    merged = tmp_path / "merged.jsonl"
    assert merge_pools(shard_files, merged, problems_file) == 8
    assert by_id(merged) == by_id(whole)
    assert [r["id"] for r in map(json.loads, merged.read_text().splitlines())] == [f"p{k}" for k in range(8)]
    # The directory form used by the CLI finds the same files.
    assert by_id(merge_shards(str(tmp_path / "shards"), str(problems_file))) == by_id(whole)


def test_merge_refuses_missing_problems_and_duplicate_ids(problems_file, tmp_path, grader):
    a = pool_path(tmp_path, (0, 2))
    build(problems_file, a, grader, PoolBuildConfig(num_messages=2, shard=(0, 2)))
    with pytest.raises(ValueError, match="shards \\[1\\] of 2 are missing"):
        merge_shards(str(tmp_path))
    with pytest.raises(ValueError, match="in no input"):
        merge_pools([a], tmp_path / "m.jsonl", problems_file)
    with pytest.raises(ValueError, match="is also at"):
        merge_pools([a, a], tmp_path / "m.jsonl")


def test_failed_samples_are_left_out_and_an_all_failed_problem_is_not_written(problems_file, tmp_path, grader):
    def flaky(request, i, call):
        if request.request_id.startswith("p1/"):
            return RuntimeError("engine down")
        return RuntimeError("bad sample") if i == 0 else script(request, i, call)

    cfg = PoolBuildConfig(num_messages=3, max_retries=1, retry_backoff_s=0.0)
    out = tmp_path / "pool.jsonl"
    stats, _ = build(problems_file, out, grader, cfg, ScriptedGenerator(flaky))
    rows = by_id(out)
    assert "p1" not in rows and stats.failed_problems == 1
    assert len(rows["p2"]["responses"]) == 2 and rows["p2"]["correct"] == [False, False]
    assert stats.failed_messages == 3 + 7  # p1's three, one per other problem


def test_code_problems_are_graded_by_their_tests(tmp_path, grader):
    tests = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6\n"}]
    path = write_rows(tmp_path / "code.jsonl", [{"id": "add", "problem": "Read a b, print a+b.", "tests": tests}])
    good = "<think>sum</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = "<think>diff</think>\n```python\na, b = map(int, input().split())\nprint(a - b)\n```"
    gen = ScriptedGenerator(lambda r, i, c: good if i == 0 else bad)
    out = tmp_path / "pool.jsonl"
    asyncio.run(build_pool(read_pool_problems(path), gen, out, PoolBuildConfig(num_messages=2), grade=grader.grade))
    (rec,) = read_train_records(out)
    assert rec.domain == "code" and rec.correct == [True, False] and rec.tests == tests


def test_training_rows_are_read_as_problems(tmp_path):
    row = {"id": "r1", "conversation": [{"role": "user", "content": "2+2?"}], "responses": ["4"],
           "ground_truth": "4"}
    (p,) = read_pool_problems(write_rows(tmp_path / "train.jsonl", [row]))
    assert p.problem == "2+2?" and p.answer == "4" and "responses" not in p.metadata


def test_bad_input_names_the_problem_and_the_field(tmp_path, grader):
    path = write_rows(tmp_path / "p.jsonl", [{"id": "x", "problem": "no answer here"}])
    with pytest.raises(ValueError, match="problem 'x': a math problem needs an 'answer'"):
        build(path, tmp_path / "o.jsonl", grader)
    for bad in ("1", "2/2", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="shard must be 'i/N'"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="num_messages must be >= 1"):
        PoolBuildConfig(num_messages=0)


def test_a_resumed_job_with_other_settings_is_refused(tmp_path, problems_file):
    def job(temperature):
        return PoolJobConfig(problems=str(problems_file), out=str(tmp_path), generation=GenerationOptions(
            model="m", sampling=SamplingSettings(temperature=temperature)))

    check_config_file(job(1.0))
    check_config_file(job(1.0))  # same settings: fine (another shard, or a resume)
    with pytest.raises(ValueError, match="temperature: 1.0 there, 0.6 here"):
        check_config_file(job(0.6))
    # the file's shape is what earlier versions wrote (flat), so their pools still resume
    assert json.loads((tmp_path / "pool.config.json").read_text()) == {
        "model": "m", "problems": str(problems_file), "num_messages": 24, "max_tokens": None,
        "temperature": 1.0, "top_p": 1.0, "seed": None, "limit": None}


def test_the_pool_job_refuses_synthesis_options_it_would_ignore(problems_file, tmp_path):
    with pytest.raises(ValueError, match="generation.reference_order='random': the pool job"):
        PoolJobConfig(problems=str(problems_file), out=str(tmp_path),
                      generation=GenerationOptions(model="m", reference_order="random"))
    with pytest.raises(ValueError, match="generation.max_message_tokens=8: the pool job"):
        PoolJobConfig(problems=str(problems_file), out=str(tmp_path),
                      generation=GenerationOptions(model="m", max_message_tokens=8))


def test_strict_grading_fails_unclosed_thinking_and_truncated_responses(grader):
    responses = ["<think>3 + 3</think>\n\\boxed{6}", "\\boxed{6}", "<think>x</think>\n\\boxed{6}",
                 "<think>\\boxed{6}</think>\nso 7"]
    finish = ["stop", "stop", "length", "stop"]
    assert grader.grade("math", responses, finish, "6", None) == [True, False, False, False]
    lenient = PoolGrader(workers=1, strict=False)
    try:
        assert lenient.grade("math", responses, finish, "6", None) == [True, True, True, False]
    finally:
        lenient.close()


def test_the_tool_merges_shards_and_reports_bad_input_with_exit_code_2(problems_file, tmp_path, grader, capsys):
    main = load_tool().main

    for i in range(2):
        build(problems_file, pool_path(tmp_path, (i, 2)), grader, PoolBuildConfig(num_messages=2, shard=(i, 2)))
    assert main(["merge", "--out", str(tmp_path), "--problems", str(problems_file)]) == 0
    assert len(read_train_records(tmp_path / "pool.jsonl")) == 8
    assert main(["pool", "--model", "m", "--problems", str(problems_file), "--out", str(tmp_path),
                 "--shard", "2/2"]) == 2
    assert "shard must be 'i/N'" in capsys.readouterr().err


def test_pool_flags_yaml_and_overrides_build_the_job_config(problems_file, tmp_path):
    """`pool`'s flags are PoolJobConfig's fields (config_cli): YAML < flags < dotted overrides."""
    from megatron_pacore.config_cli import config_from_args

    module = load_tool()
    y = tmp_path / "pool.yaml"
    y.write_text(f"problems: {problems_file}\nout: {tmp_path / 'pools'}\nnum_messages: 8\n"
                 "generation:\n  model: /ckpt\n  sampling: {temperature: 0.8, seed: 1}\n  concurrency: 4\n"
                 "grading: {workers: 3}\n")
    args, rest = module.build_parser().parse_known_args([
        "pool", "--config", str(y), "--shard", "1/4", "--seed", "2", "--vllm-arg", "max_model_len=4096",
        "--grade-timeout", "5", "generation.max_retries=7"])
    assert rest == []
    cfg = config_from_args(PoolJobConfig, args)
    assert (cfg.num_messages, cfg.shard, cfg.problems) == (8, "1/4", str(problems_file))
    g = cfg.generation
    assert (g.model, g.concurrency, g.max_retries, g.vllm_args) == ("/ckpt", 4, 7, {"max_model_len": 4096})
    assert g.sampling == SamplingSettings(temperature=0.8, seed=2)
    assert cfg.grading == GradingOptions(workers=3, timeout_s=5.0)
    build = cfg.build_config()  # what build_pool is given
    assert (build.shard, build.sampling, build.concurrency, build.max_retries) == ((1, 4), g.sampling, 4, 7)
    # a flag the pool job would ignore is not offered
    assert module.main(["pool", "--config", str(y), "--reference-order", "random"]) == 2
