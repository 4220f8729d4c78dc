"""Exact and near-duplicate problems: the first occurrence is kept, later ones are dropped.

    dedup = Deduplicator(jaccard=0.8, shingle_size=5)
    for record in records:                      # in file order
        match = dedup.check(record.id, record.problem)
        if match is not None: ...               # a duplicate of match.of

Exact: equal normalised text (`text_norm.normalized`: case, spacing and Unicode forms folded).
Near: Jaccard similarity of the sets of `shingle_size`-token shingles (`text_norm.tokens`) at
or above `jaccard`. Candidates come from MinHash LSH (`datasketch`, the library
text-deduplication pipelines use), and each candidate's exact Jaccard over the shingle sets is
computed before it counts, so a MinHash estimate never removes a problem on its own. Because
of that check, the LSH bands are tuned to miss almost nothing rather than to balance misses
against false candidates: datasketch's default choice at threshold 0.8 (9 bands of 13 rows)
makes a pair AT the threshold a candidate with probability 0.40 only, and missed 10 of 200
near copies (Jaccard 0.81-0.90) of GSM8K problems here; the bands of LSH threshold
`jaccard - 0.1` with false negatives weighted 0.9 (20 x 6 at 0.8) find such a pair with
probability 0.998. A text shorter than `shingle_size` tokens is one shingle (itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_pacore.data.text_norm import normalized, tokens

# LSH tuning (module doc): candidates from a threshold this far below the confirmed one, with
# datasketch's (false positive, false negative) weights set to favour no misses.
LSH_MARGIN = 0.1
LSH_WEIGHTS = (0.1, 0.9)


@dataclass(frozen=True)
class Duplicate:
    """Why a problem is a duplicate: `of` is the id of the kept problem it repeats; `kind`
    "exact" or "near"; `jaccard` the shingle-set similarity (1.0 for exact)."""

    of: str
    kind: str
    jaccard: float


def shingles(text: str, size: int) -> frozenset[str]:
    """The set of `size`-token windows of `text` (one window for a shorter text)."""
    toks = tokens(text)
    if len(toks) <= size:
        return frozenset([" ".join(toks)])
    return frozenset(" ".join(toks[i: i + size]) for i in range(len(toks) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class Deduplicator:
    """Remembers the problems kept so far and tells whether a new one repeats one of them.

    Args:
        jaccard: near-duplicate threshold in (0, 1]; None finds exact duplicates only.
        shingle_size: tokens per shingle (>= 1).
        num_perm: MinHash permutations (more: fewer missed candidates, slower).
        seed: MinHash seed (the same seed gives the same candidates on every machine).
    """

    def __init__(self, jaccard: Optional[float] = 0.8, shingle_size: int = 5, num_perm: int = 128,
                 seed: int = 1) -> None:
        if jaccard is not None and not 0 < jaccard <= 1:
            raise ValueError(f"near_duplicate_jaccard must be in (0, 1] or None, got {jaccard}")
        if shingle_size < 1:
            raise ValueError(f"shingle_size must be >= 1, got {shingle_size}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be >= 2, got {num_perm}")
        self.threshold = jaccard
        self.shingle_size = shingle_size
        self.num_perm = num_perm
        self.seed = seed
        self._exact: dict[str, str] = {}  # normalised text -> id of its first occurrence
        self._shingles: dict[str, frozenset[str]] = {}  # kept id -> its shingles
        self._order: dict[str, int] = {}  # every id checked -> its position
        self._lsh = None
        if jaccard is not None:
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(threshold=max(0.05, jaccard - LSH_MARGIN), num_perm=num_perm,
                                   weights=LSH_WEIGHTS)

    def _minhash(self, grams: frozenset[str]):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch([g.encode("utf-8") for g in sorted(grams)])
        return m

    def check(self, key: str, text: str) -> Optional[Duplicate]:
        """The Duplicate `text` is of a problem kept before, or None (then it is kept: later
        texts are compared with it). `key` (the problem's id) must be new."""
        if key in self._order:
            raise ValueError(f"id {key!r} was checked already")
        self._order[key] = len(self._order)
        norm = normalized(text)
        first = self._exact.get(norm)
        if first is not None:
            return Duplicate(of=first, kind="exact", jaccard=1.0)
        grams = shingles(text, self.shingle_size)
        if self._lsh is not None:
            m = self._minhash(grams)
            # The most similar kept problem; among equals the earliest (LSH answers unordered).
            matches = [(jaccard(grams, self._shingles[other]), -self._order[other], other)
                       for other in self._lsh.query(m)]
            matches = [x for x in matches if x[0] >= self.threshold]
            if matches:
                sim, _, other = max(matches)
                return Duplicate(of=other, kind="near", jaccard=round(sim, 4))
            self._lsh.insert(key, m)
            self._shingles[key] = grams
        self._exact[norm] = key
        return None
