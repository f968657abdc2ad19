"""Figures of a run, as PNG bytes (matplotlib's Agg canvas; no pyplot state, no display needed).

- :func:`size_spectrum_png`: Figure 1 of the study -- component size vs rank (log-log) and the number of
  components of each size (log-log).
- :func:`percolation_png`: the threshold sweep in two panels sharing the threshold axis: the giant's fraction
  (left axis) and the number of components (right axis, log) above; the second-largest component in
  activations on its own axis below; the chosen threshold dashed, the transition ``t_c`` shaded.
- :func:`n_scaling_png`: the giant's fraction and the number of components against N, the axis spanning the
  data (the study's N is marked only when it is within reach, else named in a note).
- :func:`cosine_histogram_png`: the histogram of sampled pairwise cosines, the threshold marked.

Legibility rules every figure keeps: nothing is drawn over data (annotations sit outside the axes, above
them; no legend boxes inside), each quantity has its own labelled axis, every axis spans its data
(:func:`log_span`), and the unit is "activations". Each ``*_figure`` returns the matplotlib ``Figure`` (tests
inspect it), each ``*_png`` its PNG bytes. Each figure carries a title naming the run (pass
:meth:`RunSettings.describe`). Write with :func:`write_png` (atomic).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from actgeo_assets.lib.store.layout import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 110

SWEEP_COLUMNS = ("threshold", "n_components", "largest_fraction")
#: A study N farther than this factor beyond the data is named in a note, not drawn on the axis.
STUDY_REACH = 3.0
RED, BLUE, PURPLE = "#c0392b", "#1f5f99", "#7d3c98"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _canvas(fig: Figure) -> Figure:
    FigureCanvasAgg(fig)
    return fig


def _wrap_title(title: str, width: int = 110) -> str:
    """Break a long run description at spaces so it fits above the panels."""
    words, lines, cur = title.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "\n".join(lines)


def log_span(values: np.ndarray, pad: float = 1.3) -> tuple[float, float]:
    """Limits of a log axis that span positive ``values`` with a factor ``pad`` of room on each side."""
    v = np.asarray(values, dtype=np.float64)
    v = v[v > 0]
    if v.size == 0:
        raise ValueError("log_span: no positive values")
    return float(v.min()) / pad, float(v.max()) * pad


def size_spectrum_figure(labels: np.ndarray, title: str) -> Figure:
    """Figure of component sizes of a labelling ``int [N]`` (any dense non-negative labels).

    Left: size of the r-th largest component vs r (log-log), the giant marked. Right: how many components
    have each size (log-log); singletons are the leftmost point.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("size_spectrum_png: labels is empty")
    sizes = np.bincount(labels.astype(np.int64))
    sizes = np.sort(sizes[sizes > 0])[::-1]
    ranks = np.arange(1, sizes.size + 1)
    uniq, counts = np.unique(sizes, return_counts=True)

    fig = _canvas(Figure(figsize=(11, 4.4)))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(ranks, sizes, marker=".", linestyle="-", linewidth=0.8, markersize=3, color=BLUE)
    ax1.scatter([1], [sizes[0]], color=RED, zorder=3, s=30)
    ax1.set_xlabel("component rank")
    ax1.set_ylabel("component size (activations)")
    ax1.set_title(f"size vs rank ({sizes.size:,} components; red: the largest, {sizes[0]:,} activations)",
                  fontsize=9)
    ax1.grid(True, which="major", alpha=0.3)

    ax2.loglog(uniq, counts, marker="o", linestyle="none", markersize=3.5, color=BLUE)
    n_single = int(counts[0]) if uniq[0] == 1 else 0
    ax2.set_xlabel("component size (activations)")
    ax2.set_ylabel("number of components")
    ax2.set_title(f"components per size ({n_single:,} singletons)", fontsize=9)
    ax2.grid(True, which="major", alpha=0.3)
    if sizes.size == 1:  # a single point: give log axes some room
        for ax in (ax1, ax2):
            ax.margins(0.5)

    fig.suptitle(_wrap_title(title), fontsize=9)
    fig.tight_layout()
    return fig


def size_spectrum_png(labels: np.ndarray, title: str) -> bytes:
    """PNG of :func:`size_spectrum_figure`."""
    return _png(size_spectrum_figure(labels, title))


def percolation_figure(sweep: pd.DataFrame, title: str, threshold: float, t_c: float | None = None,
                       t_c_lower_bound: bool = False, t_c_interval: tuple[float, float] | None = None) -> Figure:
    """Figure of the threshold sweep (columns ``threshold``, ``n_components``, ``largest_fraction``,
    optionally ``second_largest``; one row per threshold). Top panel: the giant's fraction (left axis) and the
    number of components (right axis, log); bottom panel (when ``second_largest`` is there): the second-largest
    component in activations on its own axis. Dashed: the chosen ``threshold``; shaded: the transition ``t_c``
    (where the second-largest component peaks; ``t_c_lower_bound``: the sweep stops there, so it is at or
    above) and, lighter, ``t_c_interval`` (its resampling interval). The labels of the marks sit above the
    top panel, never on the curves."""
    missing = [c for c in SWEEP_COLUMNS if c not in sweep.columns]
    if missing:
        raise ValueError(f"sweep table lacks columns {missing} (has {list(sweep.columns)})")
    if len(sweep) == 0:
        raise ValueError("percolation_png: sweep table is empty")
    s = sweep.sort_values("threshold")
    t = s["threshold"].to_numpy(dtype=float)
    has_second = "second_largest" in s.columns
    fig = _canvas(Figure(figsize=(8, 6.2 if has_second else 4.4)))
    if has_second:
        ax, ax3 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        ax, ax3 = fig.subplots(), None
    marker = "o" if len(s) <= 12 else None
    ax.plot(t, s["largest_fraction"].to_numpy(dtype=float), marker=marker, markersize=3, color=RED)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("giant's fraction of the activations", color=RED)
    ax.tick_params(axis="y", colors=RED)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(t, s["n_components"].to_numpy(dtype=float), marker="s" if marker else None, markersize=3, color=BLUE)
    ax2.set_yscale("log")
    ax2.set_ylabel("number of components (log)", color=BLUE)
    ax2.tick_params(axis="y", colors=BLUE)
    panels = [ax] if ax3 is None else [ax, ax3]
    if ax3 is not None:
        ax3.plot(t, s["second_largest"].to_numpy(dtype=float), marker=marker, markersize=3, color=PURPLE)
        ax3.set_ylabel("second-largest component\n(activations)", color=PURPLE)
        ax3.tick_params(axis="y", colors=PURPLE)
        ax3.set_ylim(bottom=0)
        ax3.grid(True, alpha=0.3)
    for p in panels:
        p.axvline(threshold, color="black", linestyle="--", linewidth=1)
        if t_c_interval is not None and all(v is not None for v in t_c_interval):
            p.axvspan(float(t_c_interval[0]), float(t_c_interval[1]), color=PURPLE, alpha=0.07)
        if t_c is not None:
            p.axvspan(t_c - 0.005, t_c + 0.005, color=PURPLE, alpha=0.2)
    panels[-1].set_xlabel("cosine threshold")
    pad = max((t.max() - t.min()) * 0.02, 0.005)
    ax.set_xlim(t.min() - pad, t.max() + pad)
    marks = f"dashed: the run's threshold t = {threshold:g}"
    if t_c is not None:
        marks += (f"; shaded: t_c {'>=' if t_c_lower_bound else '='} {t_c:.2f}, where the second-largest "
                  "component peaks")
        if t_c_interval is not None and all(v is not None for v in t_c_interval):
            marks += f" (light: its interval {t_c_interval[0]:.2f}-{t_c_interval[1]:.2f})"
    ax.set_title(_wrap_title(marks, 100), fontsize=8, loc="left")
    fig.suptitle(_wrap_title(title, 90), fontsize=9)
    fig.tight_layout()
    return fig


def percolation_png(sweep: pd.DataFrame, title: str, threshold: float, t_c: float | None = None,
                    t_c_lower_bound: bool = False, t_c_interval: tuple[float, float] | None = None) -> bytes:
    """PNG of :func:`percolation_figure`."""
    return _png(percolation_figure(sweep, title, threshold, t_c, t_c_lower_bound, t_c_interval))


def n_scaling_figure(scaling: pd.DataFrame, title: str, study_n: int | None = None) -> Figure:
    """Figure of the N-scaling curve (columns ``n``, ``largest_fraction``, ``n_components``: one row per number
    of shards): the giant's fraction (left axis) and the number of components (right axis) against N in
    activations (log), the x axis spanning the data (:func:`log_span`). ``study_n`` is drawn when it lies
    within :data:`STUDY_REACH` of the data, else named in the note above the axes."""
    if scaling.empty:
        raise ValueError("n_scaling_png: the scaling table is empty")
    n = scaling["n"].to_numpy(dtype=float)
    fig = _canvas(Figure(figsize=(8, 4.2)))
    ax = fig.subplots()
    ax.plot(n, scaling["largest_fraction"].to_numpy(dtype=float), marker="o", color=RED)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("N (activations)")
    ax.set_ylabel("giant's fraction of the activations", color=RED)
    ax.tick_params(axis="y", colors=RED)
    ax.grid(True, alpha=0.3, which="both")
    ax2 = ax.twinx()
    ax2.plot(n, scaling["n_components"].to_numpy(dtype=float), marker="s", color=BLUE)
    ax2.set_ylabel("number of components", color=BLUE)
    ax2.tick_params(axis="y", colors=BLUE)
    lo, hi = log_span(n)
    note = "circles: the giant's fraction; squares: the number of components"
    if study_n:
        if n.min() / STUDY_REACH <= study_n <= n.max() * STUDY_REACH:
            lo, hi = min(lo, study_n / 1.3), max(hi, study_n * 1.3)
            ax.axvline(study_n, color="black", linestyle="--", linewidth=1)
            note += f"; dashed: the study's N = {int(study_n):,}"
        else:
            note += (f"; the study's N = {int(study_n):,} is {study_n / n.max():,.0f}x this run's largest N, off "
                     "the axis" if study_n > n.max() else f"; the study's N = {int(study_n):,} is off the axis")
    ax.set_xlim(lo, hi)
    ax.set_title(_wrap_title(note, 100), fontsize=8, loc="left")
    fig.suptitle(_wrap_title(title, 90), fontsize=9)
    fig.tight_layout()
    return fig


def n_scaling_png(scaling: pd.DataFrame, title: str, study_n: int | None = None) -> bytes:
    """PNG of :func:`n_scaling_figure`."""
    return _png(n_scaling_figure(scaling, title, study_n))


def cosine_histogram_figure(cosines: np.ndarray, threshold: float, n: int, title: str,
                            edges_at_threshold: int | None = None) -> Figure:
    """Figure of the histogram of pairwise cosines (``cosines``: float64 values of uniformly sampled pairs),
    log count axis, the threshold dashed and, above the axes (never on the bars), the sampled share at or
    above it and, when known, the exact number of pairs there."""
    if len(cosines) == 0:
        raise ValueError("cosine_histogram_png: no sampled pairs")
    fig = _canvas(Figure(figsize=(8, 4.0)))
    ax = fig.subplots()
    ax.hist(np.clip(cosines, -1, 1), bins=np.linspace(-1, 1, 201), color=BLUE, alpha=0.85)
    ax.set_yscale("log")
    ax.set_xlim(-1, 1)
    ax.set_xlabel("cosine similarity of a pair of activations")
    ax.set_ylabel(f"pairs of activations (of {len(cosines):,} sampled)")
    ax.axvline(threshold, color=RED, linestyle="--", linewidth=1)
    pairs = n * (n - 1) // 2
    share = float(np.mean(cosines >= threshold))
    text = f"dashed: t = {threshold:g}; {share:.2%} of sampled pairs at or above it"
    if edges_at_threshold is not None:
        text += f"; exact: {edges_at_threshold:,} of {pairs:,} pairs ({edges_at_threshold / max(pairs, 1):.2%})"
    ax.set_title(_wrap_title(text, 100), fontsize=8, color=RED, loc="left")
    ax.grid(True, alpha=0.3)
    fig.suptitle(_wrap_title(title, 90), fontsize=9)
    fig.tight_layout()
    return fig


def cosine_histogram_png(cosines: np.ndarray, threshold: float, n: int, title: str,
                         edges_at_threshold: int | None = None) -> bytes:
    """PNG of :func:`cosine_histogram_figure`."""
    return _png(cosine_histogram_figure(cosines, threshold, n, title, edges_at_threshold))


def write_png(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write PNG bytes to ``path``; ValueError if ``data`` is not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"not PNG data (first bytes {data[:8]!r}); refusing to write {path}")
    with atomic_path(path, ".png") as tmp:
        tmp.write_bytes(data)
    return Path(path)
