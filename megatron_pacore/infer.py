"""The `pacore infer` job: read problems, run the PaCoRe rounds, write each result as it ends.

Inputs are validated before any engine starts (a bad line costs no engine start-up); results
are appended and flushed one problem at a time, so an interrupted job resumes with --resume.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional

from tqdm import tqdm

from megatron_pacore.config import InferConfig
from megatron_pacore.data.io import JsonlWriter, read_problems
from megatron_pacore.inference.base import ModelGenerator
from megatron_pacore.inference.factory import open_generator, tokenizer_fns
from megatron_pacore.pacore.runner import PaCoReRunner
from megatron_pacore.types import RoundRecord

log = logging.getLogger(__name__)


async def run_infer(cfg: InferConfig, generator: Optional[ModelGenerator] = None) -> int:
    """Run the job; returns the process exit code: 0, or 1 when any problem failed (each is
    recorded in the output with its reason; `cfg.allow_failed` makes that 0 too). The count of
    failed and degraded problems is printed to stderr.

    `generator`: an engine already started (tests, eval) instead of one made from cfg.model;
    the caller keeps ownership and closes it.
    """
    problems = read_problems(cfg.input, limit=cfg.limit)
    writer = JsonlWriter(cfg.output, resume=cfg.resume)
    todo = [p for p in problems if p.id not in writer.done_ids]
    schedule = cfg.schedule()
    log.info("%d problems (%d already done), rounds %s", len(problems), len(problems) - len(todo), schedule)
    if not todo:
        writer.close()
        return 0

    owned = generator is None
    if generator is None:
        generator = await open_generator(**cfg.generation.engine_kwargs())
    try:
        tokens = 0
        start = time.perf_counter()
        bar = tqdm(total=len(todo), desc="problems", unit="problem", dynamic_ncols=True)

        def on_round(problem_id: str, record: RoundRecord) -> None:
            nonlocal tokens
            tokens += record.completion_tokens
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}", tokens=tokens)

        g = cfg.generation
        tokenize, detokenize = tokenizer_fns(generator) if g.max_message_tokens else (None, None)
        runner = PaCoReRunner(
            generator,
            g.runner_config(schedule),
            tokenize=tokenize,
            detokenize=detokenize,
            on_round=on_round,
        )
        failed = degraded = 0
        async for result in runner.run(todo):
            writer.write(result.to_json())
            failed += result.status == "failed"
            degraded += result.status == "degraded"
            if result.status == "failed":
                log.warning("%s failed: %s", result.id, result.error)
            elif result.status == "degraded":
                log.warning("%s degraded: failed samples per round %s", result.id, result.failed_samples)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - start
        log.info(
            "done: %d problems, %d failed, %d test-time tokens in %.1fs (%.0f tok/s) -> %s",
            len(todo), failed, tokens, seconds, tokens / max(seconds, 1e-9), cfg.output,
        )
    finally:
        writer.close()
        if owned:
            await generator.close()
    if failed or degraded:
        print(f"pacore infer: {failed} of {len(todo)} problems failed, {degraded} degraded "
              f"(status and error in {cfg.output})", file=sys.stderr)
    if failed and not cfg.allow_failed:
        print("pacore infer: exiting with status 1 because problems failed (--allow-failed exits 0)",
              file=sys.stderr)
        return 1
    return 0

