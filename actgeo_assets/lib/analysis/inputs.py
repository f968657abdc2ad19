"""Artefact controls: activations that are one model input computed several times, and the first positions
of a context window.

Each document is one context window: its first ``context_len`` tokens, ``<bos>`` at position 0. The
model's activation at position ``p`` depends only on the token ids at positions ``0..p`` (a causal model), so
two activations whose token-id sequences from the window's start through their own position are identical
are *the same model input*: one activation computed twice (cosine ~1.000, so always in one component
unless the threshold is 1). They are counted here, not merged: the graph keeps every activation, and the
cards and the report say how many distinct inputs a component holds.

- :func:`input_keys`: a uint64 key per activation of its model input (a chained 64-bit hash).
- :func:`early_mask`: activations at the first positions of a window (``position < limit``), where the
  model's position-specific artefacts sit whatever the document.
- :func:`input_counts`: per run, the activations sharing their input, the distinct inputs, the components
  that are one input repeated, and the summary counted by distinct inputs.
- :func:`summary_without`: the exact components of the graph without some activations (e.g. the early
  positions), recomputed with :func:`actgeo_assets.lib.graph.cosine_components`.
- :func:`artefact_summary`: the JSON the report's artefact section shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.graph import component_summary, cosine_components
from actgeo_assets.lib.graph.labels import summary_from_sizes
from actgeo_assets.lib.store.rows import RowsSource, row_getter

#: Above this many activations :func:`summary_without` does not recompute the graph (it would hold the kept
#: rows in memory and redo the whole all-pairs join); the run itself can exclude them instead.
SUMMARY_WITHOUT_MAX_ROWS = 200_000

#: The key of ``<bos>`` alone (the input of a position-0 activation, when ``exclude_bos`` is off): the
#: start of every chain. The ``<bos>`` id itself is never hashed: it is the same in every window.
_START = hashlib.blake2b(b"actgeo model input: <bos>", digest_size=8).digest()


def input_keys(tokens: pd.DataFrame) -> np.ndarray:
    """uint64 [n]: a key of each row's model input, in the row order of ``tokens``.

    ``tokens``: a *raw* token table (every captured position of each document, before normalization drops
    any row), columns ``doc_id``, ``position``, ``token_id``. Each document's positions must be contiguous
    from 1 (``<bos>`` at 0 not captured, the default) or from 0 (``exclude_bos`` off); ``ValueError`` naming
    the document otherwise (a hole would give later rows the wrong input). Select the kept rows after.

    The key of position ``p`` is ``k_p = blake2b_8(k_{p-1} || token_id_p)`` (8-byte digest, ``token_id`` as
    8 little-endian bytes) with ``k_0`` a fixed constant standing for ``<bos>``: equal inputs get equal
    keys. Collision bound: two different inputs get one key only if blake2b collides on two different
    arguments among the at most ``n`` distinct chain steps of the table (by induction on the position, a
    key collision of two different prefixes needs a digest collision somewhere along their chains), so for
    a random-function model of blake2b ``P(any collision) <= n (n + 1) / 2 / 2**64``: below 3e-8 for
    ``n = 10**6`` and 3e-6 for ``n = 10**7``.
    """
    missing = [c for c in ("doc_id", "position", "token_id") if c not in tokens.columns]
    if missing:
        raise ValueError(f"input_keys: token table lacks columns {missing} (has {list(tokens.columns)})")
    n = len(tokens)
    out = np.zeros(n, dtype=np.uint64)
    if n == 0:
        return out
    doc = tokens["doc_id"].to_numpy()
    pos = tokens["position"].to_numpy().astype(np.int64)
    ids = tokens["token_id"].to_numpy().astype(np.int64)
    order = np.lexsort((pos, doc))
    doc_s, pos_s = doc[order], pos[order]
    starts = np.flatnonzero(np.r_[True, doc_s[1:] != doc_s[:-1]])
    ends = np.r_[starts[1:], n]
    first = pos_s[starts]
    # each document's positions must run first, first + 1, ... with first in (0, 1)
    expect = np.arange(n, dtype=np.int64) - np.repeat(starts, ends - starts) + np.repeat(first, ends - starts)
    bad = (pos_s != expect) | ~np.isin(np.repeat(first, ends - starts), (0, 1))
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        d = doc_s[at]
        got = np.sort(pos[doc == d])
        name = d.item() if isinstance(d, np.generic) else d  # 1022, not np.int64(1022)
        raise ValueError(f"input_keys: document {name!r} has positions {_span(got)}, not contiguous from 1 (or 0): "
                         "input keys need every captured position of the document up to each row (the raw token "
                         "table, before normalization drops rows)")
    id_bytes = ids[order].astype("<i8").tobytes()
    keys_sorted = np.empty(n, dtype=np.uint64)
    view = keys_sorted.view("<u8")
    for a, b, f in zip(starts.tolist(), ends.tolist(), first.tolist(), strict=True):
        k = _START
        for i in range(a, b):
            if not (f == 0 and i == a):  # position 0 is <bos> alone: the start key
                k = hashlib.blake2b(k + id_bytes[8 * i: 8 * i + 8], digest_size=8).digest()
            view[i] = int.from_bytes(k, "little")
    out[order] = keys_sorted
    return out


def _span(positions: np.ndarray) -> str:
    """A short description of sorted positions for an error message."""
    if positions.size <= 8:
        return str(positions.tolist())
    return f"{positions.size} values from {int(positions[0])} to {int(positions[-1])}"


def early_mask(positions: Any, limit: int) -> np.ndarray:
    """bool [n]: the positions ``< limit`` (the first positions of a context window; position 0 is ``<bos>``,
    so with ``limit = 4`` the early captured positions are 1, 2 and 3). ``limit`` >= 1."""
    if isinstance(limit, bool) or int(limit) != limit or limit < 1:
        raise ValueError(f"early position limit must be an integer >= 1, got {limit!r}")
    p = np.asarray(positions)
    if p.ndim != 1 or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"positions must be a 1-D integer array, got {p.dtype} {p.shape}")
    return p < int(limit)


def _check_same_length(labels: np.ndarray, **arrays: np.ndarray | None) -> None:
    for name, a in arrays.items():
        if a is not None and a.shape != labels.shape:
            raise ValueError(f"{name} has shape {a.shape} but labels have {labels.shape}: both are one value per "
                             "activation in global row order")


def input_counts(labels: Any, keys: Any, tokens: pd.DataFrame | None = None, *, top: int = 20,
                 list_limit: int = 50) -> dict[str, Any]:
    """Per run: identical model inputs among the activations, as JSON.

    ``labels``: canonical int64 [N] (0 = largest); ``keys``: uint64 [N] (:func:`input_keys` of the kept rows,
    global row order); ``tokens`` (optional, global row order, ``position`` and ``token``) names the input of
    each one-input component. Returns

    - ``n``: activations; ``n_inputs``: distinct model inputs; ``rows_sharing_input``: activations whose
      input is also another activation's; ``repeated_inputs``: distinct inputs held by >= 2 activations;
    - ``one_input_components``: the components of size >= 2 that are ONE input repeated, by rank:
      ``[{"rank", "size", "position", "token"}]`` (at most ``list_limit``; ``n_one_input_components`` all);
    - ``inputs_split``: distinct inputs whose activations lie in more than one component (0 unless the
      threshold is ~1: identical inputs have cosine ~1);
    - ``summary``: :func:`component_summary` of ``labels``; ``summary_distinct``: the same components with
      each distinct input counted once (sizes = distinct inputs per component, ``n`` their sum: ``n_inputs``,
      plus one per extra component of a split input; a component that is one input repeated becomes a
      singleton there).
    """
    lab = np.asarray(labels)
    k = np.asarray(keys)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {lab.dtype} {lab.shape}")
    if k.dtype != np.uint64:
        raise ValueError(f"keys must be uint64 (input_keys), got {k.dtype}")
    _check_same_length(lab, keys=k)
    if lab.size == 0:
        raise ValueError("input_counts: no activations")
    uniq, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = counts[inverse] >= 2
    # distinct (component, input) pairs: the sizes of the components counted by distinct inputs
    pairs = np.unique(np.stack([lab.astype(np.int64), inverse.astype(np.int64)], axis=1), axis=0)
    comp_of_pair = pairs[:, 0]
    n_comp = int(lab.max()) + 1
    distinct_per_comp = np.bincount(comp_of_pair, minlength=n_comp)
    size_per_comp = np.bincount(lab, minlength=n_comp)
    one_input = np.flatnonzero((distinct_per_comp == 1) & (size_per_comp >= 2))
    comps_per_input = np.bincount(pairs[:, 1], minlength=uniq.size)
    first_row = np.unique(lab, return_index=True)[1]  # the smallest row of each component (labels are dense)
    listed = []
    for c in one_input[:list_limit].tolist():
        item: dict[str, Any] = {"rank": c + 1, "size": int(size_per_comp[c])}
        if tokens is not None:
            r = int(first_row[c])
            item["position"] = int(tokens["position"].iloc[r])
            item["token"] = str(tokens["token"].iloc[r])
        listed.append(item)
    sizes_distinct = np.sort(distinct_per_comp)[::-1]
    return {
        "n": int(lab.size),
        "n_inputs": int(uniq.size),
        "rows_sharing_input": int(shared.sum()),
        "repeated_inputs": int((counts >= 2).sum()),
        "n_one_input_components": int(one_input.size),
        "one_input_components": listed,
        "inputs_split": int((comps_per_input >= 2).sum()),
        "summary": component_summary(lab, top=top),
        "summary_distinct": summary_from_sizes(sizes_distinct, int(pairs.shape[0]), top),
    }


def gather_rows(rows: RowsSource, keep: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """float32 [m, d]: the rows where ``keep`` (bool [N], global row order) holds, fetched in chunks."""
    get = row_getter(rows)
    idx = np.flatnonzero(keep)
    parts = [np.asarray(get(idx[lo: lo + chunk]), dtype=np.float32) for lo in range(0, idx.size, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def summary_without(rows: RowsSource, keep: Any, threshold: float, *, device: str = "auto",
                    max_rows: int = SUMMARY_WITHOUT_MAX_ROWS, top: int = 20) -> dict[str, Any]:
    """The exact components of the cosine-threshold graph on the activations where ``keep`` holds.

    ``rows``: the run's unit rows (float32 [N, d], a callable or ``(offset, array)`` shards as in
    :func:`actgeo_assets.lib.store.rows.row_getter`); ``keep``: bool [N] in global row order. Removing nodes
    can split a component anywhere, so the graph is recomputed (:func:`cosine_components`, float64-exact at
    ``threshold``). Returns :func:`component_summary` of the result, or ``{"skipped": reason}`` when more than
    ``max_rows`` activations are kept or none is.
    """
    keep = np.asarray(keep)
    if keep.ndim != 1 or keep.dtype != bool:
        raise ValueError(f"keep must be a 1-D bool array, got {keep.dtype} {keep.shape}")
    m = int(keep.sum())
    if m == 0:
        return {"skipped": "no activation is kept"}
    if m > max_rows:
        return {"skipped": f"{m:,} activations are above the cap of {max_rows:,} for recomputing the graph here; "
                           "to measure it, run with early_positions=exclude (the run's own graph without them)"}
    x = gather_rows(rows, keep)
    return component_summary(cosine_components(x, threshold, device=device), top=top)


def artefact_summary(labels: Any, keys: Any, early: Any, rows: RowsSource | None, *, threshold: float,
                     setting: str, limit: int, tokens: pd.DataFrame | None = None, excluded_early: int = 0,
                     device: str = "auto", max_rows: int = SUMMARY_WITHOUT_MAX_ROWS) -> dict[str, Any]:
    """The JSON of the report's artefact section: :func:`input_counts` plus the early positions.

    ``early``: bool [N] (:func:`early_mask` of the kept rows' positions); ``setting``/``limit``: the run's
    ``early_positions`` and ``early_position_limit``; ``excluded_early``: activations the normalize stage
    dropped as early (``setting == "exclude"``). Adds ``early_positions`` (the setting), ``early_position_limit``,
    ``n_early`` (early activations in the graph), ``excluded_early`` and ``summary_without_early``: the
    components without the early activations (:func:`summary_without`; the run's own summary when none is in
    the graph, e.g. with ``exclude``; ``{"skipped": ...}`` without ``rows`` or above ``max_rows``)."""
    out = input_counts(labels, keys, tokens)
    e = np.asarray(early, dtype=bool)
    _check_same_length(np.asarray(labels), early=e)
    n_early = int(e.sum())
    if n_early == 0:
        without: dict[str, Any] = dict(out["summary"])
    elif rows is None:
        without = {"skipped": "the unit rows were not given"}
    else:
        without = summary_without(rows, ~e, threshold, device=device, max_rows=max_rows)
    return {**out, "early_positions": setting, "early_position_limit": int(limit), "n_early": n_early,
            "excluded_early": int(excluded_early), "summary_without_early": without}


def one_input_components(doc: Mapping[str, Any]) -> dict[int, int]:
    """``{rank: size}`` of the one-input components listed in an :func:`input_counts` JSON."""
    return {int(c["rank"]): int(c["size"]) for c in doc.get("one_input_components", [])}
