import json

import pytest

from megatron_pacore.data.io import JsonlWriter, read_problems


def write(path, lines):
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def test_reads_both_input_forms(tmp_path):
    f = write(tmp_path / "in.jsonl", [
        json.dumps({"id": "a", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Q1"}],
                    "ground_truth": {"answer": "5"}}),
        "",
        json.dumps({"id": 7, "problem": "Q2", "answer": "\\frac12", "source": "x"}),
    ])
    a, b = read_problems(f)
    assert a.id == "a" and a.problem == "Q1" and a.answer == "5" and len(a.messages) == 2
    assert b.id == "7" and b.messages == [{"role": "user", "content": "Q2"}] and b.answer == "\\frac12"
    assert b.metadata == {"source": "x"}


def test_benchmark_files_load(benchmarks_dir):
    problems = read_problems(benchmarks_dir / "aime25.jsonl")
    assert len(problems) == 30 and problems[0].id == "aime25-01" and problems[0].answer == "70"


def test_malformed_line_names_file_and_line(tmp_path):
    f = write(tmp_path / "bad.jsonl", [json.dumps({"id": "a", "problem": "x"}), "{not json"])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON"):
        read_problems(f)


def test_row_without_problem_names_its_id(tmp_path):
    f = write(tmp_path / "in.jsonl", [json.dumps({"id": "q9", "question": "x"})])
    with pytest.raises(ValueError, match=r"in\.jsonl:1: row 'q9' has neither 'messages' nor a string 'problem'"):
        read_problems(f)


def test_messages_without_user_turn(tmp_path):
    f = write(tmp_path / "in.jsonl", [json.dumps({"id": "q", "messages": [{"role": "system", "content": "s"}]})])
    with pytest.raises(ValueError, match="'q': 'messages' has no user turn"):
        read_problems(f)


def test_missing_id_and_duplicate_id(tmp_path):
    with pytest.raises(ValueError, match=":1: row has no 'id'"):
        read_problems(write(tmp_path / "a.jsonl", [json.dumps({"problem": "x"})]))
    dup = write(tmp_path / "b.jsonl", [json.dumps({"id": "x", "problem": "1"}), json.dumps({"id": "x", "problem": "2"})])
    with pytest.raises(ValueError, match=r"b\.jsonl:2: duplicate id 'x' \(first on line 1\)"):
        read_problems(dup)


def test_missing_input_file(tmp_path):
    with pytest.raises(ValueError, match="input file not found"):
        read_problems(tmp_path / "nope.jsonl")


def test_writer_refuses_to_overwrite_without_resume(tmp_path):
    out = write(tmp_path / "out.jsonl", [json.dumps({"id": "a"})])
    with pytest.raises(ValueError, match="--resume"):
        JsonlWriter(out)
    assert out.read_text() == '{"id": "a"}\n'  # nothing lost


def test_resume_keeps_rows_and_drops_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "c", "v"', encoding="utf-8")
    with JsonlWriter(out, resume=True) as w:
        assert w.done_ids == {"a", "b"}
        w.write({"id": "c", "v": 3})
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert rows == [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "c", "v": 3}]


def test_rows_are_flushed_as_written(tmp_path):
    out = tmp_path / "o.jsonl"
    w = JsonlWriter(out)
    w.write({"id": "x"})
    assert out.read_text() == '{"id": "x"}\n'  # visible before close
    w.close()
