"""Worker (2 gloo ranks): export buckets of a live model at TP=2 and PP=2 equal the HF checkpoint.

For each family and layout every rank collects all buckets; rank 0 reports whether the names
and tensors equal the original Hugging Face checkpoint bit for bit, the largest bucket, and
whether a bf16 export equals the checkpoint cast to bf16.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist

BUCKET = 300_000  # bytes; the tiny models' embeddings (~0.5-1 MB) exceed it and go alone


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--models", required=True)
    args = p.parse_args()
    from megatron_pacore.checkpoint.export import export_buckets
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    res = {}
    for name, hf_dir in json.loads(args.models).items():
        hf = HFCheckpoint(hf_dir)
        ref = {n: hf.get(n) for n in hf.names()}
        for layout, (tp, pp) in {"tp2": (2, 1), "pp2": (1, 2)}.items():
            groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
            model, info = build_actor(hf.config, groups, ModelOptions(precision="fp32"))
            load_hf_weights(model, info, hf, tp, groups.tp_rank)
            buckets = list(export_buckets(model, info, groups, bucket_bytes=BUCKET))
            got = dict(kv for b in buckets for kv in b)
            same = got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
            oversize = [b for b in buckets if sum(t.numel() * 4 for _, t in b) > BUCKET and len(b) > 1]
            bf16 = dict(kv for b in export_buckets(model, info, groups, dtype=torch.bfloat16) for kv in b)
            same_bf16 = all(bf16[k].dtype == torch.bfloat16 and torch.equal(bf16[k], ref[k].to(torch.bfloat16))
                            for k in ref)
            flags = torch.tensor([same, not oversize, same_bf16, len(buckets) > 1], dtype=torch.int32)
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)  # must hold on every rank
            res[f"{name}/{layout}"] = {"identical": bool(flags[0]), "bounded": bool(flags[1]),
                                       "bf16": bool(flags[2]), "several_buckets": bool(flags[3]),
                                       "order": list(got)[:3]}
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
