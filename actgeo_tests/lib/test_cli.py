"""The ``actgeo components`` command on a small .npy."""

from __future__ import annotations

import numpy as np

from actgeo_assets.cli import main, normalize_rows
from actgeo_assets.lib.graph import canonical_labels, component_summary


def _acts(tmp_path, n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((3, d)) * 3
    x = c[rng.integers(0, 3, n)] + rng.standard_normal((n, d)) + 5.0  # offset: centering matters
    path = tmp_path / "acts.npy"
    np.save(path, x.astype(np.float16))
    return path, x.astype(np.float16)


def _brute(x, t):
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    return canonical_labels(connected_components(csr_matrix(s >= t), directed=False)[1])


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
    unit = normalize_rows(x, "center_l2")
    assert (labels == _brute(unit.astype(np.float64), 0.7)).all()
    text = capsys.readouterr().out
    s = component_summary(labels)
    assert f"components                             {s['n_components']:>12,}" in text
    assert "top-" in text and ", ".join(str(v) for v in s["top_sizes"][:3]) in text
    assert "threshold sweep" in text and "n_components" in text and "0.9" in text
    assert not list(tmp_path.glob(".labels*"))


def test_components_plain_l2(tmp_path, capsys):
    path, x = _acts(tmp_path, seed=1)
    out = tmp_path / "l.npy"
    assert main(["components", str(path), "--threshold", "0.95", "--normalize", "l2", "--out", str(out)]) == 0
    unit = normalize_rows(x, "l2").astype(np.float64)
    assert (np.load(out) == _brute(unit, 0.95)).all()
    assert "largest component" in capsys.readouterr().out


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
