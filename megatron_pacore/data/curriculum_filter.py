"""Curriculum stage 1: the problems whose message pool majority vote cannot win.

    build_curriculum.py filter --stage 1 --domain math --input pool.jsonl --out DIR \\
        [--decontaminate aime25.jsonl ...]

Reads training records (ours, or released PaCoRe-Train-8k rows as they are) and decides each
problem in file order; the first reason that applies removes it:

1. `domain`: the row is not of `domain` (math and code are filtered with their own bounds);
2. `contamination`: it shares a normalised word n-gram (13 by default) with a problem of any
   benchmark file (data/decontaminate.py);
3. `duplicate`: its normalised text repeats, exactly or nearly (MinHash LSH candidates,
   confirmed by shingle Jaccard >= the threshold), a problem kept before it (data/dedup.py);
4. `accuracy`: its message accuracy is not strictly between `min_accuracy` (0) and
   `max_accuracy` (9/24 for math, 15/24 for code: the paper's stage 1). A row without
   per-message correctness (a released row) has its `responses` graded against its
   `ground_truth` first, by the training reward's strict graders in their process pools.
   `accuracy_filter=False` skips this step (and the grading): the clean problem set that
   stage 2 measures.

DIR/kept.jsonl gets the kept records (our record format, with `correct` and
`message_accuracy`); DIR/removed.jsonl one row per removed problem: its id, `reason`, what
decided it (the accuracy; the id it duplicates and the similarity; the benchmark file, the
benchmark id and the shared n-gram) and where the row was read (`source`, file:line);
DIR/summary.json the counts.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from megatron_pacore.config import GradingOptions, check_at_least, check_one_of, check_required
from megatron_pacore.data.decontaminate import BenchmarkIndex
from megatron_pacore.data.dedup import Deduplicator
from megatron_pacore.data.train_records import DOMAINS, TrainRecord, read_train_records, record_to_row

log = logging.getLogger(__name__)

# Paper, section 3.2: stage 1 keeps 0 < message accuracy < 9/24 (math), < 15/24 (code).
DEFAULT_MAX_ACCURACY = {"math": 9 / 24, "code": 15 / 24}
KEPT_FILE, REMOVED_FILE, SUMMARY_FILE = "kept.jsonl", "removed.jsonl", "summary.json"

GradeRecords = Callable[[Sequence[TrainRecord]], list[list[bool]]]


def as_fraction(value: float) -> Fraction:
    """A threshold as the fraction it stands for (0.375 -> 3/8, float(1/3) -> 1/3), so that a
    pool's k/n compares exactly."""
    return Fraction(value).limit_denominator(10**6)


def parse_fraction(text: str) -> float:
    """"9/24" or "0.375" -> 0.375 (command-line thresholds)."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction like 9/24, got {text!r}") from None


def _jaccard(text: str) -> Optional[float]:
    """The flag's text of near_duplicate_jaccard: "0" means exact duplicates only (None)."""
    return float(text) or None


@dataclass(kw_only=True)
class Stage1FilterConfig:
    """`build_curriculum.py filter --stage 1`: accuracy band, deduplication, decontamination."""

    input: str = ""
    """training records (.jsonl, .json or .parquet): our pool records or released rows"""
    out: str = ""
    """output directory: kept.jsonl, removed.jsonl, summary.json"""
    domain: str = field(default="", metadata={"choices": DOMAINS})
    """the domain filtered (required); rows of the other domain are removed (reason domain)"""
    min_accuracy: float = field(default=0.0, metadata={"type": parse_fraction})
    """keep message accuracy strictly above this (paper: 0)"""
    max_accuracy: Optional[float] = field(default=None, metadata={"type": parse_fraction})
    """keep message accuracy strictly below this, e.g. 9/24 (default: 9/24 for math, 15/24 for code, the paper's)"""
    accuracy_filter: bool = True
    """apply the accuracy band; --no-accuracy-filter keeps every graded or ungraded pool (dedup and
    decontamination only: the input of stage 2, which measures every clean problem)"""
    dedup: bool = True
    """remove exact and near duplicates (the first occurrence is kept)"""
    near_duplicate_jaccard: Optional[float] = field(default=0.8, metadata={"type": _jaccard})
    """shingle Jaccard at or above which two problems are near duplicates; 0 or None: exact duplicates only"""
    shingle_size: int = 5
    """tokens (words and symbols) per shingle of the near-duplicate test"""
    num_perm: int = 128
    """MinHash permutations of the LSH index"""
    decontaminate: list[str] = field(default_factory=list, metadata={"nargs": "+", "metavar": "BENCH.jsonl"})
    """benchmark files; a problem sharing a word n-gram with any of their problems is removed"""
    contamination_ngram: int = field(default=13, metadata={"flag": "--ngram"})
    """words per n-gram of the contamination test"""
    grading: GradingOptions = field(default_factory=GradingOptions)
    """the strict graders of rows without per-message correctness (released rows)"""

    def __post_init__(self) -> None:
        check_required(self, "input", "out")
        if not self.domain:
            raise ValueError(f"domain is required: one of {DOMAINS} (rows of the other domain are removed)")
        check_one_of("domain", self.domain, DOMAINS)
        if self.max_accuracy is None:
            self.max_accuracy = DEFAULT_MAX_ACCURACY[self.domain]
        if not 0 <= self.min_accuracy < self.max_accuracy <= 1:
            raise ValueError(f"need 0 <= min_accuracy < max_accuracy <= 1, got min_accuracy={self.min_accuracy}, "
                             f"max_accuracy={self.max_accuracy}")
        if self.near_duplicate_jaccard is not None and not 0 < self.near_duplicate_jaccard <= 1:
            raise ValueError(f"near_duplicate_jaccard must be in (0, 1] or None, got {self.near_duplicate_jaccard}")
        check_at_least("shingle_size", self.shingle_size, 1)
        check_at_least("num_perm", self.num_perm, 2)
        check_at_least("contamination_ngram", self.contamination_ngram, 1)
        for path in self.decontaminate:
            if not Path(path).is_file():
                raise ValueError(f"decontaminate: benchmark file not found: {path}")


@dataclass
class FilterResult:
    """What a filter decided: the kept records, in input order, and one row per removed one."""

    kept: list[TrainRecord]
    removed: list[dict[str, Any]]

    def counts(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for row in self.removed:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        return {"input": len(self.kept) + len(self.removed), "kept": len(self.kept),
                "removed": len(self.removed), "removed_by_reason": dict(sorted(reasons.items()))}


class StrictPoolGrader:
    """Grades whole pools with the training reward's strict graders (math-verify in its
    process pool, the sandboxed code tests): a response is correct when its reward is 1."""

    def __init__(self, workers: Optional[int] = None, timeout_s: float = 10.0) -> None:
        from megatron_pacore.rewards.reward_fn import RewardConfig, TrainingReward

        self.reward = TrainingReward(RewardConfig(strict=True, math_workers=workers, math_timeout_s=timeout_s))

    def __call__(self, records: Sequence[TrainRecord]) -> list[list[bool]]:
        """One verdict list per record, aligned with its `responses`; all records in one batch,
        so the graders' workers share the whole load. Finish reasons are not in the rows (None)."""
        from megatron_pacore.rewards.reward_fn import RewardItem

        items, bounds = [], []
        for r in records:
            start = len(items)
            items += [RewardItem(response=text, finish_reason=None, domain=r.domain, reference=r.answer,
                                 tests=r.tests) for text in r.responses]
            bounds.append((start, len(items)))
        results = self.reward.score(items) if items else []
        return [[results[i].reward == 1.0 for i in range(a, b)] for a, b in bounds]

    def close(self) -> None:
        self.reward.close()


def with_grades(record: TrainRecord, correct: list[bool]) -> TrainRecord:
    """The record with its per-message correctness and message accuracy (in metadata, as the
    pool builder records it)."""
    acc = sum(correct) / len(correct) if correct else 0.0
    return replace(record, correct=list(correct), metadata={**record.metadata, "message_accuracy": acc})


def grade_missing(records: Sequence[TrainRecord], grade: GradeRecords, chunk: int = 256,
                  progress: Optional[Callable[[int], None]] = None) -> list[TrainRecord]:
    """Records with `correct` filled in where it was absent (graded `chunk` records at a time)."""
    out = list(records)
    todo = [i for i, r in enumerate(out) if r.correct is None and r.responses]
    for start in range(0, len(todo), chunk):
        part = todo[start: start + chunk]
        verdicts = grade([out[i] for i in part])
        if len(verdicts) != len(part):
            raise RuntimeError(f"grader returned {len(verdicts)} verdict lists for {len(part)} records")
        for i, v in zip(part, verdicts):
            if len(v) != len(out[i].responses):
                raise RuntimeError(f"{out[i].id}: {len(v)} verdicts for {len(out[i].responses)} responses")
            out[i] = with_grades(out[i], v)
        if progress is not None:
            progress(len(part))
    return out


def _removed(record: TrainRecord, reason: str, **details: Any) -> dict[str, Any]:
    return {"id": record.id, "reason": reason, **details, "source": record.source}


def filter_stage1(records: Sequence[TrainRecord], cfg: Stage1FilterConfig, grade: Optional[GradeRecords] = None,
                  index: Optional[BenchmarkIndex] = None,
                  progress: Optional[Callable[[int], None]] = None) -> FilterResult:
    """Decide every record (module doc); `grade` grades the pools that have no correctness
    (default: a StrictPoolGrader, closed at the end), `index` the benchmarks (default: built
    from cfg.decontaminate)."""
    if index is None:
        index = BenchmarkIndex.from_files(cfg.decontaminate, cfg.contamination_ngram)
    dedup = Deduplicator(cfg.near_duplicate_jaccard, cfg.shingle_size, cfg.num_perm) if cfg.dedup else None
    decided: list[Optional[dict[str, Any]]] = []
    for r in records:
        if r.domain != cfg.domain:
            decided.append(_removed(r, "domain", domain=r.domain))
            continue
        hit = index.match(r.problem) if index.problems else None
        if hit is not None:
            decided.append(_removed(r, "contamination", **asdict(hit)))
            continue
        dup = dedup.check(r.id, r.problem) if dedup is not None else None
        if dup is not None:
            decided.append(_removed(r, "duplicate", duplicate_of=dup.of, match=dup.kind, jaccard=dup.jaccard))
            continue
        decided.append(None)

    survivors = [r for r, d in zip(records, decided) if d is None]
    if not cfg.accuracy_filter:
        return FilterResult(kept=survivors, removed=[d for d in decided if d is not None])
    owned = None
    if grade is None and any(r.correct is None and r.responses for r in survivors):
        owned = grade = StrictPoolGrader(cfg.grading.workers, cfg.grading.timeout_s)
    try:
        graded = iter(grade_missing(survivors, grade, progress=progress) if grade is not None else survivors)
    finally:
        if owned is not None:
            owned.close()
    lo, hi = as_fraction(cfg.min_accuracy), as_fraction(cfg.max_accuracy)
    kept, removed = [], []
    for d in decided:
        if d is not None:
            removed.append(d)
            continue
        r = next(graded)
        if r.correct and r.metadata.get("message_accuracy") is None:
            r = with_grades(r, r.correct)
        right = Fraction(sum(r.correct), len(r.correct)) if r.correct else None
        if right is not None and lo < right < hi:
            kept.append(r)
        else:
            removed.append(_removed(r, "accuracy", message_accuracy=None if right is None else float(right),
                                    correct=sum(r.correct or []), messages=len(r.responses),
                                    bounds=[cfg.min_accuracy, cfg.max_accuracy]))
    return FilterResult(kept=kept, removed=removed)


def write_jsonl_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSON lines into a temp file, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_result(out_dir: str, result: FilterResult, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """DIR/kept.jsonl, DIR/removed.jsonl and DIR/summary.json; returns the summary."""
    out = Path(out_dir)
    write_jsonl_atomic(out / KEPT_FILE, [record_to_row(r) for r in result.kept])
    write_jsonl_atomic(out / REMOVED_FILE, result.removed)
    summary = {**result.counts(), **(extra or {})}
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_stage1(cfg: Stage1FilterConfig) -> dict[str, Any]:
    """Read, filter and write (module doc); returns the summary (also logged)."""
    from tqdm import tqdm

    records = read_train_records(cfg.input)  # every row checked before anything is graded
    index = BenchmarkIndex.from_files(cfg.decontaminate, cfg.contamination_ngram)
    ungraded = sum(r.correct is None and bool(r.responses) for r in records)
    bar = tqdm(desc="grading pools", unit="problem", dynamic_ncols=True, disable=ungraded == 0)
    try:
        result = filter_stage1(records, cfg, index=index, progress=bar.update)
    finally:
        bar.close()
    summary = write_result(cfg.out, result, {
        "stage": 1, "domain": cfg.domain, "bounds": [cfg.min_accuracy, cfg.max_accuracy],
        "benchmarks": index.files, "benchmark_problems": index.problems, "input_file": cfg.input,
    })
    log.info("stage 1 filter %s -> %s: %s", cfg.input, cfg.out, json.dumps(summary))
    return summary
