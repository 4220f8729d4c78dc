"""The released PaCoRe-Train-8k format both ways: rows read and exported come back field for
field; our records exported with keep_ours come back equal."""
import json

import pytest

from megatron_pacore.data.released import RELEASED_FIELDS, released_row, write_released
from megatron_pacore.data.train_records import TrainRecord, read_train_records

CODE_GT = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
RELEASED = [
    {"conversation": [{"role": "user", "content": "What is 2 + 3?"}],
     "responses": ["<think>2+3</think>The answer is \\boxed{5}.", "<think>hm</think>\\boxed{6}"],
     "ground_truth": "5", "data_source": "synthetic_math"},
    {"conversation": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add two ints."}],
     "responses": ["```python\nprint(sum(map(int, input().split())))\n```"],
     "ground_truth": CODE_GT, "data_source": "code"},
]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_released_rows_round_trip_field_for_field(tmp_path, suffix):
    src = tmp_path / "stage1.json"
    src.write_text(json.dumps(RELEASED, indent=1))  # as released: one JSON array of rows
    records = read_train_records(src)
    assert [r.id for r in records] == ["stage1-0", "stage1-1"]
    assert [r.domain for r in records] == ["math", "code"]
    assert records[1].tests == [{"input": "1 2\n", "output": "3\n"}, {"input": "3 4\n", "output": "7\n"}]
    assert [released_row(r) for r in records] == RELEASED
    assert list(released_row(records[0])) == [*RELEASED_FIELDS, "data_source"]

    out = tmp_path / f"export{suffix}"
    assert write_released(out, records) == 2
    if suffix == ".json":
        assert json.loads(out.read_text()) == RELEASED
    elif suffix == ".jsonl":
        assert [json.loads(line) for line in out.read_text().splitlines()] == RELEASED
    again = read_train_records(out)
    assert [released_row(r) for r in again] == RELEASED
    assert [(r.conversation, r.responses, r.answer, r.tests, r.domain, r.metadata) for r in again] == \
        [(r.conversation, r.responses, r.answer, r.tests, r.domain, r.metadata) for r in records]


def test_our_fields_are_left_out_unless_kept(tmp_path):
    ours = TrainRecord(id="toy-1", conversation=[{"role": "user", "content": "What is 1 + 1?"}],
                       responses=["<think>1+1=2</think>\\boxed{2}", "<think></think>\\boxed{3}"], answer="2",
                       correct=[True, False], metadata={"message_accuracy": 0.5, "operands": [1, 1]})
    assert released_row(ours) == {"conversation": ours.conversation, "responses": ours.responses,
                                  "ground_truth": "2", "operands": [1, 1]}
    full = released_row(ours, keep_ours=True)
    assert full["id"] == "toy-1" and full["correct"] == [True, False] and full["domain"] == "math"
    assert full["message_accuracy"] == 0.5
    out = tmp_path / "ours.jsonl"
    write_released(out, [ours], keep_ours=True)
    (back,) = read_train_records(out)
    assert back == ours


def test_assert_style_code_tests_export_as_a_test_list():
    rec = TrainRecord(id="c", conversation=[{"role": "user", "content": "f"}], responses=[], domain="code",
                      tests=[{"code": "assert f() == 1"}])
    assert json.loads(released_row(rec)["ground_truth"]) == [{"code": "assert f() == 1"}]


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([RELEASED[0], {"conversation": [], "responses": [], "ground_truth": "1"}]))
    with pytest.raises(ValueError, match=rf"{bad} row 1: field 'conversation'"):
        read_train_records(bad)
    not_list = tmp_path / "obj.json"
    not_list.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"row 0: expected a JSON object, got int"):
        read_train_records(not_list)
    with pytest.raises(ValueError, match=r"released data must be \.json, \.jsonl or \.parquet"):
        write_released(tmp_path / "x.csv", [])


def test_cli_import_then_export_gives_the_released_rows_back(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
    import build_curriculum

    src = tmp_path / "stage2.json"
    src.write_text(json.dumps(RELEASED))
    ours, back = tmp_path / "ours.jsonl", tmp_path / "back.json"
    assert build_curriculum.main(["import", "--input", str(src), "--output", str(ours)]) == 0
    assert [r.id for r in read_train_records(ours)] == ["stage2-0", "stage2-1"]
    assert build_curriculum.main(["export", "--input", str(ours), "--output", str(back)]) == 0
    assert json.loads(back.read_text()) == RELEASED
    assert "export: 2 rows" in capsys.readouterr().out
    assert build_curriculum.main(["export", "--input", str(ours), "--output", str(tmp_path / "x.csv")]) == 2
    assert "must be .json, .jsonl or .parquet" in capsys.readouterr().err
