"""Geometry across depth and across normalizations: one capture of several layers, compared.

The same activations (the same tokens, row ``i`` of every layer) are normalized each way of
:mod:`actgeo_assets.lib.capture.normalize` (``l2``, the study's, which keeps every cosine of the raw rows;
``center_l2``; ``rmsnorm``, the next block's own input norm) and, per (layer, normalization, threshold),
measured as the pipeline measures a run: the exact components of the cosine graph
(:func:`actgeo_assets.lib.graph.cosine_components`, float64-exact, pruned at its own threshold so a graph
where almost every pair is linked costs little more than one landmark pass), their number, the giant's
fraction and the singletons, and the mean pairwise cosine.

Mean pairwise cosine, exactly and in O(N d): for rows ``x_1..x_N`` the sum of all dot products over ordered
pairs ``i != j`` is ``|sum_i x_i|^2 - sum_i |x_i|^2``, so the mean over the ``N (N - 1)`` ordered pairs is
``(|sum x|^2 - sum |x_i|^2) / (N (N - 1))``, which for unit rows is ``(|sum x|^2 - N) / (N (N - 1))``.
It is computed in float64 with the rows' actual squared norms (float32 unit rows are unit within ~1e-7), so
it equals the mean of the off-diagonal of the dense float64 Gram matrix up to float64 rounding.

Where components land: for the top-k components of a reference layer (canonical ranks, 1 = the largest),
the members' labels in each other layer: the destination component holding most of them (its rank and
size), the fraction of the members it holds, how many destination components they spread over, and
whether the destination is that layer's giant (rank 1).

Rows that some normalization of some layer drops (not finite, zero vector) are dropped everywhere, so every
table describes the same tokens; :attr:`GeometryComparison.n_dropped` counts them.

:func:`giant_fraction_png` draws the giant fraction vs threshold, one line per layer, one panel per
normalization.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.capture.normalize import METHODS, normalize_rows
from actgeo_assets.lib.graph import cosine_components

#: Columns of :attr:`GeometryComparison.table`, one row per (layer, normalization, threshold).
TABLE_COLUMNS = ("layer", "normalization", "threshold", "n", "mean_cosine", "n_components", "largest",
                 "giant_fraction", "singletons", "non_singleton", "seconds")
#: Columns of :attr:`GeometryComparison.landing`, one row per (normalization, reference rank, other layer).
LANDING_COLUMNS = ("normalization", "threshold", "ref_layer", "rank", "size", "layer", "dest_rank",
                   "dest_size", "frac_in_dest", "n_dest_components", "dest_is_giant")


@dataclass(frozen=True)
class GeometryComparison:
    """What :func:`compare_geometry` measured.

    ``table``: :data:`TABLE_COLUMNS`, sorted by normalization (in the order given), layer, threshold.
    ``landing``: :data:`LANDING_COLUMNS` for the top-k components of ``reference_layer`` at
    ``landing_threshold`` (one block per normalization). ``n``: rows compared (the same tokens everywhere);
    ``n_dropped``: rows dropped because some (layer, normalization) could not normalize them; ``rows``:
    int64 ``[n]`` indices of the compared rows in the input; ``reference_labels``: normalization -> canonical
    int64 ``[n]`` labels of the reference layer at ``landing_threshold`` (0 = rank 1).
    """

    table: pd.DataFrame
    landing: pd.DataFrame
    n: int
    n_dropped: int
    reference_layer: int
    landing_threshold: float
    rows: np.ndarray
    reference_labels: dict[str, np.ndarray]

    def at(self, threshold: float) -> pd.DataFrame:
        """The table at one threshold as layers x normalizations of mean cosine, giant fraction and
        component count (the rows of ``table`` whose threshold is ``threshold``)."""
        sub = self.table[np.isclose(self.table["threshold"], threshold)]
        if sub.empty:
            raise ValueError(f"threshold {threshold} was not compared; thresholds: "
                             f"{sorted(self.table['threshold'].unique().tolist())}")
        return sub[["layer", "normalization", "mean_cosine", "giant_fraction", "n_components"]].reset_index(drop=True)


def mean_pairwise_cosine(x: np.ndarray, chunk: int = 65_536) -> float:
    """Mean dot product over ordered pairs ``i != j`` of the rows of ``x`` (``[N, d]``, N >= 2), in float64
    and O(N d): ``(|sum x|^2 - sum |x_i|^2) / (N (N - 1))``, i.e. ``(|sum x|^2 - N) / (N (N - 1))`` for
    unit rows. Equals the mean off-diagonal entry of the float64 Gram matrix. Streams ``chunk`` rows."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_cosine needs a 2-D array of at least 2 rows, got shape {x.shape}")
    n = x.shape[0]
    total = np.zeros(x.shape[1], dtype=np.float64)
    sq = 0.0
    for lo in range(0, n, chunk):
        block = np.asarray(x[lo : lo + chunk], dtype=np.float64)
        total += block.sum(axis=0)
        sq += float(np.einsum("ij,ij->", block, block))
    return float((total @ total - sq) / (n * (n - 1)))


def _landing(ref: np.ndarray, dest: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """Rows of the landing table (without normalization/threshold/layer keys) for the top ``top_k``
    canonical components of ``ref`` (int64 [N], 0 = largest) in the partition ``dest`` (int64 [N])."""
    dest_sizes = np.bincount(dest)
    ref_sizes = np.bincount(ref)
    rows = []
    for label in range(min(top_k, len(ref_sizes))):
        members = dest[ref == label]
        counts = np.bincount(members, minlength=len(dest_sizes))
        where = np.flatnonzero(counts)
        best = int(where[np.argmax(counts[where])])  # ties: the smallest label, i.e. the larger component
        rows.append({
            "rank": label + 1,
            "size": int(ref_sizes[label]),
            "dest_rank": best + 1,
            "dest_size": int(dest_sizes[best]),
            "frac_in_dest": float(counts[best] / members.size),
            "n_dest_components": int(where.size),
            "dest_is_giant": best == 0,
        })
    return rows


def landing_table(labels_by_layer: Mapping[int, np.ndarray], reference_layer: int, top_k: int = 10) -> pd.DataFrame:
    """Where the members of ``reference_layer``'s top ``top_k`` components land in every other layer.

    ``labels_by_layer``: layer -> canonical int64 labels ``[N]`` of the same N rows (0 = largest). Returns
    the :data:`LANDING_COLUMNS` table without ``normalization`` and ``threshold``: ``rank``/``size`` of the
    reference component, ``layer`` (the destination), ``dest_rank``/``dest_size`` of the destination
    component holding most members, ``frac_in_dest`` (that share), ``n_dest_components`` (over how many
    components the members spread) and ``dest_is_giant`` (``dest_rank == 1``)."""
    if reference_layer not in labels_by_layer:
        raise ValueError(f"reference layer {reference_layer} is not among the layers {sorted(labels_by_layer)}")
    ref = np.asarray(labels_by_layer[reference_layer], dtype=np.int64)
    rows = []
    for layer in sorted(labels_by_layer):
        if layer == reference_layer:
            continue
        dest = np.asarray(labels_by_layer[layer], dtype=np.int64)
        if dest.shape != ref.shape:
            raise ValueError(f"layer {layer} has {dest.shape[0]} labels, the reference layer {ref.shape[0]}")
        rows += [{"ref_layer": reference_layer, "layer": layer, **r} for r in _landing(ref, dest, top_k)]
    cols = [c for c in LANDING_COLUMNS if c not in ("normalization", "threshold")]
    return pd.DataFrame(rows, columns=cols)


def compare_geometry(
    acts_by_layer: Mapping[int, np.ndarray],
    normalizations: Sequence[str],
    thresholds: Sequence[float],
    *,
    norm_weights: Mapping[int, Mapping[str, Any]] | None = None,
    reference_layer: int | None = None,
    landing_threshold: float | None = None,
    top_k: int = 10,
    device: str = "auto",
) -> GeometryComparison:
    """Compare the cosine-graph geometry of several layers (and normalizations) of the same tokens.

    ``acts_by_layer``: layer -> raw ``[N, d]`` rows (any float dtype), row ``i`` the same token in every
    layer. ``normalizations``: names of :data:`actgeo_assets.lib.capture.normalize.METHODS`; ``center_l2`` subtracts
    the mean of the given rows of that layer; ``rmsnorm`` needs ``norm_weights[layer]`` (the dict of
    :func:`actgeo_assets.lib.capture.residual.next_block_norm` for that layer). ``thresholds``: cosines in (-1, 1].
    ``reference_layer`` (default: the middle layer given) and ``landing_threshold`` (default: 0.7 when
    compared, else the middle threshold; must be one of ``thresholds``) choose the landing table.
    ``device``: of :func:`cosine_components` (labels are the same on every device).

    Raises ``ValueError`` naming the problem: no layers or thresholds, an unknown normalization, a missing
    norm weight, layers of different shapes, fewer than 2 rows left.
    """
    layers = sorted(int(k) for k in acts_by_layer)
    if not layers:
        raise ValueError("acts_by_layer is empty: give the activations of at least one layer")
    norms = list(dict.fromkeys(normalizations))
    bad = [m for m in norms if m not in METHODS]
    if not norms or bad:
        raise ValueError(f"normalizations {list(normalizations)}: each must be one of {METHODS}")
    ts = sorted({float(t) for t in thresholds})
    if not ts or not all(-1.0 < t <= 1.0 for t in ts):
        raise ValueError(f"thresholds {list(thresholds)}: give at least one cosine in (-1, 1]")
    shapes = {layer: np.shape(acts_by_layer[layer]) for layer in layers}
    if len(set(shapes.values())) != 1 or len(shapes[layers[0]]) != 2:
        raise ValueError(f"every layer must hold the same [N, d] rows; got shapes {shapes}")
    if "rmsnorm" in norms:
        missing = [layer for layer in layers if norm_weights is None or layer not in norm_weights]
        if missing:
            raise ValueError(f"rmsnorm needs the next block's norm weight of layers {missing} (norm_weights)")
    ref = layers[len(layers) // 2] if reference_layer is None else int(reference_layer)
    if ref not in layers:
        raise ValueError(f"reference_layer {ref} is not among the layers {layers}")
    if landing_threshold is None:
        landing_threshold = 0.7 if any(np.isclose(t, 0.7) for t in ts) else ts[len(ts) // 2]
    t_land = next((t for t in ts if np.isclose(t, landing_threshold)), None)
    if t_land is None:
        raise ValueError(f"landing_threshold {landing_threshold} is not one of the thresholds {ts}")

    # 1. unit rows of every (layer, normalization); keep the rows every one of them could normalize
    n_raw = shapes[layers[0]][0]
    units: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    common = np.ones(n_raw, dtype=bool)
    for layer in layers:
        for method in norms:
            weight = dict(norm_weights[layer]) if method == "rmsnorm" and norm_weights is not None else None
            res = normalize_rows(acts_by_layer[layer], method, norm_weight=weight)
            units[layer, method] = (res.unit, res.kept)
            common &= res.kept
    n = int(common.sum())
    if n < 2:
        raise ValueError(f"only {n} of {n_raw} rows could be normalized in every layer and way: nothing to compare")

    # 2. per (layer, normalization): mean cosine, then the exact components at every threshold
    rows: list[dict[str, Any]] = []
    land: list[pd.DataFrame] = []
    ref_labels: dict[str, np.ndarray] = {}
    for method in norms:
        labels_at_land: dict[int, np.ndarray] = {}
        for layer in layers:
            unit, kept = units[layer, method]
            x = np.ascontiguousarray(unit[common[kept]])
            mean_cos = mean_pairwise_cosine(x)
            for t in ts:
                t0 = time.perf_counter()
                labels = cosine_components(x, t, device=device, prune=True)
                seconds = time.perf_counter() - t0
                sizes = np.bincount(labels)
                rows.append({
                    "layer": layer, "normalization": method, "threshold": t, "n": n, "mean_cosine": mean_cos,
                    "n_components": int(sizes.size), "largest": int(sizes[0]),
                    "giant_fraction": float(sizes[0] / n), "singletons": int(np.count_nonzero(sizes == 1)),
                    "non_singleton": int(np.count_nonzero(sizes[1:] >= 2)), "seconds": round(seconds, 3),
                })
                if t == t_land:
                    labels_at_land[layer] = labels
        ref_labels[method] = labels_at_land[ref]
        part = landing_table(labels_at_land, ref, top_k)
        part.insert(0, "threshold", t_land)
        part.insert(0, "normalization", method)
        land.append(part)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    landing = pd.concat(land, ignore_index=True)[list(LANDING_COLUMNS)]
    return GeometryComparison(table=table, landing=landing, n=n, n_dropped=n_raw - n, reference_layer=ref,
                              landing_threshold=t_land, rows=np.flatnonzero(common).astype(np.int64),
                              reference_labels=ref_labels)


def giant_fraction_png(table: pd.DataFrame, title: str) -> bytes:
    """PNG: giant fraction vs threshold, one line per layer, one panel per normalization (``table``:
    :attr:`GeometryComparison.table`), each line labelled with its layer and mean pairwise cosine."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if table.empty:
        raise ValueError("giant_fraction_png: the table is empty")
    norms = list(dict.fromkeys(table["normalization"]))
    fig = Figure(figsize=(4.2 * len(norms) + 0.6, 4.2), layout="constrained")
    axes = fig.subplots(1, len(norms), sharey=True, squeeze=False)[0]
    layers = sorted(table["layer"].unique())
    colors = {layer: f"C{i % 10}" for i, layer in enumerate(layers)}
    for ax, method in zip(axes, norms, strict=True):
        sub = table[table["normalization"] == method]
        for layer in layers:
            line = sub[sub["layer"] == layer].sort_values("threshold")
            if line.empty:
                continue
            ax.plot(line["threshold"], line["giant_fraction"], marker="o", ms=3, color=colors[layer],
                    label=f"layer {layer} (mean cos {line['mean_cosine'].iloc[0]:.2f})")
        ax.set_title(method)
        ax.set_xlabel("cosine threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("largest-component fraction")
    fig.suptitle(title, fontsize=9)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def section_html(comparison: GeometryComparison, *, threshold: float, png: bytes, describe: str,
                 landing_normalization: str, top_tokens: Mapping[tuple[str, int], str] | None = None) -> str:
    """The report's section (an HTML fragment, every data string escaped): what was compared, the figure
    (``png``, embedded), the layers x normalizations table at ``threshold`` (``<table id="layer-geometry">``)
    and where the reference layer's top components land (``<table id="layer-landing">``, for
    ``landing_normalization``; ``top_tokens[(normalization, rank)]`` names each reference component)."""
    at = comparison.at(threshold)
    norms = list(dict.fromkeys(at["normalization"]))
    layers = sorted(at["layer"].unique())
    by = at.set_index(["layer", "normalization"])
    head = "".join(f'<th colspan="3">{html.escape(m)}</th>' for m in norms)
    sub = "".join('<th class="num">mean cos</th><th class="num">giant</th><th class="num">components</th>'
                  for _ in norms)
    body = "".join(
        f"<tr><td>{int(layer)}</td>" + "".join(
            f'<td class="num">{by.loc[(layer, m), "mean_cosine"]:.3f}</td>'
            f'<td class="num">{by.loc[(layer, m), "giant_fraction"]:.3f}</td>'
            f'<td class="num">{int(by.loc[(layer, m), "n_components"]):,}</td>' for m in norms) + "</tr>"
        for layer in layers)
    out = [
        '<h2 id="layers-h">Geometry across depth and normalization</h2>',
        f'<p class="meta">{html.escape(describe)}: the same {comparison.n:,} tokens at layers '
        f"{', '.join(map(str, layers))}, captured in one forward pass"
        + (f" ({comparison.n_dropped:,} rows dropped: not normalizable in some layer)" if comparison.n_dropped else "")
        + ". Mean cos: the exact mean pairwise cosine of the unit rows; giant: the largest component's fraction; "
        "components: the exact count of the cosine graph.</p>",
        '<figure><img id="fig-layer-giant" alt="giant fraction vs threshold per layer and normalization" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"><figcaption>Largest-component '
        "fraction vs threshold, one line per layer, one panel per normalization.</figcaption></figure>",
        f'<table id="layer-geometry"><tr><th rowspan="2">layer</th>{head}</tr><tr>{sub}</tr>{body}</table>',
        f'<p class="meta">At cosine {threshold:g}.</p>',
    ]
    land = comparison.landing
    land = land[land["normalization"] == landing_normalization]
    if not land.empty:
        dests = sorted(land["layer"].unique())
        cell = {(int(r.rank), int(r.layer)): r for r in land.itertuples(index=False)}
        rows = []
        for rank, size in land.drop_duplicates("rank")[["rank", "size"]].itertuples(index=False):
            token = (top_tokens or {}).get((landing_normalization, int(rank)))
            label = f"{int(rank)}" + (f' <span class="tok">{html.escape(repr(token))}</span>' if token else "")
            tds = []
            for layer in dests:
                r = cell[(int(rank), layer)]
                where = "giant" if r.dest_is_giant else f"rank {int(r.dest_rank)}"
                tds.append(f'<td class="num">{where} ({int(r.dest_size):,}) \u00b7 {r.frac_in_dest:.0%} '
                           f"\u00b7 {int(r.n_dest_components):,}</td>")
            rows.append(f'<tr><td>{label}</td><td class="num">{int(size):,}</td>{"".join(tds)}</tr>')
        out += [
            f'<h3 id="layer-landing-h">Where layer {comparison.reference_layer}\'s largest components land '
            f"({html.escape(landing_normalization)}, cosine {comparison.landing_threshold:g})</h3>",
            '<p class="meta">Each cell: the component of that layer holding most of the members (the giant, or '
            "its rank) with its size, the share of the members it holds, and how many components the members "
            "spread over.</p>",
            '<table id="layer-landing"><tr><th>rank</th><th class="num">size</th>'
            + "".join(f'<th class="num">layer {int(layer)}</th>' for layer in dests) + "</tr>"
            + "".join(rows) + "</table>",
        ]
    return "\n".join(out)
