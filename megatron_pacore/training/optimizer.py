"""Megatron DDP, optimizer and learning-rate schedule for one trained model (actor or critic).

    trainable = make_trainable(model, groups, OptimizerOptions(lr=2e-6), total_iters=700)
    ...forward/backward through training.update...
    metrics = trainable.step()        # clip, Adam step, schedule step: {"grad_norm", "lr", ...}

Megatron-Core pieces: `DistributedDataParallel` (gradient buffers, the DP all-reduce or
reduce-scatter in `finalize_model_grads`), `get_megatron_optimizer` (Adam over fp32 main
parameters; the distributed optimizer shards its states over DP ranks) and
`OptimizerParamScheduler` (warm-up, then constant / linear / cosine decay).

CPU (DESIGN §3): Megatron's `DistributedOptimizer` only wraps CUDA tensors, and
`clip_grad_by_total_norm_fp32` asserts CUDA tensors; on CPU the plain (non-distributed)
optimizer runs, and the step clips with `_clip_by_total_norm` below, using Megatron's own
global gradient norm (`get_grad_norm`, which is device-agnostic: it reduces over the model-
and data-parallel groups and skips tensor-parallel duplicates).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from megatron_pacore.training.option_checks import check_main_grad
from megatron_pacore.training.parallel import ParallelGroups

DECAY_STYLES = ("constant", "linear", "cosine")


@dataclass(kw_only=True)
class OptimizerOptions:
    """Adam and its learning-rate schedule for one model."""

    lr: float = 2e-6
    """Peak learning rate (the paper: actor 2e-6, critic 5e-6)."""
    min_lr: float = 0.0
    """Floor of the decay (linear / cosine)."""
    lr_warmup_iters: int = 0
    """Optimizer steps of linear warm-up from 0 to `lr`."""
    lr_decay_style: str = "constant"
    """After warm-up: constant, linear or cosine (down to min_lr at the last step)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); the paper's recipe uses none."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    distributed_optimizer: Optional[bool] = None
    """Shard optimizer states over data-parallel ranks; None = on CUDA yes, on CPU no
    (Megatron's DistributedOptimizer accepts CUDA tensors only)."""

    def __post_init__(self) -> None:
        for name in ("lr", "min_lr", "weight_decay", "adam_eps", "clip_grad"):
            if getattr(self, name) < 0:
                raise ValueError(f"optimizer.{name} must be >= 0, got {getattr(self, name)}")
        if self.min_lr > self.lr:
            raise ValueError(f"optimizer.min_lr ({self.min_lr}) must be <= optimizer.lr ({self.lr})")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"optimizer.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.lr_warmup_iters < 0:
            raise ValueError(f"optimizer.lr_warmup_iters must be >= 0, got {self.lr_warmup_iters}")
        if self.lr_decay_style not in DECAY_STYLES:
            raise ValueError(f"optimizer.lr_decay_style must be one of {DECAY_STYLES}, got {self.lr_decay_style!r}")


@dataclass
class Trainable:
    """A model wrapped for training: Megatron DDP module, optimizer and schedule."""

    module: Any
    """megatron.core DistributedDataParallel around this rank's model stage."""
    optimizer: Any
    """Megatron optimizer (ChainedOptimizer over the dense parameters)."""
    scheduler: Any
    """OptimizerParamScheduler; stepped once per optimizer step."""
    groups: ParallelGroups
    options: OptimizerOptions
    megatron_clips: bool
    """True when Megatron's optimizer clips (CUDA); False when `_clip_by_total_norm` does."""

    def zero_grad(self) -> None:
        self.module.zero_grad_buffer()
        self.optimizer.zero_grad()

    def step(self) -> dict[str, float]:
        """Clip, step the optimizer and the schedule. Returns grad_norm (before clipping), lr,
        and whether the step was applied (skipped on inf/nan gradients)."""
        if self.megatron_clips:
            ok, grad_norm, _ = self.optimizer.step()
        else:
            ok, grad_norm = _cpu_step(self.optimizer, self.options.clip_grad)
        lr = self.optimizer.param_groups[0]["lr"]
        if ok:
            self.scheduler.step(increment=1)
        return {"grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "lr": float(lr), "step_applied": float(bool(ok))}

    def state_dict(self) -> dict:
        """Optimizer and schedule state (the model's weights are saved separately)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _cpu_step(optimizer, clip_grad: float) -> tuple[bool, Optional[float]]:
    """ChainedOptimizer.step with the clipping done here (Megatron's asserts CUDA tensors)."""
    if optimizer.prepare_grads():  # found inf/nan: skip, as Megatron does
        return False, None
    grad_norm = optimizer.get_grad_norm()
    if clip_grad > 0:
        params = [p for opt in optimizer.chained_optimizers for p in opt.get_parameters()]
        _clip_by_total_norm(params, clip_grad, grad_norm)
    return optimizer.step_with_ready_grads(), grad_norm


def _clip_by_total_norm(params: list[torch.Tensor], max_norm: float, total_norm: float) -> None:
    """Scale every gradient by max_norm / total_norm when the global norm exceeds max_norm
    (the same coefficient, with the same 1e-6 guard, as Megatron's clip_grads)."""
    coeff = max_norm / (total_norm + 1.0e-6)
    if coeff < 1.0:
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coeff)


def make_trainable(model, groups: ParallelGroups, options: OptimizerOptions, total_iters: int) -> Trainable:
    """Wrap `model` (this rank's stage, built by training.models) for training.

    The model's TransformerConfig is switched to Megatron's per-token loss mode: loss
    functions return (sum of token losses, token count, metrics), DDP sums gradients over DP
    ranks and `finalize_model_grads` divides them by the global token count, so that every
    step optimises the token mean over the whole global batch (all micro-batches, all DP
    ranks), whatever the packing.
    """
    from megatron.core.distributed import (DistributedDataParallel, DistributedDataParallelConfig,
                                           finalize_model_grads)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    on_cuda = groups.config.device == "cuda"
    distributed = on_cuda if options.distributed_optimizer is None else options.distributed_optimizer
    if distributed and not on_cuda:
        raise ValueError("optimizer.distributed_optimizer=True needs parallel.device=cuda "
                         "(Megatron's DistributedOptimizer accepts CUDA tensors only)")
    config = model.config
    config.calculate_per_token_loss = True
    config.finalize_model_grads_func = finalize_model_grads
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=distributed,
        check_for_nan_in_grad=False)
    module = DistributedDataParallel(config, ddp_config, model)
    check_main_grad(config, module)  # TE's fused wgrad accumulation writes into main_grad
    dtype = config.params_dtype
    opt_config = OptimizerConfig(
        optimizer="adam", lr=options.lr, min_lr=options.min_lr, weight_decay=options.weight_decay,
        adam_beta1=options.adam_beta1, adam_beta2=options.adam_beta2, adam_eps=options.adam_eps,
        clip_grad=options.clip_grad if on_cuda else 0.0,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, params_dtype=dtype,
        use_distributed_optimizer=distributed)
    optimizer = get_megatron_optimizer(opt_config, [module])
    total = max(int(total_iters), options.lr_warmup_iters + 1)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0 if options.lr_warmup_iters else options.lr, max_lr=options.lr,
        min_lr=options.min_lr, lr_warmup_steps=options.lr_warmup_iters, lr_decay_steps=total,
        lr_decay_style=options.lr_decay_style, start_wd=options.weight_decay,
        end_wd=options.weight_decay, wd_incr_steps=total, wd_incr_style="constant")
    return Trainable(module=module, optimizer=optimizer, scheduler=scheduler, groups=groups,
                     options=options, megatron_clips=on_cuda)
