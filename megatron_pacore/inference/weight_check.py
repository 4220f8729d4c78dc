"""Compare every weight a vLLM model computes with against Hugging Face-named full tensors.

Runs inside a vLLM worker (through `LLM.collective_rpc`, in-process in external-launcher
mode) on that worker's tensor-parallel slice. For each Hugging Face tensor it finds the vLLM
module that loads it, cuts the slice this rank holds (vLLM's layout: q|k|v rows of the
rank's heads in `qkv_proj`, gate|up rows in `gate_up_proj`, input columns of row-parallel
layers, the rank's vocabulary rows of embeddings) and compares it with what the engine
actually uses:

- parameters as they are (norms, biases, embedding tables for lookup, GPU linears);
- on CPU, linear layers and the LM head are prepacked for vLLM's GEMM (oneDNN / SGL) and
  their `weight` parameter is left empty; their weights are read back by applying the layer's
  own GEMM (`quant_method.apply`) to identity rows: eye(K)[i:j] @ W^T = W[:, i:j]^T, exact
  because each output is one product with 1.0 (the "gemm-probe"). This is what catches a
  stale prepacked copy, e.g. a tied lm_head that was not re-processed after a reload.

Every engine module with parameters must be covered by some tensor and every tensor must
land somewhere; anything else is an error too, so nothing is skipped silently.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

import torch

from megatron_pacore.hf_config import tie_word_embeddings
from megatron_pacore.inference.rollout_types import WeightCheck, WeightMismatchError

PROBE_ROWS = 1024  # identity rows per GEMM probe (bounds the probe's memory)

# Hugging Face name -> (vLLM module suffix, shard id) for the fused modules.
_FUSED = [
    (re.compile(r"^(.*\.self_attn)\.([qkv])_proj\.(weight|bias)$"), "qkv_proj"),
    (re.compile(r"^(.*\.mlp)\.(gate|up)_proj\.(weight)$"), "gate_up_proj"),
]
SHARD_ORDER = {"qkv_proj": ("q", "k", "v"), "gate_up_proj": ("gate", "up")}


def engine_target(hf_name: str) -> tuple[str, str, Optional[str]]:
    """(vLLM module name, parameter name, shard id or None) that loads `hf_name`."""
    for pattern, fused in _FUSED:
        m = pattern.match(hf_name)
        if m:
            return f"{m.group(1)}.{fused}", m.group(3), m.group(2)
    module, _, param = hf_name.rpartition(".")
    return module, param, None


def engine_module(modules: dict[str, torch.nn.Module], hf_name: str, who: str,
                  error: type[Exception] = ValueError) -> tuple[str, torch.nn.Module, str, Optional[str]]:
    """(module name, module, parameter name, shard id) of `modules` (a vLLM model's
    `named_modules()`) that loads `hf_name` (`engine_target`).

    One lookup for the weight check and the per-rank sync, which differ only in what they
    raise: `error` ("`who`: <name> has no engine counterpart ...") when the module or its
    parameter is not in the model.
    """
    module_name, param, shard = engine_target(hf_name)
    module = modules.get(module_name)
    if module is None or not hasattr(module, param):
        raise error(f"{who}: {hf_name} has no engine counterpart "
                    f"({module_name}.{param} is not in the vLLM model)")
    return module_name, module, param, shard


def _rows(t: torch.Tensor, start: int, size: int) -> torch.Tensor:
    return t.narrow(0, start, size)


def expected_slice(module, param: str,
                   parts: dict[Optional[str], tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """This rank's slice of the full tensor(s) `parts` (shard id -> (HF name, tensor)), in the
    module's layout, as (HF name, rows) segments that concatenate along dim 0.

    Shapes: linear weights [N_local, K_local], biases [N_local], embeddings [V_local_org, h]
    (the unpadded rows this rank holds), anything replicated as it is.
    """
    from vllm.model_executor.layers.linear import (
        ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear, ReplicatedLinear,
        RowParallelLinear)
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    if isinstance(module, QKVParallelLinear):
        hs, rank = module.head_size, module.tp_rank
        kv_rank = rank // module.num_kv_head_replicas
        q_name, q = parts["q"]
        k_name, k = parts["k"]
        v_name, v = parts["v"]
        kv = module.num_kv_heads * hs
        return [(q_name, _rows(q, rank * module.num_heads * hs, module.num_heads * hs)),
                (k_name, _rows(k, kv_rank * kv, kv)), (v_name, _rows(v, kv_rank * kv, kv))]
    if isinstance(module, MergedColumnParallelLinear):
        out = []
        for sid in SHARD_ORDER["gate_up_proj"]:
            name, full = parts[sid]
            size = full.shape[0] // module.tp_size
            out.append((name, _rows(full, module.tp_rank * size, size)))
        return out
    name, full = parts[None]
    if isinstance(module, ColumnParallelLinear):
        size = module.output_size_per_partition
        return [(name, _rows(full, module.tp_rank * size, size))]
    if isinstance(module, RowParallelLinear):
        if param == "bias":
            return [(name, full)]
        size = module.input_size_per_partition
        return [(name, full.narrow(1, module.tp_rank * size, size))]
    if isinstance(module, ReplicatedLinear):
        return [(name, full)]
    if isinstance(module, VocabParallelEmbedding):
        idx = module.shard_indices
        return [(name, _rows(full, idx.org_vocab_start_index, idx.num_org_elements))]
    if any(hasattr(module, a) for a in ("tp_size", "tp_rank")):
        raise ValueError(f"check_weights: no slicing rule for the tensor-parallel module "
                         f"{type(module).__name__} ({param})")
    return [(name, full)]


def _probe_weight_columns(module, start: int, stop: int) -> torch.Tensor:
    """W[:, start:stop] of a prepacked linear/LM-head, by its own GEMM on identity rows."""
    weight = module.weight
    k = module.input_size_per_partition if hasattr(module, "input_size_per_partition") else module.embedding_dim
    eye = torch.zeros(stop - start, k, dtype=weight.dtype, device=weight.device)
    eye[torch.arange(stop - start), torch.arange(start, stop)] = 1
    return module.quant_method.apply(module, eye, bias=None).t()  # [N_local, stop - start]


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.float() - b.float()).abs().max().item()


class _Checker:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.lm_head = getattr(model, "lm_head", None)
        self.tied = tie_word_embeddings(model.config)
        self.pending: dict[tuple[str, str], dict[Optional[str], tuple[str, torch.Tensor]]] = {}
        self.done: set[tuple[str, str]] = set()
        self.tensors = 0
        self.probed = False

    def feed(self, hf_name: str, tensor: torch.Tensor) -> None:
        module_name, module, param, shard = engine_module(self.modules, hf_name, "check_weights",
                                                          WeightMismatchError)
        self.tensors += 1
        key = (module_name, param)
        parts = self.pending.setdefault(key, {})
        parts[shard] = (hf_name, tensor)
        need = SHARD_ORDER[module_name.rpartition(".")[2]] if shard else (None,)
        if all(s in parts for s in need):
            del self.pending[key]
            self._compare(module_name, module, param, parts)
            if self.tied and module_name.endswith("embed_tokens") and self.lm_head is not None:
                self._compare("lm_head", self.lm_head, param, parts)

    def _compare(self, name: str, module, param: str, parts) -> None:
        segments = expected_slice(module, param, parts)
        actual = getattr(module, param)
        rows = sum(t.shape[0] for _, t in segments)
        if actual.numel():
            # Embedding tables carry padded rows beyond the checkpoint's vocabulary.
            if actual.shape[1:] != segments[0][1].shape[1:] or actual.shape[0] < rows:
                raise WeightMismatchError(
                    f"check_weights: engine {name}.{param} has shape {tuple(actual.shape)}, expected "
                    f"{(rows, *segments[0][1].shape[1:])} from {[n for n, _ in segments]}")
            self._record(name, param, segments, actual, "")
        if param == "weight" and hasattr(module, "cpu_linear") and (
                actual.numel() == 0 or module is self.lm_head):
            # CPU GEMM prepack: read back what the forward pass multiplies by.
            self.probed = True
            k = segments[0][1].shape[1]
            for start in range(0, k, PROBE_ROWS):
                stop = min(start + PROBE_ROWS, k)
                got = _probe_weight_columns(module, start, stop)
                cols = [(n, t[:, start:stop]) for n, t in segments]
                self._record(name, param, cols, got, f" [prepacked GEMM, columns {start}:{stop}]")
        elif actual.numel() == 0:
            raise WeightMismatchError(f"check_weights: engine {name}.{param} is empty and has no GEMM to read")
        self.done.add((name, param))

    def _record(self, name: str, param: str, segments, actual: torch.Tensor, how: str) -> None:
        row = 0
        for hf_name, expected in segments:
            got = actual.narrow(0, row, expected.shape[0])
            row += expected.shape[0]
            what = f"{hf_name} (engine {name}.{param}{how})"
            if expected.dtype != got.dtype:
                raise WeightMismatchError(f"check_weights: {what} is {got.dtype} in the engine but "
                                          f"{expected.dtype} in the actor; compare at equal dtype")
            d = _diff(expected.to(got.device), got)
            if d != 0.0:
                raise WeightMismatchError(f"check_weights: {what} differs from the actor's: "
                                          f"max |diff| = {d:.3e}")

    def finish(self) -> WeightCheck:
        if self.pending:
            missing = {k: sorted(str(s) for s in v) for k, v in self.pending.items()}
            raise WeightMismatchError(f"check_weights: fused tensors only partly given: {missing}")
        uncovered = []
        for name, module in self.modules.items():
            for param, p in module.named_parameters(recurse=False):
                if (name, param) not in self.done:
                    uncovered.append(f"{name}.{param}")
        if uncovered:
            raise WeightMismatchError(f"check_weights: engine weights not compared (no actor tensor "
                                      f"for them): {uncovered[:8]}{' ...' if len(uncovered) > 8 else ''}")
        return WeightCheck(tensors=self.tensors, engine_tensors=len(self.done), max_abs_diff=0.0,
                           method="gemm-probe" if self.probed else "parameters")


@torch.no_grad()
def check_model_weights(model: torch.nn.Module, tensors: Iterable[tuple[str, torch.Tensor]]) -> WeightCheck:
    """Compare `model` (a vLLM model on this worker) with full HF-named `tensors`.

    Streams: a fused module is compared as soon as all its parts arrived, so peak extra
    memory is about one layer. Raises WeightMismatchError naming the first tensor that
    differs (with the max abs diff), is missing, or has no counterpart.
    """
    checker = _Checker(model)
    for name, tensor in tensors:
        checker.feed(name, tensor)
    return checker.finish()
