"""Figures are valid PNGs of a sensible size, written atomically."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.outputs.figures import PNG_SIGNATURE, percolation_png, size_spectrum_png, write_png


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
