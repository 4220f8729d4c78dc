"""Sequence-length rules of the parallel layout: what a (packed) sequence must be padded to.

    s_pad = padded_length(s, tp=4, sequence_parallel=True, cp=2, fp8_recipe="delayed")
    check_length(s_pad, ...)          # raises ValueError naming the rule that fails

One function for the forward pass (`training.forward` checks every micro-batch) and for
packing in training (pad each pack to `padded_length`). The rules, for a sequence of s tokens
(or a pack of sequences, s = total tokens of the pack):

1. Context parallelism (cp > 1): s % (2 * cp) == 0. The sequence is cut into 2*cp chunks and
   CP rank r keeps chunks r and 2*cp-1-r (load balancing of causal attention; Megatron's
   `get_batch_on_this_cp_rank` and TE's CP attention assume this layout).
2. Sequence parallelism (tp > 1 with sequence_parallel): (s / cp) % tp == 0. Megatron splits
   each CP rank's s/cp tokens along the sequence over the TP ranks (scatter_to_sequence_
   parallel_region asserts the split is even).
3. FP8 GEMMs: (s / cp) % 16 == 0 (32 for MXFP8). TE's `assert_dim_for_fp8_exec`
   (transformer_engine/pytorch/utils.py) requires, for each FP8 GEMM operand, the product of
   all dimensions but the last divisible by 8 and the last divisible by 16; in the weight
   gradient GEMM the token dimension is the last one, so a rank's token count must be a
   multiple of 16. Megatron-Core pads to `fp8_utils.get_fp8_align_size(recipe)`: 16, or 32
   for MXFP8 (its 1x32 scaling blocks). Under SP the GEMMs see the gathered s/cp tokens.

So s must be a multiple of lcm(2*cp [cp>1], cp*tp [SP], cp*align [FP8]).
"""
from __future__ import annotations

import math
from typing import Optional

FP8_ALIGN = 16
"""Token multiple of an FP8 GEMM (TE assert_dim_for_fp8_exec; Megatron get_fp8_align_size)."""
MXFP8_ALIGN = 32
"""Token multiple under the MXFP8 recipe (Megatron get_fp8_align_size)."""


def fp8_align(fp8: Optional[str], fp8_recipe: Optional[str] = "delayed") -> int:
    """Token multiple the FP8 GEMMs need: 1 without FP8, 16, or 32 for the mxfp8 recipe."""
    if not fp8:
        return 1
    return MXFP8_ALIGN if fp8_recipe == "mxfp8" else FP8_ALIGN


def _rules(tp: int, sequence_parallel: bool, cp: int, fp8: Optional[str],
           fp8_recipe: Optional[str]) -> list[tuple[int, str]]:
    for name, value in (("tp", tp), ("cp", cp)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"parallel.{name} must be an integer >= 1, got {value!r}")
    rules = []
    if cp > 1:
        rules.append((2 * cp, f"divisible by 2 * parallel.cp = {2 * cp} (context-parallel load balancing)"))
    if sequence_parallel and tp > 1:
        rules.append((cp * tp, f"such that (s / parallel.cp) is divisible by parallel.tp = {tp} "
                               f"(sequence parallelism): divisible by {cp * tp}"))
    align = fp8_align(fp8, fp8_recipe)
    if align > 1:
        rules.append((cp * align, f"such that (s / parallel.cp) is divisible by {align} "
                                  f"(FP8 GEMMs, recipe {fp8_recipe}): divisible by {cp * align}"))
    return rules


def length_multiple(*, tp: int = 1, sequence_parallel: bool = False, cp: int = 1,
                    fp8: Optional[str] = None, fp8_recipe: Optional[str] = "delayed") -> int:
    """The multiple every sequence (or pack) length must be for this layout (1 = any)."""
    multiple = 1
    for m, _ in _rules(tp, sequence_parallel, cp, fp8, fp8_recipe):
        multiple = math.lcm(multiple, m)
    return multiple


def padded_length(s: int, *, tp: int = 1, sequence_parallel: bool = False, cp: int = 1,
                  fp8: Optional[str] = None, fp8_recipe: Optional[str] = "delayed") -> int:
    """The smallest length >= s that the layout accepts (s = tokens of a sequence or pack)."""
    if s < 1:
        raise ValueError(f"sequence length must be >= 1, got {s}")
    m = length_multiple(tp=tp, sequence_parallel=sequence_parallel, cp=cp, fp8=fp8, fp8_recipe=fp8_recipe)
    return -(-s // m) * m


def check_length(s: int, *, tp: int = 1, sequence_parallel: bool = False, cp: int = 1,
                 fp8: Optional[str] = None, fp8_recipe: Optional[str] = "delayed") -> None:
    """Raise ValueError naming the first rule s breaks, and the length to pad to."""
    for m, rule in _rules(tp, sequence_parallel, cp, fp8, fp8_recipe):
        if s % m:
            pad = padded_length(s, tp=tp, sequence_parallel=sequence_parallel, cp=cp, fp8=fp8,
                                fp8_recipe=fp8_recipe)
            raise ValueError(f"sequence length {s} must be {rule}; pad it to {pad} "
                             f"(training.seqlen.padded_length)")


def config_kwargs(config) -> dict:
    """The keyword arguments of the functions above, read from a Megatron TransformerConfig."""
    return dict(tp=config.tensor_model_parallel_size, sequence_parallel=bool(config.sequence_parallel),
                cp=config.context_parallel_size, fp8=config.fp8, fp8_recipe=config.fp8_recipe)
