"""The comparison page of several experiments (``comparison/report.html``) and its figures.

Figures (matplotlib's Agg canvas, no pyplot state; each ``*_figure`` returns the ``Figure`` for tests, each
``*_png`` its PNG bytes), one line or bar group per experiment, the legend by experiment name outside the axes:

- :func:`percolation_overlay_figure`: the giant's fraction (top) and the second-largest component in
  activations (bottom) against the cosine threshold, from each run's ``sweep.csv``;
- :func:`n_scaling_overlay_figure`: the giant's fraction (top) and components per 1,000 activations (bottom)
  against N (activations, log), from each run's ``scaling.csv``;
- :func:`normalizations_figure`: grouped bars, one group per (model, layer), one bar per normalization: the
  giant's fraction (top) and the number of components (bottom, log) at a common N.

The page (:func:`render_comparison`, :func:`write_comparison`) reuses the run report's CSS and has sections
with stable ids: ``#summaries`` (``table#summary-table``, a ``tr[data-experiment]`` per experiment),
``#percolation`` (``img#fig-percolation``), ``#n-scaling`` (``img#fig-n-scaling``), ``#normalizations``
(``table#normalization-table``, ``img#fig-normalizations``), ``#matches`` (one ``table.matches`` per ordered
pair, id ``matches-{a}-{b}`` with ``data-a``/``data-b``/``data-method``), ``#skipped``. Every data string is
HTML-escaped.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from actgeo_assets.lib.analysis.numbers import format_number
from actgeo_assets.lib.analysis.tokens import quote_token
from actgeo_assets.lib.outputs.figures import DPI
from actgeo_assets.lib.outputs.report import REPORT_CSS
from actgeo_assets.lib.store.layout import atomic_path

#: Files of the figures (key -> file name under the comparison's folder).
FIGURE_FILES = {"percolation": "percolation.png", "n_scaling": "n_scaling.png",
                "normalizations": "normalizations.png"}
#: Beside the report's CSS: wide tables scroll sideways, match tables are denser.
EXTRA_CSS = ".wide{overflow-x:auto}table.matches{font-size:.8rem}table.matches .meta{font-size:.75rem;color:#6b7784}"
NORM_COLORS = {"l2": "#7f8c8d", "center_l2": "#c0392b", "rmsnorm": "#1f5f99"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _legend(fig: Figure, ax: Any, ncols: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=max(1, min(ncols, 4)), fontsize=8)


def percolation_overlay_figure(sweeps: Mapping[str, pd.DataFrame]) -> Figure:
    """The giant's fraction (top) and the second-largest component in activations (bottom) against the cosine
    threshold, one line per experiment (``sweeps``: name -> ``sweep.csv`` with ``threshold``,
    ``largest_fraction``, ``second_largest``), each labelled with the experiment's name."""
    if not sweeps:
        raise ValueError("percolation_overlay_figure: no experiment to draw")
    fig = Figure(figsize=(8, 6.4), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for i, (name, sweep) in enumerate(sweeps.items()):
        s = sweep.sort_values("threshold")
        t = s["threshold"].to_numpy(dtype=float)
        top.plot(t, s["largest_fraction"].to_numpy(dtype=float), color=f"C{i % 10}", label=name)
        if "second_largest" in s.columns:
            bottom.plot(t, s["second_largest"].to_numpy(dtype=float), color=f"C{i % 10}", label=name)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("giant's fraction of the activations")
    top.grid(True, alpha=0.3)
    bottom.set_ylabel("second-largest component\n(activations)")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("cosine threshold")
    bottom.grid(True, alpha=0.3)
    top.set_title("Percolation curves of the experiments (each run's sweep.csv)", fontsize=9, loc="left")
    _legend(fig, top, len(sweeps))
    return fig


def n_scaling_overlay_figure(scalings: Mapping[str, pd.DataFrame]) -> Figure:
    """The giant's fraction (top) and components per 1,000 activations (bottom) against N in activations (log
    axis), one line per experiment (``scalings``: name -> ``scaling.csv`` with ``n``, ``largest_fraction``,
    ``n_components``)."""
    if not scalings:
        raise ValueError("n_scaling_overlay_figure: no experiment to draw")
    fig = Figure(figsize=(8, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (name, sc) in enumerate(scalings.items()):
        s = sc.sort_values("n")
        n = s["n"].to_numpy(dtype=float)
        top.plot(n, s["largest_fraction"].to_numpy(dtype=float), marker="o", ms=3, color=f"C{i % 10}", label=name)
        bottom.plot(n, 1000.0 * s["n_components"].to_numpy(dtype=float) / n, marker="s", ms=3, color=f"C{i % 10}",
                    label=name)
    top.set_xscale("log")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("giant's fraction of the activations")
    top.grid(True, alpha=0.3, which="both")
    bottom.set_ylabel("components per 1,000 activations")
    bottom.set_ylim(bottom=0)
    bottom.set_xlabel("N (activations, the first k shards)")
    bottom.grid(True, alpha=0.3, which="both")
    top.set_title("How the components change with N (each run's scaling.csv)", fontsize=9, loc="left")
    _legend(fig, top, len(scalings))
    return fig


def normalizations_figure(table: pd.DataFrame) -> Figure:
    """Grouped bars: one group per ``group`` of ``table`` (e.g. ``"gemma layer 9 (t = 0.7)"``), one bar per
    ``normalization`` (labelled by ``label``): the giant's fraction (top) and the number of components
    (bottom, log) at the common N. ``table``: columns ``group``, ``normalization``, ``label``,
    ``giant_fraction``, ``n_components``."""
    if table.empty:
        raise ValueError("normalizations_figure: the table is empty")
    groups = list(dict.fromkeys(table["group"]))
    norms = list(dict.fromkeys(table["normalization"]))
    fig = Figure(figsize=(max(6.0, 1.6 + 1.9 * len(groups)), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(norms)
    x = np.arange(len(groups))
    for k, norm in enumerate(norms):
        sub = table[table["normalization"] == norm].set_index("group")
        label = str(sub["label"].iloc[0])
        heights = [float(sub.loc[g, "giant_fraction"]) if g in sub.index else np.nan for g in groups]
        counts = [float(sub.loc[g, "n_components"]) if g in sub.index else np.nan for g in groups]
        color = NORM_COLORS.get(norm, f"C{k}")
        top.bar(x + (k - (len(norms) - 1) / 2) * width, heights, width, color=color, label=label)
        bottom.bar(x + (k - (len(norms) - 1) / 2) * width, counts, width, color=color, label=label)
    top.set_ylim(0, 1.02)
    top.set_ylabel("giant's fraction of the activations")
    bottom.set_yscale("log")
    bottom.set_ylabel("components (log)")
    bottom.set_xticks(x, groups, fontsize=8)
    top.grid(True, axis="y", alpha=0.3)
    bottom.grid(True, axis="y", alpha=0.3)
    n = sorted({int(v) for v in table["n"]}) if "n" in table.columns else []
    top.set_title(f"The normalizations at a common N ({', '.join(f'{v:,}' for v in n)} activations)", fontsize=9,
                  loc="left")
    _legend(fig, top, len(norms))
    return fig


def percolation_overlay_png(sweeps: Mapping[str, pd.DataFrame]) -> bytes:
    return _png(percolation_overlay_figure(sweeps))


def n_scaling_overlay_png(scalings: Mapping[str, pd.DataFrame]) -> bytes:
    return _png(n_scaling_overlay_figure(scalings))


def normalizations_png(table: pd.DataFrame) -> bytes:
    return _png(normalizations_figure(table))


def slug(name: str) -> str:
    """``name`` as an id fragment: lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "x"


def _figure(fid: str, png: bytes | None, caption: str) -> str:
    if png is None:
        return f'<p class="meta">No figure: {_e(caption)}</p>'
    import base64

    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img id="{_e(fid)}" alt="{_e(caption)}" src="{uri}"><figcaption>{_e(caption)}</figcaption></figure>'


def _num(v: Any) -> str:
    return "\u2013" if v is None or (isinstance(v, float) and np.isnan(v)) else format_number(v)


def _interval(v: Any, lo: Any, hi: Any, pct: bool = False, digits: int | None = None) -> str:
    """``v (lo-hi)`` with the interval where there is one: percentages (``pct``), ``digits`` decimals, or
    (``digits`` None) whole numbers, as counts of activations or components are."""
    def f(x: Any) -> str:
        if x is None:
            return "\u2013"
        if pct:
            return f"{100 * float(x):.1f}%"
        if digits is not None:
            return f"{float(x):,.{digits}f}"
        return f"{int(round(float(x))):,}"
    return f(v) + (f" ({f(lo)}\u2013{f(hi)})" if lo is not None and hi is not None else "")


def summaries_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """``#summaries``: one row per experiment (:func:`~actgeo_assets.lib.analysis.compare.summary_row`)."""
    head = ("<tr><th>experiment</th><th>model</th><th class=num>layer</th><th>normalization</th>"
            "<th class=num>threshold</th><th class=num>N (activations)</th><th class=num>components</th>"
            "<th class=num>per 1,000 activations</th><th class=num>giant's fraction</th>"
            "<th class=num>second largest (activations)</th><th class=num>singletons</th>"
            "<th class=num>t<sub>c</sub></th></tr>")
    body = []
    for r in rows:
        t_c = ("\u2265 " if r.get("t_c_at_or_above") else "") + _interval(r.get("t_c"), r.get("t_c_low"),
                                                                         r.get("t_c_high"), digits=2)
        cells = [
            f"<th>{_e(r['experiment'])}</th>", f"<td>{_e(r.get('model'))}</td>", f"<td class=num>{_e(r.get('layer'))}</td>",
            f"<td>{_e(r.get('normalization'))}</td>", f"<td class=num>{_e(_num(r.get('threshold')))}</td>",
            f"<td class=num>{_e(_num(r['n']))}</td>",
            f"<td class=num>{_e(_interval(r['n_components'], r.get('n_components_low'), r.get('n_components_high')))}</td>",
            f"<td class=num>{_e(_interval(r.get('components_per_1000'), r.get('components_per_1000_low'), r.get('components_per_1000_high'), digits=1))}</td>",
            f"<td class=num>{_e(_interval(r['giant_fraction'], r.get('giant_fraction_low'), r.get('giant_fraction_high'), pct=True))}</td>",
            f"<td class=num>{_e(_interval(r['second_largest'], r.get('second_largest_low'), r.get('second_largest_high')))}</td>",
            f"<td class=num>{_e(_num(r['singletons']))}</td>", f"<td class=num>{_e(t_c)}</td>"]
        body.append(f'<tr data-experiment="{_e(r["experiment"])}">{"".join(cells)}</tr>')
    return (f'<div class="wide"><table id="summary-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'
            '<p class="meta">In brackets: the 95% interval of the delete-one shard jackknife (each replicate an exact '
            "merge of the tile forests of the shards it keeps; components compared per 1,000 activations). The "
            "second largest and t<sub>c</sub> are extreme statistics: read each run's report for the replicates. "
            "Counts depend strongly on N: compare experiments at equal N.</p>")


def normalizations_html(groups: Sequence[Mapping[str, Any]]) -> str:
    """``table#normalization-table``: per (model, layer) group and threshold, each normalization's numbers."""
    if not groups:
        return '<p class="meta">No experiment could be read for this comparison.</p>'
    head = ("<tr><th>model, layer</th><th>raw activations of</th><th>normalization</th><th class=num>threshold</th>"
            "<th class=num>N (activations)</th><th class=num>components</th><th class=num>giant's fraction</th>"
            "<th class=num>singletons</th><th class=num>mean pairwise cosine</th></tr>")
    body, notes = [], []
    for g in groups:
        for r in g.get("rows", []):
            chosen = ' class="chosen"' if r["normalization"] == "l2" else ""
            body.append(
                f'<tr data-group="{_e(g["group"])}" data-normalization="{_e(r["normalization"])}"{chosen}>'
                f"<td>{_e(g['group'])}</td><td>{_e(g['source'])}</td><td>{_e(r['label'])}</td>"
                f"<td class=num>{_e(_num(r['threshold']))}</td><td class=num>{_e(_num(r['n']))}</td>"
                f"<td class=num>{_e(_num(r['n_components']))}</td>"
                f"<td class=num>{100 * float(r['giant_fraction']):.1f}%</td>"
                f"<td class=num>{_e(_num(r['singletons']))}</td><td class=num>{float(r['mean_cosine']):.3f}</td></tr>")
        for norm, why in (g.get("left_out") or {}).items():
            notes.append(f"{g['group']}: {norm} left out: {why}")
        if g.get("error"):
            notes.append(f"{g['group']}: {g['error']}")
        if g.get("n_dropped"):
            notes.append(f"{g['group']}: {g['n_dropped']:,} activations dropped (some normalization could not take them)")
    out = f'<table id="normalization-table"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
    if notes:
        out += '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    return out


def _tokens(items: Sequence[Sequence[Any]] | None) -> str:
    if not items:
        return "\u2013"
    return " ".join(f'<span class="tok">{_e(quote_token(str(t)))}</span>&nbsp;{int(c):,}' for t, c in items)


def _link(text: str, href: str | None) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>' if href else _e(text)


def _component(r: Mapping[str, Any], prefix: str) -> str:
    """B's component of a match (``prefix`` "" for the best, "specific_" for the most specific): its rank and
    size linked to B's explorer, B's label where B has a card for it, and its top token strings."""
    rank = r.get(f"{prefix}b_rank")
    if not rank:
        return "none"
    label = r.get(f"{prefix}b_label")
    return (_link(f"rank {int(rank):,} ({int(r[f'{prefix}b_size']):,})", r.get(f"{prefix}b_href"))
            + (f'<br><span class="meta">{_e(label)}</span>' if label else "")
            + f"<br>{_tokens(r.get(f'{prefix}b_top_tokens'))}")


def best_matches(pairs: Sequence[Mapping[str, Any]], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` matches of highest Jaccard over every ordered pair (ties: the larger overlap, the larger card),
    each with its pair's ``a``, ``b`` and ``method``."""
    rows = [{"a": p["a"], "b": p["b"], "method": p["method"], **r} for p in pairs for r in p["rows"]
            if r.get("b_rank")]
    return sorted(rows, key=lambda r: (-r["jaccard"], -r["overlap"], -r["card_size"], r["a"], r["b"]))[:k]


def best_matches_html(pairs: Sequence[Mapping[str, Any]], k: int = 5) -> str:
    """``table#best-matches``: :func:`best_matches` in one table."""
    best = best_matches(pairs, k)
    if not best:
        return ""
    head = ("<tr><th>card</th><th>its top token strings</th><th>best match</th><th class=num>overlap</th>"
            "<th class=num>Jaccard</th><th>method</th></tr>")
    body = []
    for r in best:
        a_text = f"{r['a']}: rank {int(r['card_rank'])} ({int(r['card_size']):,})"
        b_text = f"{r['b']}: rank {int(r['b_rank']):,} ({int(r['b_size']):,})"
        method = "character spans" if r["method"] == "spans" else "shared activations"
        body.append(f'<tr data-a="{_e(r["a"])}" data-b="{_e(r["b"])}" data-card="{int(r["card_rank"])}">'
                    f"<td>{_link(a_text, r.get('a_href'))}</td><td>{_tokens(r.get('a_top_tokens'))}</td>"
                    f"<td>{_link(b_text, r.get('b_href'))}<br>{_tokens(r.get('b_top_tokens'))}</td>"
                    f"<td class=num>{100 * r['overlap']:.0f}%</td><td class=num>{r['jaccard']:.3f}</td>"
                    f"<td>{method}</td></tr>")
    return (f"<h3>The {len(best)} closest matches (highest Jaccard, every pair)</h3>"
            f'<div class="wide"><table id="best-matches"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>')


def matches_html(pairs: Sequence[Mapping[str, Any]]) -> str:
    """One table per ordered pair (A, B): for each card of A, B's best-matching component and the overlap, and
    B's most specific component (the highest Jaccard)."""
    if not pairs:
        return ('<p class="meta">No pair of experiments to match: at least two experiments with current cards are '
                "needed.</p>")
    out = []
    for p in pairs:
        a, b, method = p["a"], p["b"], p["method"]
        d = p.get("documents", {})
        spans = method == "spans"
        unit = "characters" if spans else "activations"
        out.append(f'<h3 id="pair-{_e(slug(a))}-{_e(slug(b))}">Cards of {_e(a)} matched in {_e(b)}</h3>')
        out.append(f'<p class="meta">Method: <b>{"character spans" if spans else "shared activations"}</b>: '
                   f"{_e(p['reason'])}. Documents compared: {d.get('same_text', 0):,} with the same text in both "
                   f"({d.get('documents_a', 0):,} in {_e(a)}, {d.get('documents_b', 0):,} in {_e(b)}; "
                   f"{d.get('text_differs', 0):,} with the same id and another text excluded).</p>")
        head = (f"<tr><th>card of {_e(a)} (size), label</th><th>its top token strings</th>"
                f"<th>best match in {_e(b)}: rank (size)</th><th class=num>members matched</th>"
                f"<th class=num>overlap</th><th class=num>Jaccard ({unit})</th>"
                + ("<th class=num>characters covered</th>" if spans else "")
                + "<th class=num>not covered</th><th>most specific match: rank (size)</th>"
                f"<th class=num>its overlap</th><th class=num>its Jaccard ({unit})</th></tr>")
        body = []
        for r in p["rows"]:
            a_text = f"rank {int(r['card_rank'])} ({int(r['card_size']):,})"
            cells = [f"<td>{_link(a_text, r.get('a_href'))}<br><span class=\"meta\">{_e(r.get('card_label') or '')}</span></td>",
                     f"<td>{_tokens(r.get('a_top_tokens'))}</td>", f"<td>{_component(r, '')}</td>",
                     f"<td class=num>{int(r['shared']):,}</td>", f"<td class=num>{100 * r['overlap']:.0f}%</td>",
                     f"<td class=num>{r['jaccard']:.3f}</td>"]
            if spans:
                cells.append(f"<td class=num>{100 * (r.get('char_overlap') or 0.0):.0f}%</td>")
            cells += [f"<td class=num>{int(r['not_covered']):,}</td>", f"<td>{_component(r, 'specific_')}</td>",
                      f"<td class=num>{100 * (r.get('specific_overlap') or 0.0):.0f}%</td>",
                      f"<td class=num>{(r.get('specific_jaccard') or 0.0):.3f}</td>"]
            body.append(f'<tr data-card="{int(r["card_rank"])}">{"".join(cells)}</tr>')
        out.append(f'<div class="wide"><table class="matches" id="matches-{_e(slug(a))}-{_e(slug(b))}" '
                   f'data-a="{_e(a)}" data-b="{_e(b)}" data-method="{_e(method)}"><thead>{head}</thead>'
                   f'<tbody>{"".join(body)}</tbody></table></div>')
    return "\n".join(out)


MATCH_EXPLAINED = (
    "For every card of experiment A, the component of experiment B that best matches it, over the documents both "
    "captured with the same text. <b>Shared activations</b> (the same tokenization, e.g. layers or normalizations of "
    "one model): B's component holding most of the card's activations; <i>overlap</i> = shared activations / card size, "
    "<i>Jaccard</i> = shared / activations in either. <b>Character spans</b> (another tokenizer): each activation covers "
    "a span of characters of its document; a card member's counterparts are B's activations of the same document whose "
    "spans overlap it; B's best component is the one whose members cover most of the card's characters; "
    "<i>members matched</i>: card members with a counterpart in it; <i>overlap</i> = members matched / card size; "
    "<i>Jaccard</i> over characters; <i>characters covered</i>: the card's characters inside it. <i>Not covered</i>: card "
    "members with no counterpart in B at all (text B did not capture). A card inside B's giant has the giant as its "
    "best match; the <i>most specific match</i> is B's component of the highest Jaccard with the card. Links open "
    "each experiment's explorer at that card (B's component opens where the explorer has a card for it).")


def render_comparison(*, experiments: Sequence[str], summaries: Sequence[Mapping[str, Any]],
                      figures: Mapping[str, bytes | None], normalization_groups: Sequence[Mapping[str, Any]],
                      common_n: int | None, pairs: Sequence[Mapping[str, Any]], skipped: Mapping[str, str],
                      notes: Mapping[str, Sequence[str]], title: str = "actgeo: experiments side by side") -> str:
    """The page as an HTML string (see the module docstring)."""
    usable = [s["experiment"] for s in summaries]
    enough = len(usable) >= 2
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{REPORT_CSS}{EXTRA_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>",
           f'<p class="meta">Experiments: {_e(", ".join(experiments)) or "none"}. Generated '
           f'{datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.</p>']
    if not enough:
        out.append(f'<p id="too-few" class="warn">Only {len(usable)} experiment{"" if len(usable) == 1 else "s"} could '
                   "be read: a comparison needs at least two (see the experiments left out below).</p>")
    out += ['<section id="summaries"><h2>Summaries side by side</h2>', summaries_html(summaries), "</section>",
            '<section id="percolation"><h2>Percolation curves</h2>',
            _figure("fig-percolation", figures.get("percolation"),
                    "Giant's fraction (top) and second-largest component in activations (bottom) vs the cosine "
                    "threshold, one line per experiment."), "</section>",
            '<section id="n-scaling"><h2>N-scaling</h2>',
            _figure("fig-n-scaling", figures.get("n_scaling"),
                    "Giant's fraction (top) and components per 1,000 activations (bottom) vs N (activations, the first "
                    "k shards of each run), one line per experiment."), "</section>",
            '<section id="normalizations"><h2>The three normalizations at a common N</h2>',
            f'<p class="meta">For each model and layer: the first {common_n or 0:,} activations of one run\'s raw '
            "shards (global row order, the activations its normalization kept), normalized each way and measured "
            "exactly at the run's threshold (components of the cosine graph, float64 edge rule). Plain L2 is the "
            "study's recipe; centering subtracts the mean of these activations; RMSNorm applies the next block's "
            "norm weight.</p>", normalizations_html(normalization_groups),
            _figure("fig-normalizations", figures.get("normalizations"),
                    "Giant's fraction (top) and components (bottom, log) per normalization, one group per model and "
                    "layer."), "</section>",
            f'<section id="matches"><h2>Components matched across experiments</h2><p class="meta">{MATCH_EXPLAINED}</p>',
            best_matches_html(pairs), matches_html(pairs), "</section>", '<section id="skipped"><h2>Left out</h2>']
    items = [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in skipped.items()]
    items += [f"<li><b>{_e(k)}</b>: {_e(n)}</li>" for k, ns in notes.items() for n in ns]
    out.append(f'<ul class="notes">{"".join(items)}</ul>' if items
               else '<p class="ok">Every experiment was compared in full.</p>')
    out += ["</section>", "</body></html>"]
    return "\n".join(out)


def write_comparison(path: str | os.PathLike[str], **fields: Any) -> Path:
    """Write :func:`render_comparison` (``fields`` its keyword arguments) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(render_comparison(**fields), encoding="utf-8")
    return path
