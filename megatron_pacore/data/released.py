"""The released PaCoRe-Train-8k format, both directions.

A released row (the dataset ships `list[dict]`; JSON, JSON lines and Parquet are all read) is

    conversation   the problem's chat
    responses      the cached responses of the initial model (the message pool)
    ground_truth   math: the answer string; code: the tests (JSON text)

plus any other column, kept as it is (for example the row's source). Import is
`train_records.read_train_records`, which reads released rows as they are (ids
"<file stem>-<row>", domain from the tests, `correct` absent until graded). Export is
`released_row`: the three released fields with the same names and values, and every other
column of the record's metadata, so that a released row read and exported comes back equal,
field for field. Our own fields (`id`, `domain`, `correct`, `tests`, and the pool's
`message_accuracy`) are left out unless `keep_ours=True`, which writes them as extra columns
(the reader takes them back).

Code ground truth is written as the JSON text of `{"inputs": [...], "outputs": [...]}` when
every test is a plain stdin/stdout test, else as the JSON text of the test list (the forms the
reader accepts).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Union

from megatron_pacore.data.train_records import TrainRecord, record_to_row

PathLike = Union[str, os.PathLike]
RELEASED_FIELDS = ("conversation", "responses", "ground_truth")
# Our fields beyond the released ones (what keep_ours=False leaves out).
OUR_FIELDS = ("id", "domain", "correct", "tests", "message_accuracy")


def code_ground_truth(tests: list[dict[str, Any]]) -> str:
    """The released-style ground truth of a code problem (module doc)."""
    if all(set(t) == {"input", "output"} for t in tests):
        return json.dumps({"inputs": [t["input"] for t in tests], "outputs": [t["output"] for t in tests]},
                          ensure_ascii=False)
    return json.dumps(tests, ensure_ascii=False)


def released_row(record: TrainRecord, keep_ours: bool = False) -> dict[str, Any]:
    """The released row of a record: conversation, responses, ground_truth, then its other
    columns; with keep_ours, our fields as well (module doc)."""
    if record.domain == "code":
        if not record.tests:
            raise ValueError(f"{record.source or record.id}: code record {record.id!r} has no tests to export")
        ground_truth: Any = code_ground_truth(record.tests)
    else:
        ground_truth = record.answer
    row: dict[str, Any] = {"conversation": record.conversation, "responses": list(record.responses),
                           "ground_truth": ground_truth}
    ours = record_to_row(record)  # also checks that metadata does not shadow a field
    for key, value in ours.items():
        if key in RELEASED_FIELDS:
            continue
        if key in OUR_FIELDS and not keep_ours:
            continue
        row[key] = value
    return row


def write_released(path: PathLike, records: Iterable[TrainRecord], keep_ours: bool = False) -> int:
    """Write records as released rows: .json (one JSON array, as released), .jsonl or
    .parquet; returns the row count."""
    path = Path(path)
    rows = [released_row(r, keep_ours) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    elif path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            if isinstance(row.get("tests"), list):
                row["tests"] = json.dumps(row["tests"], ensure_ascii=False)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        try:
            table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"{path}: rows do not fit one Parquet schema ({e})") from None
        pq.write_table(table, path)
    else:
        raise ValueError(f"{path}: released data must be .json, .jsonl or .parquet, got {path.suffix!r}")
    return len(rows)
