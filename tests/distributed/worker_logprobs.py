"""Worker (2 gloo ranks): vocab-parallel log-probs/entropy and the critic, against references.

Per family: log-probs and entropies at temperature 0.7 (TP=2, and PP=2 through the pipeline
schedule) against log_softmax(logits / T) of `transformers`; the gradient that flows back into
the vocab-parallel logits against autograd on the full logits; critic values (TP=2, PP=2)
against the head applied to `transformers`' last hidden state, and the gradients of the head
and of the backbone. Rank 0 writes the measurements to --result; those only ranks with output
can make as `rank_outputs.gather_max` ({"max", "ranks"}: a rank without output reports None).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
from rank_outputs import gather_max

T = 0.7


def maxr(x: float) -> float:
    t = torch.tensor(float(x), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def reference(hf_dir, ids):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = ref(ids).logits
        hidden = ref.model(ids).last_hidden_state
    return logits, hidden


def ref_logprobs(logits, ids, temperature):
    logp = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
    lp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    return lp, ent


def actor_checks(name, hf, ids, logits_ref, res):
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_logprobs, token_logprobs
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    V = hf.config.vocab_size
    lp_ref, ent_ref = ref_logprobs(logits_ref, ids, T)
    for layout, (tp, pp) in {"tp2": (2, 1), "pp2": (1, 2)}.items():
        groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
        model, info = build_actor(hf.config, groups, ModelOptions(precision="fp32"))
        load_hf_weights(model, info, hf, tp, groups.tp_rank)
        model.eval()
        outs = compute_logprobs(model, groups, [MicroBatch(ids)], V, temperature=T, with_entropy=True)
        lp_diff = ent_diff = None
        if outs:
            lp, ent = outs[0]
            lp_diff = (lp[:, 1:] - lp_ref).abs().max().item()
            ent_diff = (ent[:, 1:] - ent_ref).abs().max().item()
            assert lp[:, 0].abs().max() == 0
        res[f"{name}/{layout}/logprob_max_diff"] = gather_max(lp_diff)
        res[f"{name}/{layout}/entropy_max_diff"] = gather_max(ent_diff)
        if layout == "tp2":
            # Gradient into the vocab-parallel logits vs autograd on the full logits.
            pos = torch.arange(ids.shape[1]).expand_as(ids)
            with torch.no_grad():
                local = model(ids, pos, None)
            leaf = local.detach().requires_grad_()
            w = torch.linspace(0.5, 1.5, ids.numel()).reshape(ids.shape)
            lp, ent = token_logprobs(leaf, ids, V, T, groups.tp_group, with_entropy=True)
            ((lp * w).sum() + 0.3 * (ent * w).sum()).backward()
            full = logits_ref.clone().requires_grad_()
            lpr, entr = ref_logprobs(full, ids, T)
            ((lpr * w[:, 1:]).sum() + 0.3 * (entr * w[:, 1:]).sum()).backward()
            Vl = leaf.shape[-1]
            start = groups.tp_rank * Vl
            ref_grad = torch.zeros_like(leaf)
            stop = min(start + Vl, V)
            ref_grad[..., : stop - start] = full.grad[..., start:stop]
            res[f"{name}/tp2/grad_max_diff"] = maxr((leaf.grad - ref_grad).abs().max().item())
            res[f"{name}/tp2/grad_scale"] = maxr(ref_grad.abs().max().item())


def critic_checks(name, hf, ids, hidden_ref, res):
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.forward import MicroBatch
    from megatron_pacore.training.logprobs import compute_values, token_values
    from megatron_pacore.training.critic import build_critic
    from megatron_pacore.training.models import ModelOptions
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    for layout, (tp, pp) in {"tp2": (2, 1), "pp2": (1, 2)}.items():
        groups = initialize_parallel(ParallelConfig(tp=tp, pp=pp, device="cpu"))
        critic, info = build_critic(hf.config, groups, ModelOptions(precision="fp32"))
        load_hf_weights(critic, info, hf, tp, groups.tp_rank)
        critic.eval()
        outs = compute_values(critic, groups, [MicroBatch(ids)])
        diff = shape_wrong = None
        if outs:
            head = critic.value_head
            expect = token_values((hidden_ref @ head.weight.detach().T + head.bias.detach()))
            diff = (outs[0] - expect).abs().max().item()
            shape_ok = tuple(outs[0].shape) == tuple(ids.shape) and outs[0][:, 0].abs().max() == 0
            shape_wrong = 0.0 if shape_ok else 1.0
        res[f"{name}/critic_{layout}/value_max_diff"] = gather_max(diff)
        res[f"{name}/critic_{layout}/shape_wrong"] = gather_max(shape_wrong)
        if layout == "tp2":
            critic.train()
            pos = torch.arange(ids.shape[1]).expand_as(ids)
            values = token_values(critic(ids, pos, None))
            target = torch.linspace(-1, 1, ids.numel()).reshape(ids.shape)
            ((values - target) ** 2)[:, 1:].mean().backward()
            g_head = critic.value_head.weight.grad
            g_body = critic.decoder.layers[0].mlp.linear_fc2.weight.grad
            gathered = [torch.empty_like(g_head) for _ in range(2)]
            dist.all_gather(gathered, g_head.contiguous())
            res[f"{name}/critic/head_grad_norm"] = maxr(-g_head.norm().item()) * -1
            res[f"{name}/critic/backbone_grad_norm"] = -maxr(-g_body.norm().item())
            res[f"{name}/critic/head_grad_same_on_tp_ranks"] = bool(torch.equal(gathered[0], gathered[1]))


def critic_ddp_checks(name, hf, ids, res):
    """The critic trains through Megatron DDP, the 1F1B schedule and finalize_model_grads at
    PP=2 (which look model attributes up by name): every stage gets non-zero gradients."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.critic import build_critic
    from megatron_pacore.training.models import ModelOptions
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    groups = initialize_parallel(ParallelConfig(pp=2, device="cpu"))
    critic, info = build_critic(hf.config, groups, ModelOptions(precision="fp32"))
    load_hf_weights(critic, info, hf, 1, 0)
    critic.config.finalize_model_grads_func = finalize_model_grads
    ddp = DistributedDataParallel(critic.config, DistributedDataParallelConfig(), critic)
    pos = torch.arange(ids.shape[1]).expand_as(ids)

    def step(data, model):
        out = model(next(data), pos, None)
        return out, lambda values: (values.float().pow(2).mean(), {})

    get_forward_backward_func()(forward_step_func=step, data_iterator=iter([ids]), model=[ddp], num_microbatches=1,
                                seq_length=ids.shape[1], micro_batch_size=ids.shape[0], forward_only=False)
    grad = sum(p.main_grad.abs().sum().item() for p in ddp.parameters())
    res[f"{name}/critic_pp2_ddp_min_stage_grad"] = -maxr(-grad)


def recompute_checks(name, hf, ids, res):
    """Full activation recomputation (uniform, 1 layer) gives the same gradients at TP=2."""
    from megatron_pacore.checkpoint.loader import load_hf_weights
    from megatron_pacore.training.logprobs import token_logprobs
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, initialize_parallel

    grads = []
    for opts in (ModelOptions(precision="fp32"),
                 ModelOptions(precision="fp32", recompute_granularity="full", recompute_method="uniform",
                              recompute_num_layers=1)):
        groups = initialize_parallel(ParallelConfig(tp=2, device="cpu"))
        model, info = build_actor(hf.config, groups, opts)
        load_hf_weights(model, info, hf, 2, groups.tp_rank)
        model.train()
        pos = torch.arange(ids.shape[1]).expand_as(ids)
        lp, ent = token_logprobs(model(ids, pos, None), ids, hf.config.vocab_size, T, groups.tp_group, True)
        (lp.sum() + 0.1 * ent.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    diff = max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
    scale = max(g.abs().max().item() for g in grads[0].values())
    res[f"{name}/recompute_grad_max_diff"] = maxr(diff)
    res[f"{name}/recompute_grad_scale"] = maxr(scale)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--result", required=True)
    p.add_argument("--models", required=True)
    args = p.parse_args()
    from megatron_pacore.checkpoint.hf_io import HFCheckpoint
    from megatron_pacore.training.parallel import destroy_parallel

    res: dict = {}
    for name, hf_dir in json.loads(args.models).items():
        hf = HFCheckpoint(hf_dir)
        ids = torch.randint(0, hf.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
        logits_ref, hidden_ref = reference(hf_dir, ids)
        actor_checks(name, hf, ids, logits_ref, res)
        critic_checks(name, hf, ids, hidden_ref, res)
        if name == "qwen3":
            recompute_checks(name, hf, ids, res)
        if name == "qwen2":
            critic_ddp_checks(name, hf, ids, res)
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
