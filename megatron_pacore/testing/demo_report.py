"""The CPU demo's closing table: the initial and the trained policy on held-out toy problems.

    python -m megatron_pacore.testing.demo_report --run outputs/tiny_cpu --cache-dir .cache/tiny_demo

The trained actor (the newest trainer checkpoint under <run>/checkpoints) is exported to
Hugging Face with the converter, then both policies go through `pacore eval` (level low =
widths [4, 1], temperature 1.0) on the held-out problems (`--runs` runs) and on the first
`--train-problems` training problems (`--train-runs` runs). Each table gives, per policy:
message accuracy (round-1 messages), single-sample accuracy, majority vote over the 4
messages and PaCoRe (synthesis over them), as in the paper's comparison. The second table
separates what PPO taught on the problems it trained on from what transfers to problems it
never saw. Written to <run>/demo_table.md and printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Optional

COLUMNS = (("message accuracy", None), ("single sample", "single"), ("majority vote", "majority"),
           ("PaCoRe", "pacore"))


def evaluate(model: str, benchmark: str, report: Path, runs: int, max_tokens: int,
             limit: Optional[int] = None) -> dict:
    """`pacore eval` (level low) of one policy on the first `limit` problems (None: all);
    returns its metrics.json."""
    from megatron_pacore.config import GenerationOptions
    from megatron_pacore.eval.command import run_eval
    from megatron_pacore.eval.config import EvalConfig
    from megatron_pacore.types import SamplingSettings

    cfg = EvalConfig(report=str(report), benchmark=benchmark, levels=["low"], runs=runs, limit=limit,
                     methods=["pacore", "single", "majority"],
                     generation=GenerationOptions(model=model, sampling=SamplingSettings(max_tokens=max_tokens),
                                                  vllm_args={"max_model_len": 1024, "dtype": "float32"}))
    asyncio.run(run_eval(cfg, progress=False))
    return json.loads((report / "metrics.json").read_text())


def row(metrics: dict) -> list[float]:
    by_method = {m["method"]: m["accuracy"] for m in metrics["methods"]}
    msg = metrics["message_accuracy"]["low"][0]
    return [msg] + [by_method[name] for _, name in COLUMNS[1:]]


def table(rows: dict[str, list[float]], problems: int, runs: int, title: str = "Held-out toy problems") -> str:
    lines = [f"{title}: {problems}, {runs} runs, level low (4 messages, then synthesis)", "",
             "| policy | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def reward_rise(metrics_jsonl: Path, window: int = 5) -> str:
    """One line: mean reward of the first and of the last `window` iterations of the run."""
    rewards = [json.loads(line)["reward/mean"] for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    if len(rewards) < 2 * window:
        return f"reward: {len(rewards)} iterations logged (fewer than {2 * window})"
    first, last = sum(rewards[:window]) / window, sum(rewards[-window:]) / window
    return (f"reward over {len(rewards)} iterations: first {window} {first:.3f}, last {window} {last:.3f} "
            f"({last - first:+.3f})")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the training run directory (logging.dir)")
    ap.add_argument("--cache-dir", default=".cache/tiny_demo")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--train-problems", type=int, default=24,
                    help="also evaluate on the first N training problems (0: skip)")
    ap.add_argument("--train-runs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args(argv)

    from megatron_pacore.checkpoint.convert import megatron_to_hf
    from megatron_pacore.checkpoint.trainer_state import latest_checkpoint
    from megatron_pacore.testing.tiny_demo import demo_paths

    run = Path(args.run)
    paths = demo_paths(args.cache_dir)
    ckpt = latest_checkpoint(run / "checkpoints")
    if ckpt is None:
        print(f"error: no trainer checkpoint under {run / 'checkpoints'}", file=sys.stderr)
        return 2
    trained = run / "trained_hf"
    megatron_to_hf(ckpt / "actor", trained)
    policies = (("initial (warm start)", "initial", str(paths.policy)), (f"trained ({ckpt.name})", "trained", str(trained)))
    splits = [("heldout", "Held-out toy problems", str(paths.heldout_problems), args.runs, None)]
    if args.train_problems:
        splits.append(("train", "Train-split toy problems", str(paths.train_problems), args.train_runs, args.train_problems))
    tables = []
    for split, title, benchmark, runs, limit in splits:
        results = {}
        for name, tag, model in policies:
            report = run / "eval" / f"{tag}_{split}"
            if report.exists():
                import shutil

                shutil.rmtree(report)  # a fresh evaluation, not a resume of another model's samples
            results[name] = evaluate(model, benchmark, report, runs, args.max_tokens, limit)
        problems = next(iter(results.values()))["problems"]
        tables.append(table({k: row(v) for k, v in results.items()}, problems, runs, title))
    text = "\n\n".join([reward_rise(run / "metrics.jsonl")] + tables)
    (run / "demo_table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
