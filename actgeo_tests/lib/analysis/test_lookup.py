"""lib/analysis/lookup.py: the neighbour index's every verdict against a float64 brute force, without a run.

A query that is exactly a stored row joins its component, a far vector is a new singleton, a hand-built query
within the threshold of two components bridges them, queries 1e-6 either side of the threshold land on the
right side. The lookup of a run's text (lib/stages/lookup.py) is tested in ``stages/test_lookup.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actgeo_assets.lib.analysis.lookup import BRIDGES, JOINS, SINGLETON, NeighbourIndex
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit
from actgeo_tests.support.oracle import query_links as _expect


def _u(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _check(found, rows: np.ndarray, labels: np.ndarray, queries: np.ndarray, t: float, k: int) -> None:
    for i, f in enumerate(found):
        comps, n_linked, sims = _expect(rows, labels, queries[i], t)
        np.testing.assert_array_equal(f.labels, comps)
        assert f.n_linked == n_linked
        assert f.verdict == (SINGLETON if len(comps) == 0 else JOINS if len(comps) == 1 else BRIDGES)
        order = np.lexsort((np.arange(len(sims)), -sims))[:k]
        assert [n.row for n in f.nearest] == order.tolist()
        np.testing.assert_allclose([n.cosine for n in f.nearest], sims[order], rtol=0, atol=1e-12)
        assert [n.label for n in f.nearest] == labels[order].tolist()
        assert f.best_cosine == pytest.approx(sims.max(), abs=1e-12)


def test_member_far_and_near_threshold_queries_match_brute_force(tmp_path: Path) -> None:
    t = 0.7
    rows = clustered(600, 32, seed=3)
    labels = brute_force_labels(rows, t)
    assert 1 < labels.max() + 1 < len(rows)
    rng = np.random.default_rng(5)
    far = unit(rng.standard_normal((200, 32)))
    far = far[(far @ rows.astype(np.float64).T).max(axis=1) < t - 0.05][:3]  # no row near: a new singleton
    assert len(far) == 3
    members = rows[[0, 17, 123]]  # exactly stored rows: each joins its own component
    queries = np.concatenate([members, far, clustered(50, 32, seed=4)]).astype(np.float32)
    index = NeighbourIndex.from_rows(rows, labels, t, gpu=False)
    found = index.query(queries, k=4)
    _check(found, rows, labels, queries, t, k=4)
    for i, r in enumerate([0, 17, 123]):
        assert found[i].verdict == JOINS and found[i].label == labels[r]
        assert found[i].nearest[0].row == r and found[i].nearest[0].cosine == pytest.approx(1.0, abs=1e-6)
    assert all(f.verdict == SINGLETON and f.label is None and f.n_linked == 0 for f in found[3:6])
    # saved and loaded back: the same rows (float32, exactly) and the same answers; no temporary file left
    path = index.save(tmp_path / "index" / "n.faiss")
    assert sorted(p.name for p in path.parent.iterdir()) == ["n.faiss"]
    again = NeighbourIndex.load(path, labels, t, gpu=False)
    np.testing.assert_array_equal(again.rows(np.arange(len(rows))), rows)
    for a, b in zip(found, again.query(queries, k=4), strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (a.n_linked, a.nearest) == (b.n_linked, b.nearest)


def test_bridge_and_threshold_edges_are_exact() -> None:
    rng = np.random.default_rng(2)
    d, t = 48, 0.7
    a, b = unit(rng.standard_normal((2, d)))
    b = _u(b - (b @ a) * a)  # orthogonal to a: two components at 0.7
    r = rng.standard_normal(d)
    r = _u(r - (r @ a) * a - (r @ b) * b)  # orthogonal to both
    rows = np.stack([a, b, -a]).astype(np.float32)
    labels = brute_force_labels(rows, t)
    assert len(np.unique(labels)) == 3

    def at(c: float) -> np.ndarray:  # unit, float64 cosine c to row a (as stored) and ~0 to b
        a32 = rows[0].astype(np.float64)
        return c * a32 + np.sqrt(1 - c * c) * r

    bridge = _u(rows[0].astype(np.float64) + rows[1])  # cosine 0.7071 to both a and b
    queries = np.stack([bridge, at(t + 1e-6), at(t - 1e-6)])
    found = NeighbourIndex.from_rows(rows, labels, t, gpu=False).query(queries, k=2)
    _check(found, rows, labels, queries, t, k=2)
    assert found[0].verdict == BRIDGES and sorted(found[0].labels) == sorted(labels[[0, 1]].tolist())
    assert found[0].label == min(labels[0], labels[1]) and found[0].n_linked == 2
    assert found[1].verdict == JOINS and found[1].label == labels[0]
    assert found[2].verdict == SINGLETON


def test_gpu_range_emulation_matches_brute_force() -> None:
    """The GPU path's calls (faiss' range_search_gpu: k-NN, then the CPU index' range search for queries with
    more than gpu_k proposals), run here with the CPU index in the GPU index' place and a small gpu_k so
    that both branches are taken."""
    t = 0.6
    rows = clustered(500, 24, seed=7)
    labels = brute_force_labels(rows, t)
    queries = np.concatenate([rows[:20], clustered(30, 24, seed=8)])
    index = NeighbourIndex.from_rows(rows, labels, t, gpu=False)
    index.gpu_index, index.gpu_k = index.index, 5
    counts = (queries.astype(np.float64) @ rows.astype(np.float64).T >= t - index.slack).sum(axis=1)
    assert (counts > 5).any() and (counts <= 5).any()  # both branches
    _check(index.query(queries, k=3), rows, labels, queries, t, k=3)


def test_bad_input_names_the_problem() -> None:
    rows = clustered(50, 16, seed=1)
    labels = brute_force_labels(rows, 0.7)
    index = NeighbourIndex.from_rows(rows, labels, 0.7, gpu=False)
    with pytest.raises(ValueError, match="unit L2 norm"):
        index.query(rows[:2] * 2)
    with pytest.raises(ValueError, match=r"\[M, 16\]"):
        index.query(np.ones((1, 8)) / np.sqrt(8))
    with pytest.raises(ValueError, match="labels have 49 entries but the index holds 50"):
        NeighbourIndex(index.index, labels[:49], 0.7, gpu=False)
    with pytest.raises(ValueError, match="unit L2 norm"):
        NeighbourIndex.from_rows(rows * 3, labels, 0.7, gpu=False)
