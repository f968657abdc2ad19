"""ComponentIndex.assign against a float64 brute force, including queries placed within 1e-6 of the
threshold on both sides and a query that bridges two components."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.graph import ComponentIndex, cosine_components


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(8, d)))
    x = centres[rng.integers(0, 8, n)] + rng.normal(scale=0.5, size=(n, d)) / np.sqrt(d)
    return _unit(x)


def test_assign_matches_brute_force() -> None:
    pts = _clustered(1800, 48, 0)
    far = _unit(np.random.default_rng(9).normal(size=(50, 48)))  # random directions: no neighbour
    x, q = pts[:1500].astype(np.float32), np.concatenate([pts[1500:], far])  # rows stored as float32
    t = 0.7
    labels = cosine_components(x, t)
    got = ComponentIndex(x.astype(np.float32), labels, t).assign(q)
    sims = q @ x.astype(np.float64).T  # the edge rule: float64 dot of the rows as stored
    for i in range(len(q)):
        linked = np.flatnonzero(sims[i] >= t)
        if len(linked) == 0:
            assert got.label[i] == -1 and got.n_neighbours[i] == 0
        else:
            comps = np.unique(labels[linked])
            assert got.label[i] == comps[0]
            assert got.n_neighbours[i] == len(linked)
            assert got.merges[i] == (len(comps) > 1)
            assert got.best_cosine[i] == pytest.approx(sims[i].max(), abs=1e-12)
    assert (got.label >= 0).any() and (got.label == -1).any()


def test_threshold_edges_and_bridges_are_exact() -> None:
    rng = np.random.default_rng(2)
    d, t = 32, 0.7
    a, b = _unit(rng.normal(size=(2, d)))
    b = _unit(b - (b @ a) * a)  # orthogonal to a
    rows = np.stack([a, b])
    labels = np.array([0, 1])
    r = rng.normal(size=d)
    r = _unit(r - (r @ a) * a - (r @ b) * b)  # orthogonal to a and b

    def at(c: float) -> np.ndarray:  # unit query with float64 cosine c to a and 0 to b
        return c * a + np.sqrt(1 - c * c) * r

    above, below = at(t + 1e-6), at(t - 1e-6)
    bridge = _unit(a + b)  # cosine 0.7071 to both
    got = ComponentIndex(rows, labels, t).assign(np.stack([above, below, bridge]))
    assert (above @ a) >= t > (below @ a)
    assert got.label[:2].tolist() == [0, -1]
    assert got.label[2] == 0 and got.merges[2] and got.n_neighbours[2] == 2


def test_bad_input_is_named() -> None:
    x = _unit(np.random.default_rng(3).normal(size=(10, 8)))
    index = ComponentIndex(x, np.zeros(10, np.int64), 0.7)
    with pytest.raises(ValueError, match="queries must be \\[M, 8\\]"):
        index.assign(np.ones((2, 5)))
    with pytest.raises(ValueError, match="queries rows are not unit L2 norm"):
        index.assign(np.ones((2, 8)))
    with pytest.raises(ValueError, match="non-finite"):
        index.assign(np.full((1, 8), np.nan))
    with pytest.raises(ValueError, match="labels"):
        ComponentIndex(x, np.zeros(9, np.int64), 0.7)
