"""Artefact controls: model-input keys against a plain tuple grouping, the counts against a brute-force recount,
the summary without some activations against scipy on a dense float64 Gram matrix, and the normalize stage's
``early_positions="exclude"`` against that summary on a tiny run."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.analysis.inputs import (
    artefact_summary,
    early_mask,
    input_counts,
    input_keys,
    one_input_components,
    summary_without,
)
from actgeo_assets.lib.graph import canonical_labels, component_summary


def _token_table(seed: int = 0, n_docs: int = 40, first: int = 1) -> pd.DataFrame:
    """A raw token table of ``n_docs`` documents whose token ids come from a tiny vocabulary, so many documents
    share their first tokens (and so their inputs); rows shuffled, as a table need not be sorted."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_docs):
        length = int(rng.integers(1, 9))
        prefix = [7, 3, 3][: int(rng.integers(0, 4))]  # a shared start: identical inputs across documents
        ids = (prefix + rng.integers(0, 3, size=length).tolist())[:length]
        rows += [(1000 + d, first + p, t) for p, t in enumerate(ids)]
    table = pd.DataFrame(rows, columns=["doc_id", "position", "token_id"])
    return table.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _prefix_tuples(tokens: pd.DataFrame) -> list[tuple[int, ...]]:
    """Each row's model input as a plain tuple: the document's token ids from position 1 through the row's
    (position 0, when captured, is <bos> itself and the same for every window)."""
    ids: dict[tuple[int, int], int] = {(int(d), int(p)): int(t) for d, p, t in
                                       zip(tokens.doc_id, tokens.position, tokens.token_id, strict=True)}
    return [tuple(ids[(int(d), q)] for q in range(1, int(p) + 1))
            for d, p in zip(tokens.doc_id, tokens.position, strict=True)]


@pytest.mark.parametrize("first", [1, 0])
def test_input_keys_group_rows_as_their_token_id_tuples(first: int) -> None:
    tokens = _token_table(first=first)
    keys = input_keys(tokens)
    assert keys.dtype == np.uint64 and keys.shape == (len(tokens),)
    tuples = _prefix_tuples(tokens)
    by_key: dict[int, set[tuple[int, ...]]] = defaultdict(set)
    by_tuple: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for k, t in zip(keys.tolist(), tuples, strict=True):
        by_key[k].add(t)
        by_tuple[t].add(k)
    assert all(len(v) == 1 for v in by_key.values()) and all(len(v) == 1 for v in by_tuple.values())
    assert len(by_tuple) < len(tokens)  # the table does hold identical inputs
    # the same documents in another order, or split into two tables (shards), give the same keys
    again = input_keys(tokens.iloc[::-1])
    np.testing.assert_array_equal(again[::-1], keys)
    half = tokens["doc_id"] % 2 == 0
    np.testing.assert_array_equal(input_keys(tokens[half]), keys[half.to_numpy()])


def test_input_keys_need_every_position_of_a_document() -> None:
    tokens = _token_table()
    doc = int(tokens.doc_id[tokens.position == 3].iloc[0])
    with pytest.raises(ValueError, match=f"document {doc} has positions .*not contiguous from 1"):
        input_keys(tokens[~((tokens.doc_id == doc) & (tokens.position == 2))])  # a hole: a kept mask applied first
    with pytest.raises(ValueError, match="document 5 has positions \\[2, 3\\]"):
        input_keys(pd.DataFrame({"doc_id": [5, 5], "position": [2, 3], "token_id": [1, 2]}))
    with pytest.raises(ValueError, match="lacks columns \\['token_id'\\]"):
        input_keys(tokens.drop(columns="token_id"))
    assert input_keys(tokens.iloc[:0]).shape == (0,)


def test_early_mask() -> None:
    np.testing.assert_array_equal(early_mask(np.array([1, 2, 3, 4, 0, 9]), 4), [True, True, True, False, True, False])
    assert not early_mask(np.array([1, 2]), 1).any()
    with pytest.raises(ValueError, match=">= 1"):
        early_mask(np.array([1]), 0)
    with pytest.raises(ValueError, match="1-D integer"):
        early_mask(np.array([1.5]), 4)


def test_input_counts_against_a_recount() -> None:
    # hand-built: component 0 (rows 0-5) has inputs a a b c d d; component 1 (rows 6-8) is input e three
    # times; component 2 (rows 9-10) f g; rows 11, 12 singletons with inputs h and i
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3, 4])
    names = "a a b c d d e e e f g h i".split()
    keys = np.array([ord(c) for c in names], dtype=np.uint64)
    tokens = pd.DataFrame({"position": np.arange(13) % 5 + 1, "token": [f"t{c}" for c in names]})
    out = input_counts(labels, keys, tokens)
    assert (out["n"], out["n_inputs"], out["rows_sharing_input"], out["repeated_inputs"]) == (13, 9, 7, 3)
    assert out["n_one_input_components"] == 1 and out["inputs_split"] == 0
    assert out["one_input_components"] == [{"rank": 2, "size": 3, "position": 2, "token": "te"}]
    assert one_input_components(out) == {2: 3}
    assert out["summary"] == component_summary(labels)
    # counted by distinct inputs: sizes 4 (a b c d), 1 (e), 2 (f g), 1, 1
    assert out["summary_distinct"] == {"n": 9, "n_components": 5, "largest": 4, "largest_fraction": 4 / 9,
                                       "non_singleton": 1, "singletons": 3, "top_sizes": [4, 2, 1, 1, 1]}


def test_input_counts_random_against_plain_python() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    labels = canonical_labels(rng.integers(0, 400, size=n) * (rng.random(n) < 0.7))
    # inputs: mostly unique, some repeated within a component, one input spread over two components
    keys = np.arange(n, dtype=np.uint64) + np.uint64(1 << 40)
    for c in rng.choice(int(labels.max()) + 1, size=60, replace=False):
        members = np.flatnonzero(labels == c)
        keys[members[: max(1, members.size // 2)]] = np.uint64(int(c) + 7)
    keys[[0, 1]] = np.uint64(99)
    out = input_counts(labels, keys)
    count = defaultdict(int)
    comps: dict[int, set[int]] = defaultdict(set)
    per_comp: dict[int, set[int]] = defaultdict(set)
    for lab, k in zip(labels.tolist(), keys.tolist(), strict=True):
        count[k] += 1
        comps[k].add(lab)
        per_comp[lab].add(k)
    assert out["n_inputs"] == len(count)
    assert out["rows_sharing_input"] == sum(c for c in count.values() if c >= 2)
    assert out["repeated_inputs"] == sum(1 for c in count.values() if c >= 2)
    assert out["inputs_split"] == sum(1 for s in comps.values() if len(s) >= 2)
    assert out["inputs_split"] >= int(labels[0] != labels[1])  # rows 0 and 1 share an input
    sizes = np.bincount(labels)
    one = sorted(c + 1 for c, s in per_comp.items() if len(s) == 1 and sizes[c] >= 2)
    assert [c["rank"] for c in out["one_input_components"]] == one[:50] and out["n_one_input_components"] == len(one)
    distinct = sorted((len(s) for s in per_comp.values()), reverse=True)
    d = out["summary_distinct"]
    assert d["top_sizes"] == distinct[:20] and d["n_components"] == len(distinct) == out["summary"]["n_components"]
    assert d["singletons"] == distinct.count(1) and d["non_singleton"] == sum(1 for s in distinct[1:] if s >= 2)
    assert d["n"] == sum(distinct) == sum(len(s) for s in comps.values())  # an input split is counted per component
    with pytest.raises(ValueError, match="uint64"):
        input_counts(labels, keys.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        input_counts(labels, keys[:-1])


def _planted(n: int = 400, d: int = 12, seed: int = 3) -> np.ndarray:
    """float32 unit rows: a few tight planted clusters, looser ones and noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, d))
    which = rng.integers(0, 10, size=n)  # 8 and 9: noise rows
    spread = np.where(which < 4, 0.15, 0.45)[:, None]
    x = np.where(which[:, None] < 8, centres[np.minimum(which, 7)] + spread * rng.standard_normal((n, d)),
                 rng.standard_normal((n, d)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _scipy_summary(x: np.ndarray, t: float) -> dict:
    """Independent: components of a dense float64 Gram matrix by scipy, summarized by sizes."""
    x64 = x.astype(np.float64)
    adj = (x64 @ x64.T) >= t
    np.fill_diagonal(adj, False)
    _, lab = connected_components(csr_matrix(adj), directed=False)
    sizes = sorted(np.bincount(lab).tolist(), reverse=True)
    return {"n": len(x), "n_components": len(sizes), "largest": sizes[0], "largest_fraction": sizes[0] / len(x),
            "non_singleton": sum(1 for s in sizes[1:] if s >= 2), "singletons": sizes.count(1), "top_sizes": sizes[:20]}


@pytest.mark.parametrize("t", [0.6, 0.7, 0.9])
def test_summary_without_against_scipy_on_a_dense_gram_matrix(t: float) -> None:
    x = _planted()
    keep = np.random.default_rng(1).random(len(x)) > 0.3
    shards = [(0, x[:150]), (150, x[150:])]
    got = summary_without(shards, keep, t, device="cpu")
    assert got == _scipy_summary(x[keep], t)
    assert summary_without(lambda i: x[i], np.ones(len(x), dtype=bool), t, device="cpu") == _scipy_summary(x, t)
    capped = summary_without(shards, keep, t, max_rows=10)
    assert "early_positions=exclude" in capped["skipped"] and f"{int(keep.sum()):,}" in capped["skipped"]
    assert "skipped" in summary_without(shards, np.zeros(len(x), dtype=bool), t)
    with pytest.raises(ValueError, match="bool"):
        summary_without(shards, keep.astype(int), t)


def test_artefact_summary_puts_the_three_summaries_together() -> None:
    x = _planted()
    t = 0.6
    x64 = x.astype(np.float64)
    adj = (x64 @ x64.T) >= t
    np.fill_diagonal(adj, False)
    labels = canonical_labels(connected_components(csr_matrix(adj), directed=False)[1])
    keys = np.arange(len(x), dtype=np.uint64)
    positions = np.arange(len(x)) % 20 + 1
    early = early_mask(positions, 4)
    out = artefact_summary(labels, keys, early, lambda i: x[i], threshold=t, setting="flag", limit=4, device="cpu")
    assert out["n_early"] == int((positions < 4).sum()) and out["early_positions"] == "flag"
    assert out["summary"] == component_summary(labels) and out["summary_distinct"]["n"] == len(x)
    assert out["summary_without_early"] == _scipy_summary(x[~early], t)
    # removing nodes splits components: the run's labels restricted to the rest would not give it
    assert component_summary(labels[~early])["n_components"] < out["summary_without_early"]["n_components"]
    none_early = artefact_summary(labels, keys, np.zeros(len(x), dtype=bool), None, threshold=t, setting="exclude",
                                  limit=4, excluded_early=17)
    assert none_early["summary_without_early"] == none_early["summary"] and none_early["excluded_early"] == 17
    no_rows = artefact_summary(labels, keys, early, None, threshold=t, setting="flag", limit=4)
    assert "not given" in no_rows["summary_without_early"]["skipped"]


def test_exclude_early_positions_in_the_normalize_stage(tiny_runs: Callable) -> None:
    """The stage's own graph with ``early_positions="exclude"`` equals :func:`summary_without` of the default
    run's rows without its early activations; its kept masks drop exactly them."""
    from actgeo_tests.support.tiny_run import run_rows

    base = tiny_runs()
    ex = tiny_runs(early_positions="exclude")
    assert ex.settings.early_excluded_below() == 4 and ex.settings.run_id() != base.settings.run_id()
    x_base, labels_base, tok_base = run_rows(base.settings, base.layout)
    x_ex, labels_ex, tok_ex = run_rows(ex.settings, ex.layout)
    early = tok_base["position"].to_numpy() < 4
    assert 0 < early.sum() < len(early) and (tok_ex["position"].to_numpy() >= 4).all()
    assert len(x_ex) == int((~early).sum())
    np.testing.assert_array_equal(x_ex, x_base[~early])  # the same unit rows (the mean is over every raw row)
    want = summary_without(lambda i: x_base[i].astype(np.float32), ~early, base.settings.threshold, device="cpu")
    assert component_summary(labels_ex) == want == _scipy_summary(x_base[~early], base.settings.threshold)
    from actgeo_assets.lib.store.layout import load_json

    meta = load_json(ex.layout.normalized_meta(ex.settings.shard_keys[0]))
    raw = pd.read_parquet(ex.layout.tokens(ex.settings.shard_keys[0]))
    assert meta["early_excluded_below"] == 4
    assert meta["report"]["excluded"]["early_position"] == int((raw["position"] < 4).sum())
    assert "early_position" not in load_json(base.layout.normalized_meta(base.settings.shard_keys[0]))["report"][
        "excluded"]
    # identical inputs in the default run are one activation computed several times: cosine ~1
    keys = np.concatenate([input_keys(pd.read_parquet(base.layout.tokens(s)))[np.load(base.layout.kept(s))]
                           for s in base.settings.shard_keys])
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    assert (counts >= 2).any()  # the fixture corpus has windows that start alike
    for k in np.flatnonzero(counts >= 2)[:20]:
        rows = np.flatnonzero(inverse.reshape(-1) == k)
        assert np.min(x_base[rows] @ x_base[rows[0]]) > 0.999
        assert len(set(labels_base[rows].tolist())) == 1
