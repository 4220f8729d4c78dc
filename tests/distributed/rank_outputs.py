"""Gather a per-rank measurement that only some ranks can make (e.g. only the last pipeline
stage has logits), keeping "this rank produced nothing" apart from every real value.

A rank without output passes None, never a number: a worker that used 0.0 for "no output"
would pass its test if no stage produced logits at all. The result says how many ranks
measured, and tests assert that count (2 at TP=2 on 2 ranks, exactly 1 at PP=2).
"""
from __future__ import annotations

import math
from typing import Optional

import torch.distributed as dist


def gather_max(value: Optional[float]) -> dict:
    """{"max": max over the ranks that measured (NaN if any measured NaN; None if none did),
    "ranks": number of ranks that measured}, the same on every rank."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, None if value is None else float(value))
    measured = [v for v in gathered if v is not None]
    if not measured:
        return {"max": None, "ranks": 0}
    return {"max": math.nan if any(math.isnan(v) for v in measured) else max(measured), "ranks": len(measured)}
