#!/usr/bin/env python
"""Write a tiny Hugging Face checkpoint and tokenizer, offline and deterministically.

    python tools/make_tiny_model.py --out /tmp/tiny [--arch qwen3|qwen2|llama] [--seed 0]

A thin CLI over `megatron_pacore.testing.tiny.make_tiny_model` (what the architectures are and
how every tensor is drawn is documented there). The same seed gives the same bytes on every run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_pacore.testing.tiny import ARCHS, make_tiny_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--arch", default="qwen3", choices=ARCHS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = make_tiny_model(args.out, args.arch, args.seed)
    print(json.dumps({"out": str(path), "arch": args.arch, "seed": args.seed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
