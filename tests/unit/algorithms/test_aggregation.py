"""Token-level normalisation over the global batch: micro-batch losses (and gradients) summed
over micro-batches and data-parallel ranks equal the token mean of the whole batch."""
import pytest
import torch

from megatron_pacore.algorithms.losses import policy_loss, value_loss


def batch(lengths, seed=0):
    """Padded [b, s] tensors of sequences with the given response lengths."""
    g = torch.Generator().manual_seed(seed)
    b, s = len(lengths), max(lengths)
    mask = torch.zeros(b, s, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    return mask, torch.randn(b, s, generator=g), torch.randn(b, s, generator=g) * 0.1, torch.randn(b, s, generator=g)


def test_hand_example_micro_batch_sum_is_the_token_mean():
    # Two micro-batches: one of 1 token with loss 3 and one of 3 tokens with losses 1, 1, 1.
    # Token mean of the batch: (3 + 1 + 1 + 1) / 4 = 1.5; a mean of micro-batch means gives
    # (3 + 1) / 2 = 2.
    v1, r1 = torch.tensor([[0.0]]), torch.tensor([[6.0 ** 0.5]])        # 0.5 * 6 = 3
    v2, r2 = torch.zeros(1, 3), torch.full((1, 3), 2.0 ** 0.5)           # 0.5 * 2 = 1 each
    m1, m2 = torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool)
    l1, _ = value_loss(v1, v1, r1, m1, 4, value_clip=None)
    l2, _ = value_loss(v2, v2, r2, m2, 4, value_clip=None)
    assert (l1 + l2).item() == pytest.approx(1.5)


@pytest.mark.parametrize("split", [[[0], [1, 2], [3]], [[0, 1, 2, 3]], [[3], [0], [1], [2]]])
def test_sum_over_micro_batches_and_ranks_equals_whole_batch(split):
    lengths = [7, 2, 5, 1]
    mask, logits, old, adv = batch(lengths)
    n = int(mask.sum())

    # The whole batch at once: token mean of the per-token loss.
    theta = logits.clone().requires_grad_(True)
    whole, _ = policy_loss(theta, old, adv, mask, n)
    whole.backward()
    # Reference: explicit mean over the 15 response tokens of max(-A r, -A clip(r)).
    ratio = torch.exp(logits - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    assert whole.item() == pytest.approx(per_token[mask].mean().item(), rel=1e-6)

    # The same batch split into micro-batches; each micro-batch's backward accumulates into
    # the gradient, as the pipeline schedule does (one parameter tensor shared by all rows).
    theta2 = logits.clone().requires_grad_(True)
    total = 0.0
    for rows in split:
        part, _ = policy_loss(theta2[rows], old[rows], adv[rows], mask[rows], n)
        part.backward()
        total += part.item()
    assert total == pytest.approx(whole.item(), rel=1e-6)
    torch.testing.assert_close(theta2.grad, theta.grad)


def test_data_parallel_ranks_sum_their_gradients():
    # Two "ranks" each holding a replica of the same parameters and half of the sequences:
    # an all-reduce SUM of their gradients equals the whole-batch gradient.
    lengths = [9, 1, 4, 4, 2]
    mask, _, _, ret = batch(lengths, seed=1)
    n = int(mask.sum())
    w = torch.tensor(0.3)
    x = torch.arange(mask.numel(), dtype=torch.float32).view(mask.shape) / 10

    def grad_of(rows):
        p = w.clone().requires_grad_(True)
        loss, _ = value_loss(p * x[rows], torch.zeros_like(x[rows]), ret[rows], mask[rows], n, value_clip=None)
        loss.backward()
        return loss.item(), p.grad

    whole_loss, whole_grad = grad_of([0, 1, 2, 3, 4])
    l0, g0 = grad_of([0, 1])
    l1, g1 = grad_of([2, 3, 4])
    assert l0 + l1 == pytest.approx(whole_loss, rel=1e-6)
    torch.testing.assert_close(g0 + g1, whole_grad)
    # By contrast, per-rank token means (num_tokens = the local count, 9 and 11 tokens)
    # averaged over ranks weight the tokens of the smaller rank more: a different loss.
    p = w.clone()
    local0, _ = value_loss(p * x[[0]], torch.zeros_like(x[[0]]), ret[[0]], mask[[0]], 9, value_clip=None)
    local1, _ = value_loss(p * x[1:], torch.zeros_like(x[1:]), ret[1:], mask[1:], n - 9, value_clip=None)
    assert (local0 + local1).item() / 2 != pytest.approx(whole_loss, rel=1e-3)
