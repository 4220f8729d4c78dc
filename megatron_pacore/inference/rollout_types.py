"""The rollout seam between the PPO trainer and its generation engine; imports no vllm.

    engine: RolloutEngine = ColocatedVLLM(RolloutEngineConfig(model=hf_dir, tensor_parallel_size=2),
                                          WeightSyncConfig(backend="reload"))
    samples = engine.generate(prompt_token_ids, SamplingSettings(max_tokens=256), n=8)
    engine.sleep()                                  # GPU: free memory for the update
    ... actor update ...
    stats = engine.sync_weights(export_buckets(actor, actor_info, groups, bucket_bytes=cfg.bucket_bytes))
    if cfg.check_weights:
        engine.check_weights(export_hf_tensors(actor, actor_info, groups))    # raises WeightMismatchError
    engine.wake()

The trainer renders chats with the tokenizer's chat template and hands the engine token ids;
the engine returns, per sample, the response token ids and the log-probability of each
sampled token under the distribution it sampled from (after temperature / top-p), which is
what the PPO ratio and the vLLM-vs-Megatron importance correction need.

Weight sync takes Hugging Face-named full tensors in buckets (what
`checkpoint.export.export_buckets` yields), so this package needs no Megatron. The object
`export_buckets` returns can also give each rank its own slices instead, which a colocated
engine of the actor's TP takes (`WeightSyncConfig.rank_shards`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Protocol, Sequence, runtime_checkable

import torch

from megatron_pacore.types import SamplingSettings

Bucket = list[tuple[str, torch.Tensor]]
"""One export bucket: (Hugging Face name, full tensor) pairs of bounded total bytes."""

SYNC_BACKENDS = ("reload", "ipc", "nccl")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class WeightSyncConfig:
    """How the actor's weights reach the rollout engine after every update."""

    backend: str = "reload"
    """'reload': the engine shares the trainer's processes (vLLM external launcher) and loads
    the tensors in place (CPU and GPU). 'ipc': vLLM's CUDA-IPC weight transfer to an engine
    in another process on the same GPUs. 'nccl': vLLM's NCCL weight transfer to an engine on
    other nodes (the disaggregated placement)."""
    bucket_bytes: int = 512 << 20
    """Upper bound of one export bucket (a single larger tensor travels alone)."""
    prefetch: bool = False
    """Export the next bucket (the actor's all-gathers) on a helper thread while the engine
    loads the current one; peak memory is then about three buckets instead of one. (On the
    2-core CPU machine it gained nothing measurable: both sides compete for the same cores.)"""
    check_weights: bool = False
    """After each sync compare every engine weight with the actor's (exact at equal dtype);
    a mismatch raises WeightMismatchError. Costs about one more export plus a read-back."""
    nccl_master_address: str = "127.0.0.1"
    """'nccl': address of the trainer rank that opens the transfer group (rank 0)."""
    nccl_master_port: int = 29650
    """'nccl': TCP port of the transfer group's rendezvous."""
    nccl_world_size: int = 0
    """'nccl': 1 (the sending trainer rank) + the number of vLLM workers; 0 = not set."""
    packed: bool = True
    """'ipc' / 'nccl': send through vLLM's packed (bucketed) buffers."""
    rank_shards: Optional[bool] = None
    """'reload': sync each rank's own shard, with no gather, when the engine's TP group is the
    actor's (same TP size, the same processes) and PP = 1 (`inference.shard_load`); otherwise
    the gather path (full tensors, vLLM's loaders slice them). None = automatic: per-rank
    wherever it applies on CPU, the gather path on CUDA (the per-rank path is written for
    both but measured on CPU only); True = per-rank, a ValueError where it cannot apply;
    False = always the gather path."""

    def __post_init__(self) -> None:
        if self.backend not in SYNC_BACKENDS:
            raise ValueError(f"weight_sync.backend must be one of {SYNC_BACKENDS}, got {self.backend!r}")
        if self.bucket_bytes < 1:
            raise ValueError(f"weight_sync.bucket_bytes must be >= 1, got {self.bucket_bytes}")
        if not 0 < self.nccl_master_port < 65536:
            raise ValueError(f"weight_sync.nccl_master_port must be a TCP port, got {self.nccl_master_port}")
        if self.rank_shards not in (None, True, False):
            raise ValueError(f"weight_sync.rank_shards must be true, false or null, got {self.rank_shards!r}")
        if self.backend == "nccl" and self.nccl_world_size < 2:
            raise ValueError(
                "weight_sync.nccl_world_size must be 1 + the number of vLLM workers (>= 2) with "
                f"backend='nccl', got {self.nccl_world_size}")


@dataclass(kw_only=True)
class RolloutEngineConfig:
    """The colocated vLLM engine: one per torchrun rank, all ranks forming one TP group."""

    model: str
    """Hugging Face checkpoint directory: architecture, tokenizer and initial weights."""
    tensor_parallel_size: int = 1
    """vLLM's TP size; equal to the actor's, so that each rank serves its own slice."""
    dtype: str = "auto"
    """Engine dtype: auto (the checkpoint's), float32, bfloat16 or float16. Weight sync is
    exact when it equals the actor's export dtype."""
    max_model_len: Optional[int] = None
    """Longest prompt + response in tokens; None = the model's."""
    gpu_memory_utilization: float = 0.5
    """GPU: share of memory vLLM may take (the actor lives beside it)."""
    enable_sleep_mode: Optional[bool] = None
    """Release weights and KV cache during updates (sleep level 1); None = on CUDA yes,
    on CPU no (the engine stays up and sleep/wake are no-ops)."""
    seed: int = 0
    """Engine sampling seed; every rank uses the same one, so all ranks sample alike."""
    enforce_eager: bool = True
    """No CUDA graphs / torch.compile (fast start; set False for long GPU runs)."""
    enable_prefix_caching: bool = True
    """Share the KV cache of the samples' common prompt."""
    show_progress: bool = True
    """A tqdm progress bar during generation (rank 0 only)."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """More `vllm.LLM` arguments, e.g. {"hf_overrides": {...}} for YaRN."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("rollout.model is required (a Hugging Face checkpoint directory)")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"rollout.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"rollout.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"rollout.max_model_len must be >= 2, got {self.max_model_len}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"rollout.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")


@dataclass(frozen=True)
class RolloutSample:
    """One sampled response to one prompt.

    `logprobs[t]` is log pi(response_token_ids[t] | prompt, response[:t]) under the
    distribution vLLM sampled from (temperature and top-p applied), one float per response
    token: len(logprobs) == len(response_token_ids).
    """

    prompt_index: int
    """Index of the prompt in the `generate` call."""
    sample_index: int
    """0 .. n-1 among the prompt's samples."""
    prompt_token_ids: Sequence[int]
    response_token_ids: list[int]
    logprobs: list[float]
    finish_reason: Optional[str]
    """'stop' (end of sequence / stop token), 'length' (max_tokens or context) or 'abort'."""
    text: str = ""
    """The detokenised response (for grading)."""


@dataclass(frozen=True)
class SyncStats:
    """What one weight sync moved and where its time went (seconds)."""

    buckets: int
    tensors: int
    bytes: int
    gather_s: float
    """Producing the buckets: the actor's TP all-gathers and layout transforms (with
    prefetch, overlapped with loading; `wait_s` is the part the engine waited for)."""
    wait_s: float
    """Time the engine waited for the next bucket (= gather_s without prefetch)."""
    load_s: float
    """The engine's weight loaders (slicing its TP part, copying into its parameters)."""
    repack_s: float
    """Post-load processing: the engine's kernel layouts (vLLM's CPU GEMM prepack), the tied
    lm_head refresh and the prefix-cache reset."""
    total_s: float
    """Wall time: wait_s + load_s + repack_s."""
    path: str = "gather"
    """'gather' (full tensors in buckets) or 'rank-shards' (each rank's own slices, streamed
    tensor by tensor: `buckets` is 0, `gather_s` is the conversion and the vocabulary's
    re-slice)."""


@dataclass(frozen=True)
class WeightCheck:
    """The result of a `check_weights` pass that found every weight equal."""

    tensors: int
    """Hugging Face tensors compared."""
    engine_tensors: int
    """Engine-side tensors compared (fused ones such as qkv count once)."""
    max_abs_diff: float
    method: str
    """How the engine's weights were read: 'parameters' or 'gemm-probe' (CPU: the prepacked
    GEMM applied to identity rows, i.e. exactly what the forward pass multiplies by)."""


class WeightMismatchError(RuntimeError):
    """An engine weight differs from the actor's after a sync; the message names it."""


@runtime_checkable
class WeightReceiver(Protocol):
    """An engine that takes the actor's weights after every update."""

    def sync_weights(self, buckets: Iterable[Bucket]) -> SyncStats:
        """Load Hugging Face-named full tensors, bucket by bucket, into the engine."""
        ...

    def check_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> WeightCheck:
        """Compare every engine weight with these; raise WeightMismatchError on a difference."""
        ...


@runtime_checkable
class RolloutEngine(WeightReceiver, Protocol):
    """What the PPO trainer needs from its generation engine."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings,
                 n: int = 1) -> list[RolloutSample]:
        """n samples of each token-id prompt, prompt-major (prompt i, sample j at i*n + j)."""
        ...

    def sleep(self) -> None:
        """Free the engine's accelerator memory for the update (a no-op where disabled)."""
        ...

    def wake(self) -> None:
        """Undo `sleep` before the next rollout (a no-op where disabled)."""
        ...

    def close(self) -> None: ...
