"""PPO losses as pure tensor functions, aggregated per token over the GLOBAL batch.

Token-level aggregation. A loss over a rollout batch is the mean over all of its response
tokens, wherever they are: across micro-batches and across data-parallel ranks,

    L = (1 / N) * sum_{all response tokens t} l_t,      N = response tokens in the global batch.

Every function here takes `num_tokens` = N (the caller counts it once for the whole global
batch, e.g. `packing.PackPlan.num_response_tokens`) and returns sum_{t in this micro-batch}
l_t / N. Summing the returned losses over micro-batches and data-parallel ranks therefore
gives L exactly, and so does summing their gradients: backward on each micro-batch (gradients
accumulate) followed by an all-reduce SUM of the gradients over the data-parallel group. A
micro-batch mean would instead weight a token of a short micro-batch more than one of a long
one, and a per-sequence mean a token of a short response more (the length bias of
sequence-level averaging; DAPO, Yu et al. 2025, section 3.4).

With Megatron's schedule: a loss function returning (loss, metrics) is divided by the number
of micro-batches and DDP averages gradients over data-parallel ranks, so either multiply the
loss by num_microbatches * dp_size (this rank's number of micro-batches), or set `calculate_per_token_loss=True` and return the
token SUM with the local token count (Megatron then divides by the all-reduced count).

Metrics follow the same rule: a key ending in a token mean is a contribution normalised by
N, so summing it over micro-batches and ranks gives the global token mean. Keys are
namespaced `actor/` and `critic/`.

Shapes: every per-token tensor is [b, s] (or a packed [1, T]) and the mask is bool of the same
shape, True on response tokens.
"""
from __future__ import annotations

from typing import Optional

import torch

Metrics = dict[str, torch.Tensor]


def _check_num_tokens(num_tokens) -> None:
    n = float(num_tokens)
    if not n > 0:
        raise ValueError(f"num_tokens (response tokens in the global batch) must be > 0, got {num_tokens}")


def token_sum_over(x: torch.Tensor, mask: torch.Tensor, num_tokens) -> torch.Tensor:
    """sum_t x_t over the True positions of mask, divided by the global count `num_tokens`.

    The aggregation of every loss here (module doc): its sum over the micro-batches and ranks of
    a batch is the token mean of the whole batch.
    """
    _check_num_tokens(num_tokens)
    return (x * mask.to(x.dtype)).sum() / num_tokens


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, num_tokens, clip_ratio: float = 0.2,
                clip_ratio_high: Optional[float] = None, dual_clip: Optional[float] = None,
                is_weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Metrics]:
    """Clipped surrogate policy loss (PPO, Schulman et al. 2017, eq. 7), per token:

        rho_t = exp(logprobs_t - old_logprobs_t)
        l_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps_low, 1 + eps_high))
        dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games", eq. 5), A_t < 0:
        l_t   = min(l_t, -A_t * c),  c = dual_clip > 1
        with truncated importance weights w_t (vLLM-vs-Megatron, importance.py):  l_t *= w_t

    Args:
        logprobs: [b, s] log pi_theta(token) of the policy being updated (differentiable).
        old_logprobs: [b, s] log-probs of the policy that produced the batch (Megatron, before
            the update).
        advantages: [b, s].
        response_mask: [b, s] bool.
        num_tokens: response tokens of the global batch (module doc).
        clip_ratio: eps_low (and eps_high unless `clip_ratio_high` is given).
        dual_clip: c of dual clipping, None = off.
        is_weights: [b, s] truncated importance weights (no gradient), None = 1.
    Returns:
        (loss, metrics): actor/pg_loss, actor/clip_frac (share of tokens where the clip is the
        active term), actor/approx_kl (k3 estimate of KL(old || new)), actor/ratio_mean; all
        contributions normalised by num_tokens.
    """
    if clip_ratio <= 0:
        raise ValueError(f"clip_ratio must be > 0, got {clip_ratio}")
    eps_high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    mask = response_mask.bool()
    adv = advantages.detach().float()
    log_ratio = logprobs.float() - old_logprobs.detach().float()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    if dual_clip is not None:
        floor = -adv * dual_clip
        per_token = torch.where(adv < 0, torch.minimum(per_token, floor), per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach().float()
    loss = token_sum_over(per_token, mask, num_tokens)
    with torch.no_grad():
        lr = log_ratio.detach()
        metrics = {
            "actor/pg_loss": loss.detach(),
            "actor/clip_frac": token_sum_over(clip_active.float(), mask, num_tokens),
            "actor/approx_kl": token_sum_over(torch.exp(lr) - 1 - lr, mask, num_tokens),
            "actor/ratio_mean": token_sum_over(ratio.detach(), mask, num_tokens),
        }
    return loss, metrics


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               response_mask: torch.Tensor, num_tokens,
               value_clip: Optional[float] = 0.2) -> tuple[torch.Tensor, Metrics]:
    """Clipped value loss (PPO2's critic objective, as in OpenAI baselines), per token:

        V_clip_t = old_values_t + clip(values_t - old_values_t, -c, c)
        l_t      = 0.5 * max((values_t - R_t)^2, (V_clip_t - R_t)^2)        (c = value_clip)
        without clipping (value_clip None): l_t = 0.5 * (values_t - R_t)^2

    Args:
        values: [b, s] V(s_t) of the critic being updated (differentiable).
        old_values: [b, s] values the advantages were computed with.
        returns: [b, s] regression targets R_t (gae.gae).
        response_mask: [b, s] bool.
        num_tokens: response tokens of the global batch (module doc).
    Returns:
        (loss, metrics): critic/vf_loss, critic/vf_clip_frac (share of tokens where the clipped
        term is the larger), critic/vpred_mean; contributions normalised by num_tokens.
    """
    if value_clip is not None and value_clip <= 0:
        raise ValueError(f"value_clip must be > 0 (or None), got {value_clip}")
    mask = response_mask.bool()
    v = values.float()
    ret = returns.detach().float()
    err = (v - ret) ** 2
    if value_clip is None:
        per_token = 0.5 * err
        clip_active = torch.zeros_like(err, dtype=torch.bool)
    else:
        old = old_values.detach().float()
        v_clipped = old + torch.clamp(v - old, -value_clip, value_clip)
        err_clipped = (v_clipped - ret) ** 2
        per_token = 0.5 * torch.maximum(err, err_clipped)
        clip_active = err_clipped > err
    loss = token_sum_over(per_token, mask, num_tokens)
    with torch.no_grad():
        metrics = {
            "critic/vf_loss": loss.detach(),
            "critic/vf_clip_frac": token_sum_over(clip_active.float(), mask, num_tokens),
            "critic/vpred_mean": token_sum_over(v.detach(), mask, num_tokens),
        }
    return loss, metrics


KL_ESTIMATORS = ("k1", "k3")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman 2020,
    "Approximating KL Divergence"), with log r = ref_logprobs - logprobs:

        k1 = -log r = logprobs - ref_logprobs           (unbiased, can be negative)
        k3 = (r - 1) - log r                             (unbiased, always >= 0)

    Shapes: [b, s] in, [b, s] out; differentiable in logprobs.
    """
    log_r = ref_logprobs.detach().float() - logprobs.float()
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.exp(log_r) - 1.0 - log_r
    raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, response_mask: torch.Tensor,
            num_tokens, estimator: str = "k3") -> tuple[torch.Tensor, Metrics]:
    """Token-mean KL(pi_theta || pi_ref) over the global batch (a loss term, to be scaled by
    kl_coef); metric actor/kl."""
    loss = token_sum_over(kl_estimate(logprobs, ref_logprobs, estimator), response_mask, num_tokens)
    return loss, {"actor/kl": loss.detach()}


def entropy_loss(entropy: torch.Tensor, response_mask: torch.Tensor, num_tokens) -> tuple[torch.Tensor, Metrics]:
    """Token-mean entropy H(pi_theta(. | s_t)) over the global batch; the bonus is
    -entropy_coef * this. Metric actor/entropy."""
    loss = token_sum_over(entropy.float(), response_mask, num_tokens)
    return loss, {"actor/entropy": loss.detach()}
