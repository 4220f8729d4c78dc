"""The Megatron side of a PPO iteration: log-probs and values of the rollout, critic and actor
updates, all on packed micro-batches (phases 4, 6 and 7 of `trainer.py`).

Sequences arrive as `data.packing.TokenSequence`s (prompt + response, [n] tensors) and are
packed by token budget (`data.balancing.plan_micro_batches`: balanced over data-parallel
ranks, no padding compute). A packed micro-batch becomes a `training.forward.MicroBatch` of
b = 1: on the Transformer Engine spec with THD attention (`PackedSeqParams` from the
cu_seqlens), elsewhere with per-sequence position ids and a block-diagonal causal mask (CPU,
local spec). Context parallelism (cp > 1) takes one padded sequence per micro-batch instead,
cut by `forward.cp_split`.

Losses use Megatron's per-token mode (`training.update`): a loss function returns the token
SUM of the `algorithms` losses (their num_tokens argument = 1) and its token count, so each
optimizer step minimises the token mean over the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from megatron_pacore.algorithms.ppo import PPOConfig, actor_loss, critic_loss
from megatron_pacore.data.balancing import plan_micro_batches
from megatron_pacore.data.packing import PackedMicroBatch, TokenSequence, pack, unpack
from megatron_pacore.training import seqlen
from megatron_pacore.training.forward import MicroBatch
from megatron_pacore.training.logprobs import compute_logprobs, compute_values, label_logprobs
from megatron_pacore.training.optimizer import Trainable
from megatron_pacore.training.parallel import ParallelGroups
from megatron_pacore.training.update import LossInputs, train_step


@dataclass(kw_only=True)
class PackingOptions:
    """How rollout sequences are laid into micro-batches."""

    max_tokens_per_micro_batch: int = 16384
    """Token budget of one packed micro-batch (padding included)."""
    pad_to_multiple: int = 1
    """Pad each packed row to a multiple of this, beyond what the layout needs (TP x SP,
    CP and FP8 multiples come from training.seqlen)."""
    thd: Optional[bool] = None
    """Packed attention through THD PackedSeqParams; None = with the Transformer Engine spec
    (CUDA), else a block-diagonal mask (CPU local spec)."""

    def __post_init__(self) -> None:
        if self.max_tokens_per_micro_batch < 1:
            raise ValueError(f"packing.max_tokens_per_micro_batch must be >= 1, got {self.max_tokens_per_micro_batch}")
        if self.pad_to_multiple < 1:
            raise ValueError(f"packing.pad_to_multiple must be >= 1, got {self.pad_to_multiple}")
        if self.max_tokens_per_micro_batch % self.pad_to_multiple:
            raise ValueError(f"packing.max_tokens_per_micro_batch={self.max_tokens_per_micro_batch} must be a "
                             f"multiple of packing.pad_to_multiple={self.pad_to_multiple}")


@dataclass
class RankBatches:
    """This data-parallel rank's share of the rollout, packed.

    packed: the packed micro-batches; sequences: every sequence of the rollout (all ranks);
    mine: indices into `sequences` held by this rank, in packed order; multiple: the length
    every packed row is padded to a multiple of (training.seqlen's rules for the layout,
    with packing.pad_to_multiple).
    """

    packed: list[PackedMicroBatch]
    sequences: list[TokenSequence]
    mine: list[int]
    multiple: int


def row_multiple(model_config, opts: PackingOptions) -> int:
    """What TP + SP, CP and FP8 need of a row's length (training.seqlen), and the option's."""
    return math.lcm(opts.pad_to_multiple, seqlen.length_multiple(**seqlen.config_kwargs(model_config)))


def plan_rank_batches(sequences: list[TokenSequence], groups: ParallelGroups, opts: PackingOptions,
                      model_config) -> RankBatches:
    """Balance `sequences` over data-parallel ranks and pack this rank's part.

    With cp > 1, every micro-batch holds one sequence, padded (what forward.cp_split needs)."""
    multiple = row_multiple(model_config, opts)
    lengths = [len(s) for s in sequences]
    if groups.config.cp > 1:
        plan = plan_micro_batches(lengths, groups.dp, max_tokens=_round_up(max(lengths), multiple),
                                  pad_to_multiple=multiple)
        mine = [i for mb in plan.micro_batches[groups.dp_rank] for i in mb]
        packed = [pack(sequences, [i], pad_to_multiple=multiple) for i in mine]
        return RankBatches(packed=packed, sequences=sequences, mine=mine, multiple=multiple)
    budget = opts.max_tokens_per_micro_batch // multiple * multiple
    if budget < 1:
        raise ValueError(f"packing.max_tokens_per_micro_batch={opts.max_tokens_per_micro_batch} is below the "
                         f"row multiple {multiple} of this layout")
    plan = plan_micro_batches(lengths, groups.dp, max_tokens=budget, pad_to_multiple=multiple)
    packed = [pack(sequences, mb, pad_to_multiple=multiple) for mb in plan.micro_batches[groups.dp_rank]]
    mine = [i for p in packed for i in p.indices]
    return RankBatches(packed=packed, sequences=sequences, mine=mine, multiple=multiple)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def to_micro_batch(p: PackedMicroBatch, thd: bool, cp: int) -> MicroBatch:
    """A packed row as the model takes it (module doc)."""
    if cp > 1:  # one sequence, padded: the plain causal layout that cp_split cuts
        return MicroBatch(input_ids=p.input_ids, position_ids=p.position_ids)
    if thd:
        from megatron.core.packed_seq_params import PackedSeqParams

        cu = p.cu_seqlens.to(torch.int32)
        cu_pad = p.cu_seqlens_padded.to(torch.int32)
        params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                                 cu_seqlens_q_padded=cu_pad, cu_seqlens_kv_padded=cu_pad,
                                 max_seqlen_q=p.max_seqlen, max_seqlen_kv=p.max_seqlen)
        return MicroBatch(input_ids=p.input_ids, position_ids=p.position_ids, packed_seq_params=params)
    return MicroBatch(input_ids=p.input_ids, position_ids=p.position_ids, attention_mask=p.attention_mask())


def _token_tensors(p: PackedMicroBatch, names: Sequence[str]) -> dict[str, torch.Tensor]:
    out = {"response_mask": p.response_mask.float()}
    for n in names:
        t = getattr(p, n)
        if t is None:
            raise ValueError(f"packed micro-batch lacks {n}: compute it before this phase")
        out[n] = t.float()
    return out


def rollout_logprobs_and_values(actor, critic, groups: ParallelGroups, rb: RankBatches, vocab_size: int,
                                temperature: float, thd: bool, with_entropy: bool = False) -> None:
    """Phase 4: the old policy's log-probs (and optionally entropies) and the old values of this
    rank's sequences, written into rb.sequences[i].old_logprobs / old_values ([n], token-aligned).

    Forward-only through Megatron's schedule; on pipeline stages other than the last the
    results arrive by broadcast from the last stage, so every rank of a model-parallel group
    holds them afterwards.
    """
    cp = groups.config.cp
    batches = [to_micro_batch(p, thd, cp) for p in rb.packed]
    lps = compute_logprobs(actor, groups, batches, vocab_size, temperature=temperature, with_entropy=with_entropy)
    vals = compute_values(critic, groups, batches)
    for j, p in enumerate(rb.packed):
        lp = _from_last_stage(lps[j][0] if lps else None, p, groups)
        v = _from_last_stage(vals[j] if vals else None, p, groups)
        for i, lp_i, v_i in zip(p.indices, unpack(lp, p), unpack(v, p)):
            seq = rb.sequences[i]
            seq.old_logprobs = lp_i.float() * seq.response_mask
            seq.old_values = v_i.float() * seq.response_mask


def _from_last_stage(x: Optional[torch.Tensor], p: PackedMicroBatch, groups: ParallelGroups) -> torch.Tensor:
    """[1, T] on the last pipeline stage -> the same on every stage (broadcast over PP)."""
    if groups.config.pp == 1:
        assert x is not None
        return x
    import torch.distributed as dist
    from megatron.core import parallel_state as mpu

    buf = x.contiguous().float() if x is not None else torch.empty(1, p.num_tokens, dtype=torch.float32)
    dist.broadcast(buf, src=mpu.get_pipeline_model_parallel_last_rank(), group=groups.pp_group)
    return buf


def update_critic(trainable: Trainable, rb: RankBatches, cfg: PPOConfig, thd: bool) -> dict[str, float]:
    """Phase 6: one critic step on the clipped value loss (token mean over the global batch)."""
    groups = trainable.groups

    def loss_fn(out: torch.Tensor, inputs: LossInputs):
        values = out.squeeze(-1).float()  # [b, s'] V at label positions: the state of token t+1
        mask = inputs["response_mask"]
        loss, metrics = critic_loss(cfg, values, inputs["old_values"], inputs["returns"], mask, 1.0)
        n = mask.sum()
        return loss, n, {k: v / n.clamp(min=1) for k, v in metrics.items()}

    batches = [to_micro_batch(p, thd, groups.config.cp) for p in rb.packed]
    tensors = [_token_tensors(p, ("old_values", "returns")) for p in rb.packed]
    out = train_step(trainable, batches, loss_fn, tensors)
    return {("critic/" + k if "/" not in k else k): v for k, v in out.items()}


def update_actor(trainable: Trainable, rb: RankBatches, cfg: PPOConfig, vocab_size: int, temperature: float,
                 thd: bool) -> dict[str, float]:
    """Phase 7: one actor step on the clipped policy loss, with the truncated importance
    weights of the vLLM/Megatron mismatch when cfg.is_cap is set (token mean, global batch)."""
    groups = trainable.groups
    names = ["old_logprobs", "advantages"] + (["is_weights"] if cfg.is_cap is not None else [])

    def loss_fn(out: torch.Tensor, inputs: LossInputs):
        mask = inputs["response_mask"]
        need_entropy = cfg.entropy_coef > 0
        lp, ent = label_logprobs(out, inputs.labels, vocab_size, temperature, groups.tp_group, need_entropy)
        loss, metrics = actor_loss(cfg, lp, inputs["old_logprobs"], inputs["advantages"], mask.bool(), 1.0,
                                   is_weights=inputs.tensors.get("is_weights"), entropy=ent)
        n = mask.sum()
        return loss, n, {k: v / n.clamp(min=1) for k, v in metrics.items()}

    batches = [to_micro_batch(p, thd, groups.config.cp) for p in rb.packed]
    tensors = [_token_tensors(p, names) for p in rb.packed]
    out = train_step(trainable, batches, loss_fn, tensors)
    return {("actor/" + k if "/" not in k else k): v for k, v in out.items()}


def repack(rb: RankBatches) -> RankBatches:
    """Pack again after per-sequence fields (advantages, returns, weights) were filled in: the
    layout is the same, the packed tensors now carry the new fields."""
    return RankBatches(packed=[pack(rb.sequences, p.indices, pad_to_multiple=rb.multiple) for p in rb.packed],
                       sequences=rb.sequences, mine=rb.mine, multiple=rb.multiple)
