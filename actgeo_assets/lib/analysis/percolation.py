"""Where the run's threshold sits on the percolation curve, and how the components grow with N.

The single-linkage forest gives the components at every threshold for the price of a cut, so the sweep is
fine (every 0.01) and the transition is located on it: as the threshold rises the giant component breaks
up, and the *second*-largest component peaks where it does (the usual finite-size marker of percolation).
The N-scaling curve merges the tile forests of the first k shards (their union is a spanning forest of
the graph induced on those rows, by the cycle property), for k = 1..n_shards: exact, with no new pair work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.graph import ForestEdges, component_summary, merge_forests

#: Step of the fine sweep.
FINE_STEP = 0.01
#: Highest threshold of the fine sweep (above it nearly every row is a singleton).
FINE_MAX = 0.95
#: A component count that moves by this fraction per 0.01 of threshold is called sensitive.
SENSITIVE_SWING = 0.05


def fine_thresholds(min_threshold: float, listed: Iterable[float] = (), step: float = FINE_STEP,
                    top: float = FINE_MAX) -> list[float]:
    """Every ``step`` from ``min_threshold`` (rounded up to the grid) to ``top``, plus the ``listed``
    thresholds; sorted, rounded to 1e-9 so 0.7 is 0.7."""
    lo = np.ceil(round(min_threshold / step, 9)) * step
    grid = np.round(np.arange(lo, top + step / 2, step), 9)
    return sorted({float(t) for t in grid if t >= min_threshold} | {float(t) for t in listed})


@dataclass(frozen=True)
class Transition:
    """The percolation transition read off a fine sweep.

    ``t_c``: the threshold where the second-largest component is largest (the first such, scanning up);
    ``second_largest``: its size there; ``giant_fraction_at_t_c``; ``threshold``: the run's threshold;
    ``neighbours``: components at the sweep thresholds next to the run's (``{t: n_components}``);
    ``words``: one sentence saying where the threshold sits; ``at_or_above``: the sweep was cut off (prune_at)
    where the second-largest component is largest, so the transition is at ``t_c`` or above it."""

    t_c: float
    second_largest: int
    giant_fraction_at_t_c: float
    threshold: float
    neighbours: dict[str, int]
    words: str
    at_or_above: bool = False  # the sweep stops at prune_at with the peak there: t_c is a lower bound

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def locate_transition(sweep: pd.DataFrame, threshold: float, cut_off_at: float | None = None) -> Transition:
    """The transition on a sweep table (columns threshold, n_components, largest_fraction,
    second_largest), and the run's ``threshold`` relative to it in words. ``cut_off_at``: the sweep stops
    there because the forest is exact only up to it (``prune_at``); a peak at that edge is then reported as a
    lower bound ("at or above"), not as the transition."""
    s = sweep.sort_values("threshold").reset_index(drop=True)
    if s.empty:
        raise ValueError("locate_transition: the sweep is empty")
    i = int(np.argmax(s["second_largest"].to_numpy()))
    t_c = float(s.loc[i, "threshold"])
    second = s["second_largest"].to_numpy()
    if (cut_off_at is not None and abs(float(s["threshold"].iloc[-1]) - cut_off_at) < FINE_STEP / 2
            and second[-1] == second.max()):  # largest at the cut-off (a plateau ending there included)
        i, t_c = len(s) - 1, float(s["threshold"].iloc[-1])
        counts = ", ".join(f"{int(c):,} at {t:.2f}" for t, c in zip(s["threshold"].iloc[-3:],
                                                                   s["n_components"].iloc[-3:], strict=True))
        words = (f"The second-largest component is at its largest at t = {t_c:.2f} ({int(s.loc[i, 'second_largest']):,} "
                 f"rows; the giant holds {float(s.loc[i, 'largest_fraction']):.1%} there), the top of the range "
                 f"this pruned forest is exact for (prune_at = {cut_off_at:g}): the percolation transition lies at "
                 f"or above it, so the run's threshold {threshold:g} sits at or below the transition (one giant "
                 f"dominates). Components: {counts}.")
        return Transition(t_c=t_c, second_largest=int(s.loc[i, "second_largest"]),
                          giant_fraction_at_t_c=float(s.loc[i, "largest_fraction"]), threshold=float(threshold),
                          neighbours={f"{t:.2f}": int(c) for t, c in zip(s["threshold"].iloc[-3:],
                                                                          s["n_components"].iloc[-3:], strict=True)},
                          words=words, at_or_above=True)
    ts = s["threshold"].to_numpy()
    j = int(np.argmin(np.abs(ts - threshold)))
    near = s.iloc[max(0, j - 1) : j + 2]
    neighbours = {f"{t:.2f}": int(c) for t, c in zip(near["threshold"], near["n_components"], strict=True)}
    gap = round(threshold - t_c, 9)  # grid thresholds differ by float error (0.6 - 0.57 > 0.03)
    if abs(gap) < FINE_STEP / 2:
        where = "on the percolation transition"
    elif abs(gap) <= 0.03:
        where = f"{abs(gap):.2f} {'above' if gap > 0 else 'below'} the percolation transition, inside it"
    else:
        side = "above it (the giant has broken up)" if gap > 0 else "below it (one giant dominates)"
        where = f"{abs(gap):.2f} {side}"
    counts = ", ".join(f"{c:,} at {t}" for t, c in neighbours.items())
    vals = list(neighbours.values())
    swing = (max(vals) - min(vals)) / 2 / max(int(s.loc[j, "n_components"]), 1) if len(vals) > 1 else 0.0
    step = (float(near["threshold"].max()) - float(near["threshold"].min())) / 2 if len(vals) > 1 else FINE_STEP
    sensitive = abs(gap) <= 0.03 or swing >= SENSITIVE_SWING * step / FINE_STEP
    words = (f"The second-largest component peaks at t = {t_c:.2f} ({int(s.loc[i, 'second_largest']):,} rows; "
             f"the giant holds {float(s.loc[i, 'largest_fraction']):.1%} there): the run's threshold "
             f"{threshold:g} sits {where}. Components: {counts}"
             + (f": +-{step:.2f} of threshold moves the count by about {swing:.0%}, so the summary is sensitive "
                "to the exact threshold." if sensitive else "."))
    return Transition(t_c=t_c, second_largest=int(s.loc[i, "second_largest"]),
                      giant_fraction_at_t_c=float(s.loc[i, "largest_fraction"]), threshold=float(threshold),
                      neighbours=neighbours, words=words)


#: Columns of :func:`n_scaling`.
SCALING_COLUMNS = ("shards", "n", "n_components", "largest", "largest_fraction", "non_singleton", "singletons")


def n_scaling(shard_sizes: list[int], tile_of: Callable[[int, int], ForestEdges], threshold: float) -> pd.DataFrame:
    """Components at ``threshold`` over the first k shards, k = 1..len(shard_sizes), exactly.

    ``shard_sizes``: rows per shard, in order (shard i holds global rows ``offset_i ..``);
    ``tile_of(i, j)`` (``i <= j``): the forest of shard pair (i, j) in *global* row ids. The forest of
    the first k shards is merged once and carried to k + 1 with only the new pairs (i, k)."""
    rows = []
    carried: ForestEdges | None = None
    n = 0
    for k, size in enumerate(shard_sizes):
        n += int(size)
        parts = ([carried] if carried is not None else []) + [tile_of(i, k) for i in range(k + 1)]
        forest = merge_forests(parts, n)
        carried = forest.edges
        s = component_summary(forest.labels_at(threshold), top=1)
        rows.append({"shards": k + 1, "n": n, **{c: s[c] for c in SCALING_COLUMNS[2:]}})
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
