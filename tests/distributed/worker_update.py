"""Worker (2 gloo ranks): one optimizer step through `training.update.train_step`.

The same batch of sequences (unequal lengths, response masks covering different numbers of
tokens) is trained under two layouts: TP=2 (and PP=2, 1F1B) with everything on one data-parallel rank in
four micro-batches, and TP=1/DP=2 with the sequences split unevenly over the two ranks. The
loss is the token mean of -logprob over response tokens of the WHOLE batch, so the global
gradient norm Megatron reports must be the same in both layouts and equal the norm that
plain autograd on the `transformers` model gives; and a few steps must lower the loss.
Rank 0 writes the figures to --result.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist


def sequences(vocab: int):
    g = torch.Generator().manual_seed(0)
    lengths = [40, 17, 29, 8]
    starts = [5, 3, 20, 2]  # response starts here; earlier tokens are the prompt
    seqs = []
    for n, s in zip(lengths, starts):
        ids = torch.randint(0, vocab, (1, n), generator=g)
        mask = torch.zeros(1, n)
        mask[:, s:] = 1
        seqs.append((ids, mask))
    return seqs


def reference_grad_norm(hf_dir: str, seqs) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.train()
    for m in model.modules():  # no dropout in the tiny config, but be explicit
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    total = sum(float(m.sum()) for _, m in seqs)
    loss = 0.0
    for ids, mask in seqs:
        logp = torch.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
        lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        loss = loss - (lp * mask[:, 1:]).sum() / total
    loss.backward()
    # Megatron's norm counts a tied embedding once, as here.
    return float(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters() if p.grad is not None)))


def run_layout(hf_dir, tp, seqs, rank_batches, steps, pp=1):
    from megatron_pacore.checkpoint.hf_io import load_hf_config
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import label_logprobs
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.optimizer import OptimizerOptions, make_trainable
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel
    from megatron_pacore.training.update import train_step

    groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
    cfg = load_hf_config(hf_dir)
    model, info = build_actor(cfg, groups, ModelOptions(precision="fp32"))
    load_hf_weights(model, info, hf_dir, tp, groups.tp_rank)
    trainable = make_trainable(model, groups, OptimizerOptions(lr=1e-3, clip_grad=0.0), total_iters=steps)
    V = cfg.vocab_size

    def loss_fn(logits, inputs):
        lp, _ = label_logprobs(logits, inputs.labels, V, 1.0, groups.tp_group)
        mask = inputs["response_mask"]
        return -(lp * mask).sum(), mask.sum(), {"actor/logprob": (lp * mask).sum() / mask.sum().clamp(min=1)}

    mine = rank_batches[groups.dp_rank]
    batches = [MicroBatch(seqs[i][0]) for i in mine]
    tensors = [{"response_mask": seqs[i][1]} for i in mine]
    out = [train_step(trainable, batches, loss_fn, tensors) for _ in range(steps)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True)
    ap.add_argument("--result", required=True)
    args = ap.parse_args()
    from megatron_pacore.checkpoint.hf_io import load_hf_config

    seqs = sequences(load_hf_config(args.hf).vocab_size)
    res = {}
    tp2 = run_layout(args.hf, 2, seqs, [[0, 1, 2, 3]], steps=4)
    dp2 = run_layout(args.hf, 1, seqs, [[0], [1, 2, 3]], steps=1)
    pp2 = run_layout(args.hf, 1, seqs, [[0, 1, 2, 3]], steps=1, pp=2)
    res["pp2_grad_norm"] = pp2[0]["grad_norm"]
    res["tp2_grad_norms"] = [m["grad_norm"] for m in tp2]
    res["tp2_logprob"] = [m.get("actor/logprob") for m in tp2]
    res["dp2_grad_norm"] = dp2[0]["grad_norm"]
    if dist.get_rank() == 0:
        res["reference_grad_norm"] = reference_grad_norm(args.hf, seqs)
        with open(args.result, "w") as f:
            json.dump(res, f)


if __name__ == "__main__":
    main()
