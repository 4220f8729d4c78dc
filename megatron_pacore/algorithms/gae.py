"""Generalised advantage estimation, returns and advantage whitening.

Alignment (the same as training/logprobs.py): for sequences [b, s], position t describes the
token at t. `values[:, t]` is V(s_t), the critic's estimate in the state where token t was
chosen; `response_mask[:, t]` is True for tokens the policy generated. Prompt tokens and
padding are masked out and never enter the recursion.

GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation", eq. 16), over the response tokens t_1 < ... < t_n of one sequence:

    delta_i = r_i + gamma * V(s_{i+1}) - V(s_i),        V(s_{n+1}) = 0 (terminal)
    A_i     = delta_i + gamma * lambda * A_{i+1},        A_{n+1} = 0
    R_i     = A_i + V(s_i)                               (the critic's regression target)

PaCoRe's reward is one number per response, placed on its last token (`place_reward`), and
lambda = gamma = 1, where the recursion telescopes to A_i = R - V(s_i) and R_i = R for every
token (the reward-to-go); that case takes a closed form with no loop over positions.
"""
from __future__ import annotations

from typing import Optional

import torch


def place_reward(rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence rewards on the last response token of each row.

    Args:
        rewards: [b] one scalar reward per sequence.
        response_mask: [b, s] bool, True on response tokens.
    Returns:
        [b, s] float token rewards: rewards[i] at the last True position of row i, 0 elsewhere
        (a row without response tokens gets nothing).
    """
    if rewards.dim() != 1 or rewards.shape[0] != response_mask.shape[0]:
        raise ValueError(f"rewards must be [b] with b = {response_mask.shape[0]}, got {tuple(rewards.shape)}")
    mask = response_mask.bool()
    s = mask.shape[1]
    positions = torch.arange(s, device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values  # [b]
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    has = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has]
    out[rows, last[has]] = rewards[has].float()
    return out


def gae(token_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE over the response tokens (formula in the module doc).

    Args:
        token_rewards: [b, s] reward of each token (`place_reward` for one reward per response).
        values: [b, s] V(s_t) of the critic (old values, no gradient needed).
        response_mask: [b, s] bool; masked positions are skipped: the recursion links each
            response token to the next RESPONSE token of the row, and the last one is terminal.
        gamma: discount; lam: GAE lambda (both 1 in the paper).
    Returns:
        (advantages [b, s], returns [b, s]) fp32, 0 at masked positions.
    """
    if not (0.0 <= gamma <= 1.0) or not (0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    if token_rewards.shape != values.shape or values.shape != response_mask.shape:
        raise ValueError(f"token_rewards, values and response_mask must have the same [b, s] shape, got "
                         f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(response_mask.shape)}")
    mask = response_mask.bool()
    r = token_rewards.float() * mask
    v = values.detach().float() * mask
    if gamma == 1.0 and lam == 1.0:
        return _gae_undiscounted(r, v, mask)
    return _gae_recursive(r, v, mask, gamma, lam)


def _gae_undiscounted(r: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda = gamma = 1: A_i = sum_{j >= i} r_j - V(s_i), a reversed cumulative sum."""
    returns = r.flip(1).cumsum(1).flip(1) * mask
    return (returns - v) * mask, returns


def _gae_recursive(r: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, gamma: float,
                   lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The recursion of the module doc, right to left, skipping masked positions."""
    b, s = mask.shape
    advantages = torch.zeros_like(v)
    next_value = v.new_zeros(b)
    next_adv = v.new_zeros(b)
    for t in range(s - 1, -1, -1):
        m = mask[:, t]
        delta = r[:, t] + gamma * next_value - v[:, t]
        a = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(m, a, torch.zeros_like(a))
        next_adv = torch.where(m, a, next_adv)
        next_value = torch.where(m, v[:, t], next_value)
    returns = (advantages + v) * mask
    return advantages, returns


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of x over the True positions of mask (over `dim`, or all); 0 where there are none."""
    m = mask.to(x.dtype)
    total = (x * m).sum() if dim is None else (x * m).sum(dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over the True positions of mask (Bessel-corrected when unbiased)."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    sq = (((x - mean) ** 2) * m).sum()
    denom = (n - 1) if unbiased else n
    return sq / denom.clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked positions; masked-out entries become 0.

    With `shift_mean=False` only the scale changes (the mean is added back), so the sign of a
    batch-wide advantage survives. Statistics are of the tensor given: whiten the whole rollout
    batch (all data-parallel ranks' sequences) before it is split, so every rank uses the same
    mean and variance.

    Args:
        x: [b, s] (or any shape) values, e.g. advantages.
        mask: bool, the shape of x.
    """
    mask = mask.bool()
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask
