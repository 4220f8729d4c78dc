"""PPO's settings and the two objectives the trainer minimises, composed from losses.py.

    actor:  L_pi = L_clip(+ truncated IS weights) + kl_coef * KL(pi || pi_ref) - entropy_coef * H
    critic: L_V  = clipped value loss

Both are token means over the global batch (losses.py explains the normalisation); the paper
runs strict on-policy PPO with lambda = gamma = 1 and neither KL nor entropy terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from megatron_pacore.algorithms.gae import gae, place_reward, whiten
from megatron_pacore.algorithms.losses import (
    KL_ESTIMATORS,
    Metrics,
    entropy_loss,
    kl_loss,
    policy_loss,
    value_loss,
)


@dataclass(kw_only=True)
class PPOConfig:
    """The PPO objective and advantage estimation."""

    clip_ratio: float = 0.2
    """eps of the clipped surrogate: the ratio is clipped to [1 - eps, 1 + eps_high]."""
    clip_ratio_high: Optional[float] = None
    """eps_high of an asymmetric clip ("clip-higher", DAPO); None = clip_ratio."""
    dual_clip: Optional[float] = None
    """c > 1 of dual-clip PPO (bounds the loss of negative-advantage tokens); None = off."""
    value_clip: Optional[float] = 0.2
    """Clip range of the critic's change per update; None = unclipped squared error."""
    gamma: float = 1.0
    """Discount of GAE (paper: 1)."""
    gae_lambda: float = 1.0
    """lambda of GAE (paper: 1, so A_t = R - V(s_t))."""
    whiten_advantages: bool = False
    """Normalise advantages to zero mean and unit variance over the rollout batch."""
    kl_coef: float = 0.0
    """Weight of KL(pi || pi_ref) in the actor loss; 0 = off (paper), no reference model needed."""
    kl_estimator: str = "k3"
    """Per-token KL estimator: k1 (log-ratio) or k3 (non-negative)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus; 0 = off (paper)."""
    is_cap: Optional[float] = 2.0
    """C of the truncated importance weights min(pi_megatron / pi_vllm, C); None = no correction."""

    def __post_init__(self) -> None:
        if not self.clip_ratio > 0:
            raise ValueError(f"ppo.clip_ratio must be > 0, got {self.clip_ratio}")
        if self.clip_ratio_high is not None and not self.clip_ratio_high > 0:
            raise ValueError(f"ppo.clip_ratio_high must be > 0 or None, got {self.clip_ratio_high}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"ppo.dual_clip must be > 1 or None, got {self.dual_clip}")
        if self.value_clip is not None and not self.value_clip > 0:
            raise ValueError(f"ppo.value_clip must be > 0 or None, got {self.value_clip}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"ppo.gamma must be in [0, 1], got {self.gamma}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"ppo.gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.kl_coef < 0:
            raise ValueError(f"ppo.kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"ppo.kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.entropy_coef < 0:
            raise ValueError(f"ppo.entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.is_cap is not None and not self.is_cap >= 1:
            raise ValueError(f"ppo.is_cap must be >= 1 or None, got {self.is_cap}")

    @property
    def needs_reference(self) -> bool:
        """Whether the actor loss needs reference-model log-probs."""
        return self.kl_coef > 0


def compute_advantages(cfg: PPOConfig, rewards: torch.Tensor, values: torch.Tensor,
                       response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 5 of the trainer: one reward per response on its last token, GAE with cfg.gamma and
    cfg.gae_lambda, then whitening when cfg.whiten_advantages (returns are never whitened).

    Args:
        rewards: [b] per-response rewards.
        values: [b, s] old critic values V(s_t), token-aligned.
        response_mask: [b, s] bool.
    Returns:
        (advantages [b, s], returns [b, s]), 0 off the response tokens.
    """
    advantages, returns = gae(place_reward(rewards, response_mask), values, response_mask,
                              gamma=cfg.gamma, lam=cfg.gae_lambda)
    if cfg.whiten_advantages:
        advantages = whiten(advantages, response_mask)
    return advantages, returns


def actor_loss(cfg: PPOConfig, logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
               response_mask: torch.Tensor, num_tokens, *, is_weights: Optional[torch.Tensor] = None,
               entropy: Optional[torch.Tensor] = None,
               ref_logprobs: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Metrics]:
    """The actor's loss on one micro-batch, normalised by the global token count.

    Args: [b, s] tensors as in `losses.policy_loss`; `entropy` is required when
    cfg.entropy_coef > 0 and `ref_logprobs` when cfg.kl_coef > 0.
    Returns:
        (loss, metrics): the policy metrics, plus actor/kl, actor/entropy where those terms
        are on, and actor/loss.
    """
    loss, metrics = policy_loss(logprobs, old_logprobs, advantages, response_mask, num_tokens,
                                clip_ratio=cfg.clip_ratio, clip_ratio_high=cfg.clip_ratio_high,
                                dual_clip=cfg.dual_clip, is_weights=is_weights)
    if cfg.kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("ppo.kl_coef > 0 needs ref_logprobs (reference-model log-probs)")
        kl, m = kl_loss(logprobs, ref_logprobs, response_mask, num_tokens, cfg.kl_estimator)
        loss = loss + cfg.kl_coef * kl
        metrics.update(m)
    if cfg.entropy_coef > 0:
        if entropy is None:
            raise ValueError("ppo.entropy_coef > 0 needs the per-token entropy of the policy")
        ent, m = entropy_loss(entropy, response_mask, num_tokens)
        loss = loss - cfg.entropy_coef * ent
        metrics.update(m)
    metrics["actor/loss"] = loss.detach()
    return loss, metrics


def critic_loss(cfg: PPOConfig, values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                response_mask: torch.Tensor, num_tokens) -> tuple[torch.Tensor, Metrics]:
    """The critic's loss on one micro-batch (`losses.value_loss` with cfg.value_clip)."""
    return value_loss(values, old_values, returns, response_mask, num_tokens, value_clip=cfg.value_clip)
