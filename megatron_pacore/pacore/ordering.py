"""The order in which a round's messages are placed in the next synthesis prompt.

`released` reproduces the official release (`pacore/batch_inference/base_exp.py`,
`_run_parallel_calls` then `process_single`): ALL K responses of the round, failed ones
included with an empty text, are sorted by the character length of their text (a stable
sort), permuted by `random.Random(42).shuffle`, and only then are the failed and empty ones
dropped. Dropping first would shuffle a shorter list and give a different permutation.

Ties: the sort is stable, so responses of equal length keep their input order, i.e. the
engine's sample index (the release uses arrival order there, which varies between runs; ours
does not). The result therefore depends on the lengths and, among equal lengths, on sample
indices, not on the texts themselves. `random` draws a fresh seeded permutation of all K per
problem and round and drops the same way.
"""
from __future__ import annotations

import random
import zlib
from typing import Optional, Sequence

RELEASED_SEED = 42
ORDERS = ("released", "random")


def reference_order(
    texts: Sequence[str],
    mode: str = "released",
    seed: int = 0,
    key: str = "",
    keep: Optional[Sequence[bool]] = None,
) -> list[int]:
    """Indices into `texts` in prompt order.

    Args:
        texts: the text of every response of the round, failed ones as "" (length decides
            the released order).
        mode: "released" or "random".
        seed, key: for "random": the permutation is drawn from Random(seed ^ crc32(key)),
            with key naming the problem and round, so problems differ but reruns agree.
        keep: which responses become messages (not failed, non-empty message); the others
            are dropped AFTER the permutation. None keeps all.
    """
    if keep is not None and len(keep) != len(texts):
        raise ValueError(f"keep has {len(keep)} entries for {len(texts)} texts")
    indices = list(range(len(texts)))
    if mode == "released":
        indices.sort(key=lambda i: len(texts[i]))  # list.sort is stable
        random.Random(RELEASED_SEED).shuffle(indices)
    elif mode == "random":
        random.Random(seed ^ zlib.crc32(key.encode("utf-8"))).shuffle(indices)
    else:
        raise ValueError(f"reference order must be one of {ORDERS}, got {mode!r}")
    return indices if keep is None else [i for i in indices if keep[i]]
