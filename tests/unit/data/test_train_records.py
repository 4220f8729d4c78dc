"""Training records: released rows read as they are, our fields, round trips, and bad rows
named by file, line (or row index) and field."""
import json

import pytest

from megatron_pacore.data.train_records import (
    TrainRecord,
    check_unique_ids,
    read_train_records,
    record_to_row,
    write_train_records,
)

RELEASED = {  # the shape of a PaCoRe-Train-8k row
    "conversation": [{"role": "user", "content": "What is 2 + 3?"}],
    "responses": ["<think>2+3</think>The answer is \\boxed{5}.", "<think>hm</think>\\boxed{6}"],
    "ground_truth": "5",
    "data_source": "synthetic_math",
}
CODE = {
    "id": "c1",
    "conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add two ints."}],
    "responses": [{"role": "assistant", "content": "```python\nprint(sum(map(int, input().split())))\n```"}],
    "ground_truth": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}),
    "domain": "code",
    "correct": [1],
}


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_released_rows_read_as_they_are(tmp_path):
    f = write_lines(tmp_path / "stage1.jsonl", [RELEASED, CODE])
    math, code = read_train_records(f)
    assert math.id == "stage1-0" and math.domain == "math" and math.answer == "5"
    assert math.problem == "What is 2 + 3?" and math.responses == RELEASED["responses"]
    assert math.correct is None and math.message_accuracy is None
    assert math.metadata == {"data_source": "synthetic_math"}
    assert math.source == f"{f}:1"
    assert code.domain == "code" and code.problem == "Add two ints."
    assert code.responses == [CODE["responses"][0]["content"]]
    assert code.tests == [{"input": "1 2\n", "output": "3\n"}, {"input": "3 4\n", "output": "7\n"}]
    assert code.correct == [True] and code.message_accuracy == 1.0
    p = code.to_problem()
    assert p.id == "c1" and p.problem == "Add two ints." and p.messages == CODE["conversation"]


def test_answer_in_a_dict_and_tests_field_infer_the_domain(tmp_path):
    rows = [dict(RELEASED, id=3, ground_truth={"answer": "5"}, correct=[True, False]),
            {"id": "t", "conversation": [{"role": "user", "content": "f"}], "responses": [],
             "tests": [{"code": "assert f() == 1"}]}]
    a, t = read_train_records(write_lines(tmp_path / "x.jsonl", rows))
    assert a.id == "3" and a.answer == "5" and a.message_accuracy == 0.5
    assert t.domain == "code" and t.tests == [{"code": "assert f() == 1"}] and t.answer is None


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    records = [
        TrainRecord(id="m", conversation=[{"role": "user", "content": "Q"}], responses=["a", "b", ""],
                    answer="\\frac12", correct=[True, False, False], metadata={"source": "x"}),
        TrainRecord(id="c", conversation=[{"role": "system", "content": "s"}, {"role": "user", "content": "P"}],
                    responses=["r"], domain="code", correct=None, metadata={"source": "y"},
                    tests=[{"input": "1\n", "output": "1\n"}, {"code": "assert True"}]),
    ]
    path = tmp_path / f"out{suffix}"
    write_train_records(path, records)
    back = read_train_records(path)
    assert back == records
    assert [record_to_row(r) for r in back] == [record_to_row(r) for r in records]


@pytest.mark.parametrize("row,where_field,why", [
    ({"responses": ["a"], "ground_truth": "1"}, "conversation", "missing"),
    (dict(RELEASED, conversation=[{"role": "assistant", "content": "x"}]), "conversation", "has no user turn"),
    (dict(RELEASED, conversation=[{"role": "user", "content": ""}]), "conversation", "non-empty string content"),
    (dict(RELEASED, responses="abc"), "responses", "must be a list"),
    (dict(RELEASED, responses=["ok", 7]), "responses", "item 1 must be a string"),
    (dict(RELEASED, ground_truth=""), "ground_truth", "non-empty answer"),
    (dict(RELEASED, correct=[True]), "correct", r"one entry per response \(2\), got 1 items"),
    (dict(RELEASED, correct=[True, "yes"]), "correct", "item 1 must be a bool"),
    (dict(RELEASED, domain="poetry"), "domain", "must be one of"),
    (dict(CODE, ground_truth="5"), "tests", "a code row needs tests"),
    (dict(CODE, ground_truth=None, tests=[{"stdin": "1"}]), "tests", "needs 'output'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, where_field, why):
    f = write_lines(tmp_path / "bad.jsonl", [RELEASED, row])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: field '{where_field}': .*{why}"):
        read_train_records(f)


def test_bad_parquet_row_names_its_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(RELEASED, correct=[True, False]), dict(RELEASED, correct=[True])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"d\.parquet row 1: field 'correct'"):
        read_train_records(tmp_path / "d.parquet")


def test_file_level_errors(tmp_path):
    with pytest.raises(ValueError, match="training data not found"):
        read_train_records(tmp_path / "none.jsonl")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match="must be .jsonl or .parquet"):
        read_train_records(tmp_path / "x.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        read_train_records(tmp_path / "broken.parquet")
    f = write_lines(tmp_path / "dup.jsonl", [dict(RELEASED, id="a"), dict(RELEASED, id="a")])
    with pytest.raises(ValueError, match=r"dup\.jsonl:2: field 'id': duplicate id 'a' \(first at .*dup\.jsonl:1\)"):
        read_train_records(f)
    f = write_lines(tmp_path / "j.jsonl", [RELEASED, "{oops"])
    with pytest.raises(ValueError, match=r"j\.jsonl:2: malformed JSON"):
        read_train_records(f)
    a = read_train_records(write_lines(tmp_path / "a.jsonl", [dict(RELEASED, id="z")]))
    with pytest.raises(ValueError, match="duplicate id 'z'"):
        check_unique_ids(a + a)
