"""Comparison across experiments: summaries side by side, the three normalizations at a common N, and the
components of one experiment matched to those of another over the same corpus (pure computation; the stage
``lib/stages/compare.py`` reads the runs' files and ``lib/outputs/report_compare.py`` draws the page).

Matching a card of experiment A to the components of experiment B (:func:`match_cards`):

- **Documents.** Only documents whose text is identical in both runs are compared (:func:`doc_hashes`: a
  64-bit hash of each document's text; the same ``doc_id`` with another text is excluded and counted).
  A's members in a document B did not capture, or in an excluded one, have no counterpart: "not covered".
- **Method** (:func:`choose_method`). ``rows`` when both runs hold the same tokenization of their shared
  documents: every activation at the same (document, position) in both has the same token id and character
  span (layers or normalizations of one model, or another budget of it). Then an activation of A *is* an
  activation of B (the same model input), and the matching is by shared activations. Otherwise ``spans``
  (another tokenizer): each activation covers the characters ``[char_start, char_end)`` of its document, and
  an A member's counterparts are the B activations of the same document whose spans overlap its span.
- **Best match.** ``rows``: B's component holding most of the card's members. ``spans``: B's component whose
  members cover most of the card members' characters (summed over every pair of an A member and an
  overlapping B member of that component: the overlap's length in characters). Ties: the higher Jaccard, then
  the smaller label (with canonical labels, the larger component).
  Beside it, the **most specific** match: B's component of the highest Jaccard (a card inside B's giant has
  the giant as its best match; the most specific one says whether B also holds a small component like it).
- **Numbers.** ``shared``: the card's members with a counterpart in the best component (``rows``: the same
  activation is in it); ``overlap = shared / card size``; ``jaccard``: ``rows``: shared activations over the
  union of both components' activations; ``spans``: the same with characters (the card's characters covered
  by the best component over the characters of both; exact when each run's spans are disjoint, as a
  tokenization's are); ``covered``: the card's members with any counterpart in B, ``not_covered`` the rest;
  ``char_overlap`` (``spans``): the card's characters covered by the best component over all its characters.

Every step is vectorized (sorts, ``np.searchsorted``, ``np.unique`` of pair codes): memory O(N + pairs of
overlapping spans), never a Python loop over activations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.layers import compare_geometry

#: Columns each token table passed to the matching must have (one row per activation, in label order).
MATCH_TOKEN_COLUMNS = ("doc_id", "position", "token_id", "token", "char_start", "char_end")
#: Columns of :func:`match_cards`' table, one row per card of A.
MATCH_COLUMNS = ("card_rank", "card_size", "b_rank", "b_size", "shared", "overlap", "jaccard", "char_overlap",
                 "covered", "not_covered", "specific_b_rank", "specific_b_size", "specific_shared", "specific_overlap",
                 "specific_jaccard", "method")
#: How the page names each normalization; plain L2 is the study's recipe.
NORMALIZATION_LABELS = {"l2": "plain L2 (the study's recipe)", "center_l2": "centered, then L2",
                        "rmsnorm": "the next block's RMSNorm, then L2"}
#: Quantities of the components record's ``uncertainty`` shown with their intervals: (record key, row prefix).
INTERVAL_KEYS = (("components_per_1000", "components_per_1000"), ("n_components", "n_components"),
                 ("largest_fraction", "giant_fraction"), ("second_largest", "second_largest"), ("t_c", "t_c"))


def summary_row(name: str, run_key: Mapping[str, Any], summary: Mapping[str, Any],
                uncertainty: Mapping[str, Any] | None, transition: Mapping[str, Any] | None,
                description: str = "") -> dict[str, Any]:
    """One experiment's row of the side-by-side summary: its settings (model, layer, normalization,
    threshold, corpus, context), N, components (and per 1,000 activations), the giant's fraction, the
    second-largest component, singletons and the transition threshold ``t_c``, each with the 95% interval of
    the shard jackknife (``{key}_low``/``{key}_high``; None where the record has none). ``summary``,
    ``uncertainty``, ``transition``: the components record's fields of the same names."""
    n = int(summary["n"])
    top = list(summary.get("top_sizes") or [])
    row: dict[str, Any] = {
        "experiment": name, "description": description, "model": run_key.get("model"), "layer": run_key.get("layer"),
        "normalization": run_key.get("normalization"), "threshold": run_key.get("threshold"),
        "corpus": run_key.get("corpus"), "context_len": run_key.get("context_len"), "n": n,
        "n_components": int(summary["n_components"]),
        "components_per_1000": 1000.0 * int(summary["n_components"]) / n if n else None,
        "largest": int(summary["largest"]), "giant_fraction": float(summary["largest_fraction"]),
        "second_largest": int(top[1]) if len(top) > 1 else 0, "singletons": int(summary["singletons"]),
        "non_singleton": int(summary["non_singleton"]),
        "t_c": (transition or {}).get("t_c"), "t_c_at_or_above": bool((transition or {}).get("at_or_above")),
        "interval_method": (uncertainty or {}).get("method"),
    }
    quantities = {q["key"]: q for q in (uncertainty or {}).get("quantities", [])}
    for key, prefix in INTERVAL_KEYS:
        q = quantities.get(key, {})
        row[f"{prefix}_low"], row[f"{prefix}_high"] = q.get("low"), q.get("high")
    return row


def normalizations_at_common_n(acts: np.ndarray, thresholds: Sequence[float], norm_weight: Mapping[str, Any] | None,
                               device: str = "auto") -> tuple[pd.DataFrame, dict[str, str], int]:
    """The three normalizations of the same raw activations (``acts``: float [n, d], one (model, layer)),
    measured as the layer comparison measures them (:func:`compare_geometry`: exact components at each of
    ``thresholds``, giant fraction, singletons, mean pairwise cosine; ``center_l2`` subtracts the mean of
    these rows; activations some normalization cannot take are dropped from all). ``rmsnorm`` needs
    ``norm_weight`` (the next block's norm, ``read_next_norm``); without it it is left out with the reason.
    Returns the table (``normalization``, ``label`` (:data:`NORMALIZATION_LABELS`), ``threshold``, ``n``,
    ``n_components``, ``largest``, ``giant_fraction``, ``singletons``, ``non_singleton``, ``mean_cosine``,
    ``seconds``), the reasons of the normalizations left out, and the activations dropped."""
    norms = ["l2", "center_l2"]
    left_out: dict[str, str] = {}
    if norm_weight is None:
        left_out["rmsnorm"] = "the run has no raw/next_norm.npz (the next block's norm weight)"
    else:
        norms.append("rmsnorm")
    cmp = compare_geometry({0: acts}, norms, thresholds, norm_weights={0: norm_weight} if norm_weight else None,
                           device=device)
    table = cmp.table.drop(columns=["layer"]).copy()
    table.insert(1, "label", table["normalization"].map(NORMALIZATION_LABELS))
    return table.reset_index(drop=True), left_out, int(cmp.n_dropped)


def doc_hashes(docs: pd.DataFrame) -> pd.Series:
    """uint64 hash of each document's text (``pd.util.hash_array``), indexed by ``doc_id`` (int64)."""
    d = docs.drop_duplicates("doc_id")
    return pd.Series(pd.util.hash_array(d["text"].astype(str).to_numpy(dtype=object)),
                     index=pd.Index(d["doc_id"].to_numpy(np.int64), name="doc_id"))


def common_documents(hash_a: pd.Series, hash_b: pd.Series) -> tuple[np.ndarray, dict[str, int]]:
    """Sorted int64 ids of the documents both runs hold with the same text, and the counts: ``documents_a``,
    ``documents_b``, ``shared_ids``, ``same_text``, ``text_differs`` (same id, another text: excluded)."""
    shared = hash_a.index.intersection(hash_b.index)
    same = np.asarray(shared[hash_a.loc[shared].to_numpy() == hash_b.loc[shared].to_numpy()], dtype=np.int64)
    return np.sort(same), {"documents_a": int(len(hash_a)), "documents_b": int(len(hash_b)),
                           "shared_ids": int(len(shared)), "same_text": int(len(same)),
                           "text_differs": int(len(shared) - len(same))}


def _check_tokens(tokens: pd.DataFrame, labels: np.ndarray, side: str) -> None:
    missing = [c for c in MATCH_TOKEN_COLUMNS if c not in tokens.columns]
    if missing:
        raise ValueError(f"token table of {side} lacks columns {missing}")
    if len(tokens) != len(labels):
        raise ValueError(f"token table of {side} has {len(tokens)} rows but its labels {len(labels)}")


def choose_method(tok_a: pd.DataFrame, tok_b: pd.DataFrame, docs: np.ndarray) -> tuple[str, str]:
    """``("rows", why)`` when the activations at the same (document, position) of the shared ``docs`` carry
    the same token id and character span in both tables (one tokenization), else ``("spans", why)``."""
    cols = ["doc_id", "position", "token_id", "char_start", "char_end"]
    a = tok_a.loc[np.isin(tok_a["doc_id"].to_numpy(), docs), cols]
    b = tok_b.loc[np.isin(tok_b["doc_id"].to_numpy(), docs), cols]
    m = a.merge(b, on=["doc_id", "position"], suffixes=("_a", "_b"))
    if m.empty:
        return "spans", "no activation at the same (document, position) in both: matched by character spans"
    same = ((m["token_id_a"] == m["token_id_b"]) & (m["char_start_a"] == m["char_start_b"])
            & (m["char_end_a"] == m["char_end_b"]))
    if bool(same.all()):
        return "rows", (f"the same tokenization: all {len(m):,} activations at the same (document, position) in "
                        "both carry the same token and character span, so they are the same activations: matched "
                        "by shared activations")
    return "spans", (f"different tokenizations: {int((~same).sum()):,} of {len(m):,} activations at the same "
                     "(document, position) differ in token or character span: matched by character spans")


def _pick(card: np.ndarray, lab: np.ndarray, first: np.ndarray, second: np.ndarray, n_cards: int) -> np.ndarray:
    """Per card index 0..n_cards-1, the ``lab`` of its (card, lab) entries with the largest ``first``, ties
    broken by the largest ``second``, then the smallest label (the larger component); -1 for a card without
    entries."""
    out = np.full(n_cards, -1, dtype=np.int64)
    if len(card):
        order = np.lexsort((lab, -second, -first, card))
        head = order[np.r_[True, card[order][1:] != card[order][:-1]]]
        out[card[head]] = lab[head]
    return out


def _distinct_members(pair_a: np.ndarray, card_of_member: np.ndarray, n_cards: int) -> np.ndarray:
    """Per card, the number of distinct members among the pairs' members ``pair_a`` (indices of members)."""
    return np.bincount(card_of_member[np.unique(pair_a)], minlength=n_cards).astype(np.int64)


def match_cards(tok_a: pd.DataFrame, labels_a: np.ndarray, tok_b: pd.DataFrame, labels_b: np.ndarray,
                card_labels: Sequence[int], docs: np.ndarray, method: str) -> pd.DataFrame:
    """For each canonical label of ``card_labels`` (A's cards, 0 = the largest), B's best-matching component
    (module docstring). ``tok_a``/``tok_b``: token tables (:data:`MATCH_TOKEN_COLUMNS`) in the order of
    ``labels_a``/``labels_b`` (int64 canonical labels); ``docs``: ids of the documents compared
    (:func:`common_documents`); ``method``: ``rows`` or ``spans``. Returns one row per card: ``card_rank``,
    ``card_size``, ``b_rank`` (None where no member has a counterpart), ``b_size``, ``shared``, ``overlap``,
    ``jaccard``, ``char_overlap`` (None for ``rows``), ``covered``, ``not_covered``, ``method``, and the same for
    the most specific match, B's component of the highest Jaccard (ties: the larger overlap):
    ``specific_b_rank``, ``specific_b_size``, ``specific_shared``, ``specific_overlap``, ``specific_jaccard``
    (:data:`MATCH_COLUMNS`)."""
    if method not in ("rows", "spans"):
        raise ValueError(f"method {method!r}: use 'rows' or 'spans'")
    _check_tokens(tok_a, labels_a, "A")
    _check_tokens(tok_b, labels_b, "B")
    labels_a, labels_b = np.asarray(labels_a, dtype=np.int64), np.asarray(labels_b, dtype=np.int64)
    cards = np.asarray(list(card_labels), dtype=np.int64)
    sizes_a, sizes_b = np.bincount(labels_a), np.bincount(labels_b)
    bad = cards[(cards < 0) | (cards >= len(sizes_a))]
    if len(bad):
        raise ValueError(f"card labels {bad.tolist()} are not components of A ({len(sizes_a)} components)")
    docs = np.sort(np.asarray(docs, dtype=np.int64))
    slot = np.full(len(sizes_a), -1, dtype=np.int64)
    slot[cards] = np.arange(len(cards))
    members = np.flatnonzero(slot[labels_a] >= 0)  # A's rows in a card
    card_of_member = slot[labels_a[members]]
    in_docs_b = np.isin(tok_b["doc_id"].to_numpy(np.int64), docs)
    rows_b = np.flatnonzero(in_docs_b)
    a_doc = tok_a["doc_id"].to_numpy(np.int64)[members]
    a_ok = np.isin(a_doc, docs)
    if method == "rows":
        pair_a, pair_b, weight = _pairs_by_rows(tok_a, tok_b, members, rows_b, a_ok, docs)
    else:
        pair_a, pair_b, weight = _pairs_by_spans(tok_a, tok_b, members, rows_b, a_ok, docs)
    lab_b = labels_b[pair_b]
    card_of = card_of_member[pair_a]
    # every (card, B component) with its total weight: shared activations (rows) or characters (spans)
    width = int(labels_b.max(initial=0)) + 1
    codes, inv = np.unique(card_of * width + lab_b, return_inverse=True)
    total = np.bincount(inv, weights=weight, minlength=len(codes))
    p_card, p_lab = codes // width, codes % width
    if method == "spans":
        len_a = tok_a["char_end"].to_numpy(np.int64) - tok_a["char_start"].to_numpy(np.int64)
        len_b = tok_b["char_end"].to_numpy(np.int64) - tok_b["char_start"].to_numpy(np.int64)
        whole_a = np.bincount(card_of_member, weights=len_a[members], minlength=len(cards))
        whole_b = np.bincount(labels_b, weights=len_b, minlength=len(sizes_b)).astype(np.float64)
    else:
        whole_a, whole_b = sizes_a[cards].astype(np.float64), sizes_b.astype(np.float64)
    jac = total / (whole_a[p_card] + whole_b[p_lab] - total) if len(codes) else np.zeros(0)
    best = _pick(p_card, p_lab, total, jac, len(cards))
    specific = _pick(p_card, p_lab, jac, total, len(cards))
    covered = _distinct_members(pair_a, card_of_member, len(cards))
    # distinct card members per (card, B component): a member may overlap several B activations of one component
    distinct = np.unique(pair_a.astype(np.int64) * max(len(codes), 1) + inv)
    members_per_code = np.bincount(distinct % max(len(codes), 1), minlength=len(codes))
    out = []
    for k, label in enumerate(cards.tolist()):
        size = int(sizes_a[label])
        row: dict[str, Any] = {"card_rank": label + 1, "card_size": size, "covered": int(covered[k]),
                               "not_covered": size - int(covered[k]), "method": method}
        for prefix, chosen in (("", int(best[k])), ("specific_", int(specific[k]))):
            at = np.searchsorted(codes, k * width + chosen) if chosen >= 0 else -1
            shared = int(members_per_code[at]) if chosen >= 0 else 0
            row.update({f"{prefix}b_rank": chosen + 1 if chosen >= 0 else None,
                        f"{prefix}b_size": int(sizes_b[chosen]) if chosen >= 0 else None,
                        f"{prefix}shared": shared, f"{prefix}overlap": shared / size,
                        f"{prefix}jaccard": float(jac[at]) if chosen >= 0 else 0.0})
            if not prefix:
                row["char_overlap"] = (None if method == "rows" else
                                       float(total[at] / whole_a[k]) if chosen >= 0 else 0.0)
        out.append(row)
    return pd.DataFrame(out, columns=list(MATCH_COLUMNS))


def _pairs_by_rows(tok_a: pd.DataFrame, tok_b: pd.DataFrame, members: np.ndarray, rows_b: np.ndarray,
                   a_ok: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index into ``members``, B row, weight 1) for each card member whose (document, position) B holds
    (B's first row of a repeated key)."""
    # documents as their index in ``docs`` (file-mode doc ids use the high bits: no room to multiply)
    doc_b = np.searchsorted(docs, tok_b["doc_id"].to_numpy(np.int64)[rows_b])
    pos_b = tok_b["position"].to_numpy(np.int64)[rows_b]
    doc_a = np.searchsorted(docs, tok_a["doc_id"].to_numpy(np.int64)[members])
    pos_a = tok_a["position"].to_numpy(np.int64)[members]
    width = int(max(pos_b.max(initial=0), pos_a.max(initial=0))) + 1
    key_b = doc_b * width + pos_b
    order = np.argsort(key_b, kind="stable")
    key_b = key_b[order]
    key_a = doc_a * width + pos_a
    at = np.searchsorted(key_b, key_a)
    found = a_ok & (at < len(key_b))
    found[found] = key_b[at[found]] == key_a[found]
    idx = np.flatnonzero(found)
    return idx, rows_b[order[at[idx]]], np.ones(len(idx))


def _pairs_by_spans(tok_a: pd.DataFrame, tok_b: pd.DataFrame, members: np.ndarray, rows_b: np.ndarray,
                    a_ok: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index into ``members``, B row, overlap in characters) for every card member and B activation of the
    same document whose character spans overlap. Spans of B sorted by (document, start); a member's
    candidates are the B spans starting before its end, from the first whose running maximum end passes its
    start (the running maximum keeps this right when a tokenization's spans overlap), then filtered exactly."""
    def dense(doc: np.ndarray) -> np.ndarray:
        return np.searchsorted(docs, doc)

    s_a = tok_a["char_start"].to_numpy(np.int64)[members]
    e_a = tok_a["char_end"].to_numpy(np.int64)[members]
    d_a = dense(tok_a["doc_id"].to_numpy(np.int64)[members])
    s_b = tok_b["char_start"].to_numpy(np.int64)[rows_b]
    e_b = tok_b["char_end"].to_numpy(np.int64)[rows_b]
    d_b = dense(tok_b["doc_id"].to_numpy(np.int64)[rows_b])
    width = int(max(e_a.max(initial=0), e_b.max(initial=0))) + 1
    order = np.lexsort((s_b, d_b))
    start_key = d_b[order] * width + s_b[order]
    end_key = np.maximum.accumulate(d_b[order] * width + e_b[order]) if len(order) else np.zeros(0, np.int64)
    lo = np.searchsorted(end_key, d_a * width + s_a, side="right")
    hi = np.searchsorted(start_key, d_a * width + e_a, side="left")
    count = np.where(a_ok, np.maximum(hi - lo, 0), 0)
    ia = np.repeat(np.arange(len(members)), count)
    jb = np.repeat(lo, count) + (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count))
    jb = order[jb]
    ov = np.minimum(e_a[ia], e_b[jb]) - np.maximum(s_a[ia], s_b[jb])
    keep = (ov > 0) & (d_a[ia] == d_b[jb])
    return ia[keep], rows_b[jb[keep]], ov[keep].astype(np.float64)


def top_token_strings(tokens: pd.DataFrame, labels: np.ndarray, wanted: Sequence[int],
                      k: int = 3) -> dict[int, list[tuple[str, int]]]:
    """For each canonical label in ``wanted``, its ``k`` most frequent token strings with counts (ties: the
    string first in sort order)."""
    labels = np.asarray(labels, dtype=np.int64)
    want = np.unique(np.asarray(list(wanted), dtype=np.int64))
    mask = np.isin(labels, want)
    t = pd.DataFrame({"label": labels[mask], "token": tokens["token"].to_numpy(dtype=object)[mask]})
    counts = t.groupby(["label", "token"], sort=True).size().reset_index(name="count")
    counts = counts.sort_values(["label", "count", "token"], ascending=[True, False, True], kind="stable")
    out: dict[int, list[tuple[str, int]]] = {int(w): [] for w in want}
    for label, group in counts.groupby("label", sort=False):
        out[int(label)] = [(str(tok), int(c)) for tok, c in zip(group["token"][:k], group["count"][:k], strict=True)]
    return out
