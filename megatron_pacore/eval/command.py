"""`pacore eval`: PaCoRe against self-consistency on one benchmark, with a report.

    pacore eval --model DIR_OR_URL --benchmark FILE|humaneval --levels low,medium --runs 4 --report DIR

Steps: read the benchmark (`benchmarks.py`: every row needs an answer or tests), check the
report directory's settings, generate (`sampling.Collector`, every request recorded for
resume), grade every message once (`grading.EvalGraders`: math-verify, or the sandboxed code
grader), write the report (`report.py`). A rerun with the same DIR replays
what is recorded and generates only what is missing; when nothing is missing, no engine starts.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Optional

from megatron_pacore.data.settings_file import check_settings_file
from megatron_pacore.eval.benchmarks import load_benchmark
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.eval.sampling import Collector
from megatron_pacore.eval.store import RecordingGenerator
from megatron_pacore.inference.base import Generator, ModelGenerator
from megatron_pacore.inference.factory import is_url, tokenizer_fns
from megatron_pacore.types import Completion, GenerationRequest

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


def check_report_dir(cfg: EvalConfig) -> None:
    """A report DIR holds one experiment: its generation settings are written on the first run
    and must match on every rerun (runs, levels and methods may change)."""
    check_settings_file(Path(cfg.report) / CONFIG_FILE, cfg.generation_settings(), "a report")


class LazyGenerator:
    """Starts the engine on the first request that is not replayed from disk, so a rerun with
    everything recorded costs no engine start-up.

    A failure to start is kept in `failed` and raised again at once by every later request
    (the runner would otherwise retry each one); `run_eval` re-raises it after collection.
    """

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self.engine: Optional[ModelGenerator] = None
        self.failed: Optional[BaseException] = None
        self._lock = asyncio.Lock()

    async def start(self) -> ModelGenerator:
        async with self._lock:
            if self.failed is not None:
                raise self.failed
            if self.engine is None:
                from megatron_pacore.inference.factory import open_generator

                try:
                    engine = await open_generator(**self.cfg.generation.engine_kwargs())
                except Exception as e:
                    self.failed = e
                    raise
                self.engine = engine
            return self.engine

    async def generate(self, request: GenerationRequest) -> list[Completion]:
        return list(await (await self.start()).generate(request))

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()


async def run_eval(cfg: EvalConfig, generator: Optional[ModelGenerator] = None, progress: bool = True,
                   retry_backoff_s: float = 1.0) -> dict[str, Any]:
    """The whole evaluation; returns the metrics (also in DIR/metrics.json).

    `generator`: an engine already started (tests), kept open; else one is made from cfg.model
    when first needed and closed at the end.
    """
    g = cfg.generation
    problems = load_benchmark(cfg.benchmark, limit=cfg.limit)
    if not problems:
        raise ValueError(f"{cfg.benchmark}: no problems")
    check_report_dir(cfg)
    lazy = None
    if generator is None:
        from megatron_pacore.inference.vllm_engine import check_model_dir

        if not is_url(g.model):
            check_model_dir(g.model)
        lazy = LazyGenerator(cfg)
    engine: Generator = generator if generator is not None else lazy  # type: ignore[assignment]
    recorder = RecordingGenerator(engine, Path(cfg.report))
    try:
        if lazy is not None and (recorder.stored == 0 or g.max_message_tokens):
            await lazy.start()  # a fresh directory needs the engine: start it now, errors first
        tokenize = detokenize = None
        if g.max_message_tokens:
            tokenize, detokenize = tokenizer_fns(await lazy.start() if lazy is not None else generator)
        collector = Collector(cfg, recorder, tokenize, detokenize, retry_backoff_s=retry_backoff_s)
        log.info("%d problems x %d runs, levels %s, methods %s; %d generations on record",
                 len(problems), cfg.runs, [lv.name for lv in collector.levels], cfg.methods, recorder.stored)
        data = await collector.collect(problems, progress=progress)
        if lazy is not None and lazy.failed is not None:
            raise lazy.failed
    finally:
        await recorder.close()
        if lazy is not None:
            await lazy.close()
    from megatron_pacore.eval.grading import EvalGraders
    from megatron_pacore.eval.methods import grade_all
    from megatron_pacore.eval.report import write_report

    with EvalGraders(workers=cfg.grading.workers, timeout_s=cfg.grading.timeout_s,
                     require_isolation=not cfg.allow_weak_sandbox) as graders:
        grades = await asyncio.to_thread(grade_all, data, graders)
    extra = {"generation": {"generated": recorder.generated, "replayed": recorder.replayed},
             "grading": graders.summary()}
    metrics = write_report(cfg, data, grades, extra)
    log.info("report: %s (%d requests generated, %d replayed)", Path(cfg.report) / "report.md",
             recorder.generated, recorder.replayed)
    return metrics


def run(cfg: EvalConfig) -> int:
    """`pacore eval` entry point: prints the accuracy table; exit code 0."""
    metrics = asyncio.run(run_eval(cfg))
    for row in metrics["methods"]:
        se = "" if row["stderr"] is None else f" ± {100 * row['stderr']:.1f}"
        print(f"{row['method']:12s} {row['level']:8s} {100 * row['accuracy']:5.1f}{se} ({row['tokens']:.0f} tokens)")
    print(f"report: {Path(cfg.report) / 'report.md'}")
    return 0
