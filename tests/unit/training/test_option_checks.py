"""Option combinations refused at config time, each error naming the fields involved."""
import importlib.util

import pytest
import torch

from megatron_pacore.training.models import ModelOptions
from megatron_pacore.training.option_checks import check_layout, check_main_grad
from megatron_pacore.training.parallel import ParallelConfig


@pytest.mark.parametrize("kwargs", [
    dict(fp8="hybrid", fp8_recipe="tensorwise", fp8_margin=2),
    dict(fp8="e4m3", fp8_recipe="mxfp8", fp8_amax_history_len=16),
    dict(fp8="hybrid", fp8_recipe="blockwise", fp8_amax_compute_algo="most_recent"),
    dict(fp8=None, fp8_margin=1)])
def test_delayed_scaling_fields_are_refused_where_they_would_be_ignored(kwargs):
    changed = next(k for k in kwargs if k.startswith("fp8_") and k != "fp8_recipe")
    with pytest.raises(ValueError, match=f"model.{changed}=.*fp8_recipe='delayed'"):
        ModelOptions(**kwargs)


def test_delayed_scaling_fields_are_accepted_with_the_delayed_recipe():
    opts = ModelOptions(fp8="hybrid", fp8_recipe="delayed", fp8_margin=2, fp8_amax_history_len=16)
    assert opts.fp8_margin == 2
    ModelOptions(fp8="hybrid", fp8_recipe="tensorwise")  # defaults untouched: fine


def test_fp32_with_context_parallelism_is_refused():
    with pytest.raises(ValueError, match=r"model.precision='fp32' with parallel.cp=2"):
        check_layout(ModelOptions(precision="fp32"), ParallelConfig(cp=2), (9, 0))
    check_layout(ModelOptions(precision="bf16"), ParallelConfig(cp=2), (9, 0))
    check_layout(ModelOptions(precision="fp32"), ParallelConfig(cp=1), (9, 0))


def test_mxfp8_needs_blackwell():
    opts = ModelOptions(fp8="e4m3", fp8_recipe="mxfp8")
    with pytest.raises(ValueError, match=r"model.fp8_recipe='mxfp8' needs compute capability >= 10.0.*9.0"):
        check_layout(opts, ParallelConfig(), (9, 0))
    check_layout(opts, ParallelConfig(), (10, 0))
    check_layout(ModelOptions(fp8="e4m3", fp8_recipe="delayed"), ParallelConfig(), (9, 0))


def test_gradient_accumulation_fusion_needs_apex_kernel_on_gpu():
    opts = ModelOptions(gradient_accumulation_fusion=True)
    if importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is None:
        with pytest.raises(ValueError, match="model.gradient_accumulation_fusion=True needs NVIDIA apex"):
            check_layout(opts, ParallelConfig(), (9, 0))
    else:
        check_layout(opts, ParallelConfig(), (9, 0))
    check_layout(opts, ParallelConfig(device="cpu"), None)  # CPU: the flag is off there anyway


def test_gradient_accumulation_fusion_needs_main_grad_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opts = ModelOptions(gradient_accumulation_fusion=True)
    with pytest.raises(ValueError, match=r"4 parameters \(first: 0.weight\) have no main_grad"):
        check_main_grad(opts, model)
    check_main_grad(ModelOptions(), model)  # flag off: nothing needed
    for p in model.parameters():  # what Megatron DDP does: a main_grad view per parameter
        p.main_grad = torch.zeros_like(p)
    check_main_grad(opts, model)
