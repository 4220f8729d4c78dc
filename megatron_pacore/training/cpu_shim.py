"""CPU-only device shim that lets Megatron-Core run on a machine without CUDA (DESIGN.md §3).

This module exists for tests, CI and laptops. It is activated by `activate()`, which
`training.parallel.initialize_parallel` calls only for a run whose config asks for the CPU
device, and `activate()` refuses to do anything when CUDA is available: on a GPU machine the
shim is never active.

What it changes, and why (each measured on torch 2.13 CPU + megatron-core 0.16.1):

1. `torch.cuda.current_device()` returns "cpu": rotary embeddings, the pipeline schedules and
   others pass it as a `device=` argument.
2. CUDA RNG: Megatron's `_get_cuda_rng_state` / `_set_cuda_rng_state` and
   `torch.cuda.manual_seed` / `get_rng_state` / `set_rng_state` map to the CPU generator, so
   the model-parallel RNG tracker ("model-parallel-rng") can be created and forked.
3. A `TorchFunctionMode` that rewrites `device="cuda"` (and `Tensor.cuda()`, `.to("cuda")`)
   to the CPU for tensors created inside the schedules and the optimizer.
4. Activation recomputation re-runs layers inside autograd's backward, where the mode of (3)
   is not in effect; Megatron's recompute entry points (`CheckpointFunction.backward`,
   `CheckpointWithoutOutput._recompute`) are wrapped to enter it again.

Not covered: `clip_grad_by_total_norm_fp32` asserts CUDA tensors; CPU runs set clip_grad=0
in Megatron's optimizer config and clip with their own code.
"""
from __future__ import annotations

import threading

import torch
from torch.overrides import TorchFunctionMode

_lock = threading.Lock()
_state: dict = {}


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int)  # a bare CUDA ordinal


class CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments to the CPU for every torch call made under it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


def _cpu_current_device() -> str:
    return "cpu"


def _get_rng_state(*_args, **_kwargs) -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(new_state: torch.Tensor, *_args, **_kwargs) -> None:
    torch.set_rng_state(new_state)


def _manual_seed(seed: int) -> None:
    # Not torch.manual_seed: that calls torch.cuda.manual_seed_all again.
    torch.default_generator.manual_seed(int(seed))


def _in_mode(fn):
    """fn, run under CudaToCpuMode (for code that autograd's backward runs)."""
    def wrapped(*args, **kwargs):
        with CudaToCpuMode():
            return fn(*args, **kwargs)

    wrapped.__wrapped__ = fn
    return wrapped


def is_active() -> bool:
    """True when the shim is installed in this process."""
    return bool(_state)


def activate() -> None:
    """Install the shim in this process (idempotent).

    Raises:
        RuntimeError: CUDA is available; the shim must never run on a GPU machine.
    """
    if torch.cuda.is_available():
        raise RuntimeError("cpu_shim.activate() called on a machine with CUDA; use device='cuda'")
    with _lock:
        if _state:
            return
        from megatron.core.tensor_parallel import random as mpu_random

        _state["torch.cuda"] = {
            name: getattr(torch.cuda, name)
            for name in ("current_device", "get_rng_state", "set_rng_state", "manual_seed",
                         "synchronize")
        }
        _state["mpu_random"] = {
            name: getattr(mpu_random, name) for name in ("_get_cuda_rng_state", "_set_cuda_rng_state")
        }
        torch.cuda.current_device = _cpu_current_device
        torch.cuda.get_rng_state = _get_rng_state
        torch.cuda.set_rng_state = _set_rng_state
        torch.cuda.manual_seed = _manual_seed
        torch.cuda.synchronize = lambda *a, **k: None
        mpu_random._get_cuda_rng_state = _get_rng_state
        mpu_random._set_cuda_rng_state = _set_rng_state
        _state["recompute"] = {
            (mpu_random.CheckpointFunction, "backward"): mpu_random.CheckpointFunction.backward,
            (mpu_random.CheckpointWithoutOutput, "_recompute"): mpu_random.CheckpointWithoutOutput._recompute,
        }
        mpu_random.CheckpointFunction.backward = staticmethod(_in_mode(mpu_random.CheckpointFunction.backward))
        mpu_random.CheckpointWithoutOutput._recompute = _in_mode(mpu_random.CheckpointWithoutOutput._recompute)
        mode = CudaToCpuMode()
        mode.__enter__()
        _state["mode"] = mode


def deactivate() -> None:
    """Undo `activate()` (tests that need a clean process state)."""
    with _lock:
        if not _state:
            return
        from megatron.core.tensor_parallel import random as mpu_random

        _state.pop("mode").__exit__(None, None, None)
        for name, fn in _state.pop("torch.cuda").items():
            setattr(torch.cuda, name, fn)
        for name, fn in _state.pop("mpu_random").items():
            setattr(mpu_random, name, fn)
        for (cls, name), fn in _state.pop("recompute").items():
            setattr(cls, name, staticmethod(fn) if name == "backward" else fn)
