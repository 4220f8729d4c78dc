"""Weight sync to a vLLM engine in other processes, through vLLM's weight-transfer API (GPU).

    source = ExportSource(lambda: export_hf_tensors(actor, actor_info, groups, dtype=torch.bfloat16))
    sender = TransferSender(WeightSyncConfig(backend="nccl", nccl_world_size=1 + n_workers),
                            client=HTTPVLLMWeightSyncClient("http://rollout-0:8000"),
                            source=source, rank=dist.get_rank())
    ... after every actor update, on every trainer rank:
    sender.send()

Two backends, both vLLM 0.32's own (`vllm.distributed.weight_transfer`):
- 'ipc' (CUDA IPC): the engine runs in another process on the trainer's GPUs (a vLLM server
  per node, or `vllm.LLM` whose engine core is its own process). Every trainer rank exports
  handles to its tensors; rank 0 sends them and the engine's workers map them. A process
  cannot open its own CUDA IPC handles, so the in-process engine (`ColocatedVLLM`, external
  launcher) loads tensors directly instead ('reload').
- 'nccl': the engine runs on other nodes (the disaggregated placement). Trainer rank 0
  opens a NCCL group with the engine's workers and broadcasts the tensors; the engine is
  started with `weight_transfer_config={"backend": "nccl"}`.
The other trainer ranks still iterate the source: the export's TP/PP all-gathers are
collectives. The engine side needs `weight_transfer_config=WeightTransferConfig(backend=...)`
(`engine_weight_transfer_args`).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from vllm.config import WeightTransferConfig
from vllm.distributed.weight_transfer import ParamMeta, WeightSource, WeightTransferTrainerFactory

from megatron_pacore.inference.rollout_types import WeightSyncConfig

TensorStream = Iterable[tuple[str, torch.Tensor]]


def engine_weight_transfer_args(sync: WeightSyncConfig) -> dict[str, Any]:
    """`vllm.LLM` / engine arguments that make an engine receive through `sync.backend`."""
    if sync.backend not in ("ipc", "nccl"):
        raise ValueError(f"weight_sync.backend={sync.backend!r} uses no vLLM weight-transfer engine")
    return {"weight_transfer_config": WeightTransferConfig(backend=sync.backend)}


class ExportSource(WeightSource):
    """A vLLM `WeightSource` over the actor's Hugging Face export.

    `make_stream()` returns a fresh stream of (HF name, full tensor) on every call, e.g.
    `lambda: export_hf_tensors(actor, actor_info, groups, dtype)`; all trainer ranks iterate it in
    lockstep. The metadata (names, dtypes, shapes) is learnt from the first pass and cached:
    the export's order and shapes do not change between syncs.
    """

    def __init__(self, make_stream: Callable[[], TensorStream]) -> None:
        self._make = make_stream
        self._meta: Optional[list[ParamMeta]] = None

    def metadata(self) -> list[ParamMeta]:
        if self._meta is None:
            self._meta = [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self._make()]
        return self._meta

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self._make())


class LLMWeightSyncClient:
    """vLLM's `VLLMWeightSyncClient` over a `vllm.LLM` of this process whose workers live in
    other processes (its engine core / multiprocess executor): the four control calls, and a
    prefix-cache reset after each update (cached KV of the old weights is stale)."""

    def __init__(self, llm) -> None:
        self.llm = llm

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, weight_version: Optional[str] = None) -> None:
        self.llm.finish_weight_update(weight_version)
        self.llm.reset_prefix_cache()


class TransferSender:
    """The trainer side of an 'ipc' or 'nccl' weight sync; build and call on every trainer rank.

    Args:
        sync: backend and wire settings (`nccl_*`, `packed`).
        client: the engine's control plane (`LLMWeightSyncClient`, vLLM's
            `HTTPVLLMWeightSyncClient` for a server); only rank 0 calls it.
        source: an `ExportSource` (or any vLLM WeightSource).
        rank: this trainer rank (rank 0 sends).

    Raises:
        ValueError: backend 'reload' (no transfer engine), or CUDA missing.
    """

    def __init__(self, sync: WeightSyncConfig, client, source, rank: int) -> None:
        if sync.backend not in ("ipc", "nccl"):
            raise ValueError(f"weight_sync.backend={sync.backend!r}: TransferSender is for 'ipc' and 'nccl'")
        if not torch.cuda.is_available():
            raise ValueError(f"weight_sync.backend={sync.backend!r} needs CUDA; on CPU use 'reload'")
        self.sync = sync
        self.rank = rank
        self.engine = WeightTransferTrainerFactory.trainer_init(self._init_info(sync, rank), client=client,
                                                                source=source)

    @staticmethod
    def _init_info(sync: WeightSyncConfig, rank: int):
        if sync.backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            return IPCTrainerInitInfo(rank=rank, packed=sync.packed,
                                      packed_buffer_size_bytes=sync.bucket_bytes)
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        return NCCLTrainerInitInfo(rank=rank, master_address=sync.nccl_master_address,
                                   master_port=sync.nccl_master_port, world_size=sync.nccl_world_size,
                                   packed=sync.packed, packed_buffer_size_bytes=sync.bucket_bytes)

    def send(self) -> float:
        """Push the current weights (start, transfer, finish on the engine); returns seconds."""
        t0 = time.perf_counter()
        self.engine.send_weights()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.engine.shutdown()
