"""Intervals from resampling shards, computed exactly from the tile forests.

Shards are document-disjoint, so a shard (or a group of consecutive shards) is the resampling unit. The
forest of the graph induced on any subset of shards is the Kruskal merge of the tile forests of the pairs
inside that subset (the cycle property, as the N-scaling curve uses): every replicate is exact and costs no
new pair work.

Method (stated beside the numbers by :func:`shard_jackknife`'s ``method``):

- **Delete-one jackknife** over ``g`` units (the shards, or :func:`shard_groups` of them when there are more
  than :data:`MAX_GROUPS`): replicate ``i`` leaves unit ``i`` out and holds the rest of the activations.
  ``SE_jack = sqrt((g-1)/g * sum_i (theta_i - mean)^2)``; the 95% interval is
  ``estimate +- t(0.975, g-1) * SE_jack`` (Student's t with g-1 degrees of freedom, not 1.96: with 4 shards
  the normal quantile would understate it). The interval is centred on the full run's estimate, not
  bias-corrected, because the quantity wanted is the one *at the run's N*.
- **Delete-two** (every pair of units left out, when that is at most :data:`DELETE_TWO_MAX` subsets):
  ``SE^2 = (g-2)/(2 C(g,2)) * sum_S (theta_S - mean)^2``, as a check: its replicates hold fewer activations.
- **Counts depend on N.** The component count is compared across replicates of different N as *components
  per 1,000 activations*; the count's interval at the run's N is that rate's interval times N / 1,000. The
  giant's fraction and the transition threshold are compared as they are. The jackknife's bias estimate
  ``(g-d)/d * (mean - estimate)`` is reported too: for these statistics it mostly measures how they drift
  with N (fewer activations: more components per 1,000, a smaller giant), not an error of the estimate.
- The second-largest component (at the run's threshold and at its peak) is an extreme statistic and the
  transition threshold an argmax on a 0.01 grid: the jackknife's SE is rough for such statistics, so every
  replicate's value is given beside it and should be read first.
- With one unit no interval is possible (nothing to leave out); the result says so.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from actgeo_assets.lib.analysis.percolation import locate_transition, transition_bridges
from actgeo_assets.lib.graph import ForestEdges, SingleLinkageForest, merge_forests

#: Most resampling units; more shards than this are grouped into this many consecutive groups.
MAX_GROUPS = 10
#: The delete-two jackknife is computed when it needs at most this many replicates.
DELETE_TWO_MAX = 10
#: Confidence level of the intervals.
CONFIDENCE = 0.95

#: The quantities resampled: (key, label as the report shows it).
QUANTITIES = (
    ("components_per_1000", "components per 1,000 activations"),
    ("n_components", "components"),
    ("largest_fraction", "the giant's fraction"),
    ("second_largest", "second-largest component (activations)"),
    ("t_c", "transition threshold t_c (second-largest component's peak)"),
    ("second_largest_at_t_c", "second-largest component at its peak (activations)"),
)


def shard_groups(n_shards: int, max_groups: int = MAX_GROUPS) -> list[list[int]]:
    """Consecutive shard indices in ``min(n_shards, max_groups)`` groups of near-equal shard counts."""
    if n_shards < 1:
        raise ValueError(f"shard_groups: need at least one shard, got {n_shards}")
    g = min(n_shards, max(1, max_groups))
    bounds = np.linspace(0, n_shards, g + 1).round().astype(int)
    return [list(range(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def replicate_stats(forest: SingleLinkageForest, threshold: float, thresholds: Sequence[float],
                    cut_off_at: float | None = None, sweep: pd.DataFrame | None = None) -> dict[str, Any]:
    """The resampled quantities of one forest: component count (and per 1,000 activations), the giant's
    fraction and the second-largest component at ``threshold``, and the second-largest's peak ``t_c`` on the
    sweep over ``thresholds`` (``t_c_at_or_above``: the peak is at the cut-off ``cut_off_at``, a lower bound),
    and the forest edges that join the peak's second-largest component to the giant (``bridge_count``,
    ``bridge_weights``, ``bridge_rows``: the rows of ``forest``, pairs flattened; :func:`transition_bridges`;
    0 / empty when they do not join or the peak is a lower bound). ``sweep``: the forest's sweep when already
    computed."""
    sizes = forest.component_sizes_at(threshold)
    sw = forest.sweep(thresholds) if sweep is None else sweep
    tr = locate_transition(sw, threshold, cut_off_at=cut_off_at)
    b = {} if tr.at_or_above else transition_bridges(forest, tr.t_c, tr.below)
    edges = b.get("edges", []) if b.get("joined") else []
    return {"n": int(forest.n), "n_components": int(len(sizes)),
            "components_per_1000": 1000.0 * len(sizes) / forest.n,
            "largest_fraction": float(sizes[0]) / forest.n,
            "second_largest": int(sizes[1]) if len(sizes) > 1 else 0,
            "t_c": float(tr.t_c), "t_c_at_or_above": bool(tr.at_or_above),
            "second_largest_at_t_c": int(tr.second_largest), "bridge_count": len(edges),
            "bridge_weights": [e["weight"] for e in edges], "bridge_rows": [r for e in edges for r in e["rows"]]}


def jackknife(estimate: float, replicates: Sequence[float], g: int, d: int = 1,
              confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Delete-``d`` jackknife over ``g`` units from the ``C(g, d)`` replicate values: ``se``, ``mean``,
    ``bias`` ((g-d)/d * (mean - estimate)), ``low``/``high`` = estimate -+ t(confidence, g-1) * se,
    ``t_multiplier``. None for se/low/high when g < 2."""
    r = np.asarray(replicates, dtype=np.float64)
    if g < 2 or len(r) == 0:
        return {"se": None, "mean": None, "bias": None, "low": None, "high": None, "t_multiplier": None}
    if len(r) != math.comb(g, d):
        raise ValueError(f"jackknife: {len(r)} replicates for delete-{d} over {g} units (expected {math.comb(g, d)})")
    mean = float(r.mean())
    se = math.sqrt((g - d) / (d * len(r)) * float(np.sum((r - mean) ** 2)))
    tq = float(sps.t.ppf(0.5 + confidence / 2, g - 1))
    return {"se": se, "mean": mean, "bias": (g - d) / d * (mean - estimate), "low": estimate - tq * se,
            "high": estimate + tq * se, "t_multiplier": tq}


def _clip(q: dict[str, Any], lo: float | None, hi: float | None) -> dict[str, Any]:
    if q["low"] is not None and lo is not None:
        q["low"] = max(q["low"], lo)
    if q["high"] is not None and hi is not None:
        q["high"] = min(q["high"], hi)
    return q


def _quantities(full: Mapping[str, Any], reps: list[dict[str, Any]], g: int, d: int) -> list[dict[str, Any]]:
    """One entry per :data:`QUANTITIES`: estimate, the jackknife's fields, the replicate values, a note."""
    out = []
    n = int(full["n"])
    rate = jackknife(full["components_per_1000"], [r["components_per_1000"] for r in reps], g, d)
    for key, label in QUANTITIES:
        vals = [r[key] for r in reps]
        note = ""
        if key == "n_components":  # counts of different N: the rate's interval at the run's N
            q = {k: (v if v is None or k == "t_multiplier" else v * n / 1000) for k, v in rate.items()}
            note = (f"the interval is the components-per-1,000 interval times {n:,} / 1,000; the replicates are "
                    "raw counts of fewer activations")
        else:
            q = jackknife(full[key], vals, g, d)
        if key in ("second_largest", "second_largest_at_t_c"):
            note = "an extreme statistic: the jackknife's SE is rough here; read the replicates"
        if key == "t_c":
            note = "an argmax on a 0.01 grid: read the replicates"
            if full.get("t_c_at_or_above") or any(r["t_c_at_or_above"] for r in reps):
                q.update(se=None, low=None, high=None)
                note = "a lower bound (the sweep stops at prune_at where the peak is): no interval"
        lo, hi = {"largest_fraction": (0.0, 1.0), "t_c": (None, None)}.get(key, (0.0, None))
        out.append({"key": key, "label": label, "estimate": full[key], **_clip(q, lo, hi), "replicates": vals,
                    "note": note})
    return out


def shard_jackknife(shard_keys: Sequence[str], shard_sizes: Sequence[int],
                    tile_of: Callable[[int, int], ForestEdges], threshold: float, thresholds: Sequence[float],
                    full: Mapping[str, Any], cut_off_at: float | None = None,
                    bridge_rows: Sequence[int] = (), max_groups: int = MAX_GROUPS) -> dict[str, Any]:
    """Jackknife intervals over shards (see the module docstring) as a JSON-able dict.

    ``shard_sizes``: activations per shard in order (shard i holds global rows from its offset on);
    ``tile_of(i, j)`` (``i <= j``): the forest of shard pair (i, j) in global row ids, the diagonal one
    including the shard's own forest; ``thresholds``: the fine sweep's; ``full``: :func:`replicate_stats` of
    the whole run; ``bridge_rows``: the transition's bridge endpoints (each replicate says whether it holds
    them all; each replicate also names its own, :func:`replicate_stats`). Returns ``method`` (words), ``scheme``, ``units``, ``groups`` (shard keys per unit), ``n``,
    ``confidence``, ``possible``, ``replicates`` (one dict per replicate: ``left_out``, the quantities,
    ``bridge_kept``), ``quantities`` (per :data:`QUANTITIES`: ``key``, ``label``, ``estimate``, ``se``,
    ``mean``, ``bias``, ``low``, ``high``, ``t_multiplier``, ``replicates``, ``note``) and ``delete_two``
    (the same for the delete-two replicates, or None)."""
    if len(shard_keys) != len(shard_sizes):
        raise ValueError(f"shard_jackknife: {len(shard_keys)} shard keys but {len(shard_sizes)} sizes")
    sizes = [int(s) for s in shard_sizes]
    n = int(sum(sizes))
    offsets = np.cumsum([0, *sizes])
    groups = shard_groups(len(sizes), max_groups)
    g = len(groups)
    names = [[str(shard_keys[i]) for i in grp] for grp in groups]
    unit = "shard" if all(len(grp) == 1 for grp in groups) else "group of shards"
    base = {"scheme": "delete-one jackknife", "units": unit, "groups": names, "n": n, "confidence": CONFIDENCE,
            "estimate": dict(full)}
    if g < 2:
        return {**base, "possible": False, "replicates": [], "delete_two": None,
                "quantities": _quantities(full, [], 1, 1),
                "method": "One shard: no resampling interval is possible (the jackknife needs at least two "
                          "document-disjoint shards to leave out in turn)."}
    pair_forest = _group_pair_forests(groups, tile_of, n)
    bridge = np.asarray(list(bridge_rows), dtype=np.int64)

    def replicate(left: tuple[int, ...]) -> dict[str, Any]:
        kept = [u for u in range(g) if u not in left]
        rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for u in kept for i in groups[u]])
        local = np.full(n, -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        parts = [dataclasses.replace(f, src=local[f.src], dst=local[f.dst])
                 for (a, b), f in pair_forest.items() if a in kept and b in kept]
        forest = merge_forests(parts, len(rows))
        st = replicate_stats(forest, threshold, thresholds, cut_off_at)
        kept_bridge = bool(np.all(local[bridge] >= 0)) if len(bridge) else None
        st["bridge_rows"] = [int(rows[r]) for r in st["bridge_rows"]]  # the replicate's own bridge, global rows
        return {"left_out": [k for u in left for k in names[u]], **st, "bridge_kept": kept_bridge}

    reps = [replicate((u,)) for u in range(g)]
    two = None
    if g >= 3 and math.comb(g, 2) <= DELETE_TWO_MAX:
        reps2 = [replicate(c) for c in itertools.combinations(range(g), 2)]
        two = {"scheme": "delete-two jackknife", "replicates": reps2, "quantities": _quantities(full, reps2, g, 2)}
    tq = float(sps.t.ppf(0.5 + CONFIDENCE / 2, g - 1))
    per = f"{g} {unit}s" if unit == "shard" else f"{g} groups of consecutive shards"
    method = (f"Delete-one-{'shard' if unit == 'shard' else 'group'} jackknife over {per} (document-disjoint): "
              f"each of the {g} replicates leaves one out and holds about {(g - 1)}/{g} of the {n:,} activations; "
              f"every replicate's components are exact (the tile forests of the shards it keeps, merged). "
              f"95% interval = estimate +- t(0.975, {g - 1} df) x SE_jack = +-{tq:.2f} SE_jack, centred on the "
              f"full run's estimate. Counts are compared across replicates as components per 1,000 activations "
              f"(they grow with N); the second-largest component and t_c are extreme/grid statistics, so read "
              f"their replicate values.")
    if two is not None:
        method += (f" Delete-two check: the {len(two['replicates'])} replicates that leave two out (about "
                   f"{g - 2}/{g} of the activations each).")
    return {**base, "possible": True, "method": method, "replicates": reps, "quantities": _quantities(full, reps, g, 1),
            "delete_two": two}


def _group_pair_forests(groups: list[list[int]], tile_of: Callable[[int, int], ForestEdges],
                        n: int) -> dict[tuple[int, int], ForestEdges]:
    """``{(a, b): forest}`` for units a <= b: the tiles between their shards (global ids), merged once when a
    unit holds several shards (each replicate then merges O(units^2) forests instead of O(shards^2))."""
    out = {}
    for a, b in itertools.combinations_with_replacement(range(len(groups)), 2):
        tiles = [tile_of(i, j) for i in groups[a] for j in groups[b] if i <= j]
        out[(a, b)] = tiles[0] if len(tiles) == 1 else merge_forests(tiles, n).edges
    return out
