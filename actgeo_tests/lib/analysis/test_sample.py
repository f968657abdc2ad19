"""describe_sample against pandas computations written here: on a hand-built sample (windows, short and broken
windows, sources, works) and on the tiny run's own files read independently."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.sample import describe_sample
from actgeo_assets.lib.outputs.results import open_run
from actgeo_tests.support.tiny_run import FinishedRun

RUN_KEY = {"context_len": 8, "exclude_bos": True, "budget": 24, "corpus": "test-corpus"}


def _sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five documents: 0, 1 and 3 fill a window (positions 1..7), 2 is short (1..3), 4 skips position 2."""
    positions = {0: range(1, 8), 1: range(1, 8), 2: range(1, 4), 3: range(1, 8), 4: [1, 3, 4]}
    source = {0: "b news", 1: "a code", 2: "a code", 3: "b news", 4: "c plays"}
    work = {0: None, 1: None, 2: None, 3: None, 4: "Hamlet"}
    text = {d: "x" * 100 for d in positions}
    rows = [(d, p, source[d], 10 * p) for d, ps in positions.items() for p in ps]
    tokens = pd.DataFrame(rows, columns=["doc_id", "position", "source", "char_end"])
    docs = pd.DataFrame({"doc_id": list(positions), "source": [source[d] for d in positions],
                         "work": pd.Series([work[d] for d in positions], dtype=object),
                         "text": [text[d] for d in positions]})
    return tokens, docs


def test_describe_sample_equals_pandas_on_a_hand_built_sample() -> None:
    tokens, docs = _sample()
    got = describe_sample(RUN_KEY, tokens, docs, corpus_documents=50,
                          capture_stats=[{"n_docs_truncated": 2, "n_cut_by_budget": 5}, {"n_docs_truncated": 1}])
    per_doc = tokens.groupby("doc_id").size()
    assert got["n_activations"] == len(tokens) == 27
    assert got["documents_used"] == tokens["doc_id"].nunique() == 5
    assert got["corpus_documents"] == 50 and got["documents_used_fraction"] == pytest.approx(5 / 50)
    assert got["doc_id_range"] == [0, 4]
    assert got["activations_per_document"] == {"min": int(per_doc.min()), "median": float(per_doc.median()),
                                               "max": int(per_doc.max()), "mean": pytest.approx(per_doc.mean())}
    assert (got["first_position"], got["last_position"], got["window_positions"]) == (1, 7, [1, 7])
    # by hand: documents 0, 1, 3 are whole windows, 2 a short one; 4 is not the start of a window
    assert (got["documents_from_window_start"], got["documents_full_window"], got["documents_short"]) == (4, 3, 1)
    reach = tokens.groupby("doc_id")["char_end"].max() / 100
    assert got["text_covered"] == {"median": pytest.approx(reach.median()), "min": pytest.approx(reach.min()),
                                   "max": pytest.approx(reach.max())}
    assert got["capture"] == {"documents_longer_than_window": 3, "activations_cut_by_budget": 5}
    assert "first 8 tokens" in got["windows"] and "positions 1 to 7" in got["windows"]
    # sources: activations descending, ties by name ("a code" 10, "b news" 14, "c plays" 3)
    acts = tokens["source"].value_counts()
    ndocs = docs.set_index("doc_id")["source"].value_counts()
    assert [s["source"] for s in got["sources"]] == ["b news", "a code", "c plays"]
    for s in got["sources"]:
        assert s["activations"] == acts[s["source"]]
        assert s["activation_share"] == pytest.approx(acts[s["source"]] / len(tokens))
        assert s["documents"] == ndocs[s["source"]]
        assert s["document_share"] == pytest.approx(ndocs[s["source"]] / 5)
    assert [s["works"] for s in got["sources"]] == [[], [], [["Hamlet", 1, 3]]]
    assert sum(s["activation_share"] for s in got["sources"]) == pytest.approx(1.0)
    json.dumps(got)  # JSON as it stands


def test_ties_by_name_and_no_optional_inputs() -> None:
    tokens = pd.DataFrame({"doc_id": [0, 0, 1, 1], "position": [0, 1, 0, 1], "source": ["z", "z", "y", "y"]})
    docs = pd.DataFrame({"doc_id": [0, 1, 1], "source": ["z", "y", "y"]})  # a document listed twice: one source
    got = describe_sample({"context_len": 2, "exclude_bos": False}, tokens, docs, None)
    assert [s["source"] for s in got["sources"]] == ["y", "z"]
    assert got["corpus_documents"] is None and got["documents_used_fraction"] is None
    assert got["text_covered"] is None and got["capture"] is None
    assert got["documents_full_window"] == 2 and "is an activation (position 0)" in got["windows"]


@pytest.mark.parametrize("change, says", [
    (lambda t, d: (t.drop(columns="position"), d), "tokens lacks columns"),
    (lambda t, d: (t.iloc[:0], d), "empty"),
    (lambda t, d: (t, d[d["doc_id"] != 4]), r"documents \[4\] that docs does not list"),
    (lambda t, d: (t, pd.concat([d, d.iloc[[0]].assign(source="other")])), r"documents \[0\] have two sources"),
])
def test_bad_input_is_named(change: Callable, says: str) -> None:
    tokens, docs = change(*_sample())
    with pytest.raises(ValueError, match=says):
        describe_sample(RUN_KEY, tokens, docs, 50)
    with pytest.raises(ValueError, match="context_len"):
        describe_sample({"context_len": 1}, *_sample(), 50)
    with pytest.raises(ValueError, match="corpus_documents 3"):
        describe_sample(RUN_KEY, *_sample(), 3)


def test_the_tiny_runs_sample_from_its_own_files(tiny_runs: Callable[..., FinishedRun]) -> None:
    built = tiny_runs()
    run = open_run(built.root)
    shards = list(built.settings.shard_keys)
    docs = pd.concat([run.documents(s) for s in shards])
    metas = [json.loads(built.layout.raw_meta(s).read_text()) for s in shards]
    got = describe_sample(run.run_key, run.tokens, docs, metas[0]["stats"]["corpus_duplicates"]["n_kept"],
                          capture_stats=[m["stats"] for m in metas])
    # independently: the shards' token tables, restricted to the rows normalization kept
    raw = pd.concat([pd.read_parquet(built.layout.tokens(s)).loc[np.load(built.layout.kept(s))] for s in shards])
    assert got["n_activations"] == len(raw) == built.record["n"]
    assert got["documents_used"] == raw["doc_id"].nunique()
    assert got["documents_used"] == sum(m["stats"]["n_docs"] for m in metas)
    per_doc = raw.groupby("doc_id").size()
    assert got["activations_per_document"]["max"] == per_doc.max() <= built.settings.context_len - 1
    assert got["activations_per_document"]["median"] == per_doc.median()
    # every window starts at position 1 (bos excluded) and runs on without a gap
    starts = raw.groupby("doc_id")["position"].agg(["min", "max", "size"])
    assert got["documents_from_window_start"] == int(((starts["min"] == 1) & (starts["max"] == starts["size"])).sum())
    assert got["documents_from_window_start"] == got["documents_used"]
    counts = raw["source"].value_counts()
    assert {s["source"]: s["activations"] for s in got["sources"]} == counts.to_dict()
    assert [s["activations"] for s in got["sources"]] == sorted(counts.tolist(), reverse=True)
