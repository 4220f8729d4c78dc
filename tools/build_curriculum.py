#!/usr/bin/env python
"""Build the curriculum data of PaCoRe training.

    build_curriculum.py pool  --model DIR_OR_URL --problems FILE --num-messages 24 --out DIR
                              [--shard i/N] [--max-tokens N] [--temperature T] [--seed S] ...
    build_curriculum.py merge --out DIR [--problems FILE]
    build_curriculum.py filter --stage 1 --domain math|code --input FILE --out DIR
                              [--decontaminate BENCH.jsonl ...] [--max-accuracy 9/24] ...
    build_curriculum.py filter --stage 2 --checkpoint DIR_OR_URL --samples S --input FILE --out DIR
    build_curriculum.py stats  --input FILE [--out DIR]
    build_curriculum.py export --input FILE --output RELEASED.json|.jsonl|.parquet [--keep-ours]
    build_curriculum.py import --input RELEASED.json|.jsonl|.parquet --output FILE

`pool` generates each problem's message cache pool with the model, compacts and grades every
message, and writes the trainer's records (DIR/pool.jsonl, or one file per --shard); rerun
the same command to resume. `merge` joins the shard files. `filter --stage 1` keeps the
problems with 0 < message accuracy < 9/24 (math) or 15/24 (code), without duplicates or
benchmark overlap; `filter --stage 2` keeps those a stage-1 checkpoint synthesises right
sometimes but not always. `stats` counts a file's problems and plots its message accuracy;
`export`/`import` convert to and from the released PaCoRe-Train-8k rows. The logic lives in
megatron_pacore.data (pool, pool_job, curriculum_filter, synthesis_filter, curriculum_stats,
released); this is its command line.
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
    add_filter_parser(sub)
    stats = sub.add_parser("stats", help="problems per source and domain, message-accuracy histogram")
    stats.add_argument("--input", required=True, help="training records (.jsonl, .json or .parquet)")
    stats.add_argument("--out", default=None, help="write DIR/stats.json and DIR/message_accuracy.png")
    stats.add_argument("--bins", type=int, default=24, help="histogram values k/BINS (default 24: one per message)")
    stats.add_argument("--source-field", default=None, help="column naming a row's source (default: data_source, source)")
    export = sub.add_parser("export", help="write records as released PaCoRe-Train-8k rows")
    export.add_argument("--input", required=True, help="training records")
    export.add_argument("--output", required=True, help=".json (one array, as released), .jsonl or .parquet")
    export.add_argument("--keep-ours", action="store_true", help="also write id, domain, correct, tests, message_accuracy")
    imp = sub.add_parser("import", help="read released PaCoRe-Train-8k rows into our record format")
    imp.add_argument("--input", required=True, help="released rows: .json (array or lines), .jsonl or .parquet")
    imp.add_argument("--output", required=True, help="training records (.jsonl or .parquet)")
    return parser


def add_filter_parser(sub) -> None:
    f = sub.add_parser("filter", help="curriculum stage 1 (accuracy, dedup, decontamination) or stage 2 (synthesis)")
    f.add_argument("--stage", type=int, choices=(1, 2), required=True)
    f.add_argument("--input", required=True, help="training records (.jsonl, .json or .parquet; ours or released)")
    f.add_argument("--out", required=True, help="output directory (kept.jsonl, removed.jsonl, summary.json)")
    s1 = f.add_argument_group("stage 1")
    s1.add_argument("--domain", choices=("math", "code"), default=None, help="the domain filtered (stage 1: required)")
    s1.add_argument("--min-accuracy", default="0", help="keep message accuracy > this (default 0)")
    s1.add_argument("--max-accuracy", default=None, help="keep message accuracy < this (default 9/24 math, 15/24 code)")
    s1.add_argument("--no-accuracy-filter", action="store_true",
                    help="dedup and decontaminate only (the clean set stage 2 measures)")
    s1.add_argument("--no-dedup", action="store_true", help="keep duplicate problems")
    s1.add_argument("--near-duplicate-jaccard", type=float, default=0.8,
                    help="shingle Jaccard of near duplicates (default 0.8); 0 = exact duplicates only")
    s1.add_argument("--shingle-size", type=int, default=5, help="tokens per shingle (default 5)")
    s1.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    s1.add_argument("--decontaminate", nargs="+", action="extend", default=[], metavar="BENCH.jsonl",
                    help="benchmark files whose problems' word n-grams remove a training problem")
    s1.add_argument("--ngram", type=int, default=13, help="words per contamination n-gram (default 13)")
    s2 = f.add_argument_group("stage 2")
    s2.add_argument("--checkpoint", default=None, help="stage-1 checkpoint directory or http(s):// URL (stage 2: required)")
    s2.add_argument("--samples", type=int, default=16, help="synthesis prompts per problem (default 16)")
    s2.add_argument("--min-messages", type=int, default=16, help="smallest |M| (default 16)")
    s2.add_argument("--max-messages", type=int, default=24, help="largest |M| (default 24)")
    s2.add_argument("--message-seed", type=int, default=0, help="seed of the message draws")
    s2.add_argument("--save-responses", action="store_true", help="record every answer's text")
    f.add_argument("--grade-workers", type=int, default=None, help="grading processes (default: CPU count)")
    f.add_argument("--grade-timeout", type=float, default=10.0, help="seconds per graded math response")
    add_generation_flags(f)


def stage1_config_from_args(args: argparse.Namespace):
    from megatron_pacore.data.curriculum_filter import Stage1FilterConfig, parse_fraction

    if args.domain is None:
        raise ValueError("filter --stage 1 needs --domain math or --domain code")
    return Stage1FilterConfig(
        input=args.input, out=args.out, domain=args.domain, min_accuracy=parse_fraction(args.min_accuracy),
        max_accuracy=None if args.max_accuracy is None else parse_fraction(args.max_accuracy),
        accuracy_filter=not args.no_accuracy_filter, dedup=not args.no_dedup, near_duplicate_jaccard=args.near_duplicate_jaccard or None,
        shingle_size=args.shingle_size, num_perm=args.num_perm, decontaminate=list(args.decontaminate),
        contamination_ngram=args.ngram, grade_workers=args.grade_workers, grade_timeout_s=args.grade_timeout,
    )


def stage2_config_from_args(args: argparse.Namespace):
    from megatron_pacore.config_cli import parse_key_values
    from megatron_pacore.data.synthesis_filter import Stage2FilterConfig

    if not args.checkpoint:
        raise ValueError("filter --stage 2 needs --checkpoint (the stage-1 checkpoint directory or server URL)")
    return Stage2FilterConfig(
        input=args.input, out=args.out, checkpoint=args.checkpoint, samples=args.samples,
        min_messages=args.min_messages, max_messages=args.max_messages, message_seed=args.message_seed,
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        concurrency=args.concurrency, max_retries=args.max_retries, limit=args.limit,
        vllm_args=parse_key_values(args.vllm_arg), served_model_name=args.served_model_name, stream=args.stream,
        grade_workers=args.grade_workers, grade_timeout_s=args.grade_timeout, save_responses=args.save_responses,
    )


def check_stage_options(args: argparse.Namespace) -> None:
    """Options of the other stage are a mistake, not something to ignore silently."""
    stage1 = {"--domain": args.domain is not None, "--max-accuracy": args.max_accuracy is not None,
              "--min-accuracy": args.min_accuracy != "0", "--no-dedup": args.no_dedup,
              "--no-accuracy-filter": args.no_accuracy_filter, "--decontaminate": bool(args.decontaminate)}
    stage2 = {"--checkpoint": args.checkpoint is not None, "--save-responses": args.save_responses}
    wrong = [k for k, given in (stage2 if args.stage == 1 else stage1).items() if given]
    if wrong:
        other = 2 if args.stage == 1 else 1
        raise ValueError(f"{', '.join(wrong)}: option(s) of filter --stage {other}, not of --stage {args.stage}")


def run_filter(args: argparse.Namespace) -> int:
    import json

    check_stage_options(args)
    if args.stage == 1:
        from megatron_pacore.data.curriculum_filter import run_stage1

        print(json.dumps(run_stage1(stage1_config_from_args(args))))
        return 0
    from megatron_pacore.data.synthesis_filter import run_stage2

    summary = asyncio.run(run_stage2(stage2_config_from_args(args)))
    print(json.dumps(summary))
    return 0 if summary["complete"] else 1


def run_stats(args: argparse.Namespace) -> int:
    from megatron_pacore.data.curriculum_stats import compute_stats, format_stats, write_stats
    from megatron_pacore.data.train_records import read_train_records

    stats = compute_stats(read_train_records(args.input), bins=args.bins, source_field=args.source_field)
    print(format_stats(stats))
    if args.out:
        for path in write_stats(stats, args.out, title=f"message accuracy: {args.input}"):
            print(f"wrote {path}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from megatron_pacore.data.released import write_released
    from megatron_pacore.data.train_records import read_train_records, write_train_records

    records = read_train_records(args.input)
    if args.command == "export":
        n = write_released(args.output, records, keep_ours=args.keep_ours)
    else:
        write_train_records(args.output, records)
        n = len(records)
    print(f"{args.command}: {n} rows {args.input} -> {args.output}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from megatron_pacore.inference.base import GenerationError

    try:
        if args.command == "pool":
            from megatron_pacore.data.pool_job import run_pool_job

            stats = asyncio.run(run_pool_job(pool_config_from_args(args)))
            return 0 if stats.failed_problems == 0 else 1
        if args.command == "filter":
            return run_filter(args)
        if args.command == "stats":
            return run_stats(args)
        if args.command in ("export", "import"):
            return run_convert(args)
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
