"""The `pacore` command.

    pacore infer --model DIR_OR_URL --input IN.jsonl --output OUT.jsonl --level low
    pacore eval  --model DIR_OR_URL --benchmark FILE --levels low,medium --report DIR
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from typing import Optional, Sequence

from megatron_pacore.config import InferConfig
from megatron_pacore.inference.base import GenerationError
from megatron_pacore.pacore.ordering import ORDERS
from megatron_pacore.pacore.schedule import LEVELS

log = logging.getLogger("pacore")


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (in-process vLLM) or http(s):// server URL")
    p.add_argument("--input", required=True, help="JSONL: {id, messages} or {id, problem} rows")
    p.add_argument("--output", required=True, help="JSONL: one row per problem, written as it finishes")
    level = p.add_mutually_exclusive_group(required=True)
    level.add_argument("--level", choices=sorted(LEVELS), help="compute level: low=[4,1] medium=[16,1] high=[32,4,1]")
    level.add_argument("--widths", help="exploratory round widths, e.g. 32,4 (the final width 1 is appended)")
    add_generation_arguments(p, "requests in flight (each samples a whole round)")
    p.add_argument("--resume", action="store_true", help="skip ids already in --output")
    p.add_argument("--stream", action="store_true", help="stream server responses")
    p.add_argument("--allow-failed", action="store_true", help="exit 0 even when some problems failed")


def add_generation_arguments(p: argparse.ArgumentParser, concurrency_help: str) -> None:
    """The sampling, retry and engine options that `pacore infer` and `pacore eval` share."""
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per trajectory (default: up to the context)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=64, help=concurrency_help)
    p.add_argument("--max-retries", type=int, default=3, help="extra attempts for a failed sample")
    p.add_argument("--reference-order", choices=ORDERS, default="released")
    p.add_argument("--max-message-tokens", type=int, default=None, help="bound each message (keeps the tail)")
    p.add_argument("--limit", type=int, default=None, help="only the first N problems")
    p.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="in-process engine option, repeatable (tensor_parallel_size=2, max_model_len=131072, "
                        "hf_overrides='{\"rope_scaling\": ...}', gpu_memory_utilization=0.9, ...)")
    p.add_argument("--served-model-name", default=None, help="server model name (default: from /v1/models)")


def infer_config_from_args(args: argparse.Namespace) -> InferConfig:
    from megatron_pacore.inference.vllm_engine import parse_engine_args

    return InferConfig(
        model=args.model, input=args.input, output=args.output, level=args.level, widths=args.widths,
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        concurrency=args.concurrency, max_retries=args.max_retries, resume=args.resume,
        reference_order=args.reference_order, max_message_tokens=args.max_message_tokens, limit=args.limit,
        vllm_args=parse_engine_args(args.vllm_arg), served_model_name=args.served_model_name, stream=args.stream,
        allow_failed=args.allow_failed,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="pacore", description="PaCoRe: parallel coordinated reasoning")
    sub = parser.add_subparsers(dest="command", required=True)
    add_infer_arguments(sub.add_parser("infer", help="multi-round PaCoRe inference over a file of problems"))
    has_eval = importlib.util.find_spec("megatron_pacore.eval.command") is not None
    if has_eval:
        from megatron_pacore.eval import command as eval_command

        eval_command.add_arguments(sub.add_parser("eval", help="PaCoRe vs self-consistency on a benchmark"))
    args = parser.parse_args(argv)
    try:
        if args.command == "infer":
            from megatron_pacore.infer import run_infer

            return asyncio.run(run_infer(infer_config_from_args(args)))
        return eval_command.run(args)
    except ValueError as e:  # bad input or config: what to change
        print(f"pacore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except GenerationError as e:  # the engine or server cannot serve (unreachable, refused)
        print(f"pacore {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pacore {args.command}: interrupted; finished results are kept (rerun with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
