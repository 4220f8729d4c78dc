"""Curriculum stage 1: the accuracy band, duplicates, benchmark contamination, grading of
released rows with the strict graders, and the command line."""
import json
import sys
from pathlib import Path

import pytest

from megatron_pacore.data.curriculum_filter import (
    Stage1FilterConfig,
    StrictPoolGrader,
    filter_stage1,
    parse_fraction,
    run_stage1,
)
from megatron_pacore.data.train_records import TrainRecord, read_train_records

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import build_curriculum  # noqa: E402

RIGHT = "<think>2 + 3 = 5</think>\\boxed{5}"
WRONG = "<think>2 + 3 = 6</think>\\boxed{6}"


def record(rid, problem, right, n=24, domain="math"):
    tests = [{"input": "1\n", "output": "1\n"}] if domain == "code" else None
    return TrainRecord(id=rid, conversation=[{"role": "user", "content": problem}], responses=["r"] * n,
                       domain=domain, answer="5" if domain == "math" else None, tests=tests,
                       correct=[True] * right + [False] * (n - right), source=f"in.jsonl:{rid}")


def cfg(tmp_path, **kw):
    kw.setdefault("domain", "math")
    return Stage1FilterConfig(input=str(tmp_path / "in.jsonl"), out=str(tmp_path / "out"), **kw)


def test_math_keeps_accuracy_strictly_between_0_and_9_of_24(tmp_path):
    recs = [record(f"m{k}", f"Problem number {k} about apples.", k) for k in (0, 1, 8, 9, 24)]
    result = filter_stage1(recs, cfg(tmp_path))
    assert [r.id for r in result.kept] == ["m1", "m8"]
    assert [r.metadata["message_accuracy"] for r in result.kept] == [1 / 24, 8 / 24]
    removed = {r["id"]: r for r in result.removed}
    assert set(removed) == {"m0", "m9", "m24"}
    assert removed["m9"]["reason"] == "accuracy" and removed["m9"]["message_accuracy"] == 9 / 24
    assert removed["m9"]["correct"] == 9 and removed["m9"]["messages"] == 24
    assert removed["m0"]["bounds"] == [0.0, 9 / 24] and removed["m0"]["source"] == "in.jsonl:m0"


def test_code_bound_is_15_of_24_and_bounds_are_configurable(tmp_path):
    recs = [record(f"c{k}", f"Code problem {k}: print the input.", k, domain="code") for k in (14, 15)]
    assert [r.id for r in filter_stage1(recs, cfg(tmp_path, domain="code")).kept] == ["c14"]
    math = [record(f"m{k}", f"Problem {k} about pears.", k) for k in (2, 9, 11, 12)]
    kept = filter_stage1(math, cfg(tmp_path, min_accuracy=2 / 24, max_accuracy=parse_fraction("1/2"))).kept
    assert [r.id for r in kept] == ["m9", "m11"]
    # The other domain is set aside, not graded.
    mixed = filter_stage1([record("m", "A math problem.", 3), recs[0]], cfg(tmp_path))
    assert [r.id for r in mixed.kept] == ["m"]
    assert mixed.removed == [{"id": "c14", "reason": "domain", "domain": "code", "source": "in.jsonl:c14"}]


def test_duplicates_keep_the_first_occurrence(tmp_path):
    long = ("A train leaves the station at 3 pm travelling at 60 miles per hour towards a city that is "
            "180 miles away. At what time does it arrive at the city?")
    recs = [record("a", long, 3), record("b", "What is 7 + 5?", 3), record("c", long.upper(), 3),
            record("d", long + " Explain briefly.", 3), record("e", "What is 7 * 5?", 3)]
    result = filter_stage1(recs, cfg(tmp_path))
    assert [r.id for r in result.kept] == ["a", "b", "e"]
    removed = {r["id"]: r for r in result.removed}
    assert removed["c"]["reason"] == "duplicate" and removed["c"]["duplicate_of"] == "a"
    assert removed["c"]["match"] == "exact"
    assert removed["d"]["duplicate_of"] == "a" and removed["d"]["match"] == "near"
    assert 0.8 <= removed["d"]["jaccard"] < 1
    assert [r.id for r in filter_stage1(recs, cfg(tmp_path, dedup=False)).kept] == ["a", "b", "c", "d", "e"]
    clean = filter_stage1(recs + [record("f", "Another one.", 0)], cfg(tmp_path, accuracy_filter=False))
    assert [r.id for r in clean.kept] == ["a", "b", "e", "f"]  # accuracy 0 kept: no band applied


def test_contamination_against_a_real_benchmark_file(tmp_path, benchmarks_dir):
    bench = benchmarks_dir / "hmmt25.jsonl"
    row = json.loads(bench.read_text().splitlines()[1])
    recs = [record("leak", "Please solve: " + row["problem"], 3), record("clean", "What is 7 + 5?", 3)]
    result = filter_stage1(recs, cfg(tmp_path, decontaminate=[str(bench)]))
    assert [r.id for r in result.kept] == ["clean"]
    (leak,) = result.removed
    assert leak["reason"] == "contamination" and leak["id"] == "leak"
    assert (leak["benchmark_file"], leak["benchmark_id"]) == (str(bench), row["id"])
    assert len(leak["ngram"].split()) == 13


def test_released_rows_are_graded_with_the_strict_graders(tmp_path):
    rows = [  # PaCoRe-Train-8k rows: no id, no per-message correctness
        {"conversation": [{"role": "user", "content": "What is 2 + 3?"}], "data_source": "synthetic_math",
         "responses": [RIGHT, WRONG, WRONG, "\\boxed{5}", WRONG, WRONG], "ground_truth": "5"},
        {"conversation": [{"role": "user", "content": "What is 2 + 3, in words of a story?"}],
         "responses": [RIGHT] * 3 + [WRONG], "ground_truth": "5"},
    ]
    src = tmp_path / "released.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = read_train_records(src)
    assert all(r.correct is None for r in recs)
    grader = StrictPoolGrader(workers=1)
    try:
        result = filter_stage1(recs, cfg(tmp_path, max_accuracy=0.5), grade=grader)
    finally:
        grader.close()
    # Row 1: only RIGHT counts (a box without a finished </think> earns nothing in strict mode).
    (kept,) = result.kept
    assert kept.id == "released-0" and kept.correct == [True, False, False, False, False, False]
    assert kept.metadata == {"data_source": "synthetic_math", "message_accuracy": 1 / 6}
    (removed,) = result.removed
    assert removed["id"] == "released-1" and removed["message_accuracy"] == 0.75


def test_run_writes_kept_removed_and_summary(tmp_path):
    rows = [{"id": "a", "conversation": [{"role": "user", "content": "What is 1 + 1?"}], "responses": ["x"] * 4,
             "ground_truth": "2", "correct": [True, False, False, False]},
            {"id": "b", "conversation": [{"role": "user", "content": "what is 1+1 ?"}], "responses": ["x"] * 4,
             "ground_truth": "2", "correct": [True, False, False, False]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = run_stage1(cfg(tmp_path, max_accuracy=0.5))
    out = tmp_path / "out"
    assert [r.id for r in read_train_records(out / "kept.jsonl")] == ["a"]
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert removed == [{"id": "b", "reason": "duplicate", "duplicate_of": "a", "match": "exact", "jaccard": 1.0,
                        "source": f"{tmp_path / 'in.jsonl'}:2"}]
    assert summary["kept"] == 1 and summary["removed_by_reason"] == {"duplicate": 1}
    assert json.loads((out / "summary.json").read_text())["input"] == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(domain="text"), "domain must be one of"),
    (dict(min_accuracy=0.5, max_accuracy=0.4), "need 0 <= min_accuracy < max_accuracy <= 1"),
    (dict(near_duplicate_jaccard=1.2), "near_duplicate_jaccard must be in"),
    (dict(shingle_size=0), "shingle_size must be >= 1"),
    (dict(contamination_ngram=0), "contamination_ngram must be >= 1"),
    (dict(decontaminate=["/no/such/bench.jsonl"]), "decontaminate: benchmark file not found"),
    (dict(domain=""), "domain is required"),
    (dict(num_perm=1), "num_perm must be >= 2"),
])
def test_bad_config_names_the_field(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cfg(tmp_path, **kwargs)


def test_cli_filters_and_reports_bad_input(tmp_path, capsys):
    good = {"id": "a", "conversation": [{"role": "user", "content": "What is 1 + 1?"}], "responses": ["x", "y"],
            "ground_truth": "2", "correct": [True, False]}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(good) + "\n")
    out = tmp_path / "out"
    assert build_curriculum.main(["filter", "--stage", "1", "--domain", "math", "--input", str(src),
                                  "--out", str(out), "--max-accuracy", "3/4"]) == 0
    assert [r.id for r in read_train_records(out / "kept.jsonl")] == ["a"]
    capsys.readouterr()

    src.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, id="b", correct=[True])) + "\n")
    assert build_curriculum.main(["filter", "--stage", "1", "--domain", "math", "--input", str(src),
                                  "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: field 'correct'" in err and "one entry per response (2)" in err

    assert build_curriculum.main(["filter", "--stage", "1", "--input", str(src), "--out", str(out)]) == 2
    assert "domain is required" in capsys.readouterr().err
    assert build_curriculum.main(["filter", "--stage", "1", "--domain", "math", "--input", str(src),
                                  "--out", str(out), "--max-accuracy", "nine"]) == 2
    assert "fraction like 9/24, got 'nine'" in capsys.readouterr().err
    assert build_curriculum.main(["filter", "--stage", "2", "--input", str(src), "--out", str(out)]) == 2
    assert "model is required" in capsys.readouterr().err
    assert build_curriculum.main(["filter", "--stage", "2", "--checkpoint", "ckpt", "--domain", "math",
                                  "--input", str(src), "--out", str(out)]) == 2
    assert "--domain: option(s) of filter --stage 1, not of --stage 2" in capsys.readouterr().err
    assert build_curriculum.main(["filter", "--stage", "1", "--domain", "math", "--checkpoint", "ckpt",
                                  "--input", str(src), "--out", str(out)]) == 2
    assert "--checkpoint: option(s) of filter --stage 2" in capsys.readouterr().err


def test_released_code_rows_are_graded_by_the_sandboxed_tests(tmp_path):
    gt = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
    add = "<think>sum</think>```python\nprint(sum(map(int, input().split())))\n```"
    mul = "<think>product</think>```python\na, b = map(int, input().split())\nprint(a * b)\n```"
    unfinished = "```python\nprint(sum(map(int, input().split())))\n```"  # right code, no </think>
    src = tmp_path / "code.json"
    src.write_text(json.dumps([{"conversation": [{"role": "user", "content": "Add two ints from stdin."}],
                                "responses": [add, mul, unfinished, mul], "ground_truth": gt}]))
    (rec,) = read_train_records(src)
    assert rec.domain == "code" and rec.correct is None
    grader = StrictPoolGrader(workers=1)
    try:
        result = filter_stage1([rec], cfg(tmp_path, domain="code"), grade=grader)
    finally:
        grader.close()
    (kept,) = result.kept
    assert kept.correct == [True, False, False, False] and kept.metadata["message_accuracy"] == 0.25


def test_stage_flags_are_the_configs_fields(tmp_path):
    """filter's flags are derived per stage from Stage1FilterConfig / Stage2FilterConfig."""
    from megatron_pacore.config import GradingOptions
    from megatron_pacore.config_cli import config_from_args

    bench = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for b in bench:
        b.write_text("")
    args = build_curriculum.stage_parser(1).parse_args([
        "--input", "in.jsonl", "--out", "o", "--domain", "code", "--max-accuracy", "3/8", "--no-dedup",
        "--near-duplicate-jaccard", "0", "--decontaminate", str(bench[0]), "--decontaminate", str(bench[1]),
        "--ngram", "8", "--grade-workers", "2", "shingle_size=3"])
    c1 = config_from_args(build_curriculum.stage_config_class(1), args)
    assert (c1.domain, c1.max_accuracy, c1.min_accuracy, c1.dedup, c1.accuracy_filter) == ("code", 0.375, 0.0, False, True)
    assert (c1.near_duplicate_jaccard, c1.decontaminate, c1.contamination_ngram, c1.shingle_size) == (
        None, [str(b) for b in bench], 8, 3)
    assert c1.grading == GradingOptions(workers=2)
    # stage 2: the model is --checkpoint or --model; the sampling reaches the generation part
    for flag in ("--checkpoint", "--model"):
        args = build_curriculum.stage_parser(2).parse_args([
            "--input", "in.jsonl", "--out", "o", flag, "ckpt", "--samples", "4", "--temperature", "0.7",
            "--reference-order", "random", "--grade-timeout", "2.5"])
        c2 = config_from_args(build_curriculum.stage_config_class(2), args)
        assert (c2.checkpoint, c2.samples, c2.generation.sampling.temperature) == ("ckpt", 4, 0.7)
        assert c2.generation.reference_order == "random" and c2.grading.timeout_s == 2.5
    with pytest.raises(SystemExit):  # a bound the trainer's prompts do not have: no flag
        build_curriculum.stage_parser(2).parse_args(["--max-message-tokens", "8"])
