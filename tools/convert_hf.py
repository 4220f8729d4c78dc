#!/usr/bin/env python
"""Convert Hugging Face checkpoints to Megatron distributed checkpoints and back.

    python tools/convert_hf.py --hf DIR --out DIR [--tp N] [--pp M] [--dtype bf16]
    python tools/convert_hf.py --to-hf --megatron DIR --out DIR [--dtype bf16]
    torchrun --nproc_per_node T*P tools/convert_hf.py --hf DIR --out DIR --tp T --pp P --verify

HF -> Megatron streams tensor by tensor (peak memory: the largest single piece, at most three
Hugging Face tensors of one layer plus their transformed copy, or the padded embedding), and
writes dist_checkpointing's torch_dist format: the result loads at any TP/PP that divides the
model and the padded vocabulary (a multiple of 128 x --tp). Under torchrun the pieces are
split over the ranks. --verify then builds the Megatron model at --tp/--pp from the new
checkpoint and compares its logits with `transformers` on random tokens; the last line printed
is `max_logit_diff=X`.

Megatron -> HF streams one layer at a time into safetensors shards (peak: about two layers),
with the config and tokenizer files stored in the checkpoint's hf/ folder. Checkpoints saved by
training (any TP/PP) export the same way.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZE_UNITS = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def parse_size(text: str) -> int:
    for unit, mult in SIZE_UNITS.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * mult)
    return int(text)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hf", help="Hugging Face checkpoint directory (HF -> Megatron)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size (vocabulary padding, --verify)")
    p.add_argument("--pp", type=int, default=1, help="pipeline parallel size (checked, --verify)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="convert tensors to this dtype")
    p.add_argument("--verify", action="store_true", help="compare logits with transformers after converting")
    p.add_argument("--to-hf", action="store_true", help="export a Megatron checkpoint to Hugging Face")
    p.add_argument("--megatron", help="Megatron checkpoint directory (with --to-hf)")
    p.add_argument("--shard-size", default="4GB", help="max safetensors shard size on export (e.g. 2GB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.to_hf:
        if not args.megatron:
            p.error("--to-hf needs --megatron DIR")
        if args.verify:
            p.error("--verify applies to HF -> Megatron")
    elif not args.hf:
        p.error("give --hf DIR (HF -> Megatron) or --to-hf --megatron DIR")
    return args


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def to_megatron(args) -> None:
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from megatron_pacore.checkpoint.convert import hf_to_megatron

    rank, world = _dist_env()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.verify and world != args.tp * args.pp and not (world == 1 and args.tp * args.pp == 1):
        raise ValueError(f"--verify at tp*pp={args.tp * args.pp} needs "
                         f"`torchrun --nproc_per_node {args.tp * args.pp}` (WORLD_SIZE is {world})")
    if world > 1 or args.verify:
        from megatron_pacore.training.parallel import ParallelConfig, init_process_group, initialize_parallel

        config = ParallelConfig(tp=args.tp, pp=args.pp, device=device)
        # Both select this rank's GPU (torch.cuda.set_device(LOCAL_RANK)) before NCCL starts.
        if args.verify:
            groups = initialize_parallel(config)
        else:
            init_process_group(config)
            groups = None
    bar = tqdm(desc=f"hf->megatron rank {rank}", unit="tensor", disable=args.no_progress or rank != 0)
    hf_to_megatron(args.hf, args.out, tp=args.tp, pp=args.pp, dtype=args.dtype, rank=rank, world=world,
                   progress=lambda piece: bar.update())
    bar.close()
    if dist.is_initialized():
        dist.barrier()
    if args.verify:
        from megatron_pacore.checkpoint.verify import verify_checkpoint

        diff = verify_checkpoint(args.out, args.hf, groups)
        if rank == 0:
            print(f"max_logit_diff={diff:.3e}", flush=True)
    elif rank == 0:
        print(f"wrote {args.out}", flush=True)


def to_hf(args) -> None:
    from tqdm import tqdm

    from megatron_pacore.checkpoint.convert import megatron_to_hf

    rank, _ = _dist_env()
    if rank != 0:
        return
    bar = tqdm(desc="megatron->hf", unit="step", disable=args.no_progress)
    megatron_to_hf(args.megatron, args.out, shard_bytes=parse_size(args.shard_size), dtype=args.dtype,
                   progress=lambda what: bar.update())
    bar.close()
    print(f"wrote {args.out}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        to_hf(args) if args.to_hf else to_megatron(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        from megatron_pacore.training.parallel import destroy_parallel

        destroy_parallel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
