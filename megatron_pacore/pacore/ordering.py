"""The order in which a round's messages are placed in the next synthesis prompt.

`released` reproduces the official release: a stable sort by the character length of each
response, then the permutation of `random.Random(42).shuffle`. The result is a function of the
multiset of responses only, not of the order in which the engine returned them, so reruns are
reproducible. `random` draws a fresh seeded permutation per problem and round.
"""
from __future__ import annotations

import random
import zlib
from typing import Sequence

RELEASED_SEED = 42
ORDERS = ("released", "random")


def reference_order(
    texts: Sequence[str],
    mode: str = "released",
    seed: int = 0,
    key: str = "",
) -> list[int]:
    """Indices into `texts` in prompt order.

    Args:
        texts: the responses the messages come from (length decides the released order).
        mode: "released" or "random".
        seed, key: for "random": the permutation is drawn from Random(seed ^ crc32(key)),
            with key naming the problem and round, so problems differ but reruns agree.
    """
    indices = list(range(len(texts)))
    if mode == "released":
        indices.sort(key=lambda i: len(texts[i]))  # list.sort is stable
        random.Random(RELEASED_SEED).shuffle(indices)
    elif mode == "random":
        random.Random(seed ^ zlib.crc32(key.encode("utf-8"))).shuffle(indices)
    else:
        raise ValueError(f"reference order must be one of {ORDERS}, got {mode!r}")
    return indices
