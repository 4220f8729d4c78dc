"""The append/resume helper behind `pacore infer --resume` and `pacore eval`'s records."""
import json

import pytest

from megatron_pacore.data.jsonl import JsonlAppender


def by_id(row):
    return row["id"]


def test_records_come_back_and_appending_goes_on(tmp_path):
    path = tmp_path / "sub" / "x.jsonl"
    out = JsonlAppender(path, by_id)
    assert out.records == [] and path.exists()
    out.append({"id": "a", "v": "é"})
    out.append({"id": "b"})
    out.close()
    again = JsonlAppender(path, by_id)
    assert again.records == ["a", "b"]
    again.append({"id": "c"})
    again.close()
    assert [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()] == ["a", "b", "c"]


@pytest.mark.parametrize("torn", ['{"id": "c", "v', '{"v": 1}', "[1, 2]"])
def test_a_torn_or_unparsable_last_line_is_cut_from_the_file(tmp_path, torn):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n' + torn)
    out = JsonlAppender(path, by_id)
    assert out.records == ["a", "b"]
    out.append({"id": "c"})
    out.close()
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'


def test_a_complete_last_line_without_newline_is_kept_and_ended(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}')
    out = JsonlAppender(path, by_id)
    out.append({"id": "b"})
    out.close()
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_damage_before_the_last_line_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: unreadable thing \(JSONDecodeError"):
        JsonlAppender(path, by_id, what="thing")
    path.write_text('{"v": 1}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:1: unreadable record \(KeyError: 'id'\)"):
        JsonlAppender(path, by_id)
    assert path.read_text() == '{"v": 1}\n{"id": "b"}\n'  # left as it was
