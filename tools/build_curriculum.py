#!/usr/bin/env python
"""Build the curriculum data of PaCoRe training.

    build_curriculum.py pool  --model DIR_OR_URL --problems FILE --num-messages 24 --out DIR
                              [--shard i/N] [--max-tokens N] [--temperature T] [--seed S] ...
    build_curriculum.py merge --out DIR [--problems FILE]

`pool` generates each problem's message cache pool with the model, compacts and grades every
message, and writes the trainer's records (DIR/pool.jsonl, or one file per --shard); rerun
the same command to resume. `merge` joins the shard files. The logic lives in
megatron_pacore.data.pool and pool_job; this is its command line.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Optional, Sequence


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """The sampling, retry and engine flags that `pacore infer` also takes (one place, so
    they can follow the config dataclasses when those generate the flags)."""
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per message (default: up to the context)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="base seed, moved per problem")
    p.add_argument("--concurrency", type=int, default=64, help="requests (each of n = --num-messages) in flight")
    p.add_argument("--max-retries", type=int, default=3, help="extra attempts for a failed sample")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="in-process engine option, repeatable (tensor_parallel_size=2, max_model_len=32768, ...)")
    p.add_argument("--served-model-name", default=None, help="server model name (default: from /v1/models)")
    p.add_argument("--stream", action="store_true", help="stream server responses")


def pool_config_from_args(args: argparse.Namespace):
    from megatron_pacore.config_cli import parse_key_values
    from megatron_pacore.data.pool_job import PoolJobConfig

    return PoolJobConfig(
        model=args.model, problems=args.problems, out=args.out, num_messages=args.num_messages,
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        concurrency=args.concurrency, max_retries=args.max_retries, shard=args.shard, limit=args.limit,
        vllm_args=parse_key_values(args.vllm_arg), served_model_name=args.served_model_name,
        stream=args.stream, grade_workers=args.grade_workers, grade_timeout_s=args.grade_timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_curriculum.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pool = sub.add_parser("pool", help="generate and grade each problem's message pool")
    pool.add_argument("--model", required=True, help="checkpoint directory (in-process vLLM) or http(s):// URL")
    pool.add_argument("--problems", required=True, help="JSONL: {id, problem, answer}, {id, messages} or training rows")
    pool.add_argument("--out", required=True, help="output directory")
    pool.add_argument("--num-messages", type=int, default=24, help="messages per problem (paper: 24)")
    pool.add_argument("--shard", default="0/1", help="i/N: build shard i of N (by crc32 of the id)")
    pool.add_argument("--grade-workers", type=int, default=None, help="grading processes (default: CPU count)")
    pool.add_argument("--grade-timeout", type=float, default=10.0, help="seconds per graded math message")
    add_generation_flags(pool)
    merge = sub.add_parser("merge", help="join the shard files of DIR into DIR/pool.jsonl")
    merge.add_argument("--out", required=True, help="the directory the shards were written to")
    merge.add_argument("--problems", default=None, help="check that every problem of this file is present")
    merge.add_argument("--output", default=None, help="merged file (default: DIR/pool.jsonl)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from megatron_pacore.inference.base import GenerationError

    try:
        if args.command == "pool":
            from megatron_pacore.data.pool_job import run_pool_job

            stats = asyncio.run(run_pool_job(pool_config_from_args(args)))
            return 0 if stats.failed_problems == 0 else 1
        from megatron_pacore.data.pool_job import merge_shards

        merge_shards(args.out, args.problems, args.output)
        return 0
    except (ValueError, GenerationError) as e:
        print(f"build_curriculum.py {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print(f"build_curriculum.py {args.command}: interrupted; finished problems are kept (rerun to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
