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


def vllm_like_layout(tp: int, rank: int, vocab: int):
    """An engine layout with vLLM's rules, its vocabulary padded to a multiple of 8 (vLLM's
    `padding_size`) and split evenly: 504 rows per rank for the tiny 1002, where Megatron
    holds 512 (padded to 128 x TP), so that rows must move between the ranks. Everything
    else the usual split: columns of o_proj / down_proj, rows of the rest, norms whole."""
    def layout(name, shape):
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            per = -(-vocab // 8) * 8 // tp
            return (0, min(rank * per, vocab), min((rank + 1) * per, vocab))
        if name.endswith("norm.weight"):
            return (None, 0, shape[0])
        axis = 1 if name.endswith(("o_proj.weight", "down_proj.weight")) else 0
        n = shape[axis] // tp
        return (axis, rank * n, (rank + 1) * n)
    return layout


def rank_shards(model, info, groups, ref, tp) -> dict:
    """The per-rank export against the checkpoint's slices, on every rank (PP=1), or its
    refusal (PP>1)."""
    from megatron_pacore.checkpoint.export import export_buckets

    export = export_buckets(model, info, groups)
    layout = vllm_like_layout(tp, groups.tp_rank, info.hf_config.vocab_size)
    try:
        got = list(export.rank_shards(layout))
    except ValueError as e:
        return {"rank_shards_error": str(e)}
    ok, moved = True, 0
    for name, s in got:
        axis, start, stop = layout(name, tuple(ref[name].shape))
        want = ref[name] if axis is None else ref[name].narrow(axis, start, stop - start)
        parts = torch.cat(s.parts) if len(s.parts) > 1 else s.parts[0]
        ok &= s.span == (axis, start, stop) and torch.equal(parts, want)
        moved += sum(p.numel() for p in s.parts)
    flags = torch.tensor([ok, sorted(n for n, _ in got) == sorted(ref)], dtype=torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return {"rank_shards_exact": bool(flags[0]), "rank_shards_all_names": bool(flags[1]),
            "embedding_span": dict(got)["model.embed_tokens.weight"].span, "padded_vocab": info.padded_vocab_size,
            "rank_shards_fraction": moved / sum(t.numel() for t in ref.values())}


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
            res[f"{name}/{layout}"].update(rank_shards(model, info, groups, ref, tp))
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
