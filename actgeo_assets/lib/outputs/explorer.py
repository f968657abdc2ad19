"""The explorer: one self-contained, interactive HTML page of a run (``cards/explorer.html``).

Built from the run's files -- the merged forest (``components/forest.npz``), the labels at the run's
threshold, the fine sweep (``components/sweep.csv``), the token table and documents, and the cards
(``cards/cards.json``) -- everything the page needs is computed here and embedded as JSON in a
``<script type="application/json" id="explorer-data">`` tag; the page is plain HTML, inline SVG and inline
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
- how to look up a typed sentence (``actgeo which '...'``, ready to copy).

Cards come from ``cards.json`` where the run has one for that component (the full card: model predictions,
logit lens); every other component gets a compact card built here (size, documents, sources, top tokens,
next tokens in the corpus and :data:`CARD_CONTEXTS` contexts with the member token highlighted, rendered by
``lib/analysis/cards.py`` and ``lib/outputs/report.py`` as in the report). A card is keyed ``"{t:.4f}:{label}"``: the
canonical label (0 = largest) of the component at threshold ``t``.

Stable hooks: ``#explorer-data``, ``svg#spectrum circle.pt[data-rank]``, ``svg#percolation
circle.perc-pt[data-threshold]``, ``#threshold-slider`` with ``#slider-threshold``, ``#s-n-components``,
``#s-largest``, ``#s-second``, ``#s-singletons``, ``#s-non-singleton``, ``#s-top10``; ``svg#icicle
rect.node[data-id]``; ``#card-panel[data-key]`` holding ``#card-title`` and the card's ``section.card``;
``#which-input`` and ``#which-command``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.cards import TOP_TOKENS, Card, member_counts
from actgeo_assets.lib.analysis.labels import provisional_label
from actgeo_assets.lib.analysis.percolation import locate_transition
from actgeo_assets.lib.analysis.tokens import (
    CONTEXT_CHARS,
    plain_python,
    prepare_tokens,
    select_contexts,
    token_context,
)
from actgeo_assets.lib.config.constants import DEMO_PROFILE
from actgeo_assets.lib.graph import SingleLinkageForest
from actgeo_assets.lib.outputs.report import REPORT_CSS, card_html
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
        pick = select_contexts(cos, srec["doc_id"].to_numpy(), CARD_CONTEXTS)
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
    which_args: str = "",
) -> dict[str, Any]:
    """Everything the page shows, as JSON-serializable data (see the module docstring).

    ``labels``: canonical int64 [N] at ``threshold`` (``components/labels.npy``); ``sweep``: the sweep table
    (columns of ``SingleLinkageForest.sweep``); ``tokens``: one row per activation in global row order
    (``TOKEN_COLUMNS``, optionally ``next_token``); ``docs``: ``doc_id, source, text``; ``cards_doc``: the
    parsed ``cards.json`` (its cards and sub-cards are shown where they match a component); ``rows``: the
    unit rows (``lib.cards.row_getter``), read to choose the most central contexts of compact cards (of an
    evenly spaced sample of at most :data:`CONTEXT_SAMPLE` members: "cos to mean" is to that sample's mean).
    ``which_args``: what the page's ``actgeo which`` command adds to select this run (e.g. ``--profile full``).
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
        cards[key] = {"title": title(t, label), "html": card_html(card), "full": full, "rank": card.rank,
                      "size": card.size}

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
    transition = (locate_transition(sw, t_run, cut_off_at=forest.exact_up_to).as_dict()
                  if len(sw) and "second_largest" in sw.columns else None)
    return {"description": description, "threshold": t_run, "n": n, "n_components": int(len(sizes)),
            "min_threshold": forest.min_threshold, "exact_up_to": forest.exact_up_to,
            "exact_at": list(forest.exact_at), "error_bound": forest.error_bound,
            "report_href": report_href, "spectrum": spectrum, "sweep": sweep_rows, "slider": slider,
            "slider_start": run_i, "icicle": icicle, "cards": cards, "transition": transition,
            "which_args": which_args}


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


def render_explorer(data: Mapping[str, Any], title: str = "actgeo explorer") -> str:
    """The page: ``data`` (:func:`explorer_data`) embedded as JSON, drawn by the inline script."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    back = (f'<a id="report-link" href="{_esc(data["report_href"])}">the full report</a> \u00b7 '
            if data.get("report_href") else "")
    parts = {"CSS": REPORT_CSS + _EXPLORER_CSS, "TITLE": _esc(title), "DESCRIPTION": _esc(data.get("description", "")),
             "BACK": back, "DATA": blob, "SCRIPT": _SCRIPT}
    # one pass, so text from the data is never substituted again
    return re.sub(r"__(CSS|TITLE|DESCRIPTION|BACK|DATA|SCRIPT)__", lambda m: parts[m.group(1)], _PAGE)


def _esc(s: str) -> str:
    return html.escape(str(s), quote=True)


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
                         which_args="" if layout.root.name == DEMO_PROFILE else f"--profile {layout.root.name}")
    out = Path(path) if path is not None else layout.explorer
    with atomic_path(out, ".html") as tmp:
        tmp.write_text(render_explorer(data), encoding="utf-8")
    return out


def read_embedded(html_text: str) -> dict[str, Any]:
    """The data embedded in an explorer page (what :func:`explorer_data` returned)."""
    start = html_text.index('<script type="application/json" id="explorer-data">')
    start = html_text.index(">", start) + 1
    return json.loads(html_text[start: html_text.index("</script>", start)])


_EXPLORER_CSS = """
body{max-width:1500px}
.xgrid{display:grid;grid-template-columns:minmax(0,1fr) minmax(340px,36%);gap:1.2rem;align-items:start}
#card-panel{position:sticky;top:.5rem;max-height:calc(100vh - 1rem);overflow:auto;border:1px solid #d5dce4;
 border-radius:8px;padding:.6rem .8rem;background:#fff}
#card-title{font-weight:600;font-size:.95rem;margin:.2rem 0}
#card-panel .hint{color:#6b7784;font-size:.9rem}
svg{width:100%;height:auto;display:block;font-family:system-ui,sans-serif}
svg .axis{stroke:#9aa6b2;stroke-width:1}svg .grid{stroke:#eef1f5}svg text{fill:#44505c;font-size:11px;pointer-events:none}
svg text.halo{paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-linejoin:round}
svg .pt,svg .perc-pt{cursor:pointer}svg .pt:hover,svg .perc-pt:hover{stroke:#000;stroke-width:2}
svg .sel{stroke:#d35400;stroke-width:3}
svg rect.node{cursor:pointer;stroke:#fff;stroke-width:.6}svg rect.node:hover{fill-opacity:.75}
svg rect.node.sel{stroke:#d35400;stroke-width:2.5}
.slider-row{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
#threshold-slider{width:min(520px,100%)}
#slider-threshold{font-weight:700;font-variant-numeric:tabular-nums;font-size:1.1rem}
ol#s-top10{columns:5;font-variant-numeric:tabular-nums;font-size:.9rem;margin:.3rem 0}
#which-command{display:block;padding:.4rem .6rem;background:#f4f6f9;border:1px solid #dde3ea;border-radius:4px;
 font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
#which-input{width:min(620px,100%);font-size:1rem;padding:.25rem .4rem}
.legend{font-size:.85rem;color:#44505c}.legend i{display:inline-block;width:.8em;height:.8em;margin:0 .25em}
@media (max-width:900px){.xgrid{grid-template-columns:1fr}#card-panel{position:static;max-height:none}}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title><style>__CSS__</style></head><body>
<h1>__TITLE__</h1>
<p class="runline">__DESCRIPTION__</p>
<p class="meta">__BACK__Click a point of the size spectrum or of the percolation curve, or a node of the
giant's hierarchy, to open that component's card on the right.</p>
<div class="xgrid"><main>
<h2 id="spectrum-h">Size spectrum at the run's threshold</h2>
<p class="meta" id="spectrum-note"></p>
<svg id="spectrum" viewBox="0 0 640 330" role="img" aria-label="component size vs rank, log-log"></svg>
<h2 id="percolation-h">Percolation curve</h2>
<p class="meta" id="percolation-note"></p>
<svg id="percolation" viewBox="0 0 640 380" role="img" aria-label="largest-component fraction and number of
components vs threshold"></svg>
<h2 id="slider-h">Components at a threshold</h2>
<div class="slider-row"><input type="range" id="threshold-slider" min="0" max="0" step="1" value="0"
 aria-label="cosine threshold"><span>cosine \u2265 <output id="slider-threshold"></output></span>
 <span class="meta" id="slider-exact"></span>
 <button id="slider-giant" type="button">open the largest component's card</button></div>
<table id="slider-table"><tbody>
<tr><th>components</th><td class="num" id="s-n-components"></td></tr>
<tr><th>largest component</th><td class="num" id="s-largest"></td></tr>
<tr><th>second largest</th><td class="num" id="s-second"></td></tr>
<tr><th>singletons</th><td class="num" id="s-singletons"></td></tr>
<tr><th>non-singleton components besides the largest</th><td class="num" id="s-non-singleton"></td></tr>
</tbody></table>
<div class="meta">Top-10 sizes</div><ol id="s-top10"></ol>
<p class="meta" id="slider-note"></p>
<h2 id="icicle-h">Inside the largest component: its sub-components at rising thresholds</h2>
<p class="meta" id="icicle-note"></p>
<svg id="icicle" viewBox="0 0 1100 300" role="img" aria-label="the giant's hierarchy"></svg>
<h2 id="which-h">Which component does a sentence of mine fall into?</h2>
<p class="meta">Type a sentence: the command below (<code>.venv/bin/actgeo</code> in the project's folder; add
the <code>--config</code> or <code>--set</code> options the run was made with, if any) captures it with the
run's model and settings and says, token by token, which of this run's components it joins.</p>
<input id="which-input" type="text" placeholder="The House of Commons met today."
 aria-label="a sentence to look up">
<code id="which-command"></code> <button id="which-copy" type="button">copy</button>
<span class="meta" id="which-copied"></span>
</main>
<aside id="card-panel" data-key=""><div id="card-title"></div><div id="card-body">
<p class="hint">No card open yet: click a point or a node.</p></div></aside></div>
<script type="application/json" id="explorer-data">__DATA__</script>
<script>__SCRIPT__</script>
</body></html>
"""

_SCRIPT = r"""
"use strict";
const D = JSON.parse(document.getElementById("explorer-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const fmt = (v) => Number(v).toLocaleString("en-US");
const fixed = (t) => Number(t).toFixed(2);
function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function tip(e, text) { el("title", {}, e, text); return e; }
let selected = null;
function openCard(key, from) {
  const c = key && D.cards[key];
  const panel = document.getElementById("card-panel");
  if (!c) return;
  panel.dataset.key = key;
  document.getElementById("card-title").textContent = c.title + (c.full ? "" : " (compact card)");
  document.getElementById("card-body").innerHTML = c.html;
  if (selected) selected.classList.remove("sel");
  selected = from || null;
  if (selected) selected.classList.add("sel");
  if (window.matchMedia("(max-width: 900px)").matches) panel.scrollIntoView({behavior: "smooth"});
}

// ---- size spectrum (log-log)
(function spectrum() {
  const svg = document.getElementById("spectrum");
  const P = D.spectrum, W = 640, H = 330, L = 58, R = 14, T = 12, B = 40;
  if (!P.length) return;
  const maxR = Math.max(...P.map(p => p[0])), maxS = Math.max(...P.map(p => p[1]));
  const lx = (r) => L + (W - L - R) * Math.log10(r) / Math.max(Math.log10(maxR), 1e-9);
  const ly = (s) => H - B - (H - B - T) * Math.log10(s) / Math.max(Math.log10(maxS), 1e-9);
  for (let k = 0; Math.pow(10, k) <= maxR; k++) {
    el("line", {x1: lx(10 ** k), x2: lx(10 ** k), y1: T, y2: H - B, class: "grid"}, svg);
    el("text", {x: lx(10 ** k), y: H - B + 15, "text-anchor": "middle"}, svg, fmt(10 ** k));
  }
  for (let k = 0; Math.pow(10, k) <= maxS; k++) {
    el("line", {x1: L, x2: W - R, y1: ly(10 ** k), y2: ly(10 ** k), class: "grid"}, svg);
    el("text", {x: L - 6, y: ly(10 ** k) + 4, "text-anchor": "end"}, svg, fmt(10 ** k));
  }
  el("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"}, svg);
  el("line", {x1: L, x2: L, y1: T, y2: H - B, class: "axis"}, svg);
  el("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle"}, svg, "rank (1 = largest)");
  el("text", {x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
              transform: `rotate(-90 14 ${(T + H - B) / 2})`}, svg, "size (rows)");
  el("polyline", {points: P.map(p => `${lx(p[0])},${ly(p[1])}`).join(" "), fill: "none",
                  stroke: "#7f8c9a", "stroke-width": 1}, svg);
  for (const [rank, size, key] of P) {
    const c = el("circle", {cx: lx(rank), cy: ly(size), r: rank === 1 ? 6 : 4, class: "pt",
                            fill: D.cards[key] && D.cards[key].full ? "#1f5f99" : "#7fb3d5",
                            "data-rank": rank, "data-size": size, "data-key": key}, svg);
    tip(c, `rank ${fmt(rank)}: ${fmt(size)} rows` + (D.cards[key] && D.cards[key].full ? " (full card)" : ""));
    c.addEventListener("click", () => openCard(key, c));
  }
  document.getElementById("spectrum-note").textContent =
    `${fmt(D.n_components)} components of ${fmt(D.n)} activations at cosine \u2265 ${D.threshold}. ` +
    `Shown: ranks 1-${Math.min(50, D.n_components)} and the first and last rank of every size ` +
    `(${fmt(P.length)} points; dark: a full card of the report, light: a compact card built for this page).`;
})();

// ---- percolation curve: largest fraction (top) and number of components (bottom) vs threshold
let percMarker = null;
(function percolation() {
  const svg = document.getElementById("percolation");
  const S = D.sweep, W = 640, L = 64, R = 14, panels = [[10, 160], [200, 340]];
  if (!S.length) return;
  const t0 = S[0].threshold, t1 = S[S.length - 1].threshold;
  const x = (t) => L + (W - L - R) * (t - t0) / Math.max(t1 - t0, 1e-9);
  const maxC = Math.max(...S.map(r => r.n_components));
  const nice = (v) => { const p = 10 ** Math.floor(Math.log10(v)), m = v / p;
                        return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * p; };
  const cStep = nice(maxC / 4), cTop = Math.ceil(maxC / cStep) * cStep;
  const series = [["largest_fraction", 1, 0.25, "largest-component fraction", (v) => v.toFixed(2), "#c0392b", true],
                  ["n_components", cTop, cStep, "number of components", fmt, "#1f5f99", false]];
  series.forEach(([col, top, step, name, tf, colour, right], i) => {
    const [y0, y1] = panels[i];
    const y = (v) => y1 - (y1 - y0) * v / top;
    for (let v = 0; v <= top + 1e-9; v += step) {
      el("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}, svg);
      el("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"}, svg, tf(v));
    }
    el("line", {x1: L, x2: L, y1: y0, y2: y1, class: "axis"}, svg);
    el("line", {x1: L, x2: W - R, y1: y1, y2: y1, class: "axis"}, svg);
    el("text", {x: right ? W - R - 4 : L + 6, y: y0 + 12, "text-anchor": right ? "end" : "start"}, svg, name)
      .setAttribute("style", `fill:${colour};font-weight:600`);
    el("polyline", {points: S.map(r => `${x(r.threshold)},${y(r[col])}`).join(" "), fill: "none",
                    stroke: colour, "stroke-width": 1.5}, svg);
    for (const r of S) {
      const c = el("circle", {cx: x(r.threshold), cy: y(r[col]), r: r.exact ? 4.5 : 3, class: "perc-pt",
                              fill: colour, "data-threshold": fixed(r.threshold), "data-key": r.giant || ""}, svg);
      tip(c, `cosine \u2265 ${fixed(r.threshold)}: ${fmt(r.n_components)} components, largest ${fmt(r.largest)} ` +
             `(${(100 * r.largest_fraction).toFixed(1)}%), second largest ${fmt(r.second_largest)}` +
             (r.exact ? ", exact threshold" : ""));
      if (r.giant) c.addEventListener("click", () => { openCard(r.giant, c); setSlider(r.threshold); });
    }
  });
  for (let k = Math.ceil(t0 / 0.05 - 1e-6); k * 0.05 <= t1 + 1e-6; k++) {
    el("line", {x1: x(k * 0.05), x2: x(k * 0.05), y1: 340, y2: 345, class: "axis"}, svg);
    el("text", {x: x(k * 0.05), y: 356, "text-anchor": "middle"}, svg, fixed(k * 0.05));
  }
  el("text", {x: (L + W - R) / 2, y: 375, "text-anchor": "middle"}, svg, "cosine threshold");
  el("line", {x1: x(D.threshold), x2: x(D.threshold), y1: 10, y2: 340, stroke: "#333",
              "stroke-dasharray": "4 3", "pointer-events": "none"}, svg);
  // label on the side with room (the threshold is the sweep's last point in a pruned run)
  const thLeft = x(D.threshold) > (L + W - R) / 2;
  el("text", {x: thLeft ? x(D.threshold) - 4 : x(D.threshold) + 4, y: 192, "text-anchor": thLeft ? "end" : "start",
              class: "halo"}, svg, `run's threshold ${D.threshold}`);
  if (D.transition) {
    const tc = D.transition.t_c;
    el("rect", {x: x(tc) - 3, y: 10, width: 6, height: 330, fill: "#7d3c98", "fill-opacity": 0.15,
                id: "transition-band", "pointer-events": "none"}, svg);
    const left = x(tc) > (L + W - R) / 2;
    el("text", {x: left ? x(tc) - 5 : x(tc) + 5, y: 216, "text-anchor": left ? "end" : "start", class: "halo"}, svg,
       D.transition.at_or_above ? `transition \u2265 ${fixed(tc)} (beyond the pruned range)`
                                : `transition ${fixed(tc)} (second largest peaks)`)
      .setAttribute("style", "fill:#7d3c98");
  }
  percMarker = el("line", {x1: 0, x2: 0, y1: 10, y2: 340, stroke: "#d35400", "stroke-width": 2,
                           "stroke-opacity": 0.6, id: "slider-line", "pointer-events": "none"}, svg);
  percMarker.xOf = x;
  document.getElementById("percolation-note").textContent =
    `From the run's sweep (components/sweep.csv), ${S.length} thresholds; big points: thresholds the forest is ` +
    `exact at (${D.exact_at.join(", ")}), small: within its error bound ${D.error_bound.toExponential(1)} of ` +
    "the float64 rule. A click opens the largest component's card at that threshold. " +
    (D.transition ? D.transition.words : "");
})();

// ---- the slider
const slider = document.getElementById("threshold-slider");
function showSlider(i) {
  const s = D.slider[i];
  if (!s) return;
  document.getElementById("slider-threshold").textContent = fixed(s.threshold);
  document.getElementById("s-n-components").textContent = fmt(s.n_components);
  document.getElementById("s-largest").textContent =
    `${fmt(s.largest)} (${(100 * s.largest_fraction).toFixed(1)}% of ${fmt(D.n)})`;
  document.getElementById("s-second").textContent = fmt(s.second_largest);
  document.getElementById("s-singletons").textContent = fmt(s.singletons);
  document.getElementById("s-non-singleton").textContent = fmt(s.non_singleton);
  document.getElementById("s-top10").innerHTML = s.top.map(v => `<li>${fmt(v)}</li>`).join("");
  document.getElementById("slider-exact").textContent =
    s.exact ? "exact threshold" : `exact within ${D.error_bound.toExponential(1)}`;
  slider.dataset.threshold = fixed(s.threshold);
  if (percMarker) {
    const xx = percMarker.xOf(s.threshold);
    percMarker.setAttribute("x1", xx); percMarker.setAttribute("x2", xx);
  }
}
function setSlider(t) {
  let best = 0;
  D.slider.forEach((s, i) => { if (Math.abs(s.threshold - t) < Math.abs(D.slider[best].threshold - t)) best = i; });
  slider.value = best; showSlider(best);
}
slider.max = Math.max(D.slider.length - 1, 0);
slider.value = D.slider_start;
slider.addEventListener("input", () => showSlider(Number(slider.value)));
document.getElementById("slider-giant").addEventListener("click",
  () => { const s = D.slider[Number(slider.value)]; if (s) openCard(s.giant, null); });
showSlider(D.slider_start);
document.getElementById("slider-note").textContent =
  "Computed in this page's build from the merged forest (components/forest.npz) cut at each threshold of the " +
  "sweep; the percolation curve above is sweep.csv: the two agree at every threshold.";

// ---- icicle of the giant's sub-components
(function icicle() {
  const svg = document.getElementById("icicle");
  const I = D.icicle, L = 56, RH = 34, T = 4, scale = 1;
  const H = T + RH * I.levels.length + 4;
  svg.setAttribute("viewBox", `0 0 ${L + I.width + 6} ${H}`);
  const colours = ["#1f5f99", "#2e86c1", "#5dade2", "#85c1e9", "#aed6f1", "#d6eaf8", "#ebf5fb"];
  I.levels.forEach((t, li) => {
    el("text", {x: L - 8, y: T + RH * li + RH / 2 + 4, "text-anchor": "end"}, svg, `\u2265 ${fixed(t)}`);
  });
  for (const nd of I.nodes) {
    const y = T + RH * nd.level, w = nd.w * scale;
    const r = el("rect", {x: L + nd.x * scale, y: y, width: w, height: RH - 4, class: "node",
                          fill: colours[Math.min(nd.level, colours.length - 1)], "data-id": nd.id,
                          "data-key": nd.key, "data-size": nd.size, "data-threshold": fixed(nd.t)}, svg);
    tip(r, `cosine \u2265 ${fixed(nd.t)}: sub-component ${nd.sub_rank} of the run's largest, ${fmt(nd.size)} rows ` +
           `(${(100 * nd.size / I.giant).toFixed(1)}% of it)`);
    r.addEventListener("click", () => openCard(nd.key, r));
    if (w > 34) {
      const lab = el("text", {x: L + nd.x * scale + 4, y: y + RH / 2 + 2, "pointer-events": "none"}, svg, fmt(nd.size));
      lab.setAttribute("style", nd.level < 3 ? "fill:#fff" : "fill:#1d232a");
    }
  }
  document.getElementById("icicle-note").textContent =
    `Top row: the run's largest component (${fmt(I.giant)} rows at cosine \u2265 ${D.threshold}). Each row below ` +
    `raises the threshold by 0.05 (up to ${fixed(I.levels[I.levels.length - 1])}); single linkage only splits, ` +
    `so each block lies under the one it came from. Width is proportional to size; only sub-components of at ` +
    `least ${fmt(I.min_size)} rows are drawn (at most 60 per row, and at least a few pixels wide), so a gap is ` +
    `rows that fell into smaller pieces or singletons. Rows at thresholds the forest is not exact at ` +
    `(${D.exact_at.join(", ")} are) are within its error bound. A click opens the block's card.` +
    (D.exact_up_to !== null && I.levels[I.levels.length - 1] >= D.exact_up_to - 1e-9
      ? ` This run's forest was pruned at ${D.exact_up_to} (prune_at): it is exact only up to there, so the ` +
        `sub-components above it were not computed; a run without prune_at shows them.` : "");
})();

// ---- which component does my sentence join?
(function which() {
  const input = document.getElementById("which-input"), out = document.getElementById("which-command");
  const quote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
  const show = () => {
    out.textContent = "actgeo which " + (D.which_args ? D.which_args + " " : "") + quote(input.value || input.placeholder);
  };
  input.addEventListener("input", show);
  show();
  document.getElementById("which-copy").addEventListener("click", async () => {
    const note = document.getElementById("which-copied");
    try { await navigator.clipboard.writeText(out.textContent); note.textContent = "copied"; }
    catch (e) {
      const r = document.createRange(); r.selectNodeContents(out);
      const s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
      note.textContent = "selected: press Ctrl+C";
    }
  });
})();
"""
