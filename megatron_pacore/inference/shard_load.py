"""Per-rank weight sync into a vLLM model: this rank's slices copied straight into its modules.

The gather path hands vLLM full Hugging Face tensors and its weight loaders cut the rank's
slice out of each. When the actor's TP group is the engine's (colocated, same TP, PP = 1),
each rank instead receives only its own slices (`checkpoint.rank_export`, as `HFShard`s)
and this module places them:

  engine_layout(model)      the slice of each HF tensor this rank's engine holds, read from
                            vLLM's modules (q / k / v rows of the rank's heads in qkv_proj,
                            gate / up rows in gate_up_proj, the input columns of row-parallel
                            layers, the rank's vocabulary rows, the rest whole);
  RankShardLoader           copies each slice into its module's parameter: in place where
                            the parameter holds the weight (norms, embeddings, biases, linears
                            on GPU). Where vLLM's CPU GEMM prepack left the parameter empty,
                            the prepack is handed the actor's own block when the slices are one
                            (fc1 = [gate_r; up_r], o_proj, down_proj; the prepack copies it into
                            its kernel layout, so the engine never shares the actor's memory),
                            else a fresh buffer (QKV, re-grouped). When a module has all its
                            tensors it runs the module's own post-load processing
                            (`quant_method.process_weights_after_loading`: the CPU GEMM
                            prepack, then `update_param_tp_status` as vLLM's reload does), then
                            the tied LM head's, so that nothing keeps a prepack of old weights.

The layer-wise reload (`model_runner.reload_weights`) also rebuilds each layer from its
recorded metadata on the meta device and re-materialises it; this path needs neither (the
modules stay as they are and only their weights change), so the two paths can alternate.
Every engine parameter must receive a slice; anything missing or unplaced is an error.

Only the embedding's own GEMM is not re-packed: the embedding looks rows up
(`F.embedding` on its `weight`), its GEMM (`cpu_linear`) is never called (a tied LM head is a
module of its own and has its own), so it is pointed at the unpacked `F.linear` of the new
weight instead of re-packing 1/T of a V x h table for nothing (vLLM's own fallback).
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from megatron_pacore.hf_config import tie_word_embeddings
from megatron_pacore.types import HFShard
from megatron_pacore.inference.rollout_types import SyncStats
from megatron_pacore.inference.weight_check import SHARD_ORDER, engine_module

Span = tuple[Optional[int], int, int]


def module_span(module, param: str, shard: Optional[str], shape: tuple[int, ...]) -> Span:
    """(axis, start, stop) of the HF tensor of `shape` that `module.param` (shard id `shard`
    of a fused module) holds on this rank; axis None = the whole tensor."""
    from vllm.model_executor.layers.linear import (
        ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear, ReplicatedLinear,
        RowParallelLinear)
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    if isinstance(module, QKVParallelLinear):
        rank = module.tp_rank
        if shard == "q":
            n = module.num_heads * module.head_size
            return (0, rank * n, (rank + 1) * n)
        kv_rank = rank // module.num_kv_head_replicas
        n = module.num_kv_heads * (module.head_size if shard == "k" else module.v_head_size)
        return (0, kv_rank * n, (kv_rank + 1) * n)
    if isinstance(module, MergedColumnParallelLinear):
        n = module.output_partition_sizes[SHARD_ORDER["gate_up_proj"].index(shard)]
        return (0, module.tp_rank * n, (module.tp_rank + 1) * n)
    if isinstance(module, ColumnParallelLinear):
        n = module.output_size_per_partition
        return (0, module.tp_rank * n, (module.tp_rank + 1) * n)
    if isinstance(module, RowParallelLinear):
        if param == "bias":
            return (None, 0, shape[0])
        n = module.input_size_per_partition
        return (1, module.tp_rank * n, (module.tp_rank + 1) * n)
    if isinstance(module, VocabParallelEmbedding):
        idx = module.shard_indices
        return (0, idx.org_vocab_start_index, idx.org_vocab_end_index)
    if isinstance(module, ReplicatedLinear) or not any(hasattr(module, a) for a in ("tp_size", "tp_rank")):
        return (None, 0, shape[0])
    raise ValueError(f"per-rank weight sync: no slicing rule for the tensor-parallel module "
                     f"{type(module).__name__} ({param}); use the gather path")


def engine_layout(model: torch.nn.Module):
    """(HF name, full HF shape) -> the span this rank's engine holds (`module_span`)."""
    modules = dict(model.named_modules())

    def layout(hf_name: str, shape: tuple[int, ...]) -> Span:
        _, module, param, shard = engine_module(modules, hf_name, "per-rank weight sync")
        return module_span(module, param, shard, shape)

    return layout


def _one_block(shards: list[HFShard], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The shards' row blocks as one tensor without a copy, when they are consecutive rows of
    one contiguous tensor of `dtype` (e.g. the actor's fc1 shard [gate_r; up_r], or its
    o_proj / down_proj shard); else None."""
    parts = [p for s in shards for p in s.parts]
    if not parts or any(p.dtype != dtype or not p.is_contiguous() for p in parts):
        return None
    first = parts[0]
    offset = first.storage_offset() + first.numel()
    for p in parts[1:]:
        if p.untyped_storage().data_ptr() != first.untyped_storage().data_ptr() \
                or p.storage_offset() != offset or p.shape[1:] != first.shape[1:]:
            return None
        offset += p.numel()
    if len(parts) == 1:
        return first
    rows = sum(p.shape[0] for p in parts)
    return first.new_empty(0).set_(first.untyped_storage(), first.storage_offset(),
                                   (rows, *first.shape[1:]), first.stride())


def _stack(dest: torch.Tensor, shards: list[HFShard]) -> int:
    """Copy the shards' row blocks one after another into `dest`'s rows; returns the rows."""
    row = 0
    for s in shards:
        for part in s.parts:
            dest[row: row + part.shape[0]].copy_(part)
            row += part.shape[0]
    return row


class RankShardLoader:
    """Places (HF name, HFShard) pairs into a vLLM model's modules (see the module doc).

    `feed` each pair, then `finish()`; counts what it placed in `tensors` and `bytes`.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

        self.model = model
        self.modules = dict(model.named_modules())
        self.lm_head = getattr(model, "lm_head", None)
        self.tied = tie_word_embeddings(model.config)
        self.embedding_cls = VocabParallelEmbedding
        self.pending: dict[str, dict[str, dict[Optional[str], HFShard]]] = {}
        self.done: set[tuple[str, str]] = set()
        self.tensors = 0
        self.bytes = 0
        # CPU: hand the actor's own memory to the GEMM prepack where the slices are one block,
        # since the prepack copies it into the kernel's layout (checked after each module; a
        # kernel that keeps the tensor gets its own copy). vLLM's Zen path may keep an
        # unpacked reference inside its kernel, where that cannot be seen: always copy there.
        from vllm.platforms import current_platform

        self.borrow = not current_platform.is_zen_cpu()
        self._borrowed: set[str] = set()

    def feed(self, hf_name: str, shard: HFShard) -> None:
        module_name, module, param, sid = engine_module(self.modules, hf_name, "per-rank weight sync")
        self.tensors += 1
        self.bytes += sum(p.numel() * p.element_size() for p in shard.parts)
        got = self.pending.setdefault(module_name, {}).setdefault(param, {})
        if sid in got:
            raise ValueError(f"per-rank weight sync: {hf_name} given twice")
        got[sid] = shard
        if self._complete(module_name, module):
            self._place(module_name, module, self.pending.pop(module_name))

    def _complete(self, module_name: str, module) -> bool:
        got = self.pending[module_name]
        fused = module_name.rpartition(".")[2]
        need = SHARD_ORDER.get(fused, (None,))
        names = [n for n, _ in module.named_parameters(recurse=False)]
        return all(n in got and all(s in got[n] for s in need) for n in names)

    @torch.no_grad()
    def _place(self, module_name: str, module, got: dict[str, dict[Optional[str], HFShard]]) -> None:
        fused = module_name.rpartition(".")[2]
        order = SHARD_ORDER.get(fused, (None,))
        for param, by_sid in got.items():
            shards = [by_sid[s] for s in order]
            self._copy(module_name, module, param, shards)
            self.done.add((module_name, param))
        qm = getattr(module, "quant_method", None)
        if isinstance(module, self.embedding_cls) and module is not self.lm_head and hasattr(module, "cpu_linear"):
            # CPU: lookups read `weight`; its GEMM is never called (module doc): unpacked, never stale.
            module.cpu_linear = torch.nn.functional.linear
        elif qm is not None and hasattr(qm, "process_weights_after_loading"):
            qm.process_weights_after_loading(module)
            if module_name in self._borrowed:
                self._borrowed.discard(module_name)
                if module.weight.numel():  # the kernel kept the actor's tensor: give it its own
                    module.weight = torch.nn.Parameter(module.weight.detach().clone(), requires_grad=False)
                    qm.process_weights_after_loading(module)
            if hasattr(module, "update_param_tp_status"):
                module.update_param_tp_status()
        if self.tied and self.lm_head is not None and isinstance(module, self.embedding_cls) \
                and module is not self.lm_head:
            self._refresh_tied_lm_head(module)

    def _copy(self, module_name: str, module, param: str, shards: list[HFShard]) -> None:
        p = getattr(module, param)
        rows = sum(s.rows for s in shards)
        tail = tuple(shards[0].parts[0].shape[1:]) if shards[0].parts else tuple(p.shape[1:])
        if p.numel() == 0 and param == "weight" and hasattr(module, "cpu_linear"):
            # CPU: the prepack removed the weight; the module gets one to re-pack: the actor's
            # block itself where it can (see __init__), else a fresh copy.
            buf = _one_block(shards, p.dtype) if self.borrow else None
            if buf is not None and buf.device == p.device:
                self._borrowed.add(module_name)
            else:
                buf = torch.empty((rows, *tail), dtype=p.dtype, device=p.device)
                _stack(buf, shards)
            setattr(module, param, torch.nn.Parameter(buf, requires_grad=False))
            return
        if isinstance(module, self.embedding_cls) and param == "weight":
            if tuple(p.shape[1:]) != tail or p.shape[0] < rows:
                raise ValueError(f"per-rank weight sync: engine {module_name}.weight has shape "
                                 f"{tuple(p.shape)}, the actor gives {rows} rows of {tail}")
            _stack(p.data, shards)
            p.data[rows:].zero_()  # vocabulary padding rows, as vLLM's loader leaves them
            return
        if tuple(p.shape) != (rows, *tail):
            raise ValueError(f"per-rank weight sync: engine {module_name}.{param} has shape {tuple(p.shape)}, "
                             f"the actor gives {(rows, *tail)}")
        _stack(p.data, shards)

    def _refresh_tied_lm_head(self, embedding) -> None:
        """The tied LM head shares the embedding's table; re-run its post-load processing
        (vLLM 0.32 on CPU would keep the old prepacked GEMM otherwise)."""
        head = self.lm_head
        if head.weight is not embedding.weight:
            head.weight.data.copy_(embedding.weight.data)
        head.quant_method.process_weights_after_loading(head)
        self.done.add(("lm_head", "weight"))

    def finish(self) -> None:
        """Raise ValueError if a fused module got only part of its tensors or an engine
        parameter got none."""
        if self.pending:
            missing = {m: {p: sorted(str(s) for s in v) for p, v in ps.items()} for m, ps in self.pending.items()}
            raise ValueError(f"per-rank weight sync: modules only partly given: {missing}")
        uncovered = [f"{name}.{param}" for name, module in self.modules.items()
                     for param, _ in module.named_parameters(recurse=False) if (name, param) not in self.done]
        if uncovered:
            raise ValueError(f"per-rank weight sync: engine weights the actor gave nothing for: "
                             f"{uncovered[:8]}{' ...' if len(uncovered) > 8 else ''}")


def load_rank_shards(model: torch.nn.Module, shards: Iterable[tuple[str, HFShard]]) -> RankShardLoader:
    """Place every (HF name, HFShard) of `shards` into `model`; returns the loader (counts)."""
    loader = RankShardLoader(model)
    for name, shard in shards:
        loader.feed(name, shard)
    loader.finish()
    return loader


def sync_rank_shards(llm, export, engine_dtype: torch.dtype, clock) -> SyncStats:
    """The per-rank sync of `ColocatedVLLM.sync_weights`: `export.rank_shards(layout)` placed
    into the in-process engine `llm`, then the prefix-cache reset; timed like the gather path
    (`clock`: the engine's post-load processing seconds, `sync_stream._RepackClock`).

    Raises:
        ValueError: the export's dtype is not the engine's (before anything is touched).
    """
    import time

    if export.dtype != engine_dtype:
        raise ValueError(f"weight sync: the export is {export.dtype}, the engine is {engine_dtype}; "
                         f"export in the engine's dtype (export_buckets(dtype=...))")
    t_start = time.perf_counter()
    produce = [0.0]

    def timed(items):
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            item = next(it, None)
            produce[0] += time.perf_counter() - t0
            if item is None:
                return
            yield item

    def load(worker) -> RankShardLoader:
        model = worker.model_runner.get_model()
        t0 = time.perf_counter()
        layout = engine_layout(model)
        produce[0] += time.perf_counter() - t0
        return load_rank_shards(model, timed(export.rank_shards(layout)))

    repack0 = clock.seconds
    loader = llm.collective_rpc(load)[0]
    t_reset = time.perf_counter()
    llm.reset_prefix_cache()
    total = time.perf_counter() - t_start
    repack = clock.seconds - repack0 + (time.perf_counter() - t_reset)
    return SyncStats(buckets=0, tensors=loader.tensors, bytes=loader.bytes, gather_s=produce[0],
                     wait_s=produce[0], load_s=total - produce[0] - repack, repack_s=repack, total_s=total,
                     path="rank-shards")
