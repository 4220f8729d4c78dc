"""Packed vs padded micro-batches: one actor training step over the same mixed-length batch.

    python benchmarks/train_step.py [--sequences 48] [--reps 3]      # last line: packing_speedup=X

Both sides run the real Megatron-Core step (`training.update.train_step`: forward, backward,
Adam) of the same random model on the same sequences (prompt + response lengths drawn like
real responses: a log-normal with a long tail, clipped), the same loss (token-mean response
log-prob). Padded: micro-batches of `--batch` sequences in arrival order, each padded to its
longest. Packed: `data.balancing.plan_micro_batches` + `data.packing.pack` with a token budget
(--pack-tokens: on CPU the local attention applies a dense [T, T] block-diagonal mask, so
its cost grows with T^2; on GPU THD attention has no such term), sequences laid end to end
with per-sequence positions. The sides alternate for `--reps` rounds; the
figure is the ratio of their median times. Target: packing_speedup >= 1.5.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def lengths(n: int, seed: int) -> list[tuple[int, int]]:
    """(prompt, response) lengths: prompts 40..200 tokens, responses log-normal (median ~120,
    long tail), clipped to 16..1024."""
    rng = np.random.default_rng(seed)
    prompts = rng.integers(40, 200, size=n)
    responses = np.clip(rng.lognormal(mean=np.log(120), sigma=0.9, size=n), 16, 1024).astype(int)
    return [(int(p), int(r)) for p, r in zip(prompts, responses)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8, help="sequences per padded micro-batch")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pack-tokens", type=int, default=2048,
                    help="token budget of a packed micro-batch (CPU attention with a dense block mask is O(T^2))")
    args = ap.parse_args()

    from transformers import Qwen3Config

    from megatron_pacore.data.balancing import plan_micro_batches
    from megatron_pacore.data.packing import TokenSequence, pack
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import label_logprobs
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.optimizer import OptimizerOptions, make_trainable
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel
    from megatron_pacore.training.update import train_step

    torch.manual_seed(0)
    hf = Qwen3Config(vocab_size=2048, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                     num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                     max_position_embeddings=4096, tie_word_embeddings=True)
    groups = initialize_parallel(ParallelConfig(tp=1, device="cpu"))
    actor, _info = build_actor(hf, groups, ModelOptions(precision="fp32"))
    trainable = make_trainable(actor, groups, OptimizerOptions(lr=1e-6, clip_grad=1.0), total_iters=1000)
    V = hf.vocab_size

    def loss_fn(logits, inputs):
        lp, _ = label_logprobs(logits, inputs.labels, V, 1.0, groups.tp_group)
        mask = inputs["response_mask"]
        return -(lp * mask).sum(), mask.sum(), {}

    g = torch.Generator().manual_seed(1)
    seqs = [TokenSequence.from_prompt_response(torch.randint(0, V, (p,), generator=g).tolist(),
                                               torch.randint(0, V, (r,), generator=g).tolist())
            for p, r in lengths(args.sequences, seed=2)]

    # Padded side: micro-batches of --batch sequences, right-padded to the longest, with the
    # padding masked out of attention's keys (causal + key padding) and of the loss.
    padded_batches, padded_tensors, budget = [], [], 0
    for start in range(0, len(seqs), args.batch):
        group = seqs[start: start + args.batch]
        s = max(len(x) for x in group)
        budget = max(budget, s * len(group))
        ids = torch.zeros(len(group), s, dtype=torch.long)
        mask = torch.zeros(len(group), s)
        keep = torch.zeros(len(group), s, dtype=torch.bool)
        for j, x in enumerate(group):
            ids[j, : len(x)] = x.input_ids
            mask[j, : len(x)] = x.response_mask.float()
            keep[j, : len(x)] = True
        causal = torch.ones(s, s, dtype=torch.bool).tril()
        attn = ~(causal[None] & keep[:, None, :])  # True = masked
        padded_batches.append(MicroBatch(input_ids=ids, attention_mask=attn[:, None]))
        padded_tensors.append({"response_mask": mask})

    plan = plan_micro_batches([len(x) for x in seqs], dp_size=1, max_tokens=max(args.pack_tokens, max(len(x) for x in seqs)))
    packed = [pack(seqs, mb) for mb in plan.micro_batches[0]]
    packed_batches = [MicroBatch(input_ids=p.input_ids, position_ids=p.position_ids, attention_mask=p.attention_mask())
                      for p in packed]
    packed_tensors = [{"response_mask": p.response_mask.float()} for p in packed]

    real = sum(len(x) for x in seqs)
    padded_tokens = sum(b.input_ids.numel() for b in padded_batches)
    packed_tokens = sum(b.input_ids.numel() for b in packed_batches)
    print(f"sequences={len(seqs)} real_tokens={real} padded_tokens={padded_tokens} ({len(padded_batches)} micro-batches) "
          f"packed_tokens={packed_tokens} ({len(packed_batches)} micro-batches, budget {args.pack_tokens})")

    def timed(batches, tensors) -> float:
        t = time.perf_counter()
        train_step(trainable, batches, loss_fn, tensors)
        return time.perf_counter() - t

    timed(packed_batches[:1], packed_tensors[:1])  # warm-up
    times = {"padded": [], "packed": []}
    for rep in range(args.reps):
        times["padded"].append(timed(padded_batches, padded_tensors))
        times["packed"].append(timed(packed_batches, packed_tensors))
        print(f"rep {rep}: padded {times['padded'][-1]:.2f}s packed {times['packed'][-1]:.2f}s", flush=True)
    pad, pk = statistics.median(times["padded"]), statistics.median(times["packed"])
    print(f"padded_s={pad:.3f} packed_s={pk:.3f} tokens_per_s_padded={real / pad:.0f} tokens_per_s_packed={real / pk:.0f}")
    print(f"packing_speedup={pad / pk:.2f}")


if __name__ == "__main__":
    main()
