"""The optimizer options' checks and the CPU gradient clip (no Megatron process groups needed)."""
import pytest
import torch

from megatron_pacore.training.optimizer import OptimizerOptions, _clip_by_total_norm


def test_clip_scales_every_gradient_by_max_norm_over_total_norm():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # global norm 5
    _clip_by_total_norm([a, b], max_norm=1.0, total_norm=5.0)
    coeff = 1.0 / (5.0 + 1e-6)
    assert a.grad.tolist() == pytest.approx([3.0 * coeff, 0.0])
    assert b.grad.tolist() == pytest.approx([4.0 * coeff])


def test_clip_leaves_gradients_below_the_bound_alone():
    a = torch.zeros(2, requires_grad=True)
    a.grad = torch.tensor([0.3, 0.4])
    _clip_by_total_norm([a], max_norm=1.0, total_norm=0.5)
    assert a.grad.tolist() == pytest.approx([0.3, 0.4])


@pytest.mark.parametrize("field,value", [("lr", -1.0), ("clip_grad", -0.5), ("adam_beta2", 1.0),
                                         ("lr_decay_style", "step"), ("lr_warmup_iters", -1)])
def test_bad_option_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"optimizer.{field}"):
        OptimizerOptions(**{field: value})


def test_min_lr_above_lr_is_refused():
    with pytest.raises(ValueError, match="min_lr"):
        OptimizerOptions(lr=1e-6, min_lr=1e-5)
