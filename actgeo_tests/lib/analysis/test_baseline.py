"""The baselines over the whole partition: token string, previous and current token string, and position,
each over all activations, those outside the largest component and those of the small components, against
scikit-learn called here on lists built by plain Python; the previous token string against a plain loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

from actgeo_assets.lib.analysis.baseline import (
    BOS,
    NOT_CAPTURED,
    WINDOW_START,
    previous_token_column,
    token_baseline,
)
from actgeo_assets.lib.graph import canonical_labels


def synthetic_run(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Canonical labels [N] with a giant, small components and singletons, and a token table (doc_id,
    position from 1 with a gap, token, source) whose components partly follow token strings."""
    rng = np.random.default_rng(seed)
    docs, positions = [], []
    for d, length in enumerate([30, 25, 40, 18, 22]):
        pos = np.arange(1, length + 1)
        if d == 2:
            pos = pos[pos != 7]  # a position not captured: its follower's previous token is unknown
        docs += [d] * len(pos)
        positions += pos.tolist()
    n = len(docs)
    vocab = np.array(["a", " the", "\n", "b", "c", "<x>", " of", "d"], dtype=object)
    strings = vocab[rng.integers(0, len(vocab), size=n)]
    raw = rng.integers(0, 40, size=n)  # many small groups ...
    raw[rng.random(n) < 0.45] = 99  # ... one giant ...
    single = rng.random(n) < 0.15
    raw[single] = 1000 + np.arange(int(single.sum()))  # ... and singletons
    for lab in np.unique(raw[raw < 40]):  # small components mostly one token string
        members = np.flatnonzero(raw == lab)
        strings[members[: max(1, 2 * len(members) // 3)]] = vocab[lab % len(vocab)]
    sources = np.array(["news", "code", "plays", "law"], dtype=object)[np.array(docs) % 4]
    tokens = pd.DataFrame({"doc_id": docs, "position": positions, "token": strings, "source": sources})
    return canonical_labels(raw), tokens


def plain_previous(tokens: pd.DataFrame) -> list[str]:
    at = {(d, p): t for d, p, t in zip(tokens.doc_id, tokens.position, tokens.token, strict=True)}
    out = []
    for d, p in zip(tokens.doc_id, tokens.position, strict=True):
        if (d, p - 1) in at:
            out.append(at[(d, p - 1)])
        else:
            out.append(BOS if p == 1 else WINDOW_START if p == 0 else NOT_CAPTURED)
    return out


def test_previous_token_column_against_a_loop() -> None:
    _, tokens = synthetic_run()
    tokens = tokens.sample(frac=1.0, random_state=1)  # any row order, index kept
    got = previous_token_column(tokens)
    assert got.index.equals(tokens.index) and got.tolist() == plain_previous(tokens)
    assert (got == NOT_CAPTURED).sum() == 1 and (got == BOS).sum() == 5
    with_bos = pd.DataFrame({"doc_id": [0, 0, 0], "position": [0, 1, 2], "token": ["<bos>", "x", "y"]})
    assert previous_token_column(with_bos).tolist() == [WINDOW_START, "<bos>", "x"]
    with pytest.raises(ValueError, match="position"):
        previous_token_column(with_bos.drop(columns="position"))


def test_whole_partition_baselines_against_sklearn() -> None:
    labels, tokens = synthetic_run()
    base = token_baseline(labels, tokens)
    sizes = np.bincount(labels)
    prev = plain_previous(tokens)
    refs = {"token": list(tokens.token),
            "pair": [(p, t) for p, t in zip(prev, tokens.token, strict=True)],
            "position": list(tokens.position)}
    sets = {"all": np.ones(len(labels), bool), "non_giant": labels > 0, "small": (labels > 0) & (sizes[labels] > 1)}
    got = {(b["grouping"], b["coverage"]): b for b in base["baselines"]}
    assert list(got) == [(g, c) for g in refs for c in sets]
    for (g, c), b in got.items():
        m = np.flatnonzero(sets[c])
        ref = [str(refs[g][i]) for i in m]
        h, comp, v = homogeneity_completeness_v_measure(ref, labels[m])
        assert (b["homogeneity"], b["completeness"], b["v_measure"]) == pytest.approx((h, comp, v)), (g, c)
        assert b["ami"] == pytest.approx(adjusted_mutual_info_score(ref, labels[m])), (g, c)
        assert b["n_activations"] == m.size and b["n_components"] == len(set(labels[m].tolist()))
        assert b["n_groups"] == len(set(ref)) and f"{m.size:,} activations" in b["covers"]
    n_small = int(np.count_nonzero(sizes[1:] > 1))
    assert got[("token", "small")]["covers"] == f"{int(sets['small'].sum()):,} activations of the {n_small:,} small components"
    assert got[("token", "all")]["covers"].startswith(f"all {len(labels):,} activations (the largest component of {sizes[0]:,}")
    # the old keys keep their meaning: token string over the small components' activations
    small = got[("token", "small")]
    assert base["covers"] == small["covers"] and base["n_members"] == small["n_activations"]
    assert base["n_token_strings"] == small["n_groups"]
    assert (base["v_measure"], base["ami"]) == (small["v_measure"], small["ami"])
    assert (base["n_activations"], base["n_giant"], base["n_singletons"]) == (
        len(labels), sizes[0], int(np.count_nonzero(sizes[1:] == 1)))
    assert got[("token", "all")]["v_measure"] < small["v_measure"]  # the giant dilutes it: the point of the figure


def test_previous_token_column_given_is_used() -> None:
    labels, tokens = synthetic_run()
    given = tokens.assign(previous_token="same")  # every pair then groups by the current token string alone
    got = {(b["grouping"], b["coverage"]): b for b in token_baseline(labels, given)["baselines"]}
    for c in ("all", "non_giant", "small"):
        assert got[("pair", c)]["v_measure"] == pytest.approx(got[("token", c)]["v_measure"])


def test_ami_cap_and_missing_columns_are_said() -> None:
    labels, tokens = synthetic_run()
    base = token_baseline(labels, tokens, max_cells=10)
    assert all(b["ami"] is None and "above 10 cells" in b["ami_skipped"] for b in base["baselines"])
    assert base["ami"] is None and len(base["notes"]) == 9 and all("skipped" in n for n in base["notes"])
    assert base["v_measure"] is not None
    only = token_baseline(labels, tokens[["token", "doc_id", "source"]])
    assert {b["grouping"] for b in only["baselines"]} == {"token"}
    assert any("previous and current" in n for n in only["notes"]) and any("position" in n for n in only["notes"])


def test_mixed_components_count_what_they_leave_out() -> None:
    # component 1 (size 8): 6 token strings, 5 sources; component 2 (size 4): 2 strings, 1 source
    labels = np.array([0] * 10 + [1] * 8 + [2] * 4 + [3])
    tok = ["z"] * 10 + ["a", "a", "b", "c", "d", "e", "f", "b"] + ["x", "x", "y", "y"] + ["q"]
    src = ["big"] * 10 + ["s1", "s2", "s3", "s4", "s5", "s1", "s2", "big"] + ["s3"] * 4 + ["s1"]
    tokens = pd.DataFrame({"token": tok, "doc_id": np.arange(len(tok)) % 3, "source": src})
    base = token_baseline(labels, tokens)
    assert base["n_mixed"] == 1 and [m["rank"] for m in base["mixed"]] == [2]  # component 2 is 50%: not mixed
    m = base["mixed"][0]
    assert m["top_tokens"] == [("a", 2), ("b", 2), ("c", 1), ("d", 1), ("e", 1)] and m["n_more_tokens"] == 1
    # sources: by count in the component, ties by the run's order (activations in the run, then name)
    run = pd.Series(src).value_counts()
    ties = sorted(["s3", "s4", "s5", "big"], key=lambda s: (-run[s], s))
    assert m["sources"] == [("s1", 2), ("s2", 2), (ties[0], 1)] and m["n_more_sources"] == 3


def test_bad_input_is_named() -> None:
    labels, tokens = synthetic_run()
    with pytest.raises(ValueError, match="token table has"):
        token_baseline(labels[:-1], tokens)
    with pytest.raises(ValueError, match="canonical"):
        token_baseline(np.where(labels == 0, 5, labels), tokens)
    with pytest.raises(ValueError, match="1-D integer"):
        token_baseline(labels.astype(float), tokens)
    one = token_baseline(np.zeros(len(labels), dtype=np.int64), tokens)  # one component: nothing outside it
    small = next(b for b in one["baselines"] if b["coverage"] == "small")
    assert small["n_activations"] == 0 and small["v_measure"] is None and "v_measure" not in one
