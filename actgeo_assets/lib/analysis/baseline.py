"""The baselines of a run: how much of the partition is "the same token string", "the same previous and
current token string" or "the same position in the window".

Per component: purity in its most frequent token string (over the small components: the non-singleton
components besides the largest). Over the partition: the agreement of the components with each reference
grouping (homogeneity, completeness, V-measure, adjusted mutual information), computed over three sets of
activations, each named beside its figures: all activations (the largest component and the singletons
included), the activations outside the largest component, and the activations of the small components.
"""

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
#: Most frequent token strings and sources listed per mixed component (the rest are counted).
MIXED_TOP_TOKENS = 5
MIXED_TOP_SOURCES = 3
#: Adjusted mutual information is skipped above this many (reference groups x components) cells (its
#: expected-value term costs about that much: scikit-learn 1.9 took 6 s for 118 million cells, the demo's
#: 20,259 token pairs x 5,815 components).
AMI_MAX_CELLS = 200_000_000

#: The reference groupings compared with the partition: key -> what a reader sees.
GROUPINGS = {"token": "token string", "pair": "previous and current token string",
             "position": "position in the window"}
#: The sets of activations each agreement is computed over: key -> what they are.
COVERAGES = {"all": "all activations", "non_giant": "activations outside the largest component",
             "small": "activations of the small components"}

#: The previous token string of position 1 when position 0 (the window's ``<bos>``) is not in the table.
BOS = "<bos>"
#: The previous token string of position 0 (nothing precedes the window's start).
WINDOW_START = "<window start>"
#: The previous token string where the previous position was not captured (or not kept).
NOT_CAPTURED = "<not captured>"


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


def previous_token_column(tokens: pd.DataFrame) -> pd.Series:
    """The token string at ``position - 1`` of the same document for each row of ``tokens`` (object,
    index-aligned): :data:`BOS` at position 1 when position 0 is not in the table (the window starts with
    ``<bos>``, which the capture drops by default), :data:`WINDOW_START` at position 0, :data:`NOT_CAPTURED`
    where the previous position is not in the table. Needs ``doc_id``, ``position`` and ``token``. Give it
    every captured row (before rows are dropped) so a dropped neighbour still names its token string."""
    _require(tokens, ("doc_id", "position", "token"), "the previous token string")
    pos = tokens["position"].to_numpy().astype(np.int64)
    key = pd.DataFrame({"doc_id": tokens["doc_id"].to_numpy(), "position": pos})
    before = pd.DataFrame({"doc_id": tokens["doc_id"].to_numpy(), "position": pos + 1,
                           "previous": tokens["token"].astype(str).to_numpy()}).drop_duplicates(["doc_id", "position"])
    prev = key.merge(before, on=["doc_id", "position"], how="left")["previous"].to_numpy(dtype=object)
    missing = pd.isna(prev)
    prev[missing & (pos == 1)] = BOS
    prev[missing & (pos == 0)] = WINDOW_START
    prev[missing & (pos > 1)] = NOT_CAPTURED
    return pd.Series(prev, index=tokens.index, dtype=object, name="previous_token")


def reference_groupings(tokens: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[str]]:
    """Integer group codes int64 [N] per key of :data:`GROUPINGS` that ``tokens`` allows, and notes on the
    ones it does not (a missing column). ``pair`` uses ``tokens['previous_token']`` when present (see
    :func:`previous_token_column`), else computes it from ``tokens`` itself."""
    codes: dict[str, np.ndarray] = {}
    notes: list[str] = []
    token = tokens["token"].astype(str)
    codes["token"] = pd.factorize(token)[0].astype(np.int64)
    if "previous_token" in tokens.columns or {"doc_id", "position"} <= set(tokens.columns):
        prev = tokens["previous_token"] if "previous_token" in tokens.columns else previous_token_column(tokens)
        a = pd.factorize(prev.astype(str))[0].astype(np.int64)
        codes["pair"] = pd.factorize(a * (int(codes["token"].max(initial=0)) + 1) + codes["token"])[0].astype(np.int64)
    else:
        notes.append("previous and current token string baseline skipped: the token table has no doc_id/position")
    if "position" in tokens.columns:
        codes["position"] = tokens["position"].to_numpy().astype(np.int64)
    else:
        notes.append("position baseline skipped: the token table has no position column")
    return codes, notes


def coverage_sets(labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per key of :data:`COVERAGES`: ``mask`` (bool [N]), ``n_activations``, ``n_components`` (components
    with a member in the set) and ``covers`` (the set in words, with its counts). ``labels`` canonical
    int64 [N] (0 = the largest component)."""
    sizes = np.bincount(labels) if labels.size else np.zeros(0, dtype=np.int64)
    single = sizes[labels] == 1 if labels.size else np.zeros(0, dtype=bool)
    n_small = int(np.count_nonzero(sizes[1:] >= 2))
    n_single = int(np.count_nonzero(sizes[1:] == 1))
    giant = int(sizes[0]) if sizes.size else 0
    small = (labels > 0) & ~single
    non_giant = labels > 0
    s_small, s_single = "s" if n_small != 1 else "", "s" if n_single != 1 else ""
    return {
        "all": {"mask": np.ones(labels.size, dtype=bool), "n_activations": int(labels.size),
                "n_components": int(sizes.size),
                "covers": f"all {labels.size:,} activations (the largest component of {giant:,}, {n_small:,} small "
                          f"component{s_small} and {n_single:,} singleton{s_single})"},
        "non_giant": {"mask": non_giant, "n_activations": int(non_giant.sum()), "n_components": int(max(sizes.size - 1, 0)),
                      "covers": f"{int(non_giant.sum()):,} activations outside the largest component ({n_small:,} "
                                f"small component{s_small} and {n_single:,} singleton{s_single})"},
        "small": {"mask": small, "n_activations": int(small.sum()), "n_components": n_small,
                  "covers": f"{int(small.sum()):,} activations of the {n_small:,} small component{s_small}"},
    }


def agreement(groups: np.ndarray, labels: np.ndarray, max_cells: int = AMI_MAX_CELLS) -> dict[str, Any]:
    """scikit-learn's agreement of ``labels`` (components) with ``groups`` (a reference grouping), both
    int [M]: ``n_groups``, ``homogeneity`` (each component holds one group), ``completeness`` (each group
    lies in one component), ``v_measure``, ``ami`` (None with ``ami_skipped`` saying why when
    groups x components is above ``max_cells``). All None when M is 0."""
    from sklearn.metrics import adjusted_mutual_info_score, homogeneity_completeness_v_measure

    n_groups, n_comps = len(np.unique(groups)), len(np.unique(labels))
    out: dict[str, Any] = {"n_groups": int(n_groups), "homogeneity": None, "completeness": None, "v_measure": None,
                           "ami": None, "ami_skipped": None}
    if not len(groups):
        out["ami_skipped"] = "no activations"
        return out
    h, c, v = homogeneity_completeness_v_measure(groups, labels)
    out.update(homogeneity=float(h), completeness=float(c), v_measure=float(v))
    if n_groups * n_comps <= max_cells:
        out["ami"] = float(adjusted_mutual_info_score(groups, labels))
    else:
        out["ami_skipped"] = (f"{n_groups:,} groups x {n_comps:,} components is above {max_cells:,} cells "
                              "(the cost of its expected-value term)")
    return out


def partition_baselines(labels: np.ndarray, tokens: pd.DataFrame,
                        max_cells: int = AMI_MAX_CELLS) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per (reference grouping, coverage), groupings in :data:`GROUPINGS` order, each over
    :data:`COVERAGES` in order: ``grouping``, ``reference`` (in words), ``coverage``, ``covers`` (the
    activations in words, with their counts), ``n_activations``, ``n_components``, and the figures of
    :func:`agreement`. Also the notes on groupings skipped."""
    labels = _check(labels, tokens)
    codes, notes = reference_groupings(tokens)
    sets = coverage_sets(labels)
    out: list[dict[str, Any]] = []
    for key, codes_k in codes.items():
        for cov, s in sets.items():
            m = s["mask"]
            out.append({"grouping": key, "reference": GROUPINGS[key], "coverage": cov, "covers": s["covers"],
                        "n_activations": s["n_activations"], "n_components": s["n_components"],
                        **agreement(codes_k[m], labels[m], max_cells)})
    return out, notes


def token_baseline(labels: np.ndarray, tokens: pd.DataFrame, stats: pd.DataFrame | None = None,
                   listed: int = MIXED_LISTED, max_cells: int = AMI_MAX_CELLS) -> dict[str, Any]:
    """The baselines of a run (JSON).

    Over the non-singleton components besides the largest (the small components; ``n_small``):
    ``share_one_token`` (one token string), ``share_majority_token`` (token purity >= 0.5),
    ``share_one_document``, ``mean_token_purity``. ``baselines``: :func:`partition_baselines`, the
    agreement with token string, previous and current token string, and position, each over all
    activations, those outside the largest component and those of the small components (``notes`` says
    which were skipped and why).

    The keys ``n_members``, ``n_token_strings``, ``homogeneity``, ``completeness``, ``v_measure`` and
    ``ami`` are the token-string figures over the activations of the small components only (``covers``
    says so; the same as the ``baselines`` entry ("token", "small")). ``n_activations``, ``n_giant``,
    ``n_singletons``: the partition's counts. ``mixed``: the largest small components whose top token
    is under :data:`MIXED_PURITY` of their members (rank, size, purity, distinct token strings,
    documents, ``top_tokens`` with ``n_more_tokens`` not listed, ``sources`` with ``n_more_sources``),
    ``n_mixed`` all of them."""
    labels = _check(labels, tokens)
    stats = component_token_stats(labels, tokens) if stats is None else stats
    small = stats[(stats.index > 0) & (stats["size"] > 1)]
    sizes = stats["size"].to_numpy()
    out: dict[str, Any] = {"n_components": len(stats), "n_small": len(small), "notes": [],
                           "n_activations": int(labels.size), "n_giant": int(sizes[0]) if len(sizes) else 0,
                           "n_singletons": int(np.count_nonzero(sizes[1:] == 1))}
    if len(small):
        out.update(share_one_token=float((small["n_distinct_tokens"] == 1).mean()),
                   share_majority_token=float((small["token_purity"] >= MIXED_PURITY).mean()),
                   share_one_document=float((small["n_documents"] == 1).mean()),
                   mean_token_purity=float(small["token_purity"].mean()))
    baselines, notes = partition_baselines(labels, tokens, max_cells)
    out["baselines"] = baselines
    out["notes"] += notes
    old = next(b for b in baselines if (b["grouping"], b["coverage"]) == ("token", "small"))
    out.update(covers=old["covers"], n_members=old["n_activations"], n_token_strings=old["n_groups"])
    if old["n_activations"]:
        out.update({k: old[k] for k in ("homogeneity", "completeness", "v_measure", "ami")})
    for b in baselines:
        if b["ami_skipped"] and b["n_activations"]:
            out["notes"].append(f"adjusted mutual information ({b['reference']}, {b['covers']}) skipped: "
                                f"{b['ami_skipped']}")
    out.update(_mixed(labels, tokens, stats, small, listed))
    return out


def _mixed(labels: np.ndarray, tokens: pd.DataFrame, stats: pd.DataFrame, small: pd.DataFrame,
           listed: int) -> dict[str, Any]:
    """``n_mixed`` and ``mixed`` of :func:`token_baseline`. Sources within a component by their count there,
    ties by the run's source order (activations in the run, descending, then name)."""
    mixed = small[small["token_purity"] < MIXED_PURITY]
    listed_labels = mixed.index.to_numpy()[:listed]  # canonical labels: larger components first
    groups = members_by_label(labels, listed_labels) if len(listed_labels) else {}
    run_rank = {}
    if "source" in tokens.columns and len(listed_labels):
        counts = tokens["source"].astype(str).value_counts(sort=False)
        run_rank = {s: i for i, s in enumerate(sorted(counts.index, key=lambda s: (-int(counts[s]), s)))}
    rows = []
    for lab in listed_labels:
        tok = tokens.iloc[groups[int(lab)]]
        vc = tok["token"].astype(str).value_counts(sort=False)
        top = sorted(((str(t), int(n)) for t, n in vc.items()), key=lambda x: (-x[1], x[0]))
        srcs: list[tuple[str, int]] = []
        if "source" in tok.columns:
            sm = tok["source"].astype(str).value_counts(sort=False)
            srcs = sorted(((str(t), int(n)) for t, n in sm.items()), key=lambda x: (-x[1], run_rank.get(x[0], 0), x[0]))
        row = stats.loc[lab]
        rows.append({"rank": int(lab) + 1, "size": int(row["size"]), "token_purity": float(row["token_purity"]),
                     "n_distinct_tokens": int(row["n_distinct_tokens"]), "n_documents": int(row["n_documents"]),
                     "top_tokens": top[:MIXED_TOP_TOKENS], "n_more_tokens": max(len(top) - MIXED_TOP_TOKENS, 0),
                     "sources": srcs[:MIXED_TOP_SOURCES], "n_more_sources": max(len(srcs) - MIXED_TOP_SOURCES, 0)})
    return {"n_mixed": len(mixed), "mixed": rows}


def _require(tokens: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in tokens.columns]
    if missing:
        raise ValueError(f"{what} needs token-table columns {missing} (the table has {list(tokens.columns)})")


def _check(labels: np.ndarray, tokens: pd.DataFrame) -> np.ndarray:
    """``labels`` as int64 [N], checked against the token table (one row per activation, a ``token`` column)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative canonical component labels")
    sizes = np.bincount(labels) if labels.size else np.zeros(0, dtype=np.int64)
    if sizes.size and (not sizes.all() or sizes[0] != sizes.max()):
        raise ValueError("labels must be canonical: dense 0..C-1 with 0 the largest component")
    if len(tokens) != labels.size:
        raise ValueError(f"token table has {len(tokens)} rows but labels have {labels.size}: one row per activation")
    _require(tokens, ("token",), "the baselines")
    return labels.astype(np.int64)
