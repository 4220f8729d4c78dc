"""Truncated importance sampling for the rollout-vs-trainer log-prob mismatch.

vLLM samples the responses, but PPO's old policy is Megatron's: the two compute the same
policy with different kernels and precisions, so their log-probs of the same token differ
and the batch is slightly off-policy for the trainer. Truncated importance sampling (Ionides
2008; applied to this mismatch by Yao et al. 2025, "Your Efficient RL Framework Secretly Brings
You Off-Policy RL Training") reweights each token's policy-gradient term by

    w_t = min( pi_megatron(y_t) / pi_vllm(y_t), C ) = min( exp(old_logprobs_t - rollout_logprobs_t), C )

with the cap C bounding the variance. The weights carry no gradient.
"""
from __future__ import annotations

import math

import torch

from megatron_pacore.algorithms.losses import Metrics

# exp() of larger log-ratios overflows fp32; the capped weight does not depend on them.
_MAX_LOG_RATIO = 80.0


def truncated_is_weights(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor,
                         response_mask: torch.Tensor, cap: float) -> tuple[torch.Tensor, Metrics]:
    """Per-token weights min(exp(old_logprobs - rollout_logprobs), cap) and their statistics.

    Args:
        old_logprobs: [b, s] Megatron's log-probs of the sampled tokens (before the update).
        rollout_logprobs: [b, s] vLLM's log-probs of the same tokens, as it sampled them.
        response_mask: [b, s] bool, True on response tokens.
        cap: C >= 1.
    Returns:
        (weights [b, s] fp32, detached, 1 at masked positions; metrics over the response tokens
        of the tensors given, which should be the whole batch):
        actor/is_ratio_mean and actor/is_ratio_max of the UNcapped ratio, actor/is_capped_frac
        (share of tokens whose ratio exceeded C), actor/rollout_logprob_diff (mean |old - rollout|).
    """
    if not cap >= 1.0:
        raise ValueError(f"importance-sampling cap must be >= 1, got {cap}")
    if old_logprobs.shape != rollout_logprobs.shape or old_logprobs.shape != response_mask.shape:
        raise ValueError(f"old_logprobs, rollout_logprobs and response_mask must have the same shape, got "
                         f"{tuple(old_logprobs.shape)}, {tuple(rollout_logprobs.shape)}, {tuple(response_mask.shape)}")
    mask = response_mask.bool()
    with torch.no_grad():
        log_ratio = (old_logprobs.float() - rollout_logprobs.float()).clamp(max=_MAX_LOG_RATIO)
        ratio = torch.exp(log_ratio)
        capped = log_ratio > math.log(cap)
        weights = torch.where(mask, torch.clamp(ratio, max=cap), torch.ones_like(ratio))
        n = mask.sum().clamp(min=1).float()
        m = mask.float()
        metrics = {
            "actor/is_ratio_mean": (ratio * m).sum() / n,
            "actor/is_ratio_max": ratio.masked_fill(~mask, 0.0).max() if mask.any() else ratio.new_zeros(()),
            "actor/is_capped_frac": (capped.float() * m).sum() / n,
            "actor/rollout_logprob_diff": (log_ratio.abs() * m).sum() / n,
        }
    return weights, metrics
