"""Worker (2 GPUs): TP=2 with sequence parallelism, then CP=2, both bf16 with the TE spec,
against `transformers` fp32 log-probs. Rank 0 writes the measurements to --result."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist


def reference_logprobs(hf_dir, ids):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        logp = torch.log_softmax(ref(ids.cuda()).logits[:, :-1], dim=-1)
    lp = logp.gather(-1, ids[:, 1:, None].cuda()).squeeze(-1)
    return torch.cat([lp.new_zeros(lp.shape[0], 1), lp], dim=1)


def build(hf, groups, opts, critic=False):
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.critic import build_critic
    from megatron_pacore.training.models import build_actor

    model, info = (build_critic if critic else build_actor)(hf.config, groups, opts)
    load_hf_weights(model, info, hf, groups.config.tp, groups.tp_rank)
    return model.cuda()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_logprobs, compute_values, token_values
    from megatron_pacore.training.models import ModelOptions
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel

    hf = HFCheckpoint(args.model)
    ids = torch.randint(0, hf.config.vocab_size, (2, 128), generator=torch.Generator().manual_seed(0))
    res = {}

    # Sets this rank's device (LOCAL_RANK) first: every `.cuda()` below lands on it, so the
    # reference and the Megatron results live on the same GPU.
    groups = initialize_parallel(ParallelConfig(tp=2, device="cuda"))
    ref = reference_logprobs(args.model, ids)
    opts = ModelOptions(precision="bf16", sequence_parallel=True)
    actor = build(hf, groups, opts).eval()
    (lp, _), = compute_logprobs(actor, groups, [MicroBatch(ids)], hf.config.vocab_size)
    res["sp/logprob_mean_diff"] = (lp - ref).abs().mean().item()
    critic = build(hf, groups, opts, critic=True)
    (values,) = compute_values(critic.eval(), groups, [MicroBatch(ids)])
    res["sp/values_shape_ok"] = tuple(values.shape) == tuple(ids.shape)
    critic.train()
    pos = torch.arange(ids.shape[1]).expand_as(ids).cuda()
    token_values(critic(ids.cuda(), pos, None)).pow(2).mean().backward()
    # Sequence parallel: each rank holds half the tokens' head gradient; Megatron all-reduces
    # params marked sequence_parallel in finalize_model_grads. Emulate that and compare ranks.
    g = critic.value_head.weight.grad.clone()
    dist.all_reduce(g, group=groups.tp_group)
    parts = [torch.empty_like(g) for _ in range(2)]
    dist.all_gather(parts, g, group=groups.tp_group)
    res["sp/head_grad_allreduced_equal"] = bool(torch.equal(parts[0], parts[1]) and g.abs().sum() > 0)

    groups = initialize_parallel(ParallelConfig(cp=2, device="cuda"))
    actor = build(hf, groups, ModelOptions(precision="bf16")).eval()
    (lp, _), = compute_logprobs(actor, groups, [MicroBatch(ids)], hf.config.vocab_size)
    res["cp/logprob_mean_diff"] = (lp - ref).abs().mean().item()
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
