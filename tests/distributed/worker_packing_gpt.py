"""Worker (1 gloo rank): Megatron-Core's GPTModel on packed sequences equals it on each sequence.

Four sequences of a tiny qwen3 are run one at a time ([1, n], causal) and packed into two
micro-batches (end to end, positions restarting at 0, block-diagonal causal mask, padded to a
multiple of 8). Measured: the largest difference of token log-probs (every position but each
sequence's first), of the PPO policy loss normalised by the global token count, and of every
parameter gradient; and, as a control, the log-prob difference when the packed row gets a
plain causal mask instead (must be large). Rank 0 writes the measurements to --result.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()

    from megatron_pacore.algorithms.losses import policy_loss
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.data.packing import TokenSequence, pack, unpack
    from megatron_pacore.training.logprobs import token_logprobs
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    hf = HFCheckpoint(args.model)
    V = hf.config.vocab_size
    groups = initialize_parallel(ParallelConfig(tp=1, pp=1, device="cpu"))
    model, info = build_actor(hf.config, groups, ModelOptions(precision="fp32"))
    load_hf_weights(model, info, hf, 1, 0)
    model.eval()  # no dropout: the two layouts must see the same function

    g = torch.Generator().manual_seed(5)
    seqs = []
    for n in (9, 4, 14, 6):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[3:] = True
        seqs.append(TokenSequence(input_ids=torch.randint(0, V, (n,), generator=g), response_mask=mask,
                                  old_logprobs=-torch.rand(n, generator=g) * 3, advantages=torch.randn(n, generator=g)))
    num_tokens = sum(int(s.response_mask.sum()) for s in seqs)

    def lp_of(ids, positions, mask):
        return token_logprobs(model(ids, positions, mask), ids, V)[0]

    # One sequence at a time.
    model.zero_grad()
    loss_single, lp_single = 0.0, []
    for s in seqs:
        ids = s.input_ids.unsqueeze(0)
        lp = lp_of(ids, torch.arange(len(s)).unsqueeze(0), None)
        lp_single.append(lp[0].detach())
        loss, _ = policy_loss(lp, s.old_logprobs.unsqueeze(0), s.advantages.unsqueeze(0),
                              s.response_mask.unsqueeze(0), num_tokens)
        loss.backward()
        loss_single += loss.item()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}

    # Packed.
    model.zero_grad()
    loss_packed, lp_diff = 0.0, 0.0
    for idx in ([2, 0], [3, 1]):
        mb = pack(seqs, idx, pad_to_multiple=8)
        lp = lp_of(mb.input_ids, mb.position_ids, mb.attention_mask())
        for i, part in zip(mb.indices, unpack(lp.detach(), mb)):
            lp_diff = max(lp_diff, (part[1:] - lp_single[i][1:]).abs().max().item())
        loss, _ = policy_loss(lp, mb.old_logprobs, mb.advantages, mb.response_mask, num_tokens)
        loss.backward()
        loss_packed += loss.item()
    grad_diff = max((p.grad - grads[k]).abs().max().item() for k, p in model.named_parameters())
    grad_scale = max(g.abs().max().item() for g in grads.values())

    # Control: the packed row with a plain causal mask leaks across sequences.
    mb = pack(seqs, [2, 0])
    with torch.no_grad():
        leaky = lp_of(mb.input_ids, mb.position_ids, None)
    control = (unpack(leaky, mb)[1][1:] - lp_single[0][1:]).abs().max().item()

    Path(args.result).write_text(json.dumps({
        "logprob_max_diff": lp_diff, "loss_single": loss_single, "loss_packed": loss_packed,
        "grad_max_diff": grad_diff, "grad_scale": grad_scale, "control_diff": control,
    }))
    destroy_parallel()


if __name__ == "__main__":
    main()
