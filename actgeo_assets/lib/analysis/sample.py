"""What a run's activations are a sample of: documents used out of the corpus, activations per document, how
the context windows are cut, and each source's share of the activations and of the documents.

Measured from the run's own token table (one row per activation: ``doc_id``, ``position``, ``source``) and
documents table (``doc_id``, ``source``; ``text`` and ``work`` when present), not assumed from the settings:
the description says how many documents' activations are exactly the positions a window of ``context_len``
tokens starting at the document's start gives (``<bos>`` is position 0; with ``exclude_bos`` it is not an
activation, so a window holds positions 1 to ``context_len - 1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.sources import source_order


def describe_sample(run_key: Mapping[str, Any], tokens: pd.DataFrame, docs: pd.DataFrame,
                    corpus_documents: int | None, *,
                    capture_stats: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The sample behind a run (JSON).

    ``run_key``: the run's settings (``context_len``, ``exclude_bos``; ``budget`` and ``corpus`` are echoed).
    ``tokens``: one row per activation with ``doc_id`` (int), ``position`` (int, 0 = ``<bos>``) and
    ``source``; ``char_end`` (optional) for the text the windows cover. ``docs``: the documents the
    activations come from, ``doc_id`` and ``source`` (``text``, ``work`` optional; a document listed twice
    must have one source). ``corpus_documents``: documents in the corpus the windows were cut from (after
    duplicates were dropped), None when not known. ``capture_stats``: the shards' capture stats (optional).

    Returns ``n_activations``, ``documents_used``, ``corpus_documents``, ``documents_used_fraction``
    (None without ``corpus_documents``), ``doc_id_range`` (the smallest and largest ``doc_id`` used: corpus
    order), ``activations_per_document`` (``min``/``median``/``max``/``mean``),
    ``context_len``, ``exclude_bos``, ``first_position``/``last_position`` (of a full window),
    ``window_positions`` (the positions seen, min and max), ``documents_from_window_start`` (documents whose
    activations are exactly ``first_position .. first_position + k - 1``, k their count),
    ``documents_full_window`` (k = the window's length) and ``documents_short`` (fewer: the text or the
    budget ended inside the window), ``text_covered`` (median/min/max share of a document's characters
    that its activations reach; None without ``text``/``char_end``), ``capture`` (None without
    ``capture_stats``: ``documents_longer_than_window``, the documents used whose text went on past the
    window, and ``activations_cut_by_budget``, summed over the shards), ``windows`` (the sentence saying how windows are cut) and ``sources``: per source, in the one
    source order (activations descending, ties by name), ``source``, ``activations``, ``activation_share``,
    ``documents``, ``document_share`` and ``works`` ([``work``, documents, activations], by activations
    descending then name; empty without a ``work`` column).

    Raises ``ValueError`` naming the problem: a missing column, no activations, an activation whose document
    is not in ``docs``, a document with two sources, a bad ``context_len``.
    """
    for name, table, needed in (("tokens", tokens, ("doc_id", "position", "source")), ("docs", docs, ("doc_id", "source"))):
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise ValueError(f"describe_sample: {name} lacks columns {missing} (it has {list(table.columns)})")
    if len(tokens) == 0:
        raise ValueError("describe_sample: the token table is empty: no activations to describe")
    context_len = int(run_key.get("context_len") or 0)
    if context_len < 2:
        raise ValueError(f"describe_sample: run_key's context_len {run_key.get('context_len')!r} must be >= 2")
    exclude_bos = bool(run_key.get("exclude_bos", True))

    doc_table = docs.drop_duplicates(["doc_id", "source"])
    twice = doc_table["doc_id"][doc_table["doc_id"].duplicated()]
    if len(twice):
        raise ValueError(f"describe_sample: documents {sorted(twice.unique().tolist())[:10]} have two sources")
    doc_table = doc_table.set_index("doc_id")
    per_doc = tokens.groupby("doc_id", sort=True)["position"].agg(["size", "min", "max"])
    absent = per_doc.index.difference(doc_table.index)
    if len(absent):
        raise ValueError(f"describe_sample: activations of documents {absent.tolist()[:10]} that docs does not list")
    n = int(len(tokens))
    used = int(len(per_doc))
    if corpus_documents is not None and corpus_documents < used:
        raise ValueError(f"describe_sample: corpus_documents {corpus_documents} < the {used} documents used")

    first = 1 if exclude_bos else 0
    window = context_len - first  # activations in a full window
    counts = per_doc["size"].to_numpy()
    # from the window's start: positions first .. first + k - 1, each once (then max - min + 1 == k)
    from_start = (per_doc["min"].to_numpy() == first) & (per_doc["max"].to_numpy() - first + 1 == counts)
    distinct = tokens.groupby("doc_id")["position"].nunique().reindex(per_doc.index).to_numpy()
    from_start &= distinct == counts

    covered = None
    if "text" in doc_table.columns and "char_end" in tokens.columns and (tokens["char_end"] >= 0).all():
        reach = tokens.groupby("doc_id")["char_end"].max()
        length = doc_table.loc[reach.index, "text"].astype(str).str.len().to_numpy()
        share = np.divide(reach.to_numpy(), length, out=np.ones(len(length)), where=length > 0)
        covered = {"median": float(np.median(share)), "min": float(share.min()), "max": float(share.max())}

    capture = None
    if capture_stats:
        capture = {name: int(sum(int(s.get(key) or 0) for s in capture_stats))
                   for name, key in (("documents_longer_than_window", "n_docs_truncated"),
                                     ("activations_cut_by_budget", "n_cut_by_budget"))}

    bos = "<bos>"
    windows = (f"One window per document: its first {context_len:,} tokens, {bos} included (a document's "
               f"later text is not used). "
               + (f"{bos} is not an activation, so a window gives the activations at positions {first} to "
                  f"{context_len - 1}." if exclude_bos else f"{bos} is an activation (position 0).")
               )

    tok_sources = tokens[["doc_id", "source"]].astype({"source": str})
    order = source_order(tok_sources)
    by_source_acts = tok_sources["source"].value_counts()
    used_docs = doc_table.loc[per_doc.index]
    by_source_docs = used_docs["source"].astype(str).value_counts()
    works = None
    if "work" in used_docs.columns:
        acts_per_doc = pd.Series(counts, index=per_doc.index)
        works = pd.DataFrame({"source": used_docs["source"].astype(str), "work": used_docs["work"],
                              "activations": acts_per_doc}).dropna(subset=["work"])
    sources = []
    for s in order:
        entry: dict[str, Any] = {
            "source": s,
            "activations": int(by_source_acts.get(s, 0)),
            "activation_share": float(by_source_acts.get(s, 0) / n),
            "documents": int(by_source_docs.get(s, 0)),
            "document_share": float(by_source_docs.get(s, 0) / used),
            "works": [],
        }
        if works is not None:
            mine = works[works["source"] == s].groupby("work").agg(documents=("activations", "size"),
                                                                   activations=("activations", "sum"))
            mine = mine.reset_index().sort_values(["activations", "work"], ascending=[False, True])
            entry["works"] = [[str(w), int(d), int(a)] for w, d, a in
                              zip(mine["work"], mine["documents"], mine["activations"], strict=True)]
        sources.append(entry)

    return {
        "corpus": run_key.get("corpus"),
        "budget": run_key.get("budget"),
        "n_activations": n,
        "documents_used": used,
        "corpus_documents": None if corpus_documents is None else int(corpus_documents),
        "documents_used_fraction": None if not corpus_documents else used / int(corpus_documents),
        "doc_id_range": [int(per_doc.index.min()), int(per_doc.index.max())],
        "activations_per_document": {"min": int(counts.min()), "median": float(np.median(counts)),
                                     "max": int(counts.max()), "mean": float(counts.mean())},
        "context_len": context_len,
        "exclude_bos": exclude_bos,
        "first_position": first,
        "last_position": context_len - 1,
        "window_positions": [int(tokens["position"].min()), int(tokens["position"].max())],
        "documents_from_window_start": int(from_start.sum()),
        "documents_full_window": int((from_start & (counts == window)).sum()),
        "documents_short": int((from_start & (counts < window)).sum()),
        "text_covered": covered,
        "capture": capture,
        "windows": windows,
        "sources": sources,
    }
