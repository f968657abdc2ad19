"""The explorer: one self-contained, interactive HTML page of a run (``cards/explorer.html``).

Built from the run's files -- the merged forest (``components/forest.npz``), the labels at the run's
threshold, the fine sweep (``components/sweep.csv``), the token table and documents, and the cards
(``cards/cards.json``) -- everything the page needs is computed here and embedded as JSON in a
``<script type="application/json" id="explorer-data">`` tag (:mod:`.explorer_page`); the page is plain HTML, inline SVG and inline
vanilla JavaScript (no external file, no network), so it opens from disk and from ``make ui``'s report
server alike. Never per-row data: the page is bounded whatever N is (points, nodes and cards are capped).

What it shows:

- the size spectrum at the run's threshold (log-log rank vs size; every distinct size's first and last
  rank and the first :data:`SPECTRUM_HEAD` ranks, at most :data:`MAX_SPECTRUM_POINTS` points), each point
  opening that component's card;
- the percolation curve (largest-component fraction and number of components vs threshold, from
  ``sweep.csv``), each point opening the largest component's card at that threshold;
- a threshold slider over the sweep's thresholds (within the forest's range) showing the component count,
  the largest and second-largest sizes, singletons, non-singletons and the top-10 sizes at that threshold,
  all computed here from the forest (so they can be checked against ``sweep.csv``);
- the giant's hierarchy: an icicle whose levels are thresholds rising by :data:`LEVEL_STEP` from the run's
  threshold (never above the forest's ``exact_up_to`` nor the sweep's top), each node a sub-component of
  the run's largest component of at least ``min_size`` rows, drawn inside its parent (single linkage
  nests), each opening its card;
- a text box: served by ``make ui``'s report server it answers live (each token's component and nearest
  contexts, through the server's ``/api/lookup``); opened from a file it shows the ``actgeo lookup '...'``
  command, ready to copy.

Cards come from ``cards.json`` where the run has one for that component (the full card: model predictions,
logit lens); every other component gets a compact card built here (size, documents, sources, top tokens,
next tokens in the corpus and :data:`CARD_CONTEXTS` contexts with the member token highlighted, rendered by
``lib/analysis/tokens.py`` and ``lib/outputs/report.py`` as in the report). A card is keyed ``"{t:.4f}:{label}"``: the
canonical label (0 = largest) of the component at threshold ``t``.

Stable hooks: ``#explorer-data``, ``svg#spectrum circle.pt[data-rank]``, ``svg#percolation
circle.perc-pt[data-threshold]``, ``#threshold-slider`` with ``#slider-threshold``, ``#s-n-components``,
``#s-largest``, ``#s-second``, ``#s-singletons``, ``#s-non-singleton``, ``#s-top10``; ``svg#icicle
rect.node[data-id]``; ``#card-panel[data-key]`` holding ``#card-title`` and the card's ``section.card``;
``#which-input`` and ``#lookup-command``; ``#card-index a.card-link[data-key]``: every full card of the
report, one click away; ``section#card-matches``: the open card's matches in other experiments, where the page
is served with a current comparison (:mod:`.explorer_page`; ``run_inputs`` of the data: the labels' sha256 it
is checked against). ``explorer.html#card-2`` (the report's card id, ``card-{rank}`` or
``card-{rank}-sub``) or ``explorer.html#<card key>`` opens that card when the page loads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.cards import TOP_TOKENS, Card, member_counts
from actgeo_assets.lib.analysis.labels import provisional_label
from actgeo_assets.lib.analysis.percolation import locate_transition
from actgeo_assets.lib.analysis.sources import source_order
from actgeo_assets.lib.analysis.tokens import (
    CONTEXT_CHARS,
    plain_python,
    prepare_tokens,
    select_contexts,
    token_context,
)
from actgeo_assets.lib.config.constants import DEMO_PROFILE
from actgeo_assets.lib.graph import SingleLinkageForest
from actgeo_assets.lib.outputs.explorer_page import render_explorer
from actgeo_assets.lib.outputs.report import card_html
from actgeo_assets.lib.store.layout import RunLayout, atomic_path, load_json
from actgeo_assets.lib.store.rows import RowsSource, chunked_mean, cosines_to_direction, row_getter

#: Threshold step between the icicle's levels.
LEVEL_STEP = 0.05
#: Smallest sub-component (rows) drawn in the icicle; larger runs use a thousandth of the giant.
MIN_NODE_ROWS = 20
#: Nodes per icicle level at most (the largest ones).
MAX_LEVEL_NODES = 60
#: Ranks 1..SPECTRUM_HEAD are always points of the size spectrum.
SPECTRUM_HEAD = 50
#: Points of the size spectrum at most.
MAX_SPECTRUM_POINTS = 300
#: Contexts on a compact card.
CARD_CONTEXTS = 4
#: Members whose rows are read to choose a compact card's contexts (evenly spaced over the component).
CONTEXT_SAMPLE = 2048
#: Width of the icicle in SVG units; a node is at least ``MIN_NODE_WIDTH`` wide so it can be clicked.
ICICLE_WIDTH = 560.0
MIN_NODE_WIDTH = 3.0


def card_key(t: float, label: int) -> str:
    """Key of the component with canonical ``label`` at threshold ``t`` in the page's card table."""
    return f"{float(t):.4f}:{int(label)}"


def spectrum_ranks(sizes: np.ndarray, head: int = SPECTRUM_HEAD, cap: int = MAX_SPECTRUM_POINTS) -> np.ndarray:
    """1-based ranks plotted on the size spectrum, ascending: ranks ``1..head`` and the first and last rank of
    every distinct size (the rank-size staircase exactly); above ``cap`` the non-head ranks are thinned to
    those nearest a log-spaced grid. ``sizes``: int [C] non-increasing."""
    c = int(len(sizes))
    if c == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = np.asarray(sizes)
    change = np.flatnonzero(np.diff(sizes) != 0)
    bounds = np.concatenate([[0], change, change + 1, [c - 1]]) + 1
    ranks = np.unique(np.concatenate([np.arange(1, min(c, head) + 1), bounds]))
    if len(ranks) > cap:
        top, rest = ranks[ranks <= head], ranks[ranks > head]
        grid = np.geomspace(rest[0], rest[-1], max(cap - len(top), 2))
        pick = np.unique(np.searchsorted(rest, grid).clip(0, len(rest) - 1))
        ranks = np.unique(np.concatenate([top, rest[pick], [rest[-1]]]))
    return ranks.astype(np.int64)


def icicle_levels(threshold: float, forest: SingleLinkageForest, top: float, step: float = LEVEL_STEP) -> list[float]:
    """Thresholds of the icicle's levels: ``threshold, threshold + step, ...`` up to ``top`` and never above
    the forest's ``exact_up_to`` (a pruned forest is incomplete above it)."""
    hi = min(float(top), forest.exact_up_to if forest.exact_up_to is not None else 1.0)
    out, k = [], 0
    while (t := round(float(threshold) + k * step, 9)) <= hi + 1e-9:
        out.append(t)
        k += 1
    return out


def _in_range(forest: SingleLinkageForest, t: float) -> bool:
    lo = forest.min_threshold if forest.min_threshold is not None else -1.0
    hi = forest.exact_up_to if forest.exact_up_to is not None else 1.0
    return lo <= t <= hi


class _CardMaker:
    """Compact cards of components given by their members (int64 global rows, ascending)."""

    def __init__(self, tokens: pd.DataFrame, docs: pd.DataFrame, rows: RowsSource) -> None:
        self.tokens = tokens
        self.order = source_order(tokens)  # the run's one ordering of sources (by activations)
        self.inputs = tokens["input_key"].to_numpy() if "input_key" in tokens.columns else None
        self.texts = dict(zip(docs["doc_id"].tolist(), docs["text"].tolist(), strict=True))
        self.get = row_getter(rows)

    def card(self, members: np.ndarray, *, rank: int, label_id: int, threshold: float,
             subcomponent_of: int | None) -> Card:
        tok = self.tokens.iloc[members]
        counts, source_mix, next_tokens, n_unknown = member_counts(tok)
        # contexts: the most central members of distinct documents among an evenly spaced sample
        sample = members[np.unique(np.linspace(0, members.size - 1, min(members.size, CONTEXT_SAMPLE)).astype(np.int64))]
        cos = cosines_to_direction(self.get, sample, chunked_mean(self.get, sample))
        srec = self.tokens.iloc[sample]
        pick = select_contexts(cos, srec["doc_id"].to_numpy(), CARD_CONTEXTS,
                               inputs=None if self.inputs is None else self.inputs[sample])  # no input twice
        source_mix = {src: source_mix[src] for src in self.order if src in source_mix}
        contexts = [token_context(self.texts.get(plain_python(r["doc_id"])), r, c, CONTEXT_CHARS)
                    for r, c in zip(srec.iloc[pick].to_dict("records"), cos[pick], strict=True)]
        card = Card(rank=int(rank), label_id=int(label_id), size=int(members.size), provisional_label="",
                    n_documents=int(tok["doc_id"].nunique()), source_mix=source_mix, top_tokens=counts[:TOP_TOKENS],
                    contexts=contexts, readout=None, threshold=float(threshold), subcomponent_of=subcomponent_of,
                    token_purity=round(counts[0][1] / members.size, 6) if counts else None,
                    n_distinct_tokens=len(counts), next_tokens=next_tokens, n_next_unknown=n_unknown)
        card.provisional_label = provisional_label(card)
        return card


def _members(labels: np.ndarray, wanted: Sequence[int]) -> dict[int, np.ndarray]:
    """``{label: ascending member rows}`` for each label in ``wanted``."""
    wanted_arr = np.asarray(sorted(set(int(w) for w in wanted)), dtype=np.int64)
    sel = np.flatnonzero(np.isin(labels, wanted_arr))
    order = sel[np.argsort(labels[sel], kind="stable")]
    lab = labels[order]
    lo, hi = np.searchsorted(lab, wanted_arr, "left"), np.searchsorted(lab, wanted_arr, "right")
    return {int(w): order[a:b] for w, a, b in zip(wanted_arr, lo, hi, strict=True)}


def _counts(sizes: np.ndarray, n: int) -> dict[str, Any]:
    """The slider's numbers from component sizes int [C] non-increasing."""
    return {"n_components": int(len(sizes)), "largest": int(sizes[0]) if len(sizes) else 0,
            "largest_fraction": float(sizes[0] / n) if len(sizes) else 0.0,
            "second_largest": int(sizes[1]) if len(sizes) > 1 else 0,
            "singletons": int((sizes == 1).sum()), "non_singleton": int((sizes[1:] >= 2).sum()),
            "top": [int(s) for s in sizes[:10]]}


def explorer_data(
    forest: SingleLinkageForest,
    labels: np.ndarray,
    sweep: pd.DataFrame,
    tokens: pd.DataFrame,
    docs: pd.DataFrame,
    *,
    threshold: float,
    rows: RowsSource,
    cards_doc: Mapping[str, Any] | None = None,
    description: str = "",
    report_href: str | None = "report.html",
    lookup_args: str = "",
) -> dict[str, Any]:
    """Everything the page shows, as JSON-serializable data (see the module docstring).

    ``labels``: canonical int64 [N] at ``threshold`` (``components/labels.npy``); ``sweep``: the sweep table
    (columns of ``SingleLinkageForest.sweep``); ``tokens``: one row per activation in global row order
    (``TOKEN_COLUMNS``, optionally ``next_token``); ``docs``: ``doc_id, source, text``; ``cards_doc``: the
    parsed ``cards.json`` (its cards and sub-cards are shown where they match a component); ``rows``: the
    unit rows (``lib.cards.row_getter``), read to choose the most central contexts of compact cards (of an
    evenly spaced sample of at most :data:`CONTEXT_SAMPLE` members: "cos to mean" is to that sample's mean).
    ``lookup_args``: what the page's ``actgeo lookup`` command adds to select this run (e.g. ``--profile full``).
    Sizes: ``O(points + nodes + cards)``, independent of N beyond the caps."""
    labels = np.asarray(labels)
    n = int(labels.size)
    if n != forest.n:
        raise ValueError(f"labels have {n} rows but the forest has {forest.n}: the files are of different runs")
    tokens = prepare_tokens(tokens, n)
    t_run = float(threshold)
    if not _in_range(forest, t_run):
        raise ValueError(f"threshold {t_run} is outside the forest's range [{forest.min_threshold}, "
                         f"{forest.exact_up_to}]")
    maker = _CardMaker(tokens, docs, rows)
    cards: dict[str, dict[str, Any]] = {}
    cache: dict[float, np.ndarray] = {round(t_run, 9): labels}

    def labels_at(t: float) -> np.ndarray:
        t = round(float(t), 9)
        if t not in cache:
            cache[t] = forest.labels_at(t)
        return cache[t]

    n_at: dict[float, int] = {}

    giant = np.flatnonzero(labels == 0)
    inside_at: dict[float, np.ndarray] = {}  # labels at t of the components inside the run's largest

    def title(t: float, label: int) -> str:
        """What the component is, in every role it plays: its rank at ``t``, and above the run's threshold
        which sub-component of the run's largest component it is (single linkage nests)."""
        lab_t = labels_at(t)
        c = n_at.setdefault(round(t, 9), int(lab_t.max()) + 1)
        rank = f"rank {label + 1:,} of {c:,} components at cosine \u2265 {t:g}"
        if t > t_run + 1e-9:
            inside = inside_at.get(round(t, 9))
            if inside is None:
                inside = inside_at[round(t, 9)] = np.unique(lab_t[giant])
            k = int(np.searchsorted(inside, label))
            if k < len(inside) and inside[k] == label:
                return (f"Sub-component {k + 1:,} of the run's largest component (cosine \u2265 {t_run:g}) at "
                        f"cosine \u2265 {t:g}; {rank}")
        return rank[0].upper() + rank[1:]

    def add(key: str, card: Card, t: float, label: int, full: bool) -> None:
        sub = bool(card.subcomponent_of)
        cards[key] = {"title": title(t, label), "html": card_html(card), "full": full, "rank": card.rank,
                      "size": card.size,
                      # the report's id of the card: explorer.html#card-2 opens the report's rank-2 card here
                      "anchor": (f"card-{card.rank}{'-sub' if sub else ''}" if full else None),
                      "label": f"sub-component {card.rank} at {t:g}" if sub else f"rank {card.rank}"}

    # full cards from cards.json: main cards at the run's threshold, sub-cards of the giant at theirs
    if cards_doc:
        for d in cards_doc.get("cards", []):
            c = Card.from_dict(d)
            if abs(c.threshold - t_run) < 1e-9 and 0 <= c.label_id < int(labels.max()) + 1:
                add(card_key(t_run, c.label_id), c, t_run, c.label_id, True)
        t_sub = cards_doc.get("subcard_threshold")
        if t_sub is not None and _in_range(forest, float(t_sub)):
            lab_sub = labels_at(float(t_sub))
            for d in cards_doc.get("subcards", []):
                c = Card.from_dict(d)
                if c.contexts:
                    lab = int(lab_sub[c.contexts[0].row])
                    if int((lab_sub == lab).sum()) == c.size:  # the same component, from this forest
                        add(card_key(float(t_sub), lab), c, float(t_sub), lab, True)

    # the size spectrum at the run's threshold
    sizes = np.bincount(labels).astype(np.int64)
    ranks = spectrum_ranks(sizes)
    need = [int(r) - 1 for r in ranks if card_key(t_run, int(r) - 1) not in cards]
    for lab, mem in _members(labels, need).items():
        add(card_key(t_run, lab), maker.card(mem, rank=lab + 1, label_id=lab, threshold=t_run, subcomponent_of=None),
            t_run, lab, False)
    spectrum = [[int(r), int(sizes[r - 1]), card_key(t_run, int(r) - 1)] for r in ranks]

    # the sweep as written, and the slider's numbers from the forest at each threshold in its range
    sw = sweep.sort_values("threshold").reset_index(drop=True)
    sweep_rows, slider = [], []
    exact = {round(float(t), 9) for t in forest.exact_at}
    for rec in sw.to_dict("records"):
        t = float(rec["threshold"])
        row = {k: plain_python(rec[k]) for k in ("threshold", "n_components", "largest", "largest_fraction",
                                          "second_largest", "singletons", "non_singleton") if k in rec}
        row["exact"] = bool(rec.get("exact", round(t, 9) in exact))
        row["giant"] = None
        if _in_range(forest, t):
            lab_t = labels_at(t)
            key = card_key(t, 0)
            if key not in cards:
                mem = np.flatnonzero(lab_t == 0)
                add(key, maker.card(mem, rank=1, label_id=0, threshold=t, subcomponent_of=None), t, 0, False)
            row["giant"] = key
            sl = _counts(np.bincount(lab_t), n)
            sl.update(threshold=t, exact=round(t, 9) in exact, giant=key)
            slider.append(sl)
        sweep_rows.append(row)

    icicle = _icicle(forest, labels, t_run, float(sw["threshold"].max()) if len(sw) else t_run, labels_at,
                     maker, cards, add)
    run_i = min(range(len(slider)), key=lambda i: abs(slider[i]["threshold"] - t_run)) if slider else 0
    transition = (locate_transition(sw, t_run, cut_off_at=forest.exact_up_to, forest=forest).as_dict()
                  if len(sw) and "second_largest" in sw.columns else None)
    return {"description": description, "threshold": t_run, "n": n, "n_components": int(len(sizes)),
            "min_threshold": forest.min_threshold, "exact_up_to": forest.exact_up_to,
            "exact_at": list(forest.exact_at), "error_bound": forest.error_bound,
            "report_href": report_href, "spectrum": spectrum, "sweep": sweep_rows, "slider": slider,
            "slider_start": run_i, "icicle": icicle, "cards": cards, "transition": transition,
            "lookup_args": lookup_args}


def _icicle(forest: SingleLinkageForest, labels: np.ndarray, t_run: float, top: float, labels_at: Any,
            maker: _CardMaker, cards: dict[str, Any], add: Any) -> dict[str, Any]:
    """Levels, nodes (id, level, t, size, rank within the giant, parent id, x, w, card key) of the giant's
    sub-components; each node lies inside its parent, drawn left to right by size within it."""
    giant = np.flatnonzero(labels == 0)
    levels = icicle_levels(t_run, forest, top)
    min_size = max(MIN_NODE_ROWS, math.ceil(giant.size / 1000))
    nodes: list[dict[str, Any]] = []
    prev: dict[int, dict[str, Any]] = {}  # label at the previous level -> node
    for li, t in enumerate(levels):
        lab_g = labels_at(t)[giant]
        uniq, cnt = np.unique(lab_g, return_counts=True)  # ascending global label = canonical order
        keep = [(int(u), int(c)) for u, c in zip(uniq, cnt, strict=True) if c >= min_size]
        sub_rank = {int(u): i + 1 for i, u in enumerate(uniq)}
        keep = keep[:MAX_LEVEL_NODES]
        members = _members(lab_g, [u for u, _ in keep])
        level: dict[int, dict[str, Any]] = {}
        for u, c in keep:
            mem = giant[members[u]]
            parent = None
            if li:
                parent = prev.get(int(labels_at(levels[li - 1])[mem[0]]))
                if parent is None:
                    continue  # its parent was cut by MAX_LEVEL_NODES
            key = card_key(t, u)
            if key not in cards:
                add(key, maker.card(mem, rank=sub_rank[u], label_id=sub_rank[u] - 1, threshold=t,
                                    subcomponent_of=1 if li else None), t, u, False)
            node = {"id": f"L{li}-{sub_rank[u]}", "level": li, "t": t, "size": c, "sub_rank": sub_rank[u],
                    "parent": parent["id"] if parent else None, "key": key, "x": 0.0, "w": ICICLE_WIDTH}
            level[u] = node
            nodes.append(node)
        _lay_out(level.values(), prev.values())
        prev = level
    return {"levels": levels, "min_size": min_size, "giant": int(giant.size), "nodes": nodes,
            "width": ICICLE_WIDTH}


def _lay_out(children: Any, parents: Any) -> None:
    """Place ``children`` inside their parents: widths proportional to size (a parent's width is its whole
    size; rows in fragments below the minimum leave a gap), at least :data:`MIN_NODE_WIDTH` each, the
    excess of that minimum taken from the widest child."""
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for c in children:
        by_parent.setdefault(c["parent"], []).append(c)
    geometry = {p["id"]: (p["x"], p["w"], p["size"]) for p in parents}
    for pid, kids in by_parent.items():
        x0, width, total = geometry.get(pid, (0.0, ICICLE_WIDTH, max(k["size"] for k in kids)))
        kids.sort(key=lambda k: (-k["size"], k["sub_rank"]))
        w = [max(width * k["size"] / total, MIN_NODE_WIDTH) for k in kids]
        excess = sum(w) - width
        if excess > 0:
            w[0] = max(w[0] - excess, MIN_NODE_WIDTH)
            if sum(w) > width:
                w = [v * width / sum(w) for v in w]
        x = x0
        for k, v in zip(kids, w, strict=True):
            k["x"], k["w"] = round(x, 3), round(v, 3)
            x += v


def write_explorer(
    layout: RunLayout,
    *,
    tokens: pd.DataFrame,
    docs: pd.DataFrame,
    threshold: float,
    rows: RowsSource,
    description: str = "",
    forest: SingleLinkageForest | None = None,
    labels: np.ndarray | None = None,
    sweep: pd.DataFrame | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Path:
    """Build the explorer of the run under ``layout`` from its files (forest, labels, sweep, cards.json when
    present) and write it atomically to ``layout.explorer`` (or ``path``); returns the path.
    ``tokens``/``docs``/``rows`` as for :func:`explorer_data`; ``forest``, ``labels``, ``sweep``: already
    loaded (and hash-checked) by the caller, else read from the layout's files."""
    forest = forest if forest is not None else SingleLinkageForest.load(layout.forest)
    labels = labels if labels is not None else np.load(layout.labels)
    sweep = sweep if sweep is not None else pd.read_csv(layout.sweep)
    cards_doc = load_json(layout.cards) if layout.cards.exists() else None
    data = explorer_data(forest, labels, sweep, tokens, docs, threshold=threshold, cards_doc=cards_doc, rows=rows,
                         description=description,
                         lookup_args="" if layout.root.name == DEMO_PROFILE else f"--profile {layout.root.name}")
    # what the comparison across experiments is checked against (its ``inputs``): stale matches are not shown
    summary = load_json(layout.summary) if layout.summary.exists() else {}
    data["run_inputs"] = {"labels_sha256": summary.get("labels_sha256"),
                          "run_id": (cards_doc or {}).get("run_id")}
    out = Path(path) if path is not None else layout.explorer
    with atomic_path(out, ".html") as tmp:
        tmp.write_text(render_explorer(data), encoding="utf-8")
    return out
