"""The `pacore` command.

    pacore infer --model DIR_OR_URL --input IN.jsonl --output OUT.jsonl --level low
    pacore eval  --model DIR_OR_URL --benchmark FILE --levels low,medium --report DIR
    pacore infer --config examples/configs/infer.yaml generation.sampling.seed=0

The flags are derived from the configs (config.InferConfig, eval.config.EvalConfig; see
config_cli.py). Start-up stays light: a subcommand's job modules (and through them the
engine, the HTTP client, the grader, matplotlib) are imported only once it runs.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from megatron_pacore.config import InferConfig
from megatron_pacore.config_cli import add_config_arguments, config_from_args
from megatron_pacore.eval.config import EvalConfig
from megatron_pacore.inference.base import GenerationError

log = logging.getLogger("pacore")


class _InfoToDebug(logging.Filter):
    """Logs a logger's INFO records at DEBUG: shown only when DEBUG is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(record.levelno)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacore", description="PaCoRe: parallel coordinated reasoning")
    sub = parser.add_subparsers(dest="command", required=True)
    add_config_arguments(sub.add_parser("infer", help="multi-round PaCoRe inference over a file of problems"),
                         InferConfig)
    add_config_arguments(sub.add_parser("eval", help="PaCoRe vs self-consistency on a benchmark"), EvalConfig)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP client logs every request at INFO (interleaved with the progress bar): DEBUG.
    for name in ("httpx", "httpx2"):
        http_log = logging.getLogger(name)
        if not any(isinstance(f, _InfoToDebug) for f in http_log.filters):
            http_log.addFilter(_InfoToDebug())
    args = build_parser().parse_args(argv)
    try:
        if args.command == "infer":
            import asyncio

            from megatron_pacore.infer import run_infer

            return asyncio.run(run_infer(config_from_args(InferConfig, args)))
        from megatron_pacore.eval.command import run

        return run(config_from_args(EvalConfig, args))
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
