"""`build_curriculum.py stats`: counts per source and domain, the message-accuracy histogram
as text and PNG."""
import json
import sys
from pathlib import Path

from megatron_pacore.data.curriculum_stats import compute_stats, format_stats
from megatron_pacore.data.train_records import TrainRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import build_curriculum  # noqa: E402


def rec(i, source, right, n=4, domain="math"):
    tests = [{"input": "", "output": "1\n"}] if domain == "code" else None
    correct = None if right is None else [True] * right + [False] * (n - right)
    return TrainRecord(id=f"r{i}", conversation=[{"role": "user", "content": f"p{i}"}], responses=["x"] * n,
                       domain=domain, answer="1" if domain == "math" else None, tests=tests, correct=correct,
                       metadata={"data_source": source} if source else {})


RECORDS = [rec(0, "synthetic_math", 0), rec(1, "synthetic_math", 1), rec(2, "public_mathcontest", 1),
           rec(3, "code", 4, domain="code"), rec(4, None, None), rec(5, "synthetic_math", 2, n=8)]


def test_counts_per_source_and_domain_and_histogram():
    stats = compute_stats(RECORDS, bins=4)
    assert stats.problems == 6
    assert stats.by_source == {"code": 1, "public_mathcontest": 1, "synthetic_math": 3, "unknown": 1}
    assert stats.by_domain == {"code": 1, "math": 5}
    assert stats.by_source_domain["code"] == {"code": 1} and stats.by_source_domain["synthetic_math"] == {"math": 3}
    # accuracies 0, 1/4, 1/4, 1, (ungraded), 2/8 -> values 0/4: 1, 1/4: 3, 4/4: 1
    assert stats.histogram == [1, 3, 0, 0, 1]
    assert stats.ungraded == 1
    assert stats.mean_message_accuracy == round((0 + 0.25 + 0.25 + 1 + 0.25) / 5, 4)
    text = format_stats(stats)
    assert "synthetic_math: 3 (math 3)" in text and "1/4      3 " in text
    assert "5 graded, 1 ungraded" in text


def test_source_field_is_configurable():
    recs = [TrainRecord(id="a", conversation=[{"role": "user", "content": "p"}], responses=[], answer="1",
                        metadata={"origin": "olympiad", "data_source": "x"})]
    assert compute_stats(recs, source_field="origin").by_source == {"olympiad": 1}


def test_cli_prints_counts_and_writes_the_png(tmp_path, capsys):
    src = tmp_path / "pool.jsonl"
    rows = [{"id": r.id, "conversation": r.conversation, "responses": r.responses, "domain": r.domain,
             "ground_truth": r.answer, **({"tests": r.tests} if r.tests else {}),
             **({"correct": r.correct} if r.correct else {}), **r.metadata} for r in RECORDS]
    src.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "stats"
    assert build_curriculum.main(["stats", "--input", str(src), "--out", str(out), "--bins", "4"]) == 0
    printed = capsys.readouterr().out
    assert "problems: 6" in printed and "per domain: code 1, math 5" in printed
    png = out / "message_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    saved = json.loads((out / "stats.json").read_text())
    assert saved["histogram"] == {"0/4": 1, "1/4": 3, "2/4": 0, "3/4": 0, "4/4": 1}
    assert build_curriculum.main(["stats", "--input", str(tmp_path / "missing.jsonl")]) == 2
    assert "training data not found" in capsys.readouterr().err
