"""The message cache pool of each training problem: generated once, compacted, graded.

    for each problem x (of this shard):
        Omega = num_messages trajectories sampled from pi(x)      # one request, n = 24
        M     = {C(w) for w in Omega}                              # compaction
        correct_i = grade(M_i, x)                                  # math-verify | code tests
        message_accuracy = mean(correct)

(paper, section 3.2: the cached messages from which every training synthesis prompt draws
|M| ~ U(16, 24), and whose accuracy places a problem in curriculum stage 1).

Sampling goes through the Generator seam (in-process vLLM or any OpenAI-compatible server)
and the runner's retry loop; grading goes through the existing graders' process pools, in a
thread, so the engine keeps generating while a finished problem is graded. Each finished
problem is appended to the output and flushed at once (`JsonlWriter`): a rerun skips the ids
already there and drops a torn last line. `shard_of` splits the problems across N jobs by
their id alone, so N servers or a SLURM array split the same file the same way; `merge`
joins the shard files.
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from megatron_pacore.config import check_at_least
from megatron_pacore.data.io import JsonlWriter, iter_jsonl, problem_from_row
from megatron_pacore.data.train_records import TrainRecord, read_train_records, record_to_row, write_train_records
from megatron_pacore.inference.base import Generator
from megatron_pacore.pacore.compaction import compact
from megatron_pacore.pacore.runner import derived_seed, sample_with_retries
from megatron_pacore.types import GenerationRequest, Problem, SamplingSettings

log = logging.getLogger(__name__)

POOL_FILE = "pool.jsonl"


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """"i/N" -> (i, N) with 0 <= i < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be 'i/N' with 0 <= i < N, got {text!r}")
    return i, n


def shard_of(problem_id: str, num_shards: int) -> int:
    """The shard a problem belongs to: crc32 of its id mod N (independent of file order)."""
    return zlib.crc32(problem_id.encode("utf-8")) % num_shards


def pool_path(out_dir: Path | str, shard: tuple[int, int] = (0, 1)) -> Path:
    """DIR/pool.jsonl unsharded; DIR/pool.shard-00003-of-00008.jsonl for shard 3/8."""
    i, n = shard
    name = POOL_FILE if n == 1 else f"pool.shard-{i:05d}-of-{n:05d}.jsonl"
    return Path(out_dir) / name


@dataclass(frozen=True, kw_only=True)
class PoolBuildConfig:
    """What `build_pool` generates and how it grades."""

    num_messages: int = 24
    """Messages per problem (paper: 24)."""
    sampling: SamplingSettings = SamplingSettings()
    """Sampling of every message (the paper samples at temperature 1.0); its seed is moved
    per problem (`derived_seed`), so shards and reruns draw the same samples."""
    concurrency: int = 64
    """Requests (each of n = num_messages samples) in flight."""
    max_retries: int = 3
    """Extra attempts for a failed sample before it is recorded as failed (and wrong)."""
    retry_backoff_s: float = 1.0
    """First wait before a retry; doubles each time."""
    shard: tuple[int, int] = (0, 1)
    """(i, N): build only the problems with shard_of(id, N) == i."""
    limit: Optional[int] = None
    """Only the first N problems of the file (before sharding)."""

    def __post_init__(self) -> None:
        check_at_least("num_messages", self.num_messages, 1)
        check_at_least("concurrency", self.concurrency, 1)
        check_at_least("max_retries", self.max_retries, 0)
        i, n = self.shard
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard must be (i, N) with 0 <= i < N, got {self.shard}")
        check_at_least("limit", self.limit, 1)


@dataclass
class PoolStats:
    """What one `build_pool` call did."""

    problems: int = 0
    skipped: int = 0
    built: int = 0
    failed_problems: int = 0
    messages: int = 0
    failed_messages: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    accuracy: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        mean = sum(self.accuracy) / len(self.accuracy) if self.accuracy else 0.0
        return {
            "problems": self.problems, "skipped": self.skipped, "built": self.built,
            "failed_problems": self.failed_problems,
            "messages": self.messages, "failed_messages": self.failed_messages,
            "completion_tokens": self.completion_tokens, "seconds": round(self.seconds, 2),
            "tokens_per_s": round(self.completion_tokens / max(self.seconds, 1e-9), 1),
            "mean_message_accuracy": round(mean, 4),
        }


class PoolGrader:
    """Grades the responses of one problem with the training reward (`TrainingReward`: the
    math grader in its strict mode on whole trajectories, the sandboxed code tests on the
    compacted message; a response is correct when its reward is 1), so message accuracy
    means what the trainer pays. `strict=False` grades math leniently (models that do not
    box or think)."""

    def __init__(self, workers: Optional[int] = None, timeout_s: float = 10.0, strict: bool = True) -> None:
        from megatron_pacore.rewards.reward_fn import RewardConfig, TrainingReward

        self.strict = strict
        self.reward = TrainingReward(RewardConfig(strict=strict, math_workers=workers, math_timeout_s=timeout_s))

    def grade(self, domain: str, responses: Sequence[str], finish_reasons: Sequence[Optional[str]],
              answer: Optional[str], tests: Optional[list[dict]]) -> list[bool]:
        """One verdict per response (the whole trajectory, as the engine returned it)."""
        from megatron_pacore.rewards.reward_fn import RewardItem

        lenient_math = domain == "math" and not self.strict  # lenient: the compacted message only
        items = [RewardItem(response=compact(r) if lenient_math else r, finish_reason=f, domain=domain,
                            reference=answer, tests=tests)
                 for r, f in zip(responses, finish_reasons)]
        return [result.reward == 1.0 for result in self.reward.score(items)]

    def close(self) -> None:
        self.reward.close()


GradeFn = Callable[[str, Sequence[str], Sequence[Optional[str]], Optional[str], Optional[list[dict]]], list[bool]]

# Row fields that are the record's own (never copied into its metadata).
_RECORD_FIELDS = ("id", "conversation", "messages", "responses", "ground_truth", "answer", "problem",
                  "domain", "correct", "tests", "message_accuracy")


def domain_of(problem: Problem) -> str:
    """"math" or "code": the row's `domain`, else "code" when it has tests."""
    domain = problem.metadata.get("domain") or ("code" if problem.metadata.get("tests") else "math")
    if domain not in ("math", "code"):
        raise ValueError(f"problem {problem.id!r}: domain must be 'math' or 'code', got {domain!r}")
    return domain


def read_pool_problems(path: Path | str) -> list[Problem]:
    """Problems from JSONL rows of any form the project reads: benchmark rows `{id, problem,
    answer}`, chat rows `{id, messages}`, and training rows `{id, conversation, ground_truth}`
    (the released PaCoRe-Train-8k form; their `responses` are ignored: the pool is rebuilt)."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        if "messages" not in row and "problem" not in row and "conversation" in row:
            row = dict(row, messages=row["conversation"])
            row.pop("responses", None)
            row.pop("correct", None)
        problem = problem_from_row(row, f"{path}:{lineno}")
        if problem.answer is None and isinstance(problem.metadata.get("ground_truth"), (str, int, float)):
            problem = replace(problem, answer=str(problem.metadata["ground_truth"]))
        if problem.id in seen:
            raise ValueError(f"{path}:{lineno}: duplicate id {problem.id!r} (first on line {seen[problem.id]})")
        seen[problem.id] = lineno
        problems.append(problem)
    return problems


def pool_record(problem: Problem, responses: list[str], correct: list[bool], domain: str) -> TrainRecord:
    """The trainer's record of one problem's pool: its chat, the responses verbatim (the
    sampler compacts them, as the released rows need), per-response correctness, and the
    message accuracy in metadata; other fields of the problem row are kept in metadata."""
    metadata = {k: v for k, v in problem.metadata.items() if k not in _RECORD_FIELDS}
    metadata["message_accuracy"] = sum(correct) / len(correct) if correct else 0.0
    return TrainRecord(
        id=problem.id, conversation=problem.messages, responses=responses, domain=domain,
        answer=problem.answer if domain == "math" else None,
        tests=problem.metadata.get("tests") if domain == "code" else None,
        correct=correct, metadata=metadata,
    )


def select_problems(problems: Sequence[Problem], cfg: PoolBuildConfig) -> list[Problem]:
    """The problems of this shard, in file order; every problem of the file (not only this
    shard's) is checked for what grading needs, so all shards fail alike on a bad file."""
    chosen = problems[: cfg.limit] if cfg.limit is not None else list(problems)
    i, n = cfg.shard
    out = []
    for p in chosen:
        domain = domain_of(p)
        if domain == "math" and not (p.answer and str(p.answer).strip()):
            raise ValueError(f"problem {p.id!r}: a math problem needs an 'answer' to grade its messages")
        if domain == "code" and not p.metadata.get("tests"):
            raise ValueError(f"problem {p.id!r}: a code problem needs 'tests' to grade its messages")
        if shard_of(p.id, n) == i:
            out.append(p)
    return out


async def build_pool(
    problems: Sequence[Problem],
    generator: Generator,
    out: Path | str,
    cfg: PoolBuildConfig = PoolBuildConfig(),
    grade: Optional[GradeFn] = None,
    on_problem: Optional[Callable[[TrainRecord, int], None]] = None,
) -> PoolStats:
    """Generate, compact and grade the pool of every problem of `cfg.shard` not yet in `out`
    (a JSONL file, appended and resumed); returns what was done.

    A sample that fails every retry is left out of the pool (it has no text); a problem whose
    samples all fail is not written (counted in `failed_problems`, retried by a rerun).
    `grade(domain, responses, finish_reasons, answer, tests) -> [bool]` defaults to a
    `PoolGrader`;
    `on_problem(record, completion_tokens)` is called after each write (progress bars).
    """
    stats = PoolStats()
    todo_all = select_problems(problems, cfg)
    writer = JsonlWriter(out, resume=True)
    todo = [p for p in todo_all if p.id not in writer.done_ids]
    stats.problems, stats.skipped = len(todo_all), len(todo_all) - len(todo)
    owned_grader = None
    if grade is None:
        owned_grader = PoolGrader()
        grade = owned_grader.grade
    slots = asyncio.Semaphore(cfg.concurrency)
    grade_lock = asyncio.Lock()  # one grading batch at a time: the pools are shared
    start = time.perf_counter()

    async def one(problem: Problem) -> tuple[Optional[TrainRecord], int, int]:
        sampling = replace(cfg.sampling, seed=derived_seed(cfg.sampling.seed, f"{problem.id}/pool"))
        request = GenerationRequest(f"{problem.id}/pool", problem.messages, cfg.num_messages, sampling)
        samples = await sample_with_retries(generator, request, slots, cfg.max_retries, cfg.retry_backoff_s)
        tokens = sum(c.completion_tokens for c, _ in samples)
        kept = [c for c, _ in samples if c.ok]
        responses = [c.text for c in kept]
        failed = len(samples) - len(kept)
        if not responses:
            errors = sorted({c.error or "" for c, _ in samples})
            log.warning("%s: all %d samples failed (%s); not written", problem.id, len(samples), "; ".join(errors))
            return None, tokens, failed
        domain = domain_of(problem)
        finish = [c.finish_reason for c in kept]
        async with grade_lock:
            correct = await asyncio.to_thread(grade, domain, responses, finish, problem.answer,
                                              problem.metadata.get("tests"))
        if len(correct) != len(responses):
            raise RuntimeError(f"{problem.id}: grader returned {len(correct)} verdicts for {len(responses)} responses")
        return pool_record(problem, responses, [bool(c) for c in correct], domain), tokens, failed

    tasks = [asyncio.create_task(one(p)) for p in todo]
    try:
        for done in asyncio.as_completed(tasks):
            record, tokens, failed = await done
            stats.completion_tokens += tokens
            stats.failed_messages += failed
            if record is None:
                stats.failed_problems += 1
                continue
            writer.write(record_to_row(record))
            stats.built += 1
            stats.messages += len(record.responses)
            stats.accuracy.append(record.message_accuracy or 0.0)
            if on_problem is not None:
                on_problem(record, tokens)
    finally:
        for t in tasks:
            t.cancel()
        writer.close()
        if owned_grader is not None:
            owned_grader.close()
        stats.seconds = time.perf_counter() - start
    return stats


def merge_pools(inputs: Sequence[Path | str], out: Path | str, problems_file: Optional[Path | str] = None) -> int:
    """Join shard files into `out`, in the order of `problems_file` when given (else sorted
    by id); returns the row count.

    Errors (ValueError) on an id found in two inputs, and, with `problems_file`, on problems
    missing from every input (a shard not finished) or rows of ids not in it.
    """
    rows: dict[str, TrainRecord] = {}
    for path in inputs:
        for record in read_train_records(path):
            if record.id in rows:
                raise ValueError(f"{record.source}: id {record.id!r} is also at {rows[record.id].source}")
            rows[record.id] = record
    if problems_file is not None:
        order = [p.id for p in read_pool_problems(problems_file)]
        missing = [pid for pid in order if pid not in rows]
        if missing:
            raise ValueError(
                f"{len(missing)} problems of {problems_file} are in no input (first: {missing[:5]}); "
                "finish their shards (rerun the same pool command: it resumes) before merging"
            )
        extra = sorted(set(rows) - set(order))
        if extra:
            raise ValueError(f"{len(extra)} ids are not problems of {problems_file} (first: {extra[:5]})")
    else:
        order = sorted(rows)
    write_train_records(out, [rows[pid] for pid in order])
    return len(order)
