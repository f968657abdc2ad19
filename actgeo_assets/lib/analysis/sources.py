"""Per-source breakdown of a run: each source's share of the largest component (the giant), of the small
components (non-singleton, besides the largest) and of the singletons, at the run's threshold and at the
transition threshold ``t_c``; and what separates from the giant between the two.

One ordering of sources everywhere (:func:`source_order`): by the number of activations in the run,
descending, ties by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.graph.labels import members_by_label

#: Components listed as separating at the transition (the largest besides the giant at ``t_c``).
SEPARATED_LISTED = 5
#: Most frequent token strings listed per separated component (the rest are counted).
SEPARATED_TOKENS = 5
#: The parts of a partition, in the order every table shows them.
PARTS = ("giant", "small", "singletons")


def source_order(tokens: pd.DataFrame) -> list[str]:
    """The run's sources by their number of activations, descending, ties by name (the one ordering of
    sources in every table and page). ``tokens``: the run's token table (a ``source`` column)."""
    if "source" not in tokens.columns:
        raise ValueError(f"the token table has no source column (it has {list(tokens.columns)})")
    counts = tokens["source"].astype(str).value_counts(sort=False)
    return sorted((str(s) for s in counts.index), key=lambda s: (-int(counts[s]), s))


def partition_parts(labels: np.ndarray) -> np.ndarray:
    """Which part of the partition each activation is in: 0 the giant (label 0), 1 a small component
    (size >= 2, label > 0), 2 a singleton; int8 [N] from canonical labels int64 [N]."""
    sizes = np.bincount(labels)
    part = np.where(sizes[labels] == 1, 2, 1).astype(np.int8)
    part[labels == 0] = 0  # a giant of one activation (all singletons) is still the largest component
    return part


def source_shares(labels: np.ndarray, sources: np.ndarray, order: list[str], threshold: float) -> dict[str, Any]:
    """The breakdown at one threshold (JSON): ``threshold``; ``n_giant``, ``n_small``, ``n_singletons``
    (activations), ``n_small_components``; ``sources``: one entry per source in ``order`` with ``n``
    (its activations), ``giant``, ``small``, ``singletons`` (its activations in each part),
    ``share_of_giant``/``share_of_small``/``share_of_singletons`` (its share of that part's activations;
    None for an empty part) and ``in_giant``/``in_small``/``in_singletons`` (the share of its own
    activations in that part)."""
    part = partition_parts(labels)
    sizes = np.bincount(labels)
    totals = np.bincount(part, minlength=3)
    code = pd.Categorical(sources, categories=order).codes
    if (code < 0).any():
        raise ValueError("a source of the token table is missing from the source order")
    counts = np.zeros((len(order), 3), dtype=np.int64)
    np.add.at(counts, (code, part), 1)
    rows = []
    for i, s in enumerate(order):
        n = int(counts[i].sum())
        row: dict[str, Any] = {"source": s, "n": n}
        for j, p in enumerate(PARTS):
            row[p] = int(counts[i, j])
        for j, p in enumerate(PARTS):
            row[f"share_of_{p}"] = float(counts[i, j] / totals[j]) if totals[j] else None
        for j, p in enumerate(PARTS):
            row[f"in_{p}"] = float(counts[i, j] / n) if n else None
        rows.append(row)
    return {"threshold": float(threshold), "n": int(labels.size), "n_giant": int(totals[0]),
            "n_small": int(totals[1]), "n_singletons": int(totals[2]),
            "n_small_components": int(np.count_nonzero(sizes[1:] >= 2)), "sources": rows}


def source_breakdown(labels: np.ndarray, tokens: pd.DataFrame, threshold: float,
                     labels_at_transition: np.ndarray | None = None, t_c: float | None = None,
                     listed: int = SEPARATED_LISTED) -> dict[str, Any]:
    """The per-source breakdown of a run (JSON).

    ``labels``: canonical labels int64 [N] at the run's ``threshold``; ``tokens``: the token table in the
    same row order (``source``, ``token``, ``doc_id``); ``labels_at_transition``: canonical labels [N] at
    ``t_c`` (``SingleLinkageForest.labels_at(t_c)``), or None. Returns ``order`` (:func:`source_order`),
    ``at_threshold`` and ``at_transition`` (:func:`source_shares`; the latter None without ``t_c``),
    ``transition`` (:func:`transition_separation`, or None) and ``notes``."""
    labels = _check_labels(labels, len(tokens), "labels")
    order = source_order(tokens)
    sources = tokens["source"].astype(str).to_numpy()
    out: dict[str, Any] = {"order": order, "n": int(labels.size),
                           "at_threshold": source_shares(labels, sources, order, threshold),
                           "at_transition": None, "transition": None, "notes": []}
    if labels_at_transition is None or t_c is None:
        out["notes"].append("no transition threshold: the breakdown is at the run's threshold only")
        return out
    lab_c = _check_labels(labels_at_transition, len(tokens), "labels at the transition")
    out["at_transition"] = source_shares(lab_c, sources, order, t_c)
    out["transition"] = transition_separation(labels, lab_c, tokens, order, threshold, t_c, listed)
    if float(t_c) == float(threshold):
        out["notes"].append(f"the transition threshold is the run's threshold ({threshold}): nothing separates")
    return out


def transition_separation(labels: np.ndarray, labels_at_transition: np.ndarray, tokens: pd.DataFrame,
                          order: list[str], threshold: float, t_c: float,
                          listed: int = SEPARATED_LISTED) -> dict[str, Any]:
    """What separates from the giant between ``threshold`` and ``t_c`` (JSON).

    ``separated``: the ``listed`` largest components at ``t_c`` besides its giant, each with ``rank`` (size
    rank at ``t_c``), ``size``, ``from_giant`` (members in the giant at ``threshold``), ``n_distinct_tokens``,
    ``top_tokens`` ([token string, activations], most frequent first, ties by string) with ``n_more_tokens``,
    ``n_documents``, ``sources`` ([source, activations], all of them, by count then the run's order).
    ``left_giant``: the activations in the giant at ``threshold`` but not in the giant at ``t_c``: ``n``,
    ``n_giant_at_threshold``, ``n_giant_at_t_c``, where they are at ``t_c`` (``to_listed``: the listed
    components, ``to_other_small``, ``to_singletons``), ``n_joined`` (activations in the giant at ``t_c``
    but not at ``threshold``; 0 when ``t_c`` is above ``threshold``, since single linkage only splits), and
    ``by_source``: per source in ``order``, ``n_left``, ``share_of_left`` and ``of_its_giant`` (the share of
    the source's activations in the giant at ``threshold`` that leave)."""
    giant_t, giant_c = labels == 0, labels_at_transition == 0
    left = giant_t & ~giant_c
    sizes_c = np.bincount(labels_at_transition)
    wanted = np.arange(1, min(listed + 1, sizes_c.size), dtype=np.int64)
    wanted = wanted[sizes_c[wanted] >= 2]
    groups = members_by_label(labels_at_transition, wanted) if wanted.size else {}
    rank_of = {s: i for i, s in enumerate(order)}
    tok_all = tokens["token"].astype(str).to_numpy()
    src_all = tokens["source"].astype(str).to_numpy()
    doc_all = tokens["doc_id"].to_numpy() if "doc_id" in tokens.columns else None
    separated = []
    for lab in wanted:
        rows = groups[int(lab)]
        top = _counted(tok_all[rows], lambda t: t)
        separated.append({"rank": int(lab) + 1, "size": int(rows.size), "from_giant": int(giant_t[rows].sum()),
                          "n_distinct_tokens": len(top), "top_tokens": top[:SEPARATED_TOKENS],
                          "n_more_tokens": max(len(top) - SEPARATED_TOKENS, 0),
                          "n_documents": None if doc_all is None else int(pd.unique(doc_all[rows]).size),
                          "sources": _counted(src_all[rows], lambda s: rank_of.get(s, len(order)))})
    part_c = np.where(sizes_c[labels_at_transition] == 1, 2, 1)
    in_listed = np.isin(labels_at_transition, wanted)
    giant_counts = pd.Series(src_all[giant_t]).value_counts()
    left_counts = pd.Series(src_all[left]).value_counts()
    n_left = int(left.sum())
    by_source = []
    for s in order:
        k, g = int(left_counts.get(s, 0)), int(giant_counts.get(s, 0))
        by_source.append({"source": s, "n_left": k, "share_of_left": k / n_left if n_left else None,
                          "of_its_giant": k / g if g else None})
    return {"threshold": float(threshold), "t_c": float(t_c), "separated": separated,
            "left_giant": {"n": n_left, "n_giant_at_threshold": int(giant_t.sum()),
                           "n_giant_at_t_c": int(giant_c.sum()), "to_listed": int((left & in_listed).sum()),
                           "to_other_small": int((left & ~in_listed & (part_c == 1)).sum()),
                           "to_singletons": int((left & (part_c == 2)).sum()),
                           "n_joined": int((giant_c & ~giant_t).sum()), "by_source": by_source}}


def _counted(values: np.ndarray, tie: Any) -> list[list[Any]]:
    """``[[value, count], ...]`` by count descending, then ``tie(value)``, then the value."""
    vc = pd.Series(values, dtype=object).value_counts(sort=False)
    pairs = sorted(((str(v), int(n)) for v, n in vc.items()), key=lambda x: (-x[1], tie(x[0]), x[0]))
    return [[v, n] for v, n in pairs]


def _check_labels(labels: Any, n: int, what: str) -> np.ndarray:
    """``labels`` as canonical int64 [n] (dense, 0 the largest), or a clear error naming ``what``."""
    lab = np.asarray(labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-D integer array, got dtype {lab.dtype} shape {lab.shape}")
    if lab.size != n:
        raise ValueError(f"{what} have {lab.size} entries but the token table has {n} rows (one per activation)")
    if not n:
        raise ValueError(f"{what} are empty: no activations")
    if lab.min() < 0:
        raise ValueError(f"{what} must be non-negative canonical component labels")
    sizes = np.bincount(lab)
    if not sizes.all() or sizes[0] != sizes.max():
        raise ValueError(f"{what} must be canonical: dense 0..C-1 with 0 the largest component")
    return lab.astype(np.int64)
