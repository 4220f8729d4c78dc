"""Worker (2 gloo ranks): parameter, gradient and optimizer-state bytes of the real Megatron
actor and critic wrapped in Megatron DDP with the distributed optimizer, at TP=2 (dp=1) and
DP=2 (tp=1), fp32 and bf16, against `training.planner`'s estimates. Rank 0 writes
{layout/family/role/precision: {"measured": {...}, "estimated": {...}}} to --result."""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch
import torch.distributed as dist


@contextlib.contextmanager
def cuda_type_names():
    """DistributedOptimizer sorts parameters by `param.type()` and accepts only the names
    'torch.cuda.{Float,Half,BFloat16}Tensor'; on CPU report those names while it is built
    (the tensors stay where they are: only the type string changes)."""
    original = torch.Tensor.type

    def type_(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and self.device.type == "cpu":
            name = original(self)  # (re-entered once through the CPU shim's TorchFunctionMode)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        return original(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = type_
    try:
        yield
    finally:
        torch.Tensor.type = original


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(model, groups, precision: str) -> dict:
    """Bytes this rank holds: DDP's parameter and gradient buffers, and the optimizer's states
    (Adam moments) plus its fp32 main copies of 16-bit parameters, after state initialisation."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    ddp = DistributedDataParallel(
        config=model.config, module=model,
        ddp_config=DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True,
                                                 overlap_grad_reduce=False))
    with cuda_type_names():
        opt = get_megatron_optimizer(
            OptimizerConfig(optimizer="adam", lr=1e-5, bf16=precision == "bf16",
                            params_dtype=model.config.params_dtype, use_distributed_optimizer=True, clip_grad=0.0),
            [ddp])
    buffers = list(ddp.buffers) + list(ddp.expert_parallel_buffers)
    states = 0
    for sub in getattr(opt, "chained_optimizers", [opt]):
        sub.init_state_fn(sub.optimizer, sub.config)
        states += _bytes(t for st in sub.optimizer.state.values() for t in st.values() if torch.is_tensor(t))
        states += _bytes(t for group in getattr(sub, "shard_fp32_from_float16_groups", []) for t in group)
    from megatron_pacore.training.option_checks import check_main_grad
    from megatron_pacore.training.models import ModelOptions

    # DDP gave every parameter its main_grad: gradient_accumulation_fusion's requirement holds.
    check_main_grad(ModelOptions(gradient_accumulation_fusion=True), ddp)
    return {"params": _bytes(b.param_data for b in buffers), "grads": _bytes(b.grad_data for b in buffers),
            "optimizer": states}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", required=True)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    from transformers import AutoConfig

    from megatron_pacore.training.critic import build_critic
    from megatron_pacore.training.models import ModelOptions, build_actor
    from megatron_pacore.training.parallel import ParallelConfig, destroy_parallel, initialize_parallel
    from megatron_pacore.training.planner import Layout, ModelShape, PlanConfig, state_bytes

    models = json.loads(args.models)
    res = {}
    for tp in (2, 1):
        groups = initialize_parallel(ParallelConfig(tp=tp, device="cpu"))
        layout = Layout(tp=tp, pp=1, cp=1, dp=groups.dp)
        for family, path in models.items():
            hf = AutoConfig.from_pretrained(path)
            shape = ModelShape.from_hf(hf)
            for role, build in (("actor", build_actor), ("critic", build_critic)):
                for precision in ("fp32", "bf16"):
                    model, _info = build(hf, groups, ModelOptions(precision=precision))
                    est = state_bytes(shape, layout, PlanConfig(seq_len=16, precision=precision),
                                      critic=role == "critic")
                    res[f"tp{tp}_dp{groups.dp}/{family}/{role}/{precision}"] = {
                        "measured": measure(model, groups, precision), "estimated": est}
    if dist.get_rank() == 0:
        Path(args.result).write_text(json.dumps(res))
    destroy_parallel()


if __name__ == "__main__":
    main()
