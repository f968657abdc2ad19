"""Duplicate documents: exact (same normalized text) and near (word 5-gram Jaccard similarity of at least
:data:`NEAR_DUPLICATE_JACCARD` with an earlier kept document), found by MinHash candidates each checked
exactly (:func:`find_duplicates`)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actgeo_assets.lib.capture.documents import Document

#: Seed of the MinHash hash functions (fixed: the same candidates in every process).
_SEED = 0

#: A document is a near duplicate of an earlier kept one when their word 5-gram sets have at least this
#: Jaccard similarity.
NEAR_DUPLICATE_JACCARD = 0.9
SHINGLE_WORDS = 5
# MinHash candidates: 64 hash functions in 8 bands of 8 rows; a pair at Jaccard 0.9 shares a band with
# probability 1 - (1 - 0.9^8)^8 = 0.989 (0.9998 at 0.95). Every candidate is then checked exactly.
_MINHASH_BANDS, _MINHASH_ROWS = 8, 8
_SHINGLES_PER_BLOCK = 1 << 22


@dataclass(frozen=True)
class Duplicates:
    """Duplicate documents of a corpus, by index in corpus order (before any is dropped).

    ``exact[i] = j``: document ``i``'s normalized text (lower case, whitespace collapsed) equals that of
    document ``j < i``, the first copy. ``near[i] = j``: document ``i`` (not an exact duplicate) has word
    5-gram Jaccard similarity ``>= threshold`` with the earlier, kept document ``j``. ``dropped``: whether
    the later copies were left out of the corpus. ``by_source``: ``{source: {"exact": n, "near": n}}``.
    """

    n_documents: int
    exact: dict[int, int]
    near: dict[int, int]
    threshold: float
    dropped: bool
    by_source: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        """Counts only (JSON): what the sidecars, cards.json and the report carry."""
        return {"n_documents": self.n_documents, "n_exact_duplicates": len(self.exact),
                "n_near_duplicates": len(self.near), "near_threshold": self.threshold,
                "dropped": self.dropped,
                "n_kept": self.n_documents - (len(self.exact) + len(self.near) if self.dropped else 0),
                "by_source": self.by_source}


def normalized_text(text: str) -> str:
    """What exact duplicates are compared by: lower case, runs of whitespace as one space, stripped."""
    return " ".join(text.lower().split())


def shingles(text: str, k: int = SHINGLE_WORDS) -> np.ndarray:
    """Sorted unique uint64 hashes of the word ``k``-grams of ``text`` (words: ``\\w+`` of the lower-cased
    text; a text of fewer than ``k`` words is one shingle). Deterministic across processes (crc32 words)."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    h = h * np.uint64(0x9E3779B97F4A7C15)
    n = max(1, len(words) - k + 1)
    out = np.zeros(n, dtype=np.uint64)
    mult = np.uint64(0xBF58476D1CE4E5B9)
    for j in range(min(k, len(words))):
        out = out * mult + h[j : j + n]
    return np.unique(out)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique arrays (1.0 for two empty ones)."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def _minhash(sets: Sequence[np.ndarray]) -> np.ndarray:
    """uint32 ``[n, bands * rows]`` MinHash signatures of shingle sets (an empty set: all 2^32 - 1)."""
    n_hash = _MINHASH_BANDS * _MINHASH_ROWS
    rng = np.random.default_rng(_SEED)
    a = rng.integers(1, 2**63, size=n_hash, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=n_hash, dtype=np.uint64)
    sig = np.full((len(sets), n_hash), np.iinfo(np.uint32).max, dtype=np.uint32)
    start = 0
    while start < len(sets):  # blocks of documents, each one concatenation and one reduceat per hash
        stop, total = start, 0
        while stop < len(sets) and (stop == start or total + sets[stop].size <= _SHINGLES_PER_BLOCK):
            total += sets[stop].size
            stop += 1
        block = [s for s in sets[start:stop] if s.size]
        rows = np.array([i for i in range(start, stop) if sets[i].size], dtype=np.int64)
        if block:
            flat = np.concatenate(block)
            bounds = np.cumsum([0] + [s.size for s in block[:-1]])
            for j in range(n_hash):
                vals = ((flat * a[j] + b[j]) >> np.uint64(32)).astype(np.uint32)
                sig[rows, j] = np.minimum.reduceat(vals, bounds)
        start = stop
    return sig


def find_duplicates(docs: Sequence[Document], *, threshold: float = NEAR_DUPLICATE_JACCARD,
                    drop: bool = True) -> Duplicates:
    """Exact and near-duplicate documents of ``docs`` (see :class:`Duplicates`); ``drop`` is recorded only.

    Exact: equal :func:`normalized_text` (sha1). Near: among the rest, in corpus order, a document is a
    near duplicate of the first earlier kept document whose :func:`shingles` have Jaccard >= ``threshold``.
    Candidates come from MinHash bands (a pair at Jaccard 0.9 is missed with probability ~1%, at 0.95
    ~0.02%); every reported pair is verified exactly, so none is a false positive.
    """
    exact: dict[int, int] = {}
    first: dict[bytes, int] = {}
    for i, d in enumerate(docs):
        key = hashlib.sha1(normalized_text(d.text).encode()).digest()
        if key in first:
            exact[i] = first[key]
        else:
            first[key] = i
    rest = [i for i in range(len(docs)) if i not in exact]
    sets = [shingles(docs[i].text) for i in rest]
    sig = _minhash(sets)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(_MINHASH_BANDS)]
    near: dict[int, int] = {}
    for pos, i in enumerate(rest):
        keys = [sig[pos, band * _MINHASH_ROWS:(band + 1) * _MINHASH_ROWS].tobytes()
                for band in range(_MINHASH_BANDS)]
        candidates = sorted({c for band, key in enumerate(keys) for c in buckets[band].get(key, ())})
        match = next((rest[c] for c in candidates if jaccard(sets[c], sets[pos]) >= threshold), None)
        if match is not None:
            near[i] = match
            continue
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(pos)
    by_source: dict[str, dict[str, int]] = {}
    for kind, found in (("exact", exact), ("near", near)):
        for i in found:
            counts = by_source.setdefault(docs[i].source, {"exact": 0, "near": 0})
            counts[kind] += 1
    return Duplicates(n_documents=len(docs), exact=exact, near=near, threshold=float(threshold),
                      dropped=bool(drop), by_source=dict(sorted(by_source.items())))
