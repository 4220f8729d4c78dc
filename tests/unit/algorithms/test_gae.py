"""GAE, returns and whitening against values worked out by hand."""
import math

import pytest
import torch

from megatron_pacore.algorithms.gae import _gae_recursive, gae, masked_mean, place_reward, whiten

# One row: 2 prompt tokens (values there are junk and must not matter), 3 response tokens.
MASK = torch.tensor([[False, False, True, True, True]])
VALUES = torch.tensor([[9.0, 9.0, 0.5, 0.25, 0.75]])


def test_reward_goes_on_the_last_response_token():
    mask = torch.tensor([[False, True, True, False], [False, False, False, False], [True, False, True, True]])
    out = place_reward(torch.tensor([1.0, 5.0, -2.0]), mask)
    # row 0: last response token at 2; row 1: no response token, no reward; row 2: at 3.
    assert out.tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, -2]]


def test_lambda_gamma_one_gives_reward_minus_value():
    rewards = place_reward(torch.tensor([1.0]), MASK)
    adv, ret = gae(rewards, VALUES, MASK, gamma=1.0, lam=1.0)
    # A_t = R - V(s_t) = 1 - [0.5, 0.25, 0.75]; returns are R = 1 on every response token.
    assert adv.tolist() == [[0.0, 0.0, 0.5, 0.75, 0.25]]
    assert ret.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]


def test_discounted_gae_by_hand():
    rewards = place_reward(torch.tensor([1.0]), MASK)
    adv, ret = gae(rewards, VALUES, MASK, gamma=0.5, lam=0.5)
    # t=4: delta = 1 + 0.5*0 - 0.75 = 0.25;                  A4 = 0.25
    # t=3: delta = 0 + 0.5*0.75 - 0.25 = 0.125;              A3 = 0.125 + 0.25*0.25 = 0.1875
    # t=2: delta = 0 + 0.5*0.25 - 0.5 = -0.375;              A2 = -0.375 + 0.25*0.1875 = -0.328125
    # returns = A + V: 0.171875, 0.4375, 1.0
    assert adv.tolist() == [[0.0, 0.0, -0.328125, 0.1875, 0.25]]
    assert ret.tolist() == [[0.0, 0.0, 0.171875, 0.4375, 1.0]]


def test_masked_gap_and_trailing_padding_are_skipped():
    # Response tokens at 1 and 3 with a masked token between and padding after: the recursion
    # links 1 -> 3 directly, and 3 is terminal.
    mask = torch.tensor([[False, True, False, True, False]])
    values = torch.tensor([[7.0, 0.5, 100.0, 0.25, 100.0]])
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])
    adv, _ = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # t=3: delta = 1 - 0.25 = 0.75; A3 = 0.75
    # t=1: delta = 0 + 0.5*0.25 - 0.5 = -0.375; A1 = -0.375 + 0.5*0.75 = 0.0
    assert adv.tolist() == [[0.0, 0.0, 0.0, 0.75, 0.0]]


def test_closed_form_matches_the_recursion():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 12, generator=g) > 0.3
    values = torch.randn(4, 12, generator=g)
    rewards = torch.randn(4, 12, generator=g)
    fast = gae(rewards, values, mask, 1.0, 1.0)
    slow = _gae_recursive(rewards * mask, values * mask, mask, 1.0, 1.0)
    torch.testing.assert_close(fast[0], slow[0])
    torch.testing.assert_close(fast[1], slow[1])


def test_gae_checks_its_arguments():
    with pytest.raises(ValueError, match="gamma and lam"):
        gae(VALUES, VALUES, MASK, gamma=1.5)
    with pytest.raises(ValueError, match="same"):
        gae(VALUES[:, :4], VALUES, MASK)


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[True, True, True, False]])
    out = whiten(x, mask, eps=0.0)
    # mean 2, unbiased variance ((1)^2 + 0 + 1^2) / 2 = 1 -> [-1, 0, 1], masked entry 0
    assert out.tolist() == [[-1.0, 0.0, 1.0, 0.0]]
    kept = whiten(x, mask, shift_mean=False, eps=0.0)
    assert kept.tolist() == [[1.0, 2.0, 3.0, 0.0]]
    assert masked_mean(x, mask).item() == 2.0
    assert math.isclose(masked_mean(x, torch.zeros_like(mask)).item(), 0.0)
