"""The token-identity baseline of a run: how much of the partition is "same token string" (per
component purity in its most frequent token, and the agreement of the whole partition with grouping by
token string)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.graph.labels import members_by_label

#: A component is "mixed" (spans several distinct tokens) when its most frequent token string is under
#: this share of its members (the provisional label then says "mixed tokens").
MIXED_PURITY = 0.5
#: Largest mixed components listed in the baseline.
MIXED_LISTED = 10
#: Adjusted mutual information is skipped above this many (token strings x components) cells (its
#: expected-value term costs about that much).
AMI_MAX_CELLS = 50_000_000


def component_token_stats(labels: np.ndarray, tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per component (index: label, ascending): ``size``, ``top_token`` (most frequent token string,
    ties by string), ``token_purity`` (its share of the members), ``n_distinct_tokens``, ``n_documents``.
    ``tokens`` is in global row order (``token`` and ``doc_id`` columns), ``labels`` canonical."""
    labels = np.asarray(labels, dtype=np.int64)
    df = pd.DataFrame({"label": labels, "token": tokens["token"].astype(str).to_numpy(),
                       "doc": tokens["doc_id"].to_numpy()})
    tc = df.groupby(["label", "token"], sort=False).size().rename("count").reset_index()
    tc = tc.sort_values(["label", "count", "token"], ascending=[True, False, True], kind="stable")
    first = tc.drop_duplicates("label").set_index("label")
    out = pd.DataFrame({"size": np.bincount(labels)}) if labels.size else pd.DataFrame({"size": []})
    out["top_token"] = first["token"].reindex(out.index)
    out["token_purity"] = first["count"].reindex(out.index) / out["size"]
    out["n_distinct_tokens"] = tc.groupby("label").size().reindex(out.index).fillna(0).astype(np.int64)
    out["n_documents"] = df.groupby("label")["doc"].nunique().reindex(out.index).fillna(0).astype(np.int64)
    return out


def token_baseline(labels: np.ndarray, tokens: pd.DataFrame, stats: pd.DataFrame | None = None,
                   listed: int = MIXED_LISTED) -> dict[str, Any]:
    """How much of the partition is "same token string": the token-identity baseline of a run (JSON).

    Over the non-singleton components besides the largest (the small components; ``n_small``):
    ``share_one_token`` (one token string), ``share_majority_token`` (token purity >= 0.5),
    ``share_one_document``, ``mean_token_purity``. Over their members (``n_members``, ``n_token_strings``):
    the agreement of the partition with grouping by token string, scikit-learn's ``homogeneity`` (each
    component holds one token string), ``completeness`` (each token string lies in one component),
    ``v_measure`` and ``ami`` (adjusted mutual information; None above :data:`AMI_MAX_CELLS`, said in
    ``notes``). ``mixed``: the largest small components whose top token is under :data:`MIXED_PURITY` of
    their members (rank, size, purity, distinct tokens, documents, top tokens, sources), ``n_mixed`` all
    of them."""
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

    labels = np.asarray(labels, dtype=np.int64)
    stats = component_token_stats(labels, tokens) if stats is None else stats
    small = stats[(stats.index > 0) & (stats["size"] > 1)]
    out: dict[str, Any] = {"n_components": len(stats), "n_small": len(small), "notes": []}
    if len(small):
        out.update(share_one_token=float((small["n_distinct_tokens"] == 1).mean()),
                   share_majority_token=float((small["token_purity"] >= MIXED_PURITY).mean()),
                   share_one_document=float((small["n_documents"] == 1).mean()),
                   mean_token_purity=float(small["token_purity"].mean()))
    members = np.flatnonzero(np.isin(labels, small.index.to_numpy()))
    strings = tokens["token"].astype(str).to_numpy()[members]
    n_strings = len(set(strings.tolist()))
    out.update(n_members=int(members.size), n_token_strings=n_strings)
    if members.size:
        h, c, v = homogeneity_completeness_v_measure(strings, labels[members])
        out.update(homogeneity=float(h), completeness=float(c), v_measure=float(v))
        if n_strings * len(small) <= AMI_MAX_CELLS:
            out["ami"] = float(adjusted_mutual_info_score(strings, labels[members]))
        else:
            out["ami"] = None
            out["notes"].append(f"adjusted mutual information skipped: {n_strings:,} token strings x "
                                f"{len(small):,} components is above {AMI_MAX_CELLS:,}")
    mixed = small[small["token_purity"] < MIXED_PURITY]
    out["n_mixed"] = len(mixed)
    listed_labels = mixed.index.to_numpy()[:listed]  # canonical labels: larger components first
    groups = members_by_label(labels, listed_labels) if len(listed_labels) else {}
    out["mixed"] = []
    for lab in listed_labels:
        tok = tokens.iloc[groups[int(lab)]]
        vc = tok["token"].astype(str).value_counts(sort=False)
        top = sorted(((str(t), int(n)) for t, n in vc.items()), key=lambda x: (-x[1], x[0]))[:5]
        sm = tok["source"].astype(str).value_counts(sort=False)
        srcs = sorted(((str(t), int(n)) for t, n in sm.items()), key=lambda x: (-x[1], x[0]))[:3]
        row = stats.loc[lab]
        out["mixed"].append({"rank": int(lab) + 1, "size": int(row["size"]),
                             "token_purity": float(row["token_purity"]),
                             "n_distinct_tokens": int(row["n_distinct_tokens"]),
                             "n_documents": int(row["n_documents"]), "top_tokens": top, "sources": srcs})
    return out
