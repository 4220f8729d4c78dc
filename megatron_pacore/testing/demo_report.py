"""The CPU demo's closing table: the initial and the trained policy on held-out toy problems.

    python -m megatron_pacore.testing.demo_report --run outputs/tiny_cpu --cache-dir .cache/tiny_demo

The trained actor (the newest trainer checkpoint under <run>/checkpoints) is exported to
Hugging Face with the converter, then both policies go through `pacore eval` (level low =
widths [4, 1], `--runs` runs, temperature 1.0) on the held-out problems. The table gives, per
policy: message accuracy (round-1 messages), single-sample accuracy, majority vote over the
4 messages and PaCoRe (synthesis over them), as in the paper's comparison. Written to
<run>/demo_table.md and printed.
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


def evaluate(model: str, benchmark: str, report: Path, runs: int, max_tokens: int) -> dict:
    """`pacore eval` (level low) of one policy; returns its metrics.json."""
    from megatron_pacore.config import GenerationOptions
    from megatron_pacore.eval.command import run_eval
    from megatron_pacore.eval.config import EvalConfig
    from megatron_pacore.types import SamplingSettings

    cfg = EvalConfig(report=str(report), benchmark=benchmark, levels=["low"], runs=runs,
                     methods=["pacore", "single", "majority"],
                     generation=GenerationOptions(model=model, sampling=SamplingSettings(max_tokens=max_tokens),
                                                  vllm_args={"max_model_len": 1024, "dtype": "float32"}))
    asyncio.run(run_eval(cfg, progress=False))
    return json.loads((report / "metrics.json").read_text())


def row(metrics: dict) -> list[float]:
    by_method = {m["method"]: m["accuracy"] for m in metrics["methods"]}
    msg = metrics["message_accuracy"]["low"][0]
    return [msg] + [by_method[name] for _, name in COLUMNS[1:]]


def table(rows: dict[str, list[float]], problems: int, runs: int) -> str:
    lines = [f"Held-out toy problems: {problems}, {runs} runs, level low (4 messages, then synthesis)", "",
             "| policy | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="the training run directory (logging.dir)")
    ap.add_argument("--cache-dir", default=".cache/tiny_demo")
    ap.add_argument("--runs", type=int, default=8)
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
    results = {}
    for name, model in (("initial (warm start)", str(paths.policy)), (f"trained ({ckpt.name})", str(trained))):
        report = run / "eval" / ("initial" if name.startswith("initial") else "trained")
        if report.exists():
            import shutil

            shutil.rmtree(report)  # a fresh evaluation, not a resume of another model's samples
        results[name] = evaluate(model, str(paths.heldout_problems), report, args.runs, args.max_tokens)
    problems = next(iter(results.values()))["problems"]
    text = table({k: row(v) for k, v in results.items()}, problems, args.runs)
    (run / "demo_table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
