"""lib/stages/lookup.py on the shared tiny run (``support/tiny_run.py``, built by the library's stages): every
token of a text gets the components a dense float64 cosine against all normalized rows gives (labels from
labels.npy); a damaged index is never read; the printed and JSON answers. The `lookup` asset and `actgeo lookup`
through the CLI are tested in ``e2e/test_lookup_dagster.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.analysis.lookup import BRIDGES, JOINS, SINGLETON
from actgeo_tests.support.oracle import query_links as _expect
from actgeo_tests.support.tiny_run import QUERY_TEXT as TEXT
from actgeo_tests.support.tiny_run import FinishedRun, run_rows


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


def test_a_kept_session_answers_as_lookup_text_and_times_its_phases(run) -> None:
    """``LookupSession`` (what the report server keeps loaded) gives `lookup_text`'s answer text after text; the
    phases it reports cover the wall time of the calls they time; a touched index makes it stale."""
    import os
    import time

    from actgeo_assets.lib.stages.lookup import PHASES, LookupSession, lookup_text

    settings, layout = run.settings, run.layout
    t0 = time.perf_counter()
    session = LookupSession(settings, layout, gpu=False)  # builds the index if another test left none
    load = time.perf_counter() - t0
    assert list(session.timings) == ["components", "index", "model"]
    assert 0.8 * load <= sum(session.timings.values()) <= load  # the phases are most of the load's wall time
    texts = [TEXT, "zebra quartz 1789", "shall mean the union"]
    for text in texts:
        t0 = time.perf_counter()
        kept = session.answer(text, k=2)
        wall = time.perf_counter() - t0
        assert list(kept.timings) == ["forward", "search"]
        assert 0.8 * wall - 0.01 <= sum(kept.timings.values()) <= wall
        t0 = time.perf_counter()
        once = lookup_text(settings, layout, text, k=2, gpu=False)
        wall = time.perf_counter() - t0
        assert list(once.timings) == list(PHASES)  # a one-off lookup: every phase, in order
        assert 0.8 * wall - 0.01 <= sum(once.timings.values()) <= wall
        np.testing.assert_array_equal(kept.queries, once.queries)
        for a, b in zip(kept.tokens, once.tokens, strict=True):
            assert (a.position, a.text, a.found.verdict, a.found.n_linked) == (b.position, b.text, b.found.verdict,
                                                                               b.found.n_linked)
            np.testing.assert_array_equal(a.found.labels, b.found.labels)
            assert a.contexts == b.contexts
    with pytest.raises(ValueError, match="empty"):
        session.answer("  ")
    with pytest.raises(ValueError, match="k must be"):
        session.answer("x", k=-1)
    assert not session.stale()
    st = layout.lookup_meta.stat()
    try:  # the sidecar rewritten (here: its time only): the session is stale
        os.utime(layout.lookup_meta, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        assert session.stale()
    finally:
        os.utime(layout.lookup_meta, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_lookup_threads_are_set_inside_and_restored() -> None:
    import faiss
    import torch

    from actgeo_assets.lib.stages.lookup import _cpu_threads

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    with _cpu_threads(1):
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == (1, 1)
    assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before
    with _cpu_threads(None):
        assert (torch.get_num_threads(), faiss.omp_get_max_threads()) == before


def test_format_timings() -> None:
    from actgeo_assets.lib.stages.lookup import format_timings

    parts = {"start-up": 0.5, "imports": 1.25, "model": 2.0, "forward": 0.031, "other": 0.001, "exit": None}
    assert format_timings(parts, 3.8) == ("3.80 s in all: start-up 0.50 s + imports 1.25 s + model load 2.00 s + "
                                          "forward pass 0.03 s + exit not measured")
    assert format_timings({"other": 0.2}, 0.2) == "0.20 s in all: other 0.20 s"
