"""Training records: one problem with its cached message pool, read from JSONL or Parquet.

A row of the released PaCoRe-Train-8k reads as it is:

    conversation   the problem's chat ([{"role", "content"}, ...]; the last user turn holds it)
    responses      the cached responses of the initial model: the message pool M is drawn from
                   them (strings, or {"role": "assistant", "content": ...} turns)
    ground_truth   the verifiable answer (a string, or {"answer": ...})

and our fields, all optional on input:

    id             unique id (default: "<file stem>-<row index>")
    domain         "math" or "code" (default: "code" when the row has tests, in `tests` or as
                   its ground_truth, else "math")
    correct        per-response correctness, aligned with `responses` (bool or 0/1)
    tests          code tests in the format rewards/code.py grades: [{"input", "output"}] or
                   [{"code"}]; for a code row without `tests`, they are read from ground_truth
                   (a list of tests, its JSON text, or {"inputs": [...], "outputs": [...]})

Any other column is kept in `metadata`. Every row is checked when the file is read, before any
model is built; a bad one is a ValueError naming the file, the line (JSONL, 1-based) or row
index (Parquet or a JSON array, 0-based) and the field. `write_train_records` writes the same format back
(JSONL, or Parquet with `tests` as JSON text so that stdin and assert tests share a column).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

from megatron_pacore.data.io import iter_jsonl
from megatron_pacore.pacore.prompts import last_user_index
from megatron_pacore.rewards.code import check_tests
from megatron_pacore.types import Chat, Problem

PathLike = Union[str, os.PathLike]
DOMAINS = ("math", "code")
_OURS = ("id", "conversation", "responses", "ground_truth", "domain", "correct", "tests")


@dataclass(frozen=True)
class TrainRecord:
    """One training problem and its message cache pool."""

    id: str
    conversation: Chat
    """The problem's chat; the last user turn's content is the problem text."""
    responses: list[str]
    """The cached responses (the pool), verbatim as released."""
    domain: str = "math"
    """"math" (graded against `answer`) or "code" (graded by `tests`)."""
    answer: Optional[str] = None
    """Reference answer of a math problem."""
    tests: Optional[list[dict[str, Any]]] = None
    """Tests of a code problem (rewards/code.py format)."""
    correct: Optional[list[bool]] = None
    """Whether each response is correct (same length as `responses`); None = not graded."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Other columns of the row, kept as they are."""
    source: str = field(default="", compare=False)
    """Where the row came from ("file:line" or "file row i"), for error messages."""

    @property
    def problem(self) -> str:
        """The problem text: the content of the conversation's last user turn."""
        return self.conversation[last_user_index(self.conversation)]["content"]

    @property
    def message_accuracy(self) -> Optional[float]:
        """Share of correct responses in the pool (the curriculum's filter); None if ungraded."""
        if self.correct is None or not self.correct:
            return None
        return sum(self.correct) / len(self.correct)

    def to_problem(self) -> Problem:
        """The record as the inference pipeline's Problem."""
        return Problem(id=self.id, messages=self.conversation, problem=self.problem, answer=self.answer,
                       metadata={"domain": self.domain, **self.metadata})


# -- reading ------------------------------------------------------------------------------


def _bad(where: str, name: str, why: str) -> ValueError:
    return ValueError(f"{where}: field {name!r}: {why}")


def _conversation(value: Any, where: str) -> Chat:
    if not isinstance(value, list) or not value:
        raise _bad(where, "conversation", f"must be a non-empty list of {{role, content}} turns, got {type(value).__name__}")
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise _bad(where, "conversation", f"turn {i} must be a dict with a string 'role'")
    try:
        i = last_user_index(value)
    except ValueError:
        raise _bad(where, "conversation", "has no user turn to hold the problem") from None
    if not isinstance(value[i].get("content"), str) or not value[i]["content"]:
        raise _bad(where, "conversation", f"the last user turn (turn {i}) must have non-empty string content")
    return value


def _responses(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise _bad(where, "responses", f"must be a list of cached responses, got {type(value).__name__}")
    out = []
    for i, r in enumerate(value):
        if isinstance(r, dict):
            r = r.get("content")
        if not isinstance(r, str):
            raise _bad(where, "responses", f"item {i} must be a string or a turn with string 'content', "
                                           f"got {type(r).__name__}")
        out.append(r)
    return out


def _correct(value: Any, n: int, where: str) -> Optional[list[bool]]:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
        raise _bad(where, "correct", f"must be a list with one entry per response ({n}), got {got}")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, bool) or c in (0, 1):
            out.append(bool(c))
        else:
            raise _bad(where, "correct", f"item {i} must be a bool (or 0/1), got {c!r:.40}")
    return out


def _tests_from(value: Any) -> Optional[list[dict]]:
    """Tests from the forms a row may carry them in; None if `value` holds none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, dict) and isinstance(value.get("inputs"), list) and isinstance(value.get("outputs"), list):
        return [{"input": i, "output": o} for i, o in zip(value["inputs"], value["outputs"], strict=True)]
    if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
        # Parquet gives every struct the union of keys: a key set to None is absent.
        return [{k: v for k, v in t.items() if v is not None} for t in value]
    return None


def record_from_row(row: dict[str, Any], where: str, default_id: str) -> TrainRecord:
    """One TrainRecord from a row; `where` ("file:line") prefixes every error."""
    row = {k: v for k, v in row.items() if v is not None}
    rid = row.get("id", default_id)
    if not isinstance(rid, (str, int)) or rid == "":
        raise _bad(where, "id", f"must be a non-empty string or an integer, got {rid!r:.40}")
    for name in ("conversation", "responses"):
        if name not in row:
            raise _bad(where, name, "missing")
    conversation = _conversation(row["conversation"], where)
    responses = _responses(row["responses"], where)
    correct = _correct(row.get("correct"), len(responses), where)

    tests = None
    if "tests" in row:
        tests = _tests_from(row["tests"])
        if tests is None:
            raise _bad(where, "tests", "must be a non-empty list of tests (or its JSON text)")
    # A released code row carries its tests only as ground_truth (a math answer never parses as tests).
    domain = row.get("domain", "code" if tests is not None or _tests_from(row.get("ground_truth")) else "math")
    if domain not in DOMAINS:
        raise _bad(where, "domain", f"must be one of {DOMAINS}, got {domain!r:.40}")

    answer = None
    gt = row.get("ground_truth")
    if domain == "code":
        if tests is None:
            tests = _tests_from(gt)
        if tests is None:
            raise _bad(where, "tests", "a code row needs tests (in 'tests', or as its ground_truth)")
        try:
            check_tests(tests)
        except ValueError as e:
            raise _bad(where, "tests", str(e)) from None
    else:
        if isinstance(gt, dict):
            gt = gt.get("answer")
        if isinstance(gt, (int, float)) and not isinstance(gt, bool):
            gt = str(gt)
        if not isinstance(gt, str) or not gt.strip():
            raise _bad(where, "ground_truth", f"a math row needs a non-empty answer string (or {{'answer': ...}}), "
                                              f"got {gt!r:.60}")
        answer = gt
    metadata = {k: v for k, v in row.items() if k not in _OURS}
    return TrainRecord(id=str(rid), conversation=conversation, responses=responses, domain=domain, answer=answer,
                       tests=tests, correct=correct, metadata=metadata, source=where)


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    for i, row in enumerate(table.to_pylist()):
        # Parquet gives every struct the union of its column's keys: a key set to None is absent.
        if isinstance(row.get("conversation"), list):
            row["conversation"] = [{k: v for k, v in t.items() if v is not None} if isinstance(t, dict) else t
                                   for t in row["conversation"]]
        yield i, row


def _is_json_array(path: Path) -> bool:
    """Whether a .json file is one JSON array (the release's `list[dict]`) rather than lines."""
    with path.open(encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    return head.startswith("[")


def _json_array_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON array of rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {i}: expected a JSON object, got {type(row).__name__}")
        yield i, row


def read_train_records(path: PathLike) -> list[TrainRecord]:
    """All records of a .jsonl, .parquet or .json file (JSON lines, or one JSON array of rows
    as the release ships `list[dict]`), every row checked (module doc).

    Raises:
        ValueError: missing file, unknown suffix, a malformed row (file, line or row index, and
            field named), or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"training data not found: {path}")
    if path.suffix == ".parquet":
        rows, where = _parquet_rows(path), (lambda i: f"{path} row {i}")
    elif path.suffix == ".json" and _is_json_array(path):
        rows, where = _json_array_rows(path), (lambda i: f"{path} row {i}")
    elif path.suffix in (".jsonl", ".json"):
        rows, where = iter_jsonl(path), (lambda i: f"{path}:{i}")
    else:
        raise ValueError(f"{path}: training data must be .jsonl or .parquet, got {path.suffix!r}")
    records: list[TrainRecord] = []
    seen: dict[str, str] = {}
    for n, (i, row) in enumerate(rows):
        rec = record_from_row(row, where(i), default_id=f"{path.stem}-{n}")
        if rec.id in seen:
            raise _bad(where(i), "id", f"duplicate id {rec.id!r} (first at {seen[rec.id]})")
        seen[rec.id] = where(i)
        records.append(rec)
    return records


# -- writing ------------------------------------------------------------------------------


def record_to_row(rec: TrainRecord) -> dict[str, Any]:
    """The row `read_train_records` reads back into an equal record."""
    row: dict[str, Any] = {"id": rec.id, "domain": rec.domain, "conversation": rec.conversation,
                           "responses": list(rec.responses), "ground_truth": rec.answer}
    if rec.correct is not None:
        row["correct"] = list(rec.correct)
    if rec.tests is not None:
        row["tests"] = rec.tests
    clash = sorted(set(rec.metadata) & set(_OURS))
    if clash:
        raise ValueError(f"record {rec.id!r}: metadata keys {clash} clash with the record's own fields")
    row.update(rec.metadata)
    return row


def write_train_records(path: PathLike, records: Iterable[TrainRecord]) -> None:
    """Write records as .jsonl or .parquet (by suffix); the parent directory is created."""
    path = Path(path)
    rows = [record_to_row(r) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            if "tests" in row:
                row["tests"] = json.dumps(row["tests"], ensure_ascii=False)
        columns = list(dict.fromkeys(k for row in rows for k in row))  # from_pylist reads row 0's keys only
        try:
            table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise ValueError(f"{path}: rows do not fit one Parquet schema ({e}); give every record's metadata "
                             f"the same types") from None
        pq.write_table(table, path)
    elif path.suffix in (".jsonl", ".json"):
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        raise ValueError(f"{path}: training data must be .jsonl or .parquet, got {path.suffix!r}")


def check_unique_ids(records: Sequence[TrainRecord]) -> None:
    """ValueError naming the first id that appears twice (e.g. across several files)."""
    seen: dict[str, str] = {}
    for r in records:
        if r.id in seen:
            raise ValueError(f"{r.source}: field 'id': duplicate id {r.id!r} (first at {seen[r.id]})")
        seen[r.id] = r.source
