#!/usr/bin/env python
"""Build the curriculum data of PaCoRe training.

    build_curriculum.py pool  --model DIR_OR_URL --problems FILE --num-messages 24 --out DIR
                              [--shard i/N] [--max-tokens N] [--temperature T] [--seed S] ...
                              [--config pool.yaml] [KEY=VALUE ...]
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
released); this is its command line. The flags of `pool` and `filter --stage N` are derived
from their configs (PoolJobConfig, Stage1FilterConfig, Stage2FilterConfig) as `pacore`'s are
(megatron_pacore/config_cli.py): each also takes `--config FILE.yaml` and dotted overrides,
and `--help` shows the fields' docs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Optional, Sequence


# Stage 2 also takes its model as --checkpoint (the stage-1 checkpoint).
ALIASES = {"Stage2FilterConfig": {"generation.model": ("--checkpoint",)}}


def cli_options(cls: type) -> dict:
    """`add_config_arguments`'s options for a job config: no flag for the generation options
    the config refuses (its `refused_generation`), and its aliases."""
    refused = getattr(cls, "refused_generation", ())
    return dict(exclude=tuple(f"generation.{name}" for name in refused), aliases=ALIASES.get(cls.__name__))


def stage_config_class(stage: int) -> type:
    if stage == 1:
        from megatron_pacore.data.curriculum_filter import Stage1FilterConfig

        return Stage1FilterConfig
    from megatron_pacore.data.synthesis_filter import Stage2FilterConfig

    return Stage2FilterConfig


def stage_parser(stage: int) -> argparse.ArgumentParser:
    """The flags of `filter --stage N`, derived from its config (config_cli.py)."""
    from megatron_pacore.config_cli import add_config_arguments

    cls = stage_config_class(stage)
    parser = argparse.ArgumentParser(prog=f"build_curriculum.py filter --stage {stage}",
                                     description=(cls.__doc__ or "").split("\n")[0])
    add_config_arguments(parser, cls, **cli_options(cls))
    return parser


def build_parser() -> argparse.ArgumentParser:
    from megatron_pacore.config_cli import add_config_arguments
    from megatron_pacore.data.pool_job import PoolJobConfig

    parser = argparse.ArgumentParser(prog="build_curriculum.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pool = sub.add_parser("pool", help="generate and grade each problem's message pool",
                          description=(PoolJobConfig.__doc__ or "").split("\n")[0])
    add_config_arguments(pool, PoolJobConfig, **cli_options(PoolJobConfig))
    merge = sub.add_parser("merge", help="join the shard files of DIR into DIR/pool.jsonl")
    merge.add_argument("--out", required=True, help="the directory the shards were written to")
    merge.add_argument("--problems", default=None, help="check that every problem of this file is present")
    merge.add_argument("--output", default=None, help="merged file (default: DIR/pool.jsonl)")
    # filter's flags depend on --stage: the rest of its command line is parsed by stage_parser
    f = sub.add_parser("filter", add_help=False,
                       help="curriculum stage 1 (accuracy, dedup, decontamination) or stage 2 (synthesis)")
    f.add_argument("--stage", type=int, choices=(1, 2), default=None)
    f.add_argument("-h", "--help", action="store_true", dest="filter_help")
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


def check_stage_options(stage: int, rest: Sequence[str]) -> None:
    """Options of the other stage are a mistake, not something to ignore silently: a
    ValueError naming them (argparse alone would only call them unrecognized)."""
    from megatron_pacore.config_cli import config_flags

    other = 2 if stage == 1 else 1
    mine = config_flags(stage_parser(stage))
    theirs = config_flags(stage_parser(other)) - mine
    given = {arg.split("=", 1)[0] for arg in rest if arg.startswith("--")}
    wrong = [flag for flag in sorted(given) if flag in theirs]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: option(s) of filter --stage {other}, not of --stage {stage}")


def run_filter(args: argparse.Namespace, rest: Sequence[str]) -> int:
    import json

    from megatron_pacore.config_cli import config_from_args

    if args.stage is None:
        if args.filter_help:
            for stage in (1, 2):
                stage_parser(stage).print_help()
                print()
            return 0
        raise ValueError("filter needs --stage 1 or --stage 2")
    if args.filter_help:
        rest = [*rest, "--help"]
    check_stage_options(args.stage, rest)
    cfg = config_from_args(stage_config_class(args.stage), stage_parser(args.stage).parse_args(rest))
    if args.stage == 1:
        from megatron_pacore.data.curriculum_filter import run_stage1

        print(json.dumps(run_stage1(cfg)))
        return 0
    from megatron_pacore.data.synthesis_filter import run_stage2

    summary = asyncio.run(run_stage2(cfg))
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
    from megatron_pacore.inference.base import GenerationError

    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if rest and args.command != "filter":
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "pool":
            from megatron_pacore.config_cli import config_from_args
            from megatron_pacore.data.pool_job import PoolJobConfig, run_pool_job

            stats = asyncio.run(run_pool_job(config_from_args(PoolJobConfig, args)))
            return 0 if stats.failed_problems == 0 else 1
        if args.command == "filter":
            return run_filter(args, rest)
        if args.command == "stats":
            return run_stats(args)
        if args.command in ("export", "import"):
            return run_convert(args)
        from megatron_pacore.data.pool_job import merge_shards

        merge_shards(args.out, args.problems, args.output)
        return 0
    except SystemExit as e:  # a usage error (exit 2) or --help (exit 0), printed by argparse
        return int(e.code or 0)
    except (ValueError, GenerationError) as e:
        print(f"build_curriculum.py {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print(f"build_curriculum.py {args.command}: interrupted; finished problems are kept (rerun to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
