"""The ``actgeo components`` command on a small .npy."""

from __future__ import annotations

import numpy as np

from actgeo_assets.cli import main
from actgeo_tests.support.oracle import brute_force_labels


def _acts(tmp_path, n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((3, d)) * 3
    x = c[rng.integers(0, 3, n)] + rng.standard_normal((n, d)) + 5.0  # offset: centering matters
    path = tmp_path / "acts.npy"
    np.save(path, x.astype(np.float16))
    return path, x.astype(np.float16)


def _unit32(x: np.ndarray, center: bool) -> np.ndarray:
    """The expected unit rows, by the textbook formula in float64 (independent of lib/normalize), stored
    as float32 as the CLI hands them to the engine (whose edge rule is the float64 dot of those rows)."""
    y = x.astype(np.float64)
    if center:
        y = y - y.mean(axis=0)
    return (y / np.sqrt((y * y).sum(axis=1, keepdims=True))).astype(np.float32)


def test_components_with_sweep(tmp_path, capsys):
    path, x = _acts(tmp_path)
    out = tmp_path / "labels.npy"
    rc = main(
        [
            "components",
            str(path),
            "--threshold",
            "0.7",
            "--normalize",
            "center_l2",
            "--sweep",
            "0.5,0.7,0.9",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    labels = np.load(out)
    np.testing.assert_array_equal(labels, brute_force_labels(_unit32(x, center=True), 0.7))
    text = capsys.readouterr().out
    sizes = np.bincount(labels)
    lines = text.splitlines()
    assert f"  {'activations (N)':<39}{len(x):>12,}" in lines
    assert f"  {'components':<39}{len(sizes):>12,}" in lines
    assert f"  {'singletons':<39}{int((sizes == 1).sum()):>12,}" in lines
    assert "  top-20 sizes: " + ", ".join(f"{v:,}" for v in sizes[:20]) in lines
    assert "threshold sweep" in text and "n_components" in text and "0.9" in text
    assert not list(tmp_path.glob(".labels*"))


def test_components_plain_l2(tmp_path, capsys):
    path, x = _acts(tmp_path, seed=1)
    out = tmp_path / "l.npy"
    assert main(["components", str(path), "--threshold", "0.95", "--normalize", "l2", "--out", str(out)]) == 0
    labels = np.load(out)
    np.testing.assert_array_equal(labels, brute_force_labels(_unit32(x, center=False), 0.95))
    largest = int(np.bincount(labels)[0])
    assert f"{largest:>12,}  ({100 * largest / len(x):.1f}% of N)" in capsys.readouterr().out


def test_errors_exit_2_with_message(tmp_path, capsys):
    path, _ = _acts(tmp_path)
    out = str(tmp_path / "l.npy")
    assert main(["components", str(path), "--out", out]) == 2  # rows not unit, normalize=none
    assert "not unit L2 norm" in capsys.readouterr().err
    assert main(["components", str(tmp_path / "missing.npy"), "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["components", str(path), "--normalize", "l2", "--threshold", "2", "--out", out]) == 2
    assert "threshold" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    bad.write_text("nope")
    assert main(["components", str(bad), "--out", out]) == 2
    assert "bad.npy" in capsys.readouterr().err
    assert main(["components", str(path), "--sweep", "a,b", "--out", out]) == 2
    assert main([]) == 2
