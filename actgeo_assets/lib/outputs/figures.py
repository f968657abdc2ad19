"""Figures of a run, as PNG bytes (matplotlib's Agg canvas; no pyplot state, no display needed).

- :func:`size_spectrum_png`: Figure 1 of the study -- component size vs rank (log-log) and the number of
  components of each size (log-log).
- :func:`percolation_png`: the percolation curve -- largest-component fraction and number of components vs
  threshold (twin axes), with the chosen threshold marked.

Each figure carries a title naming the run (pass :meth:`RunSettings.describe`). Write with :func:`write_png`
(atomic).
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


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


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


def size_spectrum_png(labels: np.ndarray, title: str) -> bytes:
    """PNG of component sizes of a labelling ``int [N]`` (any dense non-negative labels).

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

    fig = Figure(figsize=(11, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(ranks, sizes, marker=".", linestyle="-", linewidth=0.8, markersize=3, color="#1f5f99")
    ax1.scatter([1], [sizes[0]], color="#c0392b", zorder=3, s=30, label=f"largest: {sizes[0]:,}")
    ax1.set_xlabel("component rank")
    ax1.set_ylabel("component size (tokens)")
    ax1.set_title(f"size vs rank ({sizes.size:,} components)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(True, which="major", alpha=0.3)

    ax2.loglog(uniq, counts, marker="o", linestyle="none", markersize=3.5, color="#1f5f99")
    n_single = int(counts[0]) if uniq[0] == 1 else 0
    ax2.set_xlabel("component size (tokens)")
    ax2.set_ylabel("number of components")
    ax2.set_title(f"components per size ({n_single:,} singletons)")
    ax2.grid(True, which="major", alpha=0.3)
    if sizes.size == 1:  # a single point: give log axes some room
        for ax in (ax1, ax2):
            ax.margins(0.5)

    fig.suptitle(_wrap_title(title), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def percolation_png(sweep: pd.DataFrame, title: str, threshold: float, t_c: float | None = None,
                    t_c_lower_bound: bool = False) -> bytes:
    """PNG of the percolation curve from a sweep table (columns ``threshold``, ``n_components``,
    ``largest_fraction``, optionally ``second_largest``; one row per threshold): largest-component
    fraction (left axis) and number of components (right axis, log) vs threshold, with a dashed vertical
    line at the chosen ``threshold``, the second-largest component's share (dotted) and the transition
    ``t_c`` (where it peaks) shaded; ``t_c_lower_bound``: the sweep stops at ``t_c`` (prune_at), so the
    transition is at or above it."""
    missing = [c for c in SWEEP_COLUMNS if c not in sweep.columns]
    if missing:
        raise ValueError(f"sweep table lacks columns {missing} (has {list(sweep.columns)})")
    if len(sweep) == 0:
        raise ValueError("percolation_png: sweep table is empty")
    s = sweep.sort_values("threshold")
    t = s["threshold"].to_numpy(dtype=float)

    fig = Figure(figsize=(8, 4.4))
    ax = fig.subplots()
    marker = "o" if len(s) <= 12 else None
    ax.plot(t, s["largest_fraction"].to_numpy(dtype=float), marker=marker, markersize=3, color="#c0392b",
            label="largest-component fraction")
    if "second_largest" in s.columns and "largest" in s.columns:
        n = float(s["largest"].iloc[0] / max(float(s["largest_fraction"].iloc[0]), 1e-12))
        second = s["second_largest"].to_numpy(dtype=float) / n
        scale = 1.0 / second.max() if second.max() > 0 else 1.0
        ax.plot(t, second * scale, linestyle=":", color="#7d3c98",
                label=f"second-largest component (x{scale:.0f}, peak = transition)")
    if t_c is not None:
        ax.axvspan(t_c - 0.005, t_c + 0.005, color="#7d3c98", alpha=0.15)
        ax.annotate(f"t_c {'>=' if t_c_lower_bound else '='} {t_c:.2f}", xy=(t_c, 0.5), xytext=(4, 0),
                    textcoords="offset points", fontsize=8, color="#7d3c98")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("cosine threshold")
    ax.set_ylabel("largest-component fraction", color="#c0392b")
    ax.tick_params(axis="y", colors="#c0392b")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(t, s["n_components"].to_numpy(dtype=float), marker="s" if marker else None, markersize=3,
             color="#1f5f99", label="number of components")
    ax2.set_yscale("log")
    ax2.set_ylabel("number of components", color="#1f5f99")
    ax2.tick_params(axis="y", colors="#1f5f99")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"t = {threshold:g}", xy=(threshold, 1.0), xytext=(4, -12), textcoords="offset points",
                fontsize=8)
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")] + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center left", fontsize=8)
    ax.set_title(_wrap_title(title, 80), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def n_scaling_png(scaling: pd.DataFrame, title: str, study_n: int) -> bytes:
    """PNG of the N-scaling curve (columns ``n``, ``largest_fraction``, ``n_components``: one row per number
    of shards): giant fraction (left) and number of components (right) against N on a log axis, with the
    study's N marked."""
    if scaling.empty:
        raise ValueError("n_scaling_png: the scaling table is empty")
    n = scaling["n"].to_numpy(dtype=float)
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    ax.plot(n, scaling["largest_fraction"].to_numpy(dtype=float), marker="o", color="#c0392b",
            label="largest-component fraction")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("N (activations)")
    ax.set_ylabel("largest-component fraction", color="#c0392b")
    ax.grid(True, alpha=0.3, which="both")
    ax2 = ax.twinx()
    ax2.plot(n, scaling["n_components"].to_numpy(dtype=float), marker="s", color="#1f5f99",
             label="number of components")
    ax2.set_ylabel("number of components", color="#1f5f99")
    ax.axvline(study_n, color="black", linestyle="--", linewidth=1)
    ax.annotate(f"study: N = {study_n:,}", xy=(study_n, 0.05), xytext=(-4, 0), textcoords="offset points",
                fontsize=8, ha="right")
    ax.set_xlim(min(n.min(), study_n) / 1.5, max(n.max(), study_n) * 1.5)
    lines = ax.get_lines()[:1] + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center left", fontsize=8)
    ax.set_title(_wrap_title(title, 80), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def cosine_histogram_png(cosines: np.ndarray, threshold: float, n: int, title: str,
                         edges_at_threshold: int | None = None) -> bytes:
    """PNG of the histogram of pairwise cosines (``cosines``: float64 values of uniformly sampled pairs),
    log count axis, the threshold marked and, when known, the exact number of pairs at or above it."""
    if len(cosines) == 0:
        raise ValueError("cosine_histogram_png: no sampled pairs")
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    ax.hist(np.clip(cosines, -1, 1), bins=np.linspace(-1, 1, 201), color="#1f5f99", alpha=0.85)
    ax.set_yscale("log")
    ax.set_xlabel("cosine similarity of a pair of activations")
    ax.set_ylabel(f"pairs (of {len(cosines):,} sampled)")
    ax.axvline(threshold, color="#c0392b", linestyle="--", linewidth=1)
    pairs = n * (n - 1) // 2
    share = float(np.mean(cosines >= threshold))
    text = f"t = {threshold:g}: {share:.2%} of sampled pairs"
    if edges_at_threshold is not None:
        text += f"\nexact: {edges_at_threshold:,} of {pairs:,} pairs ({edges_at_threshold / max(pairs, 1):.2%})"
    ax.annotate(text, xy=(threshold, 0.95), xycoords=("data", "axes fraction"), xytext=(-6, 0),
                textcoords="offset points", ha="right", va="top", fontsize=8, color="#c0392b")
    ax.grid(True, alpha=0.3)
    ax.set_title(_wrap_title(title, 80), fontsize=9)
    fig.tight_layout()
    return _png(fig)


def write_png(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write PNG bytes to ``path``; ValueError if ``data`` is not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"not PNG data (first bytes {data[:8]!r}); refusing to write {path}")
    with atomic_path(path, ".png") as tmp:
        tmp.write_bytes(data)
    return Path(path)
