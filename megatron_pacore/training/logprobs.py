"""Token log-probabilities, entropies and values from vocab-parallel model outputs.

Alignment: for input_ids [b, s], position t of every token-aligned [b, s] tensor describes
token t given the tokens before it:
    logprobs[:, t] = log pi(input_ids[:, t] | input_ids[:, :t])      (from logits at t - 1)
    entropy[:, t]  = H(pi(. | input_ids[:, :t]))
    values[:, t]   = V(input_ids[:, :t]), the state in which token t was chosen
and position 0 (no context) is 0. A response mask over token positions selects response
tokens directly. `label_logprobs` is the per-logit-position form (labels = next tokens), the
one to use on context-parallel sequence parts, whose neighbours live on other ranks.

Temperature: vLLM samples from softmax(logits / T); the log-probs here are of that
distribution (what PPO's ratio needs, and what vLLM reports with
logprobs_mode="processed_logprobs"). The vocabulary stays split over the tensor-parallel
ranks: Megatron's `vocab_parallel_cross_entropy` gives -log p(target) without gathering
[b, s, V], and the entropy uses the same all-reduce pattern. Padded vocabulary rows
(V..Vp) are masked out.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from megatron_pacore.training.forward import MicroBatch, cp_gather, forward_only
from megatron_pacore.training.parallel import ParallelGroups

MASKED = -1e30  # finite, so that p * logit stays 0 for masked entries (not nan)


def _local_vocab_range(local_size: int, tp_group) -> tuple[int, int]:
    rank = dist.get_rank(tp_group) if tp_group is not None and dist.get_world_size(tp_group) > 1 else 0
    return rank * local_size, (rank + 1) * local_size


def _prepare(logits: torch.Tensor, vocab_size: int, temperature: float, tp_group) -> torch.Tensor:
    """[..., Vp/tp] -> fp32 logits / T with padded columns masked (a new tensor)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    x = logits.float() / temperature
    start, end = _local_vocab_range(x.shape[-1], tp_group)
    if end > vocab_size:
        pad = torch.arange(start, end, device=x.device) >= vocab_size
        x = x.masked_fill(pad, MASKED)
    return x


def vocab_parallel_entropy(x: torch.Tensor, tp_group) -> torch.Tensor:
    """Entropy [...] of softmax over the full vocabulary of vocab-parallel logits x [..., V/tp].

    With m = max_v x_v (a constant shift), S = sum_v e^(x_v - m), A = sum_v e^(x_v - m) x_v:
    H = log S + m - A / S. The local parts of S and A are summed over the TP group by an
    all-reduce whose backward is the identity, which is exact here because everything after
    the sums is the same computation on every rank.
    """
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    multi = tp_group is not None and dist.get_world_size(tp_group) > 1
    m = x.detach().max(dim=-1).values
    if multi:
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=tp_group)
    e = torch.exp(x - m.unsqueeze(-1))
    sums = torch.stack([e.sum(dim=-1), (e * x).sum(dim=-1)])
    if multi:
        sums = reduce_from_tensor_model_parallel_region(sums, group=tp_group)
    s, a = sums[0], sums[1]
    return torch.log(s) + m - a / s


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int, temperature: float = 1.0,
                   tp_group=None, with_entropy: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per logit position: log-prob of labels[:, t] and entropy, from vocab-parallel logits.

    Args:
        logits: [b, s, Vp/tp] model output (differentiable).
        labels: [b, s] the token each position predicts.
        vocab_size: true vocabulary size V (columns >= V are padding).
        temperature: T of sampling; log-probs are of softmax(logits / T).
        tp_group: tensor-parallel group of the vocabulary split (None: not split).
    Returns:
        logprobs [b, s] fp32 and entropy [b, s] fp32 (or None).
    """
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    x = _prepare(logits, vocab_size, temperature, tp_group)
    entropy = vocab_parallel_entropy(x, tp_group) if with_entropy else None
    # Megatron's CE works in place on its input: give it its own copy when x is reused.
    nll = vocab_parallel_cross_entropy(x.clone() if with_entropy else x, labels.to(x.device))
    return -nll, entropy


def to_token_positions(x: torch.Tensor) -> torch.Tensor:
    """[b, s] per logit position -> per token position (x[:, t-1] moves to t; t=0 gets 0)."""
    return torch.cat([x.new_zeros(x.shape[0], 1), x[:, :-1]], dim=1)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, vocab_size: int,
                   temperature: float = 1.0, tp_group=None,
                   with_entropy: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Log-probs (and entropies) of input_ids [b, s] under logits [b, s, Vp/tp] of the same
    (whole, not context-parallel) sequences, aligned to token positions (position 0 is 0).
    Differentiable; see `label_logprobs` for the arguments."""
    labels = torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)
    lp, ent = label_logprobs(logits, labels, vocab_size, temperature, tp_group, with_entropy)
    return to_token_positions(lp), (to_token_positions(ent) if ent is not None else None)


def token_values(values: torch.Tensor) -> torch.Tensor:
    """Critic output [b, s, 1] -> values [b, s] aligned like log-probs (values[:, t] from
    the hidden state at t - 1, the state in which token t was chosen; position 0 is 0)."""
    return to_token_positions(values.squeeze(-1).float())


def compute_logprobs(model, groups: ParallelGroups, batches: list[MicroBatch], vocab_size: int,
                     temperature: float = 1.0, with_entropy: bool = False) -> list[tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Forward-only log-probs (and entropies) [b, s] per micro-batch, token-aligned, over the
    whole sequences (context-parallel parts gathered); [] on non-last pipeline stages."""
    def collect(logits, mb):
        return label_logprobs(logits, mb.next_tokens(), vocab_size, temperature, groups.tp_group, with_entropy)

    out = []
    for lp, ent in forward_only(model, groups, batches, collect):
        lp = to_token_positions(cp_gather(lp, groups))
        ent = to_token_positions(cp_gather(ent, groups)) if ent is not None else None
        out.append((lp, ent))
    return out


def compute_values(critic, groups: ParallelGroups, batches: list[MicroBatch]) -> list[torch.Tensor]:
    """Forward-only critic values [b, s] per micro-batch, token-aligned (see `token_values`);
    [] on non-last pipeline stages."""
    outs = forward_only(critic, groups, batches, lambda out, mb: out.squeeze(-1).float())
    return [to_token_positions(cp_gather(v, groups)) for v in outs]
