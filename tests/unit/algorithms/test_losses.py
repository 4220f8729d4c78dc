"""Policy, value, KL and entropy losses and the importance weights against hand arithmetic."""
import math

import pytest
import torch

from megatron_pacore.algorithms.importance import truncated_is_weights
from megatron_pacore.algorithms.losses import entropy_loss, kl_estimate, kl_loss, policy_loss, value_loss
from megatron_pacore.algorithms.ppo import PPOConfig, actor_loss, compute_advantages, critic_loss

# Four tokens, the last one not a response token; old log-probs 0 so ratio = exp(logprobs).
RATIOS = [1.5, 0.5, 1.1, 2.0]
ADV = torch.tensor([[1.0, -1.0, 2.0, 5.0]])
MASK = torch.tensor([[True, True, True, False]])


def new_logprobs():
    return torch.log(torch.tensor([RATIOS])).requires_grad_(True)


def test_clipped_policy_loss_by_hand():
    lp = new_logprobs()
    loss, m = policy_loss(lp, torch.zeros(1, 4), ADV, MASK, num_tokens=3, clip_ratio=0.2)
    # t0: A=1,  rho=1.5: max(-1.5, -1.2) = -1.2   (clipped)
    # t1: A=-1, rho=0.5: max( 0.5,  0.8) =  0.8   (clipped)
    # t2: A=2,  rho=1.1: max(-2.2, -2.2) = -2.2   (inside the clip range)
    # t3 masked.  loss = (-1.2 + 0.8 - 2.2) / 3
    assert loss.item() == pytest.approx(-2.6 / 3)
    assert m["actor/clip_frac"].item() == pytest.approx(2 / 3)
    assert m["actor/ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    # k3 of KL(old || new) per token: rho - 1 - log rho
    k3 = sum(r - 1 - math.log(r) for r in RATIOS[:3]) / 3
    assert m["actor/approx_kl"].item() == pytest.approx(k3)
    loss.backward()
    # d l_t / d logprob_t = -A_t * rho_t / N where unclipped, 0 where clipped; t2: -2 * 1.1 / 3
    assert lp.grad.tolist()[0] == pytest.approx([0.0, 0.0, -2.2 / 3, 0.0])


def test_asymmetric_clip():
    loss, _ = policy_loss(new_logprobs(), torch.zeros(1, 4), ADV, MASK, 3, clip_ratio=0.2, clip_ratio_high=0.6)
    # t0: rho 1.5 now inside [0.8, 1.6]: -1.5; t1 and t2 as before: (-1.5 + 0.8 - 2.2) / 3
    assert loss.item() == pytest.approx(-2.9 / 3)


def test_dual_clip_bounds_negative_advantages():
    lp = torch.log(torch.tensor([[5.0, 0.5]])).requires_grad_(True)
    adv = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = policy_loss(lp, torch.zeros(1, 2), adv, mask, 2, clip_ratio=0.2, dual_clip=3.0)
    # t0: max(5, 1.2) = 5, then min(5, -A*c = 3) = 3;  t1: max(0.5, 0.8) = 0.8 < 3 stays
    assert loss.item() == pytest.approx((3.0 + 0.8) / 2)
    plain, _ = policy_loss(lp, torch.zeros(1, 2), adv, mask, 2, clip_ratio=0.2)
    assert plain.item() == pytest.approx((5.0 + 0.8) / 2)
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([0.0, 0.0])


def test_importance_weights_scale_each_token():
    w = torch.tensor([[2.0, 1.0, 0.5, 7.0]])
    loss, _ = policy_loss(new_logprobs(), torch.zeros(1, 4), ADV, MASK, 3, is_weights=w)
    # (-1.2 * 2 + 0.8 * 1 - 2.2 * 0.5) / 3 ; the masked token's weight does not matter
    assert loss.item() == pytest.approx(-2.7 / 3)


def test_clipped_value_loss_by_hand():
    v = torch.tensor([[1.0, 0.0, 2.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5]])
    ret = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, m = value_loss(v, old, ret, mask, 3, value_clip=0.2)
    # t0: (1-2)^2 = 1;  v_clip = 0.5 + 0.2 = 0.7, (0.7-2)^2 = 1.69  -> 0.5 * 1.69 = 0.845 (clipped)
    # t1: (0-1)^2 = 1;  v_clip = 0.3, (0.3-1)^2 = 0.49             -> 0.5
    # t2: (2-0)^2 = 4;  v_clip = 0.7, 0.49                         -> 2.0
    assert loss.item() == pytest.approx((0.845 + 0.5 + 2.0) / 3)
    assert m["critic/vf_clip_frac"].item() == pytest.approx(1 / 3)
    assert m["critic/vpred_mean"].item() == pytest.approx(1.0)
    loss.backward()
    # clipped t0: no gradient; t1: (v - R) / N = -1/3; t2: 2/3
    assert v.grad.tolist()[0] == pytest.approx([0.0, -1 / 3, 2 / 3])
    unclipped, _ = value_loss(v, old, ret, mask, 3, value_clip=None)
    assert unclipped.item() == pytest.approx(0.5 * (1 + 1 + 4) / 3)


def test_kl_estimators_by_hand():
    lp, ref = torch.log(torch.tensor([[0.5]])), torch.log(torch.tensor([[0.25]]))
    # log r = log(0.25 / 0.5) = -log 2;  k1 = log 2;  k3 = r - 1 - log r = 0.5 - 1 + log 2
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(math.log(2) - 0.5)
    loss, m = kl_loss(lp.expand(1, 2), ref.expand(1, 2), torch.tensor([[True, False]]), 2, "k1")
    assert loss.item() == pytest.approx(math.log(2) / 2) and "actor/kl" in m
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(lp, ref, "k2")


def test_entropy_term_and_actor_composition():
    ent = torch.tensor([[1.0, 3.0, 2.0, 100.0]])
    e, _ = entropy_loss(ent, MASK, 3)
    assert e.item() == pytest.approx(2.0)
    cfg = PPOConfig(entropy_coef=0.1, kl_coef=0.5, kl_estimator="k1")
    ref = torch.zeros(1, 4)
    loss, m = actor_loss(cfg, new_logprobs(), torch.zeros(1, 4), ADV, MASK, 3, entropy=ent, ref_logprobs=ref)
    kl = sum(math.log(r) for r in RATIOS[:3]) / 3  # k1 against ref log-probs 0
    assert loss.item() == pytest.approx(-2.6 / 3 + 0.5 * kl - 0.1 * 2.0)
    assert m["actor/loss"].item() == pytest.approx(loss.item())
    with pytest.raises(ValueError, match="ref_logprobs"):
        actor_loss(cfg, new_logprobs(), torch.zeros(1, 4), ADV, MASK, 3, entropy=ent)
    c, cm = critic_loss(PPOConfig(value_clip=None), torch.ones(1, 4), torch.ones(1, 4), torch.zeros(1, 4), MASK, 3)
    assert c.item() == pytest.approx(0.5) and "critic/vf_loss" in cm


def test_truncated_importance_weights_by_hand():
    old = torch.zeros(1, 4)
    rollout = torch.log(torch.tensor([[2.0, 1.0, 0.25, 0.1]]))
    mask = torch.tensor([[True, True, True, False]])
    w, m = truncated_is_weights(old, rollout, mask, cap=2.0)
    # ratios exp(old - rollout) = [0.5, 1, 4, 10]; capped at 2; masked entry weight 1
    assert w.tolist()[0] == pytest.approx([0.5, 1.0, 2.0, 1.0])
    assert m["actor/is_ratio_mean"].item() == pytest.approx((0.5 + 1 + 4) / 3)
    assert m["actor/is_ratio_max"].item() == pytest.approx(4.0)
    assert m["actor/is_capped_frac"].item() == pytest.approx(1 / 3)
    assert m["actor/rollout_logprob_diff"].item() == pytest.approx((math.log(2) + 0 + math.log(4)) / 3)
    huge, _ = truncated_is_weights(torch.tensor([[500.0]]), torch.tensor([[0.0]]), torch.ones(1, 1, dtype=torch.bool), 3.0)
    assert huge.item() == 3.0
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, rollout, mask, cap=0.5)


@pytest.mark.parametrize("field,value", [("clip_ratio", 0.0), ("dual_clip", 1.0), ("value_clip", -1.0),
                                         ("gamma", 1.5), ("gae_lambda", -0.1), ("kl_coef", -1.0),
                                         ("kl_estimator", "k9"), ("entropy_coef", -0.5), ("is_cap", 0.9)])
def test_ppo_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"ppo.{field}"):
        PPOConfig(**{field: value})


def test_num_tokens_must_be_positive():
    with pytest.raises(ValueError, match="num_tokens"):
        policy_loss(new_logprobs(), torch.zeros(1, 4), ADV, MASK, num_tokens=0)


def test_compute_advantages_places_reward_runs_gae_and_whitens_on_request():
    mask = torch.tensor([[False, True, True], [False, True, False]])
    values = torch.tensor([[0.0, 0.25, 0.5], [0.0, 0.5, 0.0]])
    adv, ret = compute_advantages(PPOConfig(), torch.tensor([1.0, 0.0]), values, mask)
    # lambda = gamma = 1: A = R - V: row 0: 1 - 0.25, 1 - 0.5; row 1: 0 - 0.5
    assert adv.tolist() == [[0.0, 0.75, 0.5], [0.0, -0.5, 0.0]]
    assert ret.tolist() == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    w, ret_w = compute_advantages(PPOConfig(whiten_advantages=True), torch.tensor([1.0, 0.0]), values, mask)
    # mean of (0.75, 0.5, -0.5) = 0.25; unbiased var = (0.25 + 0.0625 + 0.5625) / 2 = 0.4375
    sd = 0.4375 ** 0.5
    assert w[mask].tolist() == pytest.approx([0.5 / sd, 0.25 / sd, -0.75 / sd], rel=1e-6)
    assert torch.equal(ret_w, ret)
