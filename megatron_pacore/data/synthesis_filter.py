"""Curriculum stage 2: the problems a stage-1 checkpoint sometimes, not always, synthesises right.

    build_curriculum.py filter --stage 2 --checkpoint DIR_OR_URL --samples 16 \\
        --input stage1/kept.jsonl --out DIR

For every problem (a training record with its message pool) the checkpoint answers `samples`
synthesis prompts, each over its own draw of |M| ~ U(min_messages, max_messages) of the pool's
messages, drawn and rendered exactly as the trainer's sampler does (data/sampler.py: compacted
non-empty responses, without replacement, in `generation.reference_order` (released by default),
`prompts.render_synthesis_prompt` in the last user turn). Each answer is graded strictly (the
training reward: a finished `</think>`, not truncated, the last `\\boxed{}`; code: every
test), and the problem's synthesis accuracy is the share right. Stage 2 keeps
0 < synthesis accuracy < 1 (paper, section 3.2).

The job is long on a real pool (problems x samples generations), so each measured problem is
appended to DIR/synthesis.jsonl at once and a rerun of the same command skips it (a torn last
line is dropped); the settings are kept in DIR/stage2.config.json and a rerun with other
settings is refused. When every problem is measured, DIR/kept.jsonl (the records, with
`synthesis_accuracy` in their metadata), DIR/removed.jsonl (reason `synthesis_accuracy`, with
the measured value) and DIR/summary.json are written. A problem whose samples all fail is not
recorded and is retried by the next run.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Sequence

from megatron_pacore.config import GenerationOptions, GradingOptions, check_at_least, check_required
from megatron_pacore.data.curriculum_filter import FilterResult, write_result
from megatron_pacore.data.io import JsonlWriter
from megatron_pacore.data.pool import GradeFn
from megatron_pacore.data.sampler import MessageSampler, SamplerConfig, SynthesisPrompt
from megatron_pacore.data.settings_file import check_settings_file
from megatron_pacore.data.train_records import TrainRecord, read_train_records
from megatron_pacore.inference.base import Generator
from megatron_pacore.pacore.runner import derived_seed, sample_with_retries

log = logging.getLogger(__name__)

MEASURE_FILE, CONFIG_FILE = "synthesis.jsonl", "stage2.config.json"
# Settings that change what is measured: a resumed run must agree on all of them. Flat, as
# stage2.config.json has always held them ("checkpoint" is generation.model).
_IDENTITY = ("checkpoint", "input", "samples", "min_messages", "max_messages", "message_seed", "max_tokens",
             "temperature", "top_p", "seed", "limit", "reference_order")
# reference_order joined the identity later: a file without it was written with the default.
_IDENTITY_DEFAULTS = {"reference_order": "released"}


@dataclass(kw_only=True)
class Stage2FilterConfig:
    """`build_curriculum.py filter --stage 2`: measure synthesis accuracy, keep 0 < it < 1."""

    input: str = ""
    """stage-1 training records (.jsonl, .json or .parquet), each with its message pool"""
    out: str = ""
    """output directory: synthesis.jsonl (measurements), kept.jsonl, removed.jsonl, summary.json"""
    samples: int = 16
    """synthesis prompts per problem (one answer each)"""
    min_messages: int = 16
    """smallest |M| of a prompt (paper: 16)"""
    max_messages: int = 24
    """largest |M| (paper: 24); clamped to the pool's size"""
    message_seed: int = 0
    """seed of the message draws (moved per problem by its id)"""
    limit: Optional[int] = None
    """only the first N problems of the input"""
    save_responses: bool = False
    """also record every answer's text in synthesis.jsonl (large on real pools)"""
    generation: GenerationOptions
    """the stage-1 checkpoint (`model`, flag also --checkpoint: a Hugging Face directory for an
    in-process vLLM, or an http(s):// server), sampling (the trainer's rollout: temperature 1.0),
    the reference order of the prompts (as the trainer's sampler), concurrency and engine"""
    grading: GradingOptions = field(default_factory=GradingOptions)
    """grading processes and time per answer"""

    refused_generation: ClassVar[tuple[str, ...]] = ("max_message_tokens",)
    """the trainer's sampler gives whole compacted messages: no bound to measure with (refused
    here; build_curriculum.py gives it no flag)"""

    def __post_init__(self) -> None:
        check_required(self, "input", "out")
        check_at_least("samples", self.samples, 1)
        check_at_least("min_messages", self.min_messages, 1)
        if self.max_messages < self.min_messages:
            raise ValueError(f"max_messages must be >= min_messages={self.min_messages}, got {self.max_messages}")
        check_at_least("message_seed", self.message_seed, 0)
        check_at_least("limit", self.limit, 1)
        self.generation.refuse(self.refused_generation, "stage 2 (the trainer's prompts are unbounded)")

    @property
    def checkpoint(self) -> str:
        return self.generation.model

    def identity(self) -> dict[str, Any]:
        return self.generation.settings_of(self, _IDENTITY)


def synthesis_prompts(record: TrainRecord, cfg: Stage2FilterConfig) -> list[SynthesisPrompt]:
    """The `cfg.samples` synthesis prompts of one problem: the trainer's sampler on this record
    alone, one draw of |M| messages per prompt, seeded by (message_seed, id)."""
    seed = zlib.crc32(f"{cfg.message_seed}/{record.id}".encode("utf-8")) % (2**31)
    sampler = MessageSampler([record], SamplerConfig(
        num_problems=1, min_messages=cfg.min_messages, max_messages=cfg.max_messages, samples_per_problem=1,
        temperature=cfg.generation.sampling.temperature, seed=seed, shuffle=False,
        reference_order=cfg.generation.reference_order))
    return [sampler.next_batch()[0] for _ in range(cfg.samples)]


def check_config_file(cfg: Stage2FilterConfig) -> None:
    """Write DIR/stage2.config.json, or refuse (ValueError naming the fields) a resumed run
    with other settings."""
    check_settings_file(Path(cfg.out) / CONFIG_FILE, cfg.identity(), "stage-2 measurements", _IDENTITY_DEFAULTS)


async def measure(records: Sequence[TrainRecord], generator: Generator, cfg: Stage2FilterConfig, grade: GradeFn,
                  on_problem: Optional[Callable[[dict[str, Any]], None]] = None) -> dict[str, int]:
    """Measure every record not yet in DIR/synthesis.jsonl, appending each as it finishes;
    returns counts (measured, skipped, failed problems, failed samples, completion tokens)."""
    writer = JsonlWriter(Path(cfg.out) / MEASURE_FILE, resume=True)
    todo = [r for r in records if r.id not in writer.done_ids]
    counts = {"measured": 0, "skipped": len(records) - len(todo), "failed_problems": 0, "failed_samples": 0,
              "completion_tokens": 0}
    g = cfg.generation
    slots = asyncio.Semaphore(g.concurrency)
    grade_lock = asyncio.Lock()

    async def one_prompt(prompt: SynthesisPrompt):
        seed = derived_seed(g.sampling.seed, f"{prompt.record.id}/synthesis/{prompt.iteration}")
        request = prompt.request(max_tokens=g.sampling.max_tokens, seed=seed, top_p=g.sampling.top_p)
        (completion, _), = await sample_with_retries(generator, request, slots, g.max_retries, 1.0)
        return completion

    async def one(record: TrainRecord) -> tuple[Optional[dict[str, Any]], int, int]:
        prompts = synthesis_prompts(record, cfg)
        completions = await asyncio.gather(*(one_prompt(p) for p in prompts))
        tokens = sum(c.completion_tokens for c in completions)
        ok = [(p, c) for p, c in zip(prompts, completions) if c.ok]
        failed = len(completions) - len(ok)
        if not ok:
            log.warning("%s: all %d synthesis samples failed; not recorded (rerun to retry)", record.id, failed)
            return None, tokens, failed
        async with grade_lock:
            correct = await asyncio.to_thread(grade, record.domain, [c.text for _, c in ok],
                                              [c.finish_reason for _, c in ok], record.answer, record.tests)
        row: dict[str, Any] = {
            "id": record.id, "synthesis_accuracy": sum(map(bool, correct)) / len(ok),
            "correct": [bool(c) for c in correct], "failed_samples": failed, "completion_tokens": tokens,
            "reference_indices": [p.reference_indices for p, _ in ok],
            "finish_reasons": [c.finish_reason for _, c in ok],
        }
        if cfg.save_responses:
            row["responses"] = [c.text for _, c in ok]
        return row, tokens, failed

    tasks = [asyncio.create_task(one(r)) for r in todo]
    try:
        for done in asyncio.as_completed(tasks):
            row, tokens, failed = await done
            counts["completion_tokens"] += tokens
            counts["failed_samples"] += failed
            if row is None:
                counts["failed_problems"] += 1
                continue
            writer.write(row)
            counts["measured"] += 1
            if on_problem is not None:
                on_problem(row)
    finally:
        for t in tasks:
            t.cancel()
        writer.close()
    return counts


def read_measurements(path: Path) -> dict[str, dict[str, Any]]:
    """id -> measurement row of DIR/synthesis.jsonl."""
    from megatron_pacore.data.jsonl import JsonlAppender

    if not path.is_file():
        return {}
    appender = JsonlAppender(path, lambda row: row, what="stage-2 measurement")
    appender.close()
    return {str(r["id"]): r for r in appender.records}


def decide_stage2(records: Sequence[TrainRecord], measured: dict[str, dict[str, Any]]) -> FilterResult:
    """Keep 0 < synthesis accuracy < 1 (every record must have been measured)."""
    kept, removed = [], []
    for r in records:
        m = measured[r.id]
        acc = float(m["synthesis_accuracy"])
        if 0 < acc < 1:
            kept.append(replace(r, metadata={**r.metadata, "synthesis_accuracy": acc}))
        else:
            removed.append({"id": r.id, "reason": "synthesis_accuracy", "synthesis_accuracy": acc,
                            "correct": sum(m["correct"]), "samples": len(m["correct"]), "source": r.source})
    return FilterResult(kept=kept, removed=removed)


async def run_stage2(cfg: Stage2FilterConfig, generator: Optional[Generator] = None,
                     grade: Optional[GradeFn] = None) -> dict[str, Any]:
    """Measure what is missing, then write kept/removed when every problem is measured.

    `generator`: an engine already started (tests), kept open; otherwise one is opened on
    cfg.checkpoint as `pacore infer` does and closed at the end. Returns the summary, with
    `complete` False when some problems are still unmeasured (rerun to finish them).
    """
    from tqdm import tqdm

    from megatron_pacore.data.pool import PoolGrader
    from megatron_pacore.inference.factory import open_generator

    records = read_train_records(cfg.input)
    if cfg.limit is not None:
        records = records[: cfg.limit]
    for r in records:  # a pool without messages cannot be measured: fail before any engine starts
        synthesis_prompts(r, replace(cfg, samples=1))
    check_config_file(cfg)
    out = Path(cfg.out)
    before = read_measurements(out / MEASURE_FILE)
    left = sum(r.id not in before for r in records)
    start = time.perf_counter()
    counts = {"measured": 0, "skipped": len(records) - left, "failed_problems": 0, "failed_samples": 0,
              "completion_tokens": 0}
    if left:  # no engine is started when every problem is measured already
        owned_gen = generator is None
        if generator is None:
            generator = await open_generator(**cfg.generation.engine_kwargs())
        owned_grader = None
        if grade is None:
            owned_grader = PoolGrader(cfg.grading.workers, cfg.grading.timeout_s, strict=True)
            grade = owned_grader.grade
        bar = tqdm(total=len(records), initial=len(records) - left, desc="stage 2", unit="problem",
                   dynamic_ncols=True)
        try:
            counts = await measure(records, generator, cfg, grade, on_problem=lambda row: bar.update(1))
        finally:
            bar.close()
            if owned_grader is not None:
                owned_grader.close()
            if owned_gen:
                await generator.close()
    measured = read_measurements(out / MEASURE_FILE)
    missing = [r.id for r in records if r.id not in measured]
    summary: dict[str, Any] = {"stage": 2, "checkpoint": cfg.checkpoint, "samples": cfg.samples, **counts,
                               "seconds": round(time.perf_counter() - start, 2), "complete": not missing}
    if missing:
        summary["unmeasured"] = len(missing)
        log.warning("stage 2: %d problems unmeasured (first: %s); rerun the same command to finish", len(missing),
                    missing[:5])
        return summary
    result = decide_stage2(records, measured)
    summary = write_result(cfg.out, result, summary)
    log.info("stage 2 filter %s -> %s: %s", cfg.input, cfg.out, json.dumps(summary))
    return summary
