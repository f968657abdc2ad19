"""The components stage's record: the shard jackknife (each replicate against scipy's components of a dense float64
Gram of the shards it keeps, read straight from the run's files) and the transition's bridges (their weights the
float64 cosines of their activations, and the forest without them splitting the two components)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.graph import SingleLinkageForest
from actgeo_assets.lib.store.layout import load_json
from actgeo_tests.support.tiny_run import run_rows


def _sizes(x: np.ndarray, t: float) -> np.ndarray:
    g = x @ x.T
    np.fill_diagonal(g, -2)
    return np.sort(np.bincount(connected_components(csr_matrix(g >= t), directed=False)[1]))[::-1]


def test_record_holds_jackknife_replicates_of_the_kept_shards(tiny_runs) -> None:
    run = tiny_runs()
    doc = run.record["uncertainty"]
    x, _, _ = run_rows(run.settings, run.layout)
    off = load_json(run.layout.offsets)
    t = run.settings.threshold
    keys = list(run.settings.shard_keys)
    assert doc["possible"] and doc["groups"] == [[k] for k in keys] and len(doc["replicates"]) == len(keys)
    assert doc["delete_two"] is None  # two shards: leaving two out leaves nothing
    for rep in doc["replicates"]:
        kept = [k for k in keys if k not in rep["left_out"]]
        rows = np.concatenate([np.arange(off["offsets"][k], off["offsets"][k] + off["sizes"][k]) for k in kept])
        sizes = _sizes(x[rows], t)
        assert (rep["n"], rep["n_components"], rep["second_largest"]) == (len(rows), len(sizes), int(sizes[1]))
        assert rep["largest_fraction"] == sizes[0] / len(rows)
    q = {d["key"]: d for d in doc["quantities"]}
    assert q["n_components"]["estimate"] == run.record["summary"]["n_components"]
    rates = np.array([r["components_per_1000"] for r in doc["replicates"]])
    se = np.sqrt((len(keys) - 1) / len(keys) * ((rates - rates.mean()) ** 2).sum())
    assert np.isclose(q["components_per_1000"]["se"], se)
    assert "Delete-one-shard jackknife over 2 shards" in doc["method"]


def test_record_names_the_bridges_of_the_transition(tiny_runs) -> None:
    run = tiny_runs()
    tr = run.record["transition"]
    x, _, _ = run_rows(run.settings, run.layout)
    b = tr["bridges"]
    if not b or not b["joined"]:  # nothing joins the second-largest to the giant: the words name no bridge
        assert "forest edge" not in tr["words"]
        return
    for e in b["edges"]:
        assert abs(float(x[e["rows"][0]] @ x[e["rows"][1]]) - e["weight"]) < 1e-4
    forest = SingleLinkageForest.load(run.layout.forest)
    w = forest.edges.weight
    path = {tuple(sorted(e["rows"])) for e in b["edges"]}
    keep = (w >= b["joined_at"]) & np.array([(s, d) not in path for s, d in zip(forest.edges.src, forest.edges.dst,
                                                                                 strict=True)])
    n = forest.n
    lab = connected_components(csr_matrix((np.ones(keep.sum()), (forest.edges.src[keep], forest.edges.dst[keep])),
                                          shape=(n, n)), directed=False)[1]
    first, last = b["edges"][0]["rows"][0], b["edges"][-1]["rows"][1]
    assert lab[first] != lab[last]  # without the path's edges the second-largest and the giant stay apart
    assert (tr["kind"] == "bridge") == (b["count"] <= 3)
    assert run.record["uncertainty"]["estimate"]["bridge_rows"] == [r for e in b["edges"] for r in e["rows"]]
    assert ("not a percolation transition" in tr["words"]) == (tr["kind"] == "bridge")


def test_pair_cosines_equal_plain_numpy_whatever_the_chunk(tmp_path, monkeypatch) -> None:
    """The histogram's sample of pair cosines read through row_getter from memory-mapped shards (preadv) equals
    the same pairs' dot products computed by plain numpy on the whole matrix, bit for bit, whatever the chunk."""
    import actgeo_assets.lib.stages.graph as graph_stage
    from actgeo_assets.lib.store.rows import row_getter

    rng = np.random.default_rng(8)
    x = rng.standard_normal((700, 33)).astype(np.float32)
    np.save(tmp_path / "a.npy", x[:300])
    np.save(tmp_path / "b.npy", x[300:])
    get = row_getter([(0, np.load(tmp_path / "a.npy", mmap_mode="r")), (300, np.load(tmp_path / "b.npy", mmap_mode="r"))])
    pick = np.random.default_rng(4)
    i = pick.integers(0, 700, 5000)
    j = (i + pick.integers(1, 700, 5000)) % 700
    want = np.einsum("ij,ij->i", x[i].astype(np.float64), x[j].astype(np.float64))
    assert np.all(i != j)
    np.testing.assert_array_equal(graph_stage.pair_cosines(get, 700, 5000, seed=4), want)
    monkeypatch.setattr(graph_stage, "PAIR_BLOCK_BYTES", 1)  # chunks of 256 pairs
    np.testing.assert_array_equal(graph_stage.pair_cosines(get, 700, 5000, seed=4), want)
