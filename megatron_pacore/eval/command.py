"""`pacore eval`: PaCoRe against self-consistency on one benchmark, with a report.

    pacore eval --model DIR_OR_URL --benchmark FILE --levels low,medium --runs 4 --report DIR

Steps: read the benchmark (every row needs an answer), check the report directory's settings,
generate (`sampling.Collector`, every request recorded for resume), grade every message once
(`rewards.math.MathGrader`), write the report (`report.py`). A rerun with the same DIR replays
what is recorded and generates only what is missing; when nothing is missing, no engine starts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Optional

from megatron_pacore.cli import add_generation_arguments
from megatron_pacore.data.io import read_problems
from megatron_pacore.eval.config import DEFAULT_BENCHMARK, METHODS, EvalConfig
from megatron_pacore.eval.report import write_report
from megatron_pacore.eval.sampling import Collector
from megatron_pacore.eval.store import RecordingGenerator
from megatron_pacore.eval.methods import grade_all
from megatron_pacore.inference.base import Generator
from megatron_pacore.inference.factory import is_url, tokenizer_fns
from megatron_pacore.pacore.schedule import LEVELS
from megatron_pacore.rewards.math import MathGrader
from megatron_pacore.types import Completion, GenerationRequest

log = logging.getLogger(__name__)
CONFIG_FILE = "config.json"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `pacore eval` (see EvalConfig for each)."""
    p.add_argument("--model", required=True, help="checkpoint directory (in-process vLLM) or http(s):// server URL")
    p.add_argument("--benchmark", default=DEFAULT_BENCHMARK, help="JSONL of {id, problem, answer} rows")
    p.add_argument("--report", required=True, metavar="DIR", help="report directory; rerun with it to resume")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--levels", type=_csv, help=f"compute levels, comma-separated, of {sorted(LEVELS)} (default: low)")
    level.add_argument("--widths", nargs="+", help="exploratory widths per level, e.g. --widths 4 16 32,4")
    p.add_argument("--runs", type=int, default=1, help="independent runs (accuracy: mean and standard error)")
    p.add_argument("--methods", type=_csv, default=list(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--pool", type=int, default=None, metavar="P",
                   help="generate P first-round samples per problem once; each run draws from them")
    add_generation_arguments(p, "requests in flight per level")
    p.add_argument("--grade-workers", type=int, default=None, help="math grading processes (default: CPU count)")
    p.add_argument("--grade-timeout", type=float, default=10.0, help="seconds per graded response")


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    from megatron_pacore.inference.vllm_engine import parse_engine_args

    return EvalConfig(
        model=args.model, report=args.report, benchmark=args.benchmark, levels=args.levels, widths=args.widths,
        runs=args.runs, methods=args.methods, pool=args.pool, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p, seed=args.seed, concurrency=args.concurrency,
        max_retries=args.max_retries, reference_order=args.reference_order,
        max_message_tokens=args.max_message_tokens, limit=args.limit, vllm_args=parse_engine_args(args.vllm_arg),
        served_model_name=args.served_model_name, grade_workers=args.grade_workers,
        grade_timeout_s=args.grade_timeout,
    )


def check_report_dir(cfg: EvalConfig) -> None:
    """A report DIR holds one experiment: its generation settings are written on the first run
    and must match on every rerun (runs, levels and methods may change)."""
    path = Path(cfg.report) / CONFIG_FILE
    settings = cfg.generation_settings()
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: unreadable ({e.msg}); remove it or choose another --report DIR") from None
        for name, value in settings.items():
            if stored.get(name) != value:
                raise ValueError(f"{path}: this report was generated with {name}={stored.get(name)!r}, "
                                 f"now {name}={value!r}; use the same setting or another --report DIR")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


class LazyGenerator:
    """Starts the engine on the first request that is not replayed from disk, so a rerun with
    everything recorded costs no engine start-up.

    A failure to start is kept in `failed` and raised again at once by every later request
    (the runner would otherwise retry each one); `run_eval` re-raises it after collection.
    """

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self.engine: Optional[Generator] = None
        self.failed: Optional[BaseException] = None
        self._lock = asyncio.Lock()

    async def start(self) -> Generator:
        async with self._lock:
            if self.failed is not None:
                raise self.failed
            if self.engine is None:
                from megatron_pacore.inference.factory import open_generator

                try:
                    engine = await open_generator(self.cfg.model, self.cfg.vllm_args or None,
                                                  self.cfg.served_model_name)
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


async def run_eval(cfg: EvalConfig, generator: Optional[Generator] = None, progress: bool = True,
                   retry_backoff_s: float = 1.0) -> dict[str, Any]:
    """The whole evaluation; returns the metrics (also in DIR/metrics.json).

    `generator`: an engine already started (tests), kept open; else one is made from cfg.model
    when first needed and closed at the end.
    """
    problems = read_problems(cfg.benchmark, limit=cfg.limit)
    if not problems:
        raise ValueError(f"{cfg.benchmark}: no problems")
    for p in problems:
        if not p.answer:
            raise ValueError(f"{cfg.benchmark}: problem {p.id!r} has no 'answer' to grade against")
    check_report_dir(cfg)
    lazy = None
    if generator is None:
        from megatron_pacore.inference.vllm_engine import check_model_dir

        if not is_url(cfg.model):
            check_model_dir(cfg.model)
        lazy = LazyGenerator(cfg)
    engine: Generator = generator if generator is not None else lazy  # type: ignore[assignment]
    recorder = RecordingGenerator(engine, Path(cfg.report))
    try:
        if lazy is not None and (recorder.stored == 0 or cfg.max_message_tokens):
            await lazy.start()  # a fresh directory needs the engine: start it now, errors first
        tokenize, detokenize = tokenizer_fns(lazy.engine if lazy is not None else engine)
        if not cfg.max_message_tokens:
            tokenize = detokenize = None
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
    with MathGrader(workers=cfg.grade_workers, timeout_s=cfg.grade_timeout_s) as grader:
        grades = await asyncio.to_thread(grade_all, data, grader)
    extra = {"generation": {"generated": recorder.generated, "replayed": recorder.replayed},
             "grading": {"math": grader.mode}}
    metrics = write_report(cfg, data, grades, extra)
    log.info("report: %s (%d requests generated, %d replayed)", Path(cfg.report) / "report.md",
             recorder.generated, recorder.replayed)
    return metrics


def run(args: argparse.Namespace) -> int:
    """`pacore eval` entry point: prints the accuracy table; exit code 0."""
    cfg = config_from_args(args)
    metrics = asyncio.run(run_eval(cfg))
    for row in metrics["methods"]:
        se = "" if row["stderr"] is None else f" ± {100 * row['stderr']:.1f}"
        print(f"{row['method']:12s} {row['level']:8s} {100 * row['accuracy']:5.1f}{se} ({row['tokens']:.0f} tokens)")
    print(f"report: {Path(cfg.report) / 'report.md'}")
    return 0
