"""Option combinations that Megatron-Core or Transformer Engine would ignore or crash on,
refused when the config is built (each ValueError names the fields and says what to change).

    check_model_options(opts)                          # ModelOptions.__post_init__
    check_layout(opts, parallel, capability=(9, 0))    # transformer_config: device known
    check_main_grad(opts, model)                       # after wrapping, before training

Why each rule:
- fp8_margin / fp8_amax_history_len / fp8_amax_compute_algo only parameterise TE's
  DelayedScaling; Megatron's `get_fp8_recipe` builds Float8CurrentScaling, Float8BlockScaling
  and MXFP8BlockScaling from the format alone, so under other recipes (or without fp8) they
  are silently dropped.
- fp32 with cp > 1: Megatron's CP attention is TE's DotProductAttention with its flash or
  fused backends, none of which takes fp32 inputs; the unfused backend has no CP.
- mxfp8 needs Blackwell (compute capability >= 10.0); H100/H200 are 9.0.
- gradient_accumulation_fusion: TE (and Megatron's own linear layers) accumulate weight
  gradients straight into `param.main_grad`, which only Megatron's DistributedDataParallel
  allocates; the output layer (a Megatron ColumnParallelLinear even in the TE spec) also
  needs apex's `fused_weight_gradient_mlp_cuda` kernel.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Optional

DELAYED_ONLY = ("fp8_margin", "fp8_amax_history_len", "fp8_amax_compute_algo")


def _defaults(opts: Any) -> dict:
    return {f.name: f.default for f in dataclasses.fields(opts)}


def check_model_options(opts: Any) -> None:
    """Rules that need only the model options (a `training.models.ModelOptions`)."""
    defaults = _defaults(opts)
    changed = [n for n in DELAYED_ONLY if getattr(opts, n) != defaults[n]]
    if changed and (opts.fp8 is None or opts.fp8_recipe != "delayed"):
        where = "without model.fp8" if opts.fp8 is None else f"with model.fp8_recipe={opts.fp8_recipe!r}"
        fields = ", ".join(f"model.{n}={getattr(opts, n)!r}" for n in changed)
        raise ValueError(f"{fields} only apply to model.fp8_recipe='delayed' with model.fp8 set; "
                         f"{where} they would be ignored: remove them or use the delayed recipe")


def check_layout(opts: Any, parallel: Any, capability: Optional[tuple[int, int]] = None) -> None:
    """Rules that need the parallel layout and the device.

    parallel: a `training.parallel.ParallelConfig`. capability: the GPU's compute capability
    (`torch.cuda.get_device_capability()`), None on CPU.
    """
    if opts.precision == "fp32" and parallel.cp > 1:
        raise ValueError(f"model.precision='fp32' with parallel.cp={parallel.cp}: no Transformer "
                         "Engine attention backend runs fp32 under context parallelism; use "
                         "model.precision=bf16 (or fp16), or parallel.cp=1")
    if opts.fp8 and opts.fp8_recipe == "mxfp8" and capability is not None and tuple(capability) < (10, 0):
        major, minor = capability
        raise ValueError(f"model.fp8_recipe='mxfp8' needs compute capability >= 10.0 (Blackwell); "
                         f"this GPU is {major}.{minor} (H100/H200 are 9.0): use 'delayed', "
                         "'tensorwise' or 'blockwise'")
    if opts.gradient_accumulation_fusion and capability is not None and \
            importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is None:
        raise ValueError("model.gradient_accumulation_fusion=True needs NVIDIA apex's "
                         "fused_weight_gradient_mlp_cuda extension (in the NGC PyTorch image), "
                         "which is not installed; set model.gradient_accumulation_fusion=false")


def check_main_grad(opts: Any, model: Any) -> None:
    """gradient_accumulation_fusion needs every trainable parameter to carry `main_grad`,
    which Megatron's DistributedDataParallel allocates: call after wrapping, before training.

    opts: `ModelOptions` or the model's TransformerConfig (both carry the flag).
    model: the model as it will be trained (a Megatron DDP wrapper or a bare module).
    """
    if not opts.gradient_accumulation_fusion:
        return
    missing = [n for n, p in model.named_parameters() if p.requires_grad and not hasattr(p, "main_grad")]
    if missing:
        raise ValueError(f"model.gradient_accumulation_fusion=True, but {len(missing)} parameters "
                         f"(first: {missing[0]}) have no main_grad: wrap the model in "
                         "megatron.core.distributed.DistributedDataParallel before training, or "
                         "set model.gradient_accumulation_fusion=false")
