"""Decontamination against the real benchmark files: normalised word 13-grams."""
import json

import pytest

from megatron_pacore.data.decontaminate import BenchmarkIndex, benchmark_texts
from megatron_pacore.data.text_norm import words


def first_row(path):
    return json.loads(path.read_text().splitlines()[0])


def test_a_benchmark_problem_copied_with_other_markup_is_found(benchmarks_dir):
    aime = benchmarks_dir / "aime25.jsonl"
    row = first_row(aime)  # "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$"
    index = BenchmarkIndex.from_files([aime, benchmarks_dir / "hmmt25.jsonl"], n=13)
    assert index.problems == 60 and index.files == [str(aime), str(benchmarks_dir / "hmmt25.jsonl")]
    copied = "Solve this. " + row["problem"].replace("$", "").upper() + " Give a number."
    hit = index.match(copied)
    assert hit is not None
    assert (hit.benchmark_file, hit.benchmark_id) == (str(aime), row["id"])
    assert len(hit.ngram.split()) == 13 and hit.ngram.split()[0] == "find"


def test_an_unrelated_problem_and_a_short_overlap_are_not_contamination(benchmarks_dir):
    index = BenchmarkIndex.from_files([benchmarks_dir / "aime25.jsonl"])
    assert index.match("What is 7 + 5? Give the answer in a box.") is None
    row = first_row(benchmarks_dir / "aime25.jsonl")
    twelve = " ".join(words(row["problem"])[:12])  # 12 shared words: below the 13-gram
    assert index.match(twelve + " and then something else entirely") is None
    assert BenchmarkIndex.from_files([benchmarks_dir / "aime25.jsonl"], n=8).match(twelve) is not None


def test_short_benchmark_problems_match_only_whole(tmp_path):
    bench = tmp_path / "tiny_bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "problem": "What is 7 + 5?", "answer": "12"}) + "\n")
    index = BenchmarkIndex.from_files([bench])
    assert index.match("what is 7+5").benchmark_id == "b1"  # words only: the operator is markup here
    assert index.match("What is 7 + 5 apples and 3 pears?") is None


def test_bad_benchmark_rows_name_file_line_and_field(tmp_path):
    bench = tmp_path / "bad.jsonl"
    bench.write_text(json.dumps({"id": "ok", "problem": "x"}) + "\n" + json.dumps({"id": "b", "answer": "3"}) + "\n")
    with pytest.raises(ValueError, match=rf"{bench}:2: field 'problem'"):
        benchmark_texts(bench)
    with pytest.raises(ValueError, match="benchmark file not found"):
        BenchmarkIndex.from_files([tmp_path / "missing.jsonl"])
    with pytest.raises(ValueError, match="contamination_ngram must be >= 1"):
        BenchmarkIndex(n=0)
