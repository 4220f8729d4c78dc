"""`TrainConfig`: the PPO trainer's config tree (YAML + dotted overrides through load_config).

    TrainConfig
      model       ModelConfig        initial policy (HF dir) + training.models.ModelOptions
      parallel    ParallelConfig     tp, pp, cp, device (training.parallel)
      sampler     SamplerConfig      problems per iteration, |M| range, samples, temperature
      rollout     RolloutConfig      response max_tokens/top_p, engine, weight sync
      reward      RewardConfig       strict math, code reward, grader pools
      ppo         PPOConfig          clip ratios, value clip, GAE gamma/lambda, KL, entropy, IS cap
      actor_optimizer / critic_optimizer   OptimizerOptions (paper: lr 2e-6 / 5e-6)
      packing     PackingOptions     micro-batch token budget
      stages      [StageConfig]      curriculum: name, data file, iterations
      checkpoint  CheckpointConfig   save_every, keep_last, dir
      logging     LoggingConfig      run dir, TensorBoard, W&B, plot cadence
      seed, deterministic, resume

Every part checks its own fields in `__post_init__` (errors name `part.field`); this module
adds only the checks that span parts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from megatron_pacore.algorithms.ppo import PPOConfig
from megatron_pacore.checkpoint.trainer_state import CheckpointConfig
from megatron_pacore.inference.rollout_types import WeightSyncConfig
from megatron_pacore.data.sampler import SamplerConfig
from megatron_pacore.rewards.reward_fn import RewardConfig
from megatron_pacore.tracking import LoggingConfig
from megatron_pacore.types import SamplingSettings
from megatron_pacore.training.models import ModelOptions
from megatron_pacore.training.optimizer import OptimizerOptions
from megatron_pacore.training.parallel import ParallelConfig
from megatron_pacore.training.ppo_step import PackingOptions


@dataclass(frozen=True, kw_only=True)
class ModelConfig(ModelOptions):
    """The initial policy, and how Megatron builds the actor and the critic from it: the
    builder's own `ModelOptions` (precision, TE, FP8, recompute; checked there) and the fields
    only the trainer reads. A subclass rather than a nested part so that the YAML's `model:`
    stays one flat mapping."""

    path: str = ""
    """Hugging Face checkpoint directory of the initial policy (actor; the critic's backbone)."""
    critic_head_seed: int = 0
    """Seed of the critic's value-head initialisation."""
    hf_overrides: dict[str, Any] = field(default_factory=dict)
    """Fields set on the Hugging Face config for Megatron AND vLLM, e.g. YaRN:
    {rope_parameters: {rope_type: yarn, factor: 4.0, original_max_position_embeddings: 32768},
    max_position_embeddings: 131072}."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("model.path is required (a Hugging Face checkpoint directory)")
        super().__post_init__()


@dataclass(kw_only=True)
class RolloutConfig:
    """The colocated vLLM engine and what each response may be (temperature: sampler's)."""

    max_tokens: int = 1024
    """Most tokens of one response (paper: up to the 131072-token context)."""
    top_p: float = 1.0
    """Nucleus sampling of the rollout."""
    max_model_len: Optional[int] = None
    """Prompt + response bound of the engine; None = the model's context."""
    dtype: str = "auto"
    """Engine dtype; auto = the actor's (model.precision), so that weight sync is exact."""
    gpu_memory_utilization: float = 0.5
    """GPU share vLLM may take beside the actor and critic."""
    enable_sleep_mode: Optional[bool] = None
    """Free the engine's memory during updates; None = on CUDA yes, on CPU no."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """More vllm.LLM arguments, e.g. hf_overrides for YaRN."""
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    """How the actor's weights reach the engine after every update."""

    def __post_init__(self) -> None:
        # max_tokens and top_p are SamplingSettings' limits, checked there alone; its errors
        # start with the field's name, which is rollout.<name> here.
        try:
            self.sampling(temperature=1.0)
        except ValueError as e:
            raise ValueError(f"rollout.{e}") from None

    def sampling(self, temperature: float) -> SamplingSettings:
        """What each rollout sample is asked for, at the sampler's `temperature`."""
        return SamplingSettings(max_tokens=self.max_tokens, temperature=temperature, top_p=self.top_p)


@dataclass(kw_only=True)
class StageConfig:
    """One curriculum stage."""

    name: str = ""
    """Shown in logs and stored in checkpoints (e.g. stage1)."""
    data: str = ""
    """Training records (JSONL or Parquet, data.train_records)."""
    iterations: int = 0
    """PPO iterations of this stage (paper: 250 then 450)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("stages[].name is required")
        if not self.data:
            raise ValueError(f"stages[{self.name}].data is required (a JSONL or Parquet file of training records)")
        if self.iterations < 1:
            raise ValueError(f"stages[{self.name}].iterations must be >= 1, got {self.iterations}")


@dataclass(kw_only=True)
class TrainConfig:
    """`torchrun examples/pacore_ppo.py --config FILE.yaml key=value ...`."""

    model: ModelConfig
    """Initial policy and Megatron model options."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Megatron's layout; the colocated vLLM engine's tensor parallelism is parallel.tp."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Problems, message sets and samples per iteration."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Generation engine and weight sync."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Graders (strict math by default)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO objective and GAE."""
    actor_optimizer: OptimizerOptions = field(default_factory=lambda: OptimizerOptions(lr=2e-6))
    """Actor Adam and schedule (paper: lr 2e-6)."""
    critic_optimizer: OptimizerOptions = field(default_factory=lambda: OptimizerOptions(lr=5e-6))
    """Critic Adam and schedule (paper: lr 5e-6)."""
    packing: PackingOptions = field(default_factory=PackingOptions)
    """Micro-batch packing."""
    stages: list[StageConfig] = field(default_factory=list)
    """The curriculum, in order."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and place."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Run directory and metric sinks."""
    seed: int = 0
    """Seed of torch/NumPy/Python RNGs and of the rollout engine's sampling; also added to
    parallel.seed (Megatron's model-parallel RNG)."""
    deterministic: bool = False
    """Deterministic torch kernels (CPU runs reproduce exactly; GPU runs slower)."""
    resume: bool = False
    """Continue from the newest checkpoint in checkpoint.dir (a fresh start if none)."""
    ppo_epochs: int = 1
    """Optimizer passes over each rollout batch (1 = strict on-policy, the paper)."""
    critic_warmup_iters: int = 0
    """Iterations that update only the critic before the actor starts."""

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages]
        if not self.stages:
            raise ValueError("stages must list at least one curriculum stage (name, data, iterations)")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must be unique, got {names}")
        if self.ppo_epochs < 1:
            raise ValueError(f"ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.critic_warmup_iters < 0:
            raise ValueError(f"critic_warmup_iters must be >= 0, got {self.critic_warmup_iters}")
        if self.rollout.weight_sync.backend != "reload":
            raise ValueError(f"rollout.weight_sync.backend={self.rollout.weight_sync.backend}: this trainer runs the "
                             "colocated engine inside its own processes, which loads the actor's tensors in place "
                             "(reload, CPU and GPU); ipc/nccl send to an engine in other processes or nodes "
                             "(inference.transfer), the disaggregated placement")
        if not self.checkpoint.dir:
            self.checkpoint.dir = f"{self.logging.dir}/checkpoints"

    @property
    def total_iterations(self) -> int:
        return sum(s.iterations for s in self.stages)

    def stage_at(self, iteration: int) -> tuple[int, StageConfig]:
        """(index, stage) of 1-based `iteration`."""
        end = 0
        for i, s in enumerate(self.stages):
            end += s.iterations
            if iteration <= end:
                return i, s
        raise ValueError(f"iteration {iteration} is past the curriculum's {self.total_iterations}")
