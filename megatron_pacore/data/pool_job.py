"""The pool-building job: `tools/build_curriculum.py pool` and `merge`.

    build_curriculum.py pool --model DIR_OR_URL --problems FILE --num-messages 24 --out DIR
                             [--shard i/N] [--max-tokens ...] [--temperature ...] ...
                             [--config pool.yaml] [generation.sampling.seed=0 ...]
    build_curriculum.py merge --out DIR [--problems FILE]

Each shard writes DIR/pool.shard-<i>-of-<N>.jsonl (DIR/pool.jsonl unsharded), appending one
record per finished problem; rerunning the same command resumes. The generation settings are
kept in DIR/pool.config.json, and a rerun with other settings is refused (it would mix two
pools in one file). `merge` joins the N shard files into DIR/pool.jsonl.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from tqdm import tqdm

from megatron_pacore.config import GenerationOptions, GradingOptions, check_required
from megatron_pacore.data.train_records import TrainRecord
from megatron_pacore.inference.base import Generator
from megatron_pacore.data.pool import (
    POOL_FILE,
    PoolBuildConfig,
    PoolGrader,
    PoolStats,
    build_pool,
    merge_pools,
    pool_path,
    read_pool_problems,
    select_problems,
)
from megatron_pacore.data.settings_file import check_settings_file

log = logging.getLogger(__name__)

CONFIG_FILE = "pool.config.json"
# Settings that change what a pool holds: a resumed run must agree on all of them. Flat, as
# pool.config.json has always held them (model and sampling come from `generation`).
_IDENTITY = ("model", "problems", "num_messages", "max_tokens", "temperature", "top_p", "seed", "limit")


@dataclass(kw_only=True)
class PoolJobConfig:
    """`build_curriculum.py pool`: generate and grade the message pool of every problem."""

    problems: str = ""
    """JSONL of problems: {id, problem, answer}, {id, messages, answer} or training rows"""
    out: str = ""
    """output directory (pool files and pool.config.json)"""
    num_messages: int = 24
    """messages per problem (paper: 24)"""
    shard: str = "0/1"
    """i/N: build shard i of N (by crc32 of the id)"""
    limit: Optional[int] = None
    """only the first N problems of the file"""
    generation: GenerationOptions
    """model, sampling (the seed is moved per problem), concurrency and engine"""
    grading: GradingOptions = field(default_factory=GradingOptions)
    """grading processes and time per message"""

    refused_generation: ClassVar[tuple[str, ...]] = ("reference_order", "max_message_tokens")
    """round-1 samples only: no synthesis prompt, so no reference order and no message bound
    (refused here; build_curriculum.py gives them no flag)"""

    def __post_init__(self) -> None:
        check_required(self, "problems", "out")
        self.generation.refuse(self.refused_generation, "the pool job (round-1 messages only)")
        self.build_config()  # the remaining fields are checked there

    def build_config(self) -> PoolBuildConfig:
        from megatron_pacore.data.pool import parse_shard

        g = self.generation
        return PoolBuildConfig(num_messages=self.num_messages, sampling=g.sampling, concurrency=g.concurrency,
                               max_retries=g.max_retries, shard=parse_shard(self.shard), limit=self.limit)

    def identity(self) -> dict[str, Any]:
        return self.generation.settings_of(self, _IDENTITY)


def check_config_file(cfg: PoolJobConfig) -> None:
    """Write DIR/pool.config.json, or compare with it: a resumed or parallel shard job with
    other generation settings is a ValueError naming the fields that differ."""
    check_settings_file(Path(cfg.out) / CONFIG_FILE, cfg.identity(), "a pool")


async def run_pool_job(cfg: PoolJobConfig, generator: Optional[Generator] = None) -> PoolStats:
    """Build this shard's pool file; returns its stats (also logged).

    `generator`: an engine already started (tests, the demo's prepare step), kept open;
    otherwise one is opened from cfg.model as `pacore infer` does, and closed at the end.
    """
    from megatron_pacore.inference.factory import open_generator

    build = cfg.build_config()
    problems = read_pool_problems(cfg.problems)
    todo = select_problems(problems, build)  # bad rows fail here, before any engine starts
    check_config_file(cfg)
    out = pool_path(cfg.out, build.shard)
    owned = generator is None
    if generator is None:
        generator = await open_generator(**cfg.generation.engine_kwargs())
    grader = PoolGrader(cfg.grading.workers, cfg.grading.timeout_s)
    bar = tqdm(total=len(todo), desc=f"pool {cfg.shard}", unit="problem", dynamic_ncols=True)
    start, tokens, right = time.perf_counter(), 0, []

    def on_problem(record: TrainRecord, completion_tokens: int) -> None:
        nonlocal tokens
        tokens += completion_tokens
        right.append(record.message_accuracy or 0.0)
        bar.update(1)
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}",
                        acc=f"{sum(right) / len(right):.3f}")

    try:
        done_before = _count_rows(out)
        bar.update(min(done_before, len(todo)))
        stats = await build_pool(problems, generator, out, build, grade=grader.grade, on_problem=on_problem)
    finally:
        bar.close()
        grader.close()
        if owned:
            await generator.close()
    log.info("pool %s -> %s: %s", cfg.shard, out, json.dumps(stats.summary()))
    return stats


def _count_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def merge_shards(out_dir: str, problems: Optional[str] = None, output: Optional[str] = None) -> Path:
    """Join every DIR/pool.shard-*-of-N.jsonl into DIR/pool.jsonl (or `output`). All N shards
    must be there, of one N; with `problems`, every problem must be in one of them."""
    directory = Path(out_dir)
    shards = sorted(directory.glob("pool.shard-*-of-*.jsonl"))
    if not shards:
        raise ValueError(f"no shard files (pool.shard-*-of-*.jsonl) in {directory}")
    counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in shards}
    if len(counts) != 1:
        raise ValueError(f"{directory} holds shards of different counts {sorted(counts)}; merge one set at a time")
    n = counts.pop()
    present = {int(p.stem.split("-")[1]) for p in shards}
    missing = sorted(set(range(n)) - present)
    if missing:
        raise ValueError(f"{directory}: shards {missing} of {n} are missing; run them before merging")
    target = Path(output) if output else directory / POOL_FILE
    rows = merge_pools(shards, target, problems)
    log.info("merged %d shards (%d problems) -> %s", n, rows, target)
    return target

