"""Tensor, pipeline, context and data parallel groups, built from one config in one place.

    cfg = ParallelConfig(tp=2, pp=1, device="cpu")
    groups = initialize_parallel(cfg)       # after torchrun set RANK / WORLD_SIZE
    groups.config.device                    # 'cuda' or 'cpu': device='auto' is resolved here
    model, info = build_actor(hf_config, groups, ...)

Megatron-Core still keeps its groups in `megatron.core.parallel_state`; `ParallelGroups`
wraps them (and the `ProcessGroupCollection` that `GPTModel` takes) so that the rest of the
package receives groups as arguments rather than reaching for globals. The data parallel size
is what is left: world = tp * pp * cp * dp.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ParallelConfig:
    """Model-parallel layout of a training job (also the trainer's `parallel:` section)."""

    tp: int = 1
    """Tensor parallel size (splits heads, MLP columns and the vocabulary)."""
    pp: int = 1
    """Pipeline parallel size (splits the layers into stages)."""
    cp: int = 1
    """Context parallel size (splits the sequence inside attention)."""
    device: str = "auto"
    """'cuda' (NCCL, Transformer Engine), 'cpu' (gloo, local spec, cpu_shim) or 'auto' (cuda
    when available; resolved when the groups are built, see `resolved`)."""
    seed: int = 1234
    """Seed of Megatron's model-parallel RNG tracker."""
    timeout_minutes: int = 30
    """Collective timeout for the process groups."""

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel.{name} must be an integer >= 1, got {value!r}")
        if self.device not in DEVICES:
            raise ValueError(f"parallel.device must be one of {DEVICES}, got {self.device!r}")
        if self.timeout_minutes < 1:
            raise ValueError(f"parallel.timeout_minutes must be >= 1, got {self.timeout_minutes}")

    def resolved(self) -> ParallelConfig:
        """This layout with device 'auto' made concrete: cuda when available, else cpu."""
        if self.device != "auto":
            return self
        return replace(self, device="cuda" if torch.cuda.is_available() else "cpu")

    @property
    def model_parallel_size(self) -> int:
        """Ranks that hold one copy of the model: tp * pp * cp."""
        return self.tp * self.pp * self.cp


@dataclass(frozen=True)
class ParallelGroups:
    """The initialised layout of this rank; pass it to model builders and forward steps."""

    config: ParallelConfig
    world_size: int
    dp: int
    tp_rank: int
    pp_rank: int
    cp_rank: int
    dp_rank: int
    pg_collection: Any
    """megatron.core.process_groups_config.ProcessGroupCollection for GPTModel & co."""

    @property
    def tp_group(self):
        return self.pg_collection.tp

    @property
    def pp_group(self):
        return self.pg_collection.pp

    @property
    def cp_group(self):
        return self.pg_collection.cp

    @property
    def dp_group(self):
        return self.pg_collection.dp

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.config.pp - 1

    @property
    def device(self) -> torch.device:
        if self.config.device == "cpu":
            return torch.device("cpu")
        return torch.device("cuda", torch.cuda.current_device())


def init_process_group(cfg: ParallelConfig) -> None:
    """The default process group (gloo on CPU, NCCL on CUDA after selecting this rank's GPU,
    LOCAL_RANK); a world of one without torchrun. Nothing if already initialised."""
    if dist.is_initialized():
        return
    cfg = cfg.resolved()
    if "RANK" not in os.environ:
        # A single process without torchrun: a world of one.
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 20000))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    backend = "gloo" if cfg.device == "cpu" else "nccl"
    if cfg.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=cfg.timeout_minutes))


def initialize_parallel(cfg: ParallelConfig) -> ParallelGroups:
    """Initialise torch.distributed (if needed) and Megatron's TP/PP/CP/DP groups; the groups'
    config has its device resolved (`ParallelConfig.resolved`).

    Raises:
        ValueError: the world size is not a multiple of tp * pp * cp, or device='cuda'
            without CUDA.
    """
    cfg = cfg.resolved()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("parallel.device='cuda' but CUDA is not available; set parallel.device=cpu")
    if cfg.device == "cpu" and not torch.cuda.is_available():
        from megatron_pacore.training import cpu_shim

        cpu_shim.activate()
    init_process_group(cfg)
    world = dist.get_world_size()
    if world % cfg.model_parallel_size:
        raise ValueError(
            f"world size {world} is not a multiple of parallel.tp*pp*cp="
            f"{cfg.tp}*{cfg.pp}*{cfg.cp}; change the parallel sizes or the number of processes"
        )

    from megatron.core import parallel_state as mpu
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if mpu.model_parallel_is_initialized():
        mpu.destroy_model_parallel()
    mpu.initialize_model_parallel(
        tensor_model_parallel_size=cfg.tp,
        pipeline_model_parallel_size=cfg.pp,
        context_parallel_size=cfg.cp,
        distributed_timeout_minutes=cfg.timeout_minutes,
        create_gloo_process_groups=cfg.device == "cpu",
    )
    model_parallel_cuda_manual_seed(cfg.seed)
    pgs = ProcessGroupCollection.use_mpu_process_groups(
        required_pgs=["tp", "pp", "mp", "cp", "tp_cp", "embd", "pos_embd", "dp", "dp_cp", "tp_dp_cp"]
    )
    return ParallelGroups(
        config=cfg,
        world_size=world,
        dp=world // cfg.model_parallel_size,
        tp_rank=mpu.get_tensor_model_parallel_rank(),
        pp_rank=mpu.get_pipeline_model_parallel_rank(),
        cp_rank=mpu.get_context_parallel_rank(),
        dp_rank=mpu.get_data_parallel_rank(),
        pg_collection=pgs,
    )


def destroy_parallel() -> None:
    """Tear down Megatron's groups and the default process group."""
    from megatron.core import parallel_state as mpu

    if mpu.model_parallel_is_initialized():
        mpu.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
