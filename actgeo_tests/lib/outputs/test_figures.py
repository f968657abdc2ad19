"""Figures are valid PNGs of a sensible size, written atomically, and legible: annotations off the data, each
quantity on its own axis, axes spanning the data, one unit word."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from actgeo_assets.lib.outputs.figures import (
    PNG_SIGNATURE,
    cosine_histogram_figure,
    log_span,
    n_scaling_figure,
    n_scaling_png,
    percolation_figure,
    percolation_png,
    size_spectrum_figure,
    size_spectrum_png,
    write_png,
)


def _check_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 600
    assert img[..., :3].std() > 0.05  # not a blank canvas
    return img


def test_size_spectrum_png() -> None:
    labels = np.repeat(np.arange(6), [50, 9, 4, 1, 1, 1])
    img = _check_png(size_spectrum_png(labels, "model=m layer=3 threshold=0.7"))
    assert img.shape[1] > img.shape[0]  # two panels side by side
    _check_png(size_spectrum_png(np.zeros(5, dtype=np.int64), "one component"))
    with pytest.raises(ValueError, match="empty"):
        size_spectrum_png(np.array([], dtype=np.int64), "x")


def test_percolation_png_and_write(tmp_path) -> None:
    sweep = pd.DataFrame({"threshold": [0.9, 0.5, 0.7], "n_components": [900, 3, 120],
                          "largest_fraction": [0.05, 1.0, 0.8], "largest": [5, 100, 80]})
    data = percolation_png(sweep, "model=m " * 30, 0.7)
    _check_png(data)
    out = write_png(tmp_path / "sub" / "percolation.png", data)
    assert out.read_bytes() == data and [p.name for p in out.parent.iterdir()] == ["percolation.png"]
    with pytest.raises(ValueError, match="lacks columns"):
        percolation_png(sweep.drop(columns="largest_fraction"), "x", 0.7)
    with pytest.raises(ValueError, match="not PNG"):
        write_png(tmp_path / "bad.png", b"GIF89a")


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _texts(fig, start: str):
    return [t for t in fig.findobj(Text) if t.get_text().startswith(start) and t.get_visible()]


def test_cosine_histogram_annotation_is_off_the_bars() -> None:
    rng = np.random.default_rng(0)
    cos = np.concatenate([rng.normal(0.05, 0.12, 50_000), rng.uniform(0.5, 1, 3_000)])
    fig = cosine_histogram_figure(cos, 0.7, 1000, "model=m", edges_at_threshold=4321)
    renderer = _drawn(fig)
    (note,) = _texts(fig, "dashed: t = 0.7")
    assert f"{np.mean(cos >= 0.7):.2%} of sampled pairs" in note.get_text() and "exact: 4,321 of 499,500" in note.get_text()
    box = note.get_window_extent(renderer)
    ax = fig.axes[0]
    axbox = ax.get_window_extent(renderer)
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) > 50
    for bar in bars:  # each bar as drawn (clipped to the axes) stays clear of the note
        b = Bbox.intersection(bar.get_window_extent(renderer), axbox)
        assert b is None or not b.overlaps(box)
    assert box.y0 >= axbox.y1 - 1  # above the axes, where no bar can be


def test_percolation_figure_gives_the_second_largest_its_own_axis() -> None:
    t = np.round(np.arange(0.5, 0.96, 0.01), 2)
    second = np.where(t < 0.8, 60, np.maximum(5083 - (t - 0.8) * 30000, 10)).astype(int)
    sweep = pd.DataFrame({"threshold": t, "n_components": (t * 10000).astype(int),
                          "largest_fraction": np.linspace(0.98, 0.03, len(t)), "second_largest": second,
                          "largest": (np.linspace(0.98, 0.03, len(t)) * 30000).astype(int)})
    fig = percolation_figure(sweep, "model=m", 0.7, t_c=0.8, t_c_interval=(0.74, 0.86))
    renderer = _drawn(fig)
    by_label = {ax.get_ylabel(): ax for ax in fig.axes}
    own = by_label["second-largest component\n(activations)"]
    (line,) = own.get_lines()[:1]
    np.testing.assert_array_equal(line.get_ydata(), second)  # in activations, not rescaled onto a fraction
    assert own.get_ylim()[0] <= 0 and own.get_ylim()[1] >= second.max()
    frac = by_label["giant's fraction of the activations"]
    assert all(ln.get_ydata().max() <= 1 for ln in frac.get_lines() if len(ln.get_ydata()) == len(t))
    for ax in fig.axes:  # every axis spans the thresholds
        assert ax.get_xlim()[0] <= 0.5 and ax.get_xlim()[1] >= 0.95
    (marks,) = _texts(fig, "dashed: the run's threshold t = 0.7")
    assert "t_c = 0.80" in marks.get_text() and "0.74-0.86" in marks.get_text()
    box = marks.get_window_extent(renderer)
    assert all(box.y0 >= ax.get_window_extent(renderer).y1 - 1 for ax in fig.axes)  # above every panel
    _check_png(percolation_png(sweep, "model=m", 0.7, t_c=0.8))


def test_n_scaling_axis_spans_the_data_not_the_study() -> None:
    scaling = pd.DataFrame({"n": [7_500, 15_000, 22_500, 30_000], "largest_fraction": [0.62, 0.67, 0.72, 0.755],
                            "n_components": [2_300, 3_900, 4_970, 5_815]})
    fig = n_scaling_figure(scaling, "model=m", study_n=1_000_000)
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= 7_500 and hi >= 30_000 and hi <= 30_000 * 1.5 and lo >= 7_500 / 1.5
    assert fig.axes[0].get_xlabel() == "N (activations)"
    (note,) = _texts(fig, "circles: the giant's fraction")
    assert "the study's N = 1,000,000 is 33x this run's largest N, off the axis" in note.get_text().replace("\n", " ")
    near = n_scaling_figure(scaling.assign(n=scaling["n"] * 20), "model=m", study_n=1_000_000)
    lo, hi = near.axes[0].get_xlim()
    assert lo <= 150_000 and hi >= 1_000_000
    assert any(list(ln.get_xdata()) == [1_000_000, 1_000_000] for ln in near.axes[0].get_lines())
    assert log_span(np.array([10.0, 100.0]), pad=2) == (5.0, 200.0)
    with pytest.raises(ValueError, match="no positive values"):
        log_span(np.array([0.0]))
    _check_png(n_scaling_png(scaling, "model=m", study_n=1_000_000))


def test_size_spectrum_counts_activations() -> None:
    fig = size_spectrum_figure(np.repeat(np.arange(4), [20, 5, 1, 1]), "model=m")
    assert fig.axes[0].get_ylabel() == "component size (activations)" == fig.axes[1].get_xlabel()
    assert not any(ax.get_legend() for ax in fig.axes)  # nothing drawn over the points
