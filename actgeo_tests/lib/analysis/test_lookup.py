"""`actgeo lookup` and the neighbour index: every verdict against a float64 brute force.

Library level (no run): a query that is exactly a stored row joins its component, a far vector is a new
singleton, a hand-built query within the threshold of two components bridges them, queries 1e-6 either
side of the threshold land on the right side. Run level: the shared tiny run (``support/tiny_run.py``, built
by the library's stages); every token of a text gets the components a dense float64 cosine against all
normalized rows gives (labels from labels.npy). The `neighbour_index` asset and `actgeo lookup` through the CLI
are tested in ``e2e/test_lookup_dagster.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.lookup import BRIDGES, JOINS, SINGLETON, NeighbourIndex
from actgeo_tests.support.oracle import brute_force_labels, clustered, unit
from actgeo_tests.support.oracle import query_links as _expect
from actgeo_tests.support.tiny_run import QUERY_TEXT as TEXT
from actgeo_tests.support.tiny_run import FinishedRun, run_rows


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


# --------------------------------------------------------------------------------------------------
# a small run of the tiny model

@pytest.fixture(scope="module")
def run(tiny_runs: Callable[..., FinishedRun]) -> FinishedRun:
    return tiny_runs()


def _run_rows(run: FinishedRun) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All normalized rows (float64), labels.npy, and the kept token table, read independently."""
    return run_rows(run.settings, run.layout)


def test_lookup_text_matches_brute_force(run) -> None:
    from actgeo_assets.lib.stages.lookup import answer_json, format_lookup, index_problem, lookup_text

    settings, layout = run.settings, run.layout
    layout.lookup_index.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="lookup"):  # not built, not asked to build: names the command
        lookup_text(settings, layout, TEXT, build=False)
    result = lookup_text(settings, layout, TEXT, k=3, gpu=False)
    assert result.built is not None and result.built.rows == result.index_rows
    assert index_problem(settings, layout) is None
    x, labels, tokens = _run_rows(run)
    t = settings.threshold
    assert result.kept.all() and len(result.tokens) == len(result.queries) > 20
    sizes = np.bincount(labels)
    verdicts = set()
    for answer, q in zip(result.tokens, result.queries, strict=True):
        comps, n_linked, sims = _expect(x, labels, q, t)
        f = answer.found
        np.testing.assert_array_equal(f.labels, comps)
        assert f.n_linked == n_linked
        verdicts.add(f.verdict)
        order = np.lexsort((np.arange(len(sims)), -sims))[:3]
        assert [c["row"] for c in answer.contexts] == order.tolist()
        for c, row in zip(answer.contexts, order, strict=True):  # the member's own token and document
            assert (c["doc_id"], c["position"]) == (tokens.iloc[row]["doc_id"], tokens.iloc[row]["position"])
            assert (c["rank"], c["label_id"]) == (labels[row] + 1, labels[row])
        js = answer_json(result, answer)
        assert js["position"] == answer.position and js["text"] == answer.text
        if len(comps):
            assert (js["rank"], js["label_id"], js["size"]) == (comps[0] + 1, comps[0], sizes[comps[0]])
        else:
            assert js["rank"] is None and js["label_id"] is None and js["verdict"] == SINGLETON
    assert JOINS in verdicts  # the text repeats the corpus: some of its tokens join components
    # the text starts as the corpus' first document does: its first tokens are (up to the last bits of the
    # model's arithmetic) that document's rows, and join their components
    for answer in result.tokens[:3]:
        near = answer.contexts[0]
        assert near["cosine"] > 0.9999 and (near["doc_id"], near["position"]) == (0, answer.position)
        assert answer.found.verdict == JOINS and answer.found.label == labels[near["row"]]
    assert [a.position for a in result.tokens] == list(range(1, len(result.tokens) + 1))  # <bos> excluded
    # longer than context_len (40 tokens of this tokenizer): its first 39 tokens after <bos>, said so
    spans = "".join(a.text for a in result.tokens)
    assert result.truncated and len(result.tokens) == settings.context_len - 1 and TEXT.startswith(spans)
    shown = format_lookup(result)
    assert f"cosine >= {t}" in shown and "only its start was captured" in shown
    again = lookup_text(settings, layout, TEXT, k=1, gpu=False)
    assert again.built is None  # the index is current: not rebuilt
    np.testing.assert_array_equal(again.queries, result.queries)  # the capture is deterministic


def test_damaged_index_is_never_read(run) -> None:
    from actgeo_assets.lib.stages.lookup import build_lookup_index, index_problem, load_lookup_index

    settings, layout = run.settings, run.layout
    build_lookup_index(settings, layout)
    data = bytearray(layout.lookup_index.read_bytes())
    data[-5] ^= 0xFF
    layout.lookup_index.write_bytes(bytes(data))
    assert "corrupted" in index_problem(settings, layout)
    with pytest.raises(ValueError, match="corrupted.*actgeo lookup"):
        load_lookup_index(settings, layout)
    build_lookup_index(settings, layout)
    assert index_problem(settings, layout) is None


def test_bridge_and_singleton_as_printed_and_json() -> None:
    from actgeo_assets.lib.analysis.lookup import Found, Neighbour
    from actgeo_assets.lib.stages.lookup import LookupResult, TokenAnswer, answer_json, format_lookup

    near = (Neighbour(row=4, cosine=0.71, label=2),)
    bridge = Found(labels=np.array([0, 2]), n_linked=3, best_cosine=0.71, nearest=near)
    alone = Found(labels=np.array([], dtype=np.int64), n_linked=0, best_cosine=0.42, nearest=())
    ctx = {"row": 4, "rank": 3, "label_id": 2, "cosine": 0.71, "doc_id": 7, "source": "s", "position": 5,
           "left": "a ", "token": "b", "right": " c"}
    result = LookupResult(text="x y", run_id="r", description="d", threshold=0.7,
                         tokens=[TokenAnswer(1, "x", "x", bridge, [ctx]), TokenAnswer(2, " y", " y", alone)],
                         queries=np.zeros((2, 4), np.float32), kept=np.ones(2, bool), sizes=np.array([9, 5, 2]),
                         index_path=Path("i.faiss"), index_rows=16, device="cpu", truncated=False)
    text = format_lookup(result)
    assert "bridges rank 1 (label_id 0, 9 members) and rank 3 (label_id 2, 2 members): 3 rows" in text
    assert "a new singleton: no row at cosine >= 0.7 (nearest: cosine 0.4200)" in text and "a [b] c" in text
    js = [answer_json(result, a) for a in result.tokens]
    assert (js[0]["verdict"], js[0]["rank"], js[0]["label_id"], js[0]["size"]) == (BRIDGES, 1, 0, 9)
    assert [c["rank"] for c in js[0]["components"]] == [1, 3]
    assert (js[1]["verdict"], js[1]["rank"], js[1]["label_id"], js[1]["components"]) == (SINGLETON, None, None, [])
    json.dumps(js)  # plain JSON types
