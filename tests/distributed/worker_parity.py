"""Worker (2 gloo ranks): HF -> Megatron logits parity with `transformers` per family and layout.

For every family directory given and every layout (TP=1, TP=2, PP=2) it builds the actor,
loads the Hugging Face weights through the mapping table, runs Megatron's pipeline schedule
forward-only in fp32/eval and compares full-vocabulary logits with `transformers`.
Rank 0 writes {"<family>/<layout>": {"max": max_abs_diff, "ranks": ranks_with_logits}, ...}
to --result (`rank_outputs.gather_max`: a rank without logits reports None, not a number).
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist
from rank_outputs import gather_max

LAYOUTS = {"tp1": (1, 1), "tp2": (2, 1), "pp2": (1, 2)}


def megatron_logits(hf_dir: str, tp: int, pp: int, batches) -> list[torch.Tensor]:
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.forward import forward_only, gather_vocab
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
    hf = HFCheckpoint(hf_dir)
    model, info = build_actor(hf.config, groups, ModelOptions(precision="fp32"))
    load_hf_weights(model, info, hf, tp, groups.tp_rank)
    model.eval()
    vocab = hf.config.vocab_size
    out = forward_only(model, groups, batches, lambda logits, mb: gather_vocab(logits, groups, vocab))
    return out if groups.is_last_stage else []


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--models", required=True, help="JSON {family: hf_dir}")
    args = p.parse_args()
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.checkpoint.verify import hf_logits

    models = json.loads(args.models)
    gen = torch.Generator().manual_seed(0)
    results: dict[str, float] = {}
    for family, hf_dir in models.items():
        vocab = json.load(open(f"{hf_dir}/config.json"))["vocab_size"]
        # Two micro-batches of 2 x 48 tokens: exercises the 1F1B schedule's p2p at PP=2.
        ids = torch.randint(0, vocab, (4, 48), generator=gen)
        ref = hf_logits(hf_dir, ids)
        batches = [MicroBatch(ids[:2]), MicroBatch(ids[2:])]
        for layout, (tp, pp) in LAYOUTS.items():
            outs = megatron_logits(hf_dir, tp, pp, batches)
            diff = torch.cat(outs).sub(ref).abs().max().item() if outs else None
            results[f"{family}/{layout}"] = gather_max(diff)
    if dist.get_rank() == 0:
        with open(args.result, "w") as f:
            json.dump(results, f)
    from megatron_pacore.training.parallel import destroy_parallel

    destroy_parallel()


if __name__ == "__main__":
    main()
