"""Where the run's threshold sits on the threshold sweep, what carries the jump there, and how the components
grow with N.

The single-linkage forest gives the components at every threshold for the price of a cut, so the sweep is
fine (every 0.01) and the transition is located on it: as the threshold rises the giant component breaks
up, and the *second*-largest component peaks where it does (the usual finite-size marker of percolation).
In a single-linkage forest that peak is always one merge seen from above: the second-largest component at
``t_c`` joins the giant just below ``t_c`` along one path of forest edges (:func:`transition_bridges`). When
that path is one edge or a few (:data:`FEW_BRIDGES`), the "transition" is a bridge between two pieces, not a
percolation transition, and the words say so.
The N-scaling curve merges the tile forests of the first k shards (their union is a spanning forest of
the graph induced on those rows, by the cycle property), for k = 1..n_shards: exact, with no new pair work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from actgeo_assets.lib.graph import ForestEdges, SingleLinkageForest, component_summary, merge_forests

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


#: A jump carried by at most this many forest edges is called a bridge, not a percolation transition.
FEW_BRIDGES = 3


@dataclass(frozen=True)
class Transition:
    """The transition read off a fine sweep: where the second-largest component peaks.

    ``t_c``: the threshold where the second-largest component is largest (the first such, scanning up);
    ``second_largest``: its size there (activations); ``giant_fraction_at_t_c``; ``threshold``: the run's
    threshold; ``neighbours``: components at the sweep thresholds next to the run's (``{t: n_components}``);
    ``words``: sentences saying what the peak is and where the threshold sits; ``at_or_above``: the sweep was
    cut off (prune_at) where the second-largest component is largest, so the transition is at ``t_c`` or above.
    Added (defaults keep older records readable): ``below``: the sweep threshold just below ``t_c``;
    ``second_largest_below``: the second-largest component there; ``bridges``: :func:`transition_bridges`
    (empty when no forest was given or the peak is a lower bound); ``kind``: "bridge" (one or a few forest
    edges carry the jump), "transition" (more do) or "" (not known: no forest)."""

    t_c: float
    second_largest: int
    giant_fraction_at_t_c: float
    threshold: float
    neighbours: dict[str, int]
    words: str
    at_or_above: bool = False  # the sweep stops at prune_at with the peak there: t_c is a lower bound
    below: float | None = None
    second_largest_below: int | None = None
    bridges: dict[str, Any] = field(default_factory=dict)
    kind: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def transition_bridges(forest: SingleLinkageForest, t_c: float, below: float | None = None) -> dict[str, Any]:
    """The forest edges that join the second-largest component at ``t_c`` to the giant below ``t_c``.

    Cut ``forest`` at ``t_c`` (canonical labels: 0 = the giant, 1 = the second-largest), contract every
    component at ``t_c`` to one node: the forest edges below ``t_c`` then form a forest on those nodes, and its
    unique path from component 1 to component 0 is what joins them (single linkage: they join at the lowest
    weight on it, ``joined_at``). Returns ``{}`` when there is no second component, else a JSON-able dict:
    ``t_c``, ``below`` (the sweep step under ``t_c``), ``giant_size``, ``second_size``, ``joined``
    (False: the two never join above the forest's min_threshold), ``joined_at``, ``count`` (edges on the path),
    ``in_step`` (of them with weight in ``[below, t_c)``), ``pieces`` (sizes of the smaller components at
    ``t_c`` the path passes through), and ``edges``: one per path edge, from the second-largest towards the
    giant: ``rows`` [a, b] (global rows, ``a`` on the second-largest's side), ``weight`` (cosine),
    ``sizes`` [size of a's component at t_c, size of b's]."""
    labels = forest.labels_at(t_c)
    sizes = np.bincount(labels)
    if len(sizes) < 2:
        return {}
    e = forest.edges
    k = int(np.searchsorted(-e.weight, -t_c, side="right"))  # edges kept at t_c (weight >= t_c) come first
    src, dst, w = e.src[k:], e.dst[k:], e.weight[k:]
    cu, cv = labels[src], labels[dst]
    c = len(sizes)
    out: dict[str, Any] = {"t_c": float(t_c), "below": None if below is None else float(below),
                           "giant_size": int(sizes[0]), "second_size": int(sizes[1]), "joined": False,
                           "joined_at": None, "count": 0, "in_step": 0, "pieces": [], "edges": []}
    g = sp.csr_matrix((np.arange(1, len(cu) + 1, dtype=np.float64), (cu, cv)), shape=(c, c))
    g = g + g.T  # each contracted pair appears once (a forest contracted along subtrees stays a forest)
    order, pred = breadth_first_order(g, 1, directed=False, return_predecessors=True)
    if pred[0] < 0:
        return out
    path = [0]
    while path[-1] != 1:
        path.append(int(pred[path[-1]]))
    path.reverse()  # component 1 (second-largest) ... component 0 (giant)
    edges = []
    for a, b in zip(path[:-1], path[1:], strict=True):
        idx = int(g[a, b]) - 1
        ra, rb = int(src[idx]), int(dst[idx])
        if labels[ra] != a:
            ra, rb = rb, ra
        edges.append({"rows": [ra, rb], "weight": float(w[idx]), "sizes": [int(sizes[a]), int(sizes[b])]})
    weights = [x["weight"] for x in edges]
    out.update(joined=True, joined_at=float(min(weights)), count=len(edges),
               in_step=int(sum(below is None or wt >= below - 1e-12 for wt in weights)),
               pieces=[int(sizes[p]) for p in path[1:-1]], edges=edges)
    return out


def _bridge_words(t_c: float, bridges: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, clause) for the peak's join: "bridge" when few forest edges carry it, else "transition"."""
    if not bridges or not bridges.get("joined"):
        return "", ""
    n = int(bridges["count"])
    ws = sorted(x["weight"] for x in bridges["edges"])
    cos = f"cosine {ws[0]:.4f}" if n == 1 else f"cosines {', '.join(f'{v:.4f}' for v in ws)}"
    via = (f" through {len(bridges['pieces'])} smaller piece{'s' if len(bridges['pieces']) != 1 else ''} "
           f"({', '.join(f'{p:,}' for p in bridges['pieces'])} activations)" if bridges["pieces"] else "")
    if n <= FEW_BRIDGES:
        what = "a single forest edge" if n == 1 else f"{n} forest edges"
        return "bridge", (f", joined to the giant below {t_c:.2f} by {what} ({cos}){via}: "
                          f"{'a bridge' if n == 1 else 'bridges'}, not a percolation transition")
    return "transition", (f", joined to the giant below {t_c:.2f} through {n} forest edges (cosines "
                          f"{ws[0]:.4f} to {ws[-1]:.4f}){via}")


def locate_transition(sweep: pd.DataFrame, threshold: float, cut_off_at: float | None = None,
                      forest: SingleLinkageForest | None = None) -> Transition:
    """The transition on a sweep table (columns threshold, n_components, largest_fraction,
    second_largest), and the run's ``threshold`` relative to it in words. ``cut_off_at``: the sweep stops
    there because the forest is exact only up to it (``prune_at``); a peak at that edge is then reported as a
    lower bound ("at or above"), not as the transition. ``forest``: the run's single-linkage forest; with it
    the forest edges that carry the jump are found (:func:`transition_bridges`) and the words say whether the
    peak is a bridge (:data:`FEW_BRIDGES` edges or fewer) or a transition; without it the words name only
    the peak."""
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
                 f"activations; the giant holds {float(s.loc[i, 'largest_fraction']):.1%} there), the top of the "
                 f"range this pruned forest is exact for (prune_at = {cut_off_at:g}): its peak (the transition) "
                 f"lies at or above it, so the run's threshold {threshold:g} sits at or below the transition (one "
                 f"giant dominates). Components: {counts}.")
        return Transition(t_c=t_c, second_largest=int(s.loc[i, "second_largest"]),
                          giant_fraction_at_t_c=float(s.loc[i, "largest_fraction"]), threshold=float(threshold),
                          neighbours={f"{t:.2f}": int(c) for t, c in zip(s["threshold"].iloc[-3:],
                                                                          s["n_components"].iloc[-3:], strict=True)},
                          words=words, at_or_above=True)
    below = float(s.loc[i - 1, "threshold"]) if i > 0 else None
    second_below = int(s.loc[i - 1, "second_largest"]) if i > 0 else None
    bridges = transition_bridges(forest, t_c, below) if forest is not None else {}
    kind, join = _bridge_words(t_c, bridges)
    ts = s["threshold"].to_numpy()
    j = int(np.argmin(np.abs(ts - threshold)))
    near = s.iloc[max(0, j - 1) : j + 2]
    neighbours = {f"{t:.2f}": int(c) for t, c in zip(near["threshold"], near["n_components"], strict=True)}
    gap = round(threshold - t_c, 9)  # grid thresholds differ by float error (0.6 - 0.57 > 0.03)
    if abs(gap) < FINE_STEP / 2:
        where = "at that peak"
    elif abs(gap) <= 0.03:
        where = f"{abs(gap):.2f} {'above' if gap > 0 else 'below'} that peak, close to it"
    else:
        side = "above it (the giant has broken up)" if gap > 0 else "below it (one giant dominates)"
        where = f"{abs(gap):.2f} {side}"
    counts = ", ".join(f"{c:,} at {t}" for t, c in neighbours.items())
    vals = list(neighbours.values())
    swing = (max(vals) - min(vals)) / 2 / max(int(s.loc[j, "n_components"]), 1) if len(vals) > 1 else 0.0
    step = (float(near["threshold"].max()) - float(near["threshold"].min())) / 2 if len(vals) > 1 else FINE_STEP
    sensitive = abs(gap) <= 0.03 or swing >= SENSITIVE_SWING * step / FINE_STEP
    jump = (f", up from {second_below:,} at {below:.2f}" if second_below is not None and below is not None else "")
    words = (f"The second-largest component peaks at t = {t_c:.2f} ({int(s.loc[i, 'second_largest']):,} activations"
             f"{jump}; the giant holds {float(s.loc[i, 'largest_fraction']):.1%} there){join}. The run's threshold "
             f"{threshold:g} sits {where}. Components: {counts}"
             + (f": +-{step:.2f} of threshold moves the count by about {swing:.0%}, so the summary is sensitive "
                "to the exact threshold." if sensitive else "."))
    return Transition(t_c=t_c, second_largest=int(s.loc[i, "second_largest"]),
                      giant_fraction_at_t_c=float(s.loc[i, "largest_fraction"]), threshold=float(threshold),
                      neighbours=neighbours, words=words, below=below, second_largest_below=second_below,
                      bridges=bridges, kind=kind)


def describe_bridges(bridges: Mapping[str, Any], tokens: pd.DataFrame, context: int = 6) -> str:
    """One plain-text sentence naming the endpoints of each bridge edge of :func:`transition_bridges`:
    token string, document, source, position and the ``context`` token strings before it in the same
    document. ``tokens``: the run's token table in global row order (columns ``doc_id``, ``position``,
    ``token``, ``source``; a ``row`` column, if present, gives each line's global row). "" when there are no
    bridges; ValueError naming the row when an endpoint is not in the table."""
    if not bridges or not bridges.get("joined") or not bridges.get("edges"):
        return ""
    missing = [c for c in ("doc_id", "position", "token", "source") if c not in tokens.columns]
    if missing:
        raise ValueError(f"describe_bridges: the token table lacks columns {missing}")
    table = tokens.set_index("row", drop=False) if "row" in tokens.columns else tokens
    by_doc = tokens.groupby("doc_id", sort=False)

    def endpoint(row: int) -> str:
        if row not in table.index:
            raise ValueError(f"describe_bridges: activation row {row} is not in the token table ({len(tokens):,} rows)")
        r = table.loc[row]
        doc = by_doc.get_group(r["doc_id"])
        before = doc[(doc["position"] < r["position"]) & (doc["position"] >= r["position"] - context)]
        left = "".join(str(t) for t in before.sort_values("position")["token"])
        return (f"{r['token']!r} (activation {row:,}; {r['source']}, document {r['doc_id']}, position "
                f"{int(r['position'])}; after {left[-60:]!r})")

    n = int(bridges["count"])
    parts = []
    for e in bridges["edges"]:
        a, b = e["rows"]
        parts.append(f"cosine {e['weight']:.4f} between {endpoint(int(a))}, in a piece of {e['sizes'][0]:,} "
                     f"activations at {bridges['t_c']:.2f}, and {endpoint(int(b))}, in a piece of {e['sizes'][1]:,}")
    head = (f"The second-largest component at {bridges['t_c']:.2f} ({bridges['second_size']:,} activations) joins "
            f"the giant ({bridges['giant_size']:,} activations) at cosine {bridges['joined_at']:.4f} through "
            f"{'one forest edge' if n == 1 else f'{n} forest edges'}")
    return head + ": " + "; ".join(parts) + "."


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
