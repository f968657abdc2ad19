"""The per-source breakdown against pandas crosstabs built here, the transition's separated components and
the activations that leave the giant against plain counting, with labels at t_c cut from a real forest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.sources import source_breakdown, source_order, source_shares
from actgeo_assets.lib.graph import ForestEdges, SingleLinkageForest


def forest_run(seed: int = 3) -> tuple[SingleLinkageForest, pd.DataFrame]:
    """A random forest on 300 activations (weights in [0.6, 1)) and a token table (four sources of unequal
    size, two of them tied; token strings from a small vocabulary)."""
    rng = np.random.default_rng(seed)
    n = 300
    src = np.arange(1, n)
    dst = np.array([rng.integers(0, i) for i in src])  # a random tree ...
    keep = rng.random(n - 1) < 0.9  # ... with some edges cut: singletons and small trees
    w = rng.uniform(0.6, 1.0, size=n - 1)
    forest = SingleLinkageForest(n, ForestEdges(src[keep], dst[keep], w[keep], min_threshold=0.5))
    sources = np.repeat(np.array(["news", "code", "plays", "law"], dtype=object), [100, 80, 80, 40])
    rng.shuffle(sources)
    vocab = np.array([" the", "a", "\n", "<b>", " of"], dtype=object)
    tokens = pd.DataFrame({"token": vocab[rng.integers(0, len(vocab), n)], "doc_id": rng.integers(0, 9, n),
                           "source": sources})
    return forest, tokens


def test_source_order_by_count_then_name() -> None:
    tokens = pd.DataFrame({"source": ["b", "a", "c", "c", "b", "a", "d", "c"]})
    assert source_order(tokens) == ["c", "a", "b", "d"]  # a and b tie at 2: by name
    with pytest.raises(ValueError, match="no source column"):
        source_order(tokens.rename(columns={"source": "src"}))


def test_source_shares_against_a_crosstab() -> None:
    forest, tokens = forest_run()
    labels = forest.labels_at(0.7)
    order = source_order(tokens)
    got = source_shares(labels, tokens["source"].to_numpy(), order, 0.7)
    sizes = np.bincount(labels)
    part = np.where(labels == 0, "giant", np.where(sizes[labels] == 1, "singletons", "small"))
    tab = pd.crosstab(tokens["source"], part).reindex(index=order, columns=["giant", "small", "singletons"],
                                                      fill_value=0)
    assert [r["source"] for r in got["sources"]] == order == ["news", "code", "plays", "law"]
    assert (got["n_giant"], got["n_small"], got["n_singletons"]) == tuple(tab.sum().tolist())
    assert got["n_small_components"] == int(np.count_nonzero(sizes[1:] >= 2))
    share_of = tab / tab.sum()
    share_in = tab.div(tab.sum(axis=1), axis=0)
    for r in got["sources"]:
        s = r["source"]
        assert r["n"] == tab.loc[s].sum() and [r[p] for p in tab.columns] == tab.loc[s].tolist()
        for p in tab.columns:
            assert r[f"share_of_{p}"] == pytest.approx(share_of.loc[s, p])
            assert r[f"in_{p}"] == pytest.approx(share_in.loc[s, p])
    assert sum(r["share_of_giant"] for r in got["sources"]) == pytest.approx(1.0)


def test_transition_against_plain_counting() -> None:
    forest, tokens = forest_run()
    t, t_c = 0.7, 0.85
    labels, lab_c = forest.labels_at(t), forest.labels_at(t_c)
    out = source_breakdown(labels, tokens, t, lab_c, t_c, listed=3)
    assert out["order"] == source_order(tokens) and out["notes"] == []
    assert out["at_transition"] == source_shares(lab_c, tokens["source"].to_numpy(), out["order"], t_c)
    tr = out["transition"]
    sizes_c = np.bincount(lab_c)
    assert len(tr["separated"]) == 3 and sizes_c[3] >= 2 and np.bincount(labels)[0] > sizes_c[0]
    for k, sep in enumerate(tr["separated"], start=1):  # ranks 2..4 at t_c: labels 1..3
        rows = [i for i in range(len(lab_c)) if lab_c[i] == k]
        assert (sep["rank"], sep["size"]) == (k + 1, len(rows))
        assert sep["from_giant"] == sum(labels[i] == 0 for i in rows)
        counts: dict[str, int] = {}
        for i in rows:
            counts[tokens.token[i]] = counts.get(tokens.token[i], 0) + 1
        expect = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
        assert sep["top_tokens"] == [list(p) for p in expect[:5]] and sep["n_distinct_tokens"] == len(counts)
        assert sep["n_documents"] == len({tokens.doc_id[i] for i in rows})
        srcs = tokens.source.iloc[rows].value_counts()
        assert dict(sep["sources"]) == srcs.to_dict()
        assert [n for _, n in sep["sources"]] == sorted(srcs.tolist(), reverse=True)
    lg = tr["left_giant"]
    left = [i for i in range(len(labels)) if labels[i] == 0 and lab_c[i] != 0]
    listed = {1, 2, 3}
    assert lg["n"] == len(left) > 0 and lg["n_joined"] == 0  # single linkage only splits above t
    assert lg["to_listed"] == sum(lab_c[i] in listed for i in left)
    assert lg["to_singletons"] == sum(sizes_c[lab_c[i]] == 1 for i in left)
    assert lg["to_listed"] + lg["to_other_small"] + lg["to_singletons"] == lg["n"]
    tab = pd.crosstab(tokens["source"], labels == 0)[True]
    left_tab = tokens["source"].iloc[left].value_counts()
    assert [r["source"] for r in lg["by_source"]] == out["order"]
    for r in lg["by_source"]:
        assert r["n_left"] == left_tab.get(r["source"], 0)
        assert r["share_of_left"] == pytest.approx(r["n_left"] / len(left))
        assert r["of_its_giant"] == pytest.approx(r["n_left"] / tab[r["source"]])


def test_without_transition_and_bad_input() -> None:
    forest, tokens = forest_run()
    labels = forest.labels_at(0.7)
    out = source_breakdown(labels, tokens, 0.7)
    assert out["at_transition"] is None and out["transition"] is None and "no transition" in out["notes"][0]
    with pytest.raises(ValueError, match="labels at the transition have 299"):
        source_breakdown(labels, tokens, 0.7, labels[:-1], 0.8)
    with pytest.raises(ValueError, match="canonical"):
        source_breakdown(labels + 1, tokens, 0.7)
    same = source_breakdown(labels, tokens, 0.7, labels, 0.7)
    assert same["transition"]["left_giant"]["n"] == 0 and "nothing separates" in same["notes"][0]
