"""One self-contained HTML report of a run (inline CSS, figures as base64 data URIs; no scripts, no
network: it opens offline from a file).

Order, as in the study: title and which run; summary table; top-20 sizes; Figure 1 (size spectrum);
percolation curve and the sweep table; the token-identity baseline, the components that span several
distinct tokens and the corpus' duplicate documents; cards for ranks 2..20; notes.

Stable hooks for tests and readers: ``<section id="run">``, ``<table id="summary">``, ``<ol id="top-sizes">``,
``<img id="fig-size-spectrum">``, ``<img id="fig-percolation">`` (other figures ``fig-{key}``),
``<table id="sweep">``, ``<table id="baseline">``, ``<table id="mixed-components">``, ``<p id="duplicates">``,
``<section class="card" data-rank="2">``, ``<mark class="hl">``, a card's ``ul.next-corpus``,
``ul.next-model`` and ``ul.readout`` (the logit lens), ``<ul id="notes">``, ``<p id="explorer-link">``
(the link to the run's explorer, when given). Every piece of text from data is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.analysis.numbers import format_number
from actgeo_assets.lib.analysis.tokens import plain_python, quote_token
from actgeo_assets.lib.outputs.report_artefacts import artefact_section, card_artefact_html, documents_phrase
from actgeo_assets.lib.outputs.report_baselines import baseline_section, source_section
from actgeo_assets.lib.outputs.report_readout import lens_html
from actgeo_assets.lib.outputs.report_sample import sample_section
from actgeo_assets.lib.store.layout import atomic_path

#: Keys of ``figures`` with a fixed place in the report; other keys follow the percolation section.
FIGURE_IDS = {"size_spectrum": "fig-size-spectrum", "percolation": "fig-percolation", "n_scaling": "fig-n-scaling",
              "cosine_histogram": "fig-cosine-histogram"}

#: Run-key fields shown first, in this order (the rest follow alphabetically).
RUN_FIELDS = ("model", "layer", "corpus", "corpus_split", "budget", "normalization", "threshold",
              "min_threshold", "precision")

SUMMARY_FIELDS = (
    ("n_components", "components"),
    ("largest", "largest component"),
    ("largest_fraction", "largest-component fraction"),
    ("non_singleton", "non-singleton components besides the largest"),
    ("singletons", "singletons"),
)

REPORT_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
 padding:1.2rem 1.5rem 3rem;color:#1d232a;line-height:1.45;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #dde3ea;
 padding-bottom:.2rem}h3{font-size:1.05rem;margin:0}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
td,th{border:1px solid #dde3ea;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f6f9;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen td{background:#fff6d6;font-weight:600}
.runline{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem;color:#44505c}
ol#top-sizes{columns:5;font-variant-numeric:tabular-nums;font-size:.92rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #e4e8ee}
figcaption{font-size:.85rem;color:#44505c}
section.card{border:1px solid #d5dce4;border-radius:8px;padding:.8rem 1rem;margin:1rem 0;background:#fbfcfd}
.card header{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:baseline}
.card .meta{font-size:.88rem;color:#44505c}
.plabel{font-size:1rem;margin:.35rem 0;color:#7a4b00}.plabel b{color:#1d232a}
.plabel,.card header .meta,#one-input-components{white-space:pre-wrap}
.chips{display:flex;flex-wrap:wrap;gap:.3rem;margin:.3rem 0;padding:0;list-style:none}
.chips li{background:#eef2f7;border-radius:4px;padding:.05rem .45rem;font-size:.85rem}
.tok{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre}
.ctxs{list-style:none;padding:0;margin:.4rem 0 0}
.ctx{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.8rem;
 white-space:pre-wrap;word-break:break-word;border-left:3px solid #d5dce4;padding:.2rem .5rem;margin:.3rem 0;
 background:#fff}
.ctx .src{display:block;font-family:system-ui,sans-serif;font-size:.75rem;color:#6b7784}
mark.hl{background:#ffd54a;color:#000;padding:0 1px;border-radius:2px;outline:1px solid #e0a800}
.notes li{font-size:.9rem}
p.warn{background:#fff3e0;border-left:4px solid #e67e22;padding:.4rem .7rem}
p.ok{background:#eaf7ee;border-left:4px solid #27ae60;padding:.4rem .7rem}
#transition{background:#f4effa;border-left:4px solid #7d3c98;padding:.4rem .7rem}
details summary{cursor:pointer;color:#1f5f99;font-size:.9rem}
"""


#: What each column of the sweep and N-scaling tables counts, as their headers say it (the files keep the
#: short names: sweep.csv, scaling.csv).
COLUMN_HEADERS = {
    "threshold": "cosine threshold",
    "n_components": "components",
    "largest": "largest (activations)",
    "largest_fraction": "largest / all activations",
    "second_largest": "second largest (activations)",
    "singletons": "singletons",
    "non_singleton": "non-singleton components besides the largest",
    "forest_edges": "forest edges at or above the threshold",
    "exact": "exact cut",
    "graph_edges": "linked pairs (graph edges)",
    "shards": "first k shards",
    "n": "activations",
}


def _header(column: str) -> str:
    return f'<th class="num" data-column="{_e(column)}">{_e(COLUMN_HEADERS.get(column, column))}</th>'


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The study's summary table as ``(label, number, remark)`` rows, the top sizes last: what the CLI
    prints (:func:`format_summary`) and the Dagster UI shows (``defs/metadata.summary_md``)."""
    return [
        ("activations (N)", f"{summary['n']:,}", ""),
        ("components", f"{summary['n_components']:,}", ""),
        ("largest", f"{summary['largest']:,}", f"  ({100 * summary['largest_fraction']:.1f}% of N)"),
        ("non-singleton components besides it", f"{summary['non_singleton']:,}", ""),
        ("singletons", f"{summary['singletons']:,}", ""),
        ("top-20 sizes", ", ".join(f"{x:,}" for x in summary["top_sizes"]), ""),
    ]


def format_summary(summary: Mapping[str, Any], title: str) -> str:
    """The study's summary table as plain text under ``title`` (``summary``: ``component_summary``'s)."""
    *table, (top_label, top_sizes, _) = summary_rows(summary)
    lines = [title, *(f"  {label:<39}{number:>12}{remark}" for label, number, remark in table)]
    return "\n".join([*lines, f"  {top_label}: {top_sizes}"])


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "figure"


def _figure(key: str, png: bytes, caption: str) -> str:
    fid = FIGURE_IDS.get(key, f"fig-{_slug(key)}")
    return (f'<figure><img id="{_e(fid)}" alt="{_e(caption)}" src="{_data_uri(png)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _run_table(run_key: Mapping[str, Any], precision: str | None) -> str:
    run_key = {**run_key, **({"precision": precision} if precision else {})}
    keys = [k for k in RUN_FIELDS if k in run_key] + sorted(k for k in run_key if k not in RUN_FIELDS)
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(format_number(run_key[k]))}</td></tr>" for k in keys)
    return f'<table id="run-key">{rows}</table>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr data-key="{_e(k)}"><th>{_e(name)}</th><td class="num">{_e(format_number(summary[k]))}</td></tr>'
        for k, name in SUMMARY_FIELDS if k in summary
    )
    return f'<table id="summary">{rows}</table>'


def _sweep_section(sweep: pd.DataFrame, threshold: float | None) -> str:
    """The listed (exact) thresholds as a table, every row of a fine sweep behind a disclosure."""
    if "exact" not in sweep.columns or sweep["exact"].all():
        return _sweep_table(sweep, threshold)
    listed = sweep[sweep["exact"].astype(bool)]
    return (_sweep_table(listed, threshold)
            + f'<details id="fine-sweep"><summary>Every threshold of the fine sweep ({len(sweep)} thresholds; '
            "cuts between the listed thresholds are exact up to the forest's error bound)</summary>"
            + _sweep_table(sweep, threshold, table_id="sweep-fine") + "</details>")


def _scaling_section(scaling: pd.DataFrame | None, figures: Mapping[str, bytes]) -> list[str]:
    if scaling is None or scaling.empty:
        return []
    out = ['<h2 id="n-scaling-h">How the components change with N</h2>',
           '<p class="meta">Components at the run\'s threshold over the first k shards (exact: the tile forests '
           "of the first k shards merged). The summary depends strongly on N: compare runs only at equal N.</p>"]
    if "n_scaling" in figures:
        out.append(_figure("n_scaling", figures["n_scaling"],
                           "Largest-component fraction (circles) and number of components (squares) vs N; the study's N is "
                           "drawn only when within reach of this run's (the note above the axes says where it is)."))
    cols = list(scaling.columns)
    head = "".join(_header(c) for c in cols)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(format_number(plain_python(r[c])))}</td>' for c in cols) + "</tr>"
                   for r in scaling.to_dict("records"))
    out.append(f'<table id="n-scaling"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return out


def _study_section(study: Mapping[str, Any] | None) -> list[str]:
    if not study:
        return []
    rows = "".join(f"<tr><th>{_e(q)}</th><td>{_e(a)}</td><td>{_e(b)}</td></tr>" for q, a, b in study["rows"])
    cls = "ok" if study.get("comparable") else "warn"
    return ['<h2 id="study-h">The study side by side</h2>',
            f'<p id="study-verdict" class="{cls}">{_e(study["verdict"])}</p>',
            f'<table id="study"><thead><tr><th></th><th>the study</th><th>this run</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>",
            f'<p class="meta">Layer convention: {_e(study.get("layer_convention", ""))}.</p>']


def _sweep_table(sweep: pd.DataFrame, threshold: float | None, table_id: str = "sweep") -> str:
    cols = list(sweep.columns)
    head = "".join(_header(c) for c in cols)
    body = []
    for rec in sweep.sort_values("threshold").to_dict("records") if "threshold" in cols else []:
        chosen = threshold is not None and abs(float(rec["threshold"]) - float(threshold)) < 1e-9
        cells = "".join(f'<td class="num">{_e(format_number(plain_python(rec[c])))}</td>' for c in cols)
        body.append(f'<tr{" class=chosen" if chosen else ""}>{cells}</tr>')
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'



def _chips(items: Iterable[tuple[str, str]], cls: str) -> str:
    lis = "".join(f'<li><span class="tok">{_e(a)}</span> {_e(b)}</li>' for a, b in items)
    return f'<ul class="chips {cls}">{lis}</ul>'


def card_html(card: Card, explorer_href: str | None = None) -> str:
    """One card as the report's HTML (the explorer shows the same markup). ``explorer_href``: the run's
    explorer, linked from the card's header to the same card there (``explorer.html#card-2``)."""
    mix = ", ".join(f"{_e(s)} {c:,}" for s, c in card.source_mix.items())
    sub = f" of rank {card.subcomponent_of} at t={card.threshold:g}" if card.subcomponent_of else ""
    docs = documents_phrase(card)
    parts = [
        f'<section class="card" id="card-{card.rank}{"-sub" if card.subcomponent_of else ""}" '
        f'data-rank="{card.rank}" data-size="{card.size}">',
        f"<header><h3>Rank {card.rank}{_e(sub)}</h3>"
        + (f'<a class="meta in-explorer" href="{_e(explorer_href)}#card-{card.rank}{"-sub" if card.subcomponent_of else ""}">'
           "open in the explorer</a>" if explorer_href else "")
        +
        f'<span class="meta size">{card.size:,} activation{"s" if card.size != 1 else ""}</span>'
        # a component of one repeated input says so in its inputs span (never its copies' documents as evidence)
        + ("" if card.n_inputs == 1 and card.size > 1 else f'<span class="meta ndocs">{_e(docs)}</span>')
        + card_artefact_html(card) +
        f'<span class="meta mix">sources: {mix}</span>'
        + (f'<span class="meta purity">token purity {100 * card.token_purity:.0f}% \u00b7 '
           f'{card.n_distinct_tokens:,} distinct token{"s" if card.n_distinct_tokens != 1 else ""}</span>'
           if card.token_purity is not None and card.n_distinct_tokens is not None else "")
        + "</header>",
        f'<p class="plabel"><b>Provisional label:</b> {_e(card.provisional_label)}</p>',
        '<div class="meta">Top token strings (activations of each)</div>',
        _chips(((quote_token(t), f"\u00d7{c:,}") for t, c in card.top_tokens), "top-tokens"),
    ]
    parts += _next_token_parts(card)
    parts.append('<ul class="ctxs">')
    for c in card.contexts:
        parts.append(
            f'<li class="ctx" data-doc="{_e(c.doc_id)}" data-row="{int(c.row)}"><span class="src">{_e(c.source)} \u00b7 doc {_e(c.doc_id)}'
            f" \u00b7 position {c.position} \u00b7 cos to mean {c.cosine_to_mean:.3f}</span>"
            f'{_e(c.left)}<mark class="hl">{_e(c.token)}</mark>{_e(c.right)}</li>'
        )
    parts.append("</ul></section>")
    return "".join(parts)


def _next_token_parts(card: Card) -> list[str]:
    """What follows the card's tokens: in the corpus, in the model's own predictions, in the logit lens."""
    parts = []
    if card.next_tokens is not None:
        ended = (f"; {card.n_next_unknown:,} member{'s' if card.n_next_unknown != 1 else ''} end "
                 "the captured context" if card.n_next_unknown else "")
        parts += [f'<div class="meta">Next token in the corpus (the token after each member, same document'
                  f"{_e(ended)})</div>",
                  _chips(((quote_token(t), f"\u00d7{c:,}") for t, c in card.next_tokens), "next-corpus")]
    if card.model_next is not None:
        n = card.model_next_members
        of = f"all {n:,} members" if n == card.size else f"{n:,} of {card.size:,} members (a sample, evenly spaced)"
        if card.n_inputs == 1 and card.size > 1:  # copies of one input: one prediction, counted n times
            of += " (one model input: the same prediction each time)"
        parts += [f'<div class="meta">The model\'s own next-token prediction at {_e(of)}: a full forward pass '
                  "over each member's document up to it; mean probability, and how often it is the top "
                  "prediction</div>",
                  _chips(((quote_token(t), f"p {p:.2f} \u00b7 top {k:,}/{n:,}") for t, p, k in card.model_next),
                         "next-model")]
    lens = lens_html(card)  # the lens against its control (lib/outputs/report_readout.py)
    if lens:
        parts.append(lens)
    return parts


def _baseline_section(baseline: Mapping[str, Any] | None, duplicates: Mapping[str, Any] | None,
                      carded: set[int]) -> list[str]:
    """The baselines (:mod:`.report_baselines`: token string, previous + current token string and position,
    each over all activations, outside the giant and over the small components), the components that span
    several distinct tokens, and the duplicate documents of the corpus."""
    out: list[str] = [baseline_section(baseline, carded)] if baseline else []
    if duplicates:
        d = duplicates
        what = "dropped before capture" if d.get("dropped") else "kept (dedup is off)"
        by = "; ".join(f"{s}: {c.get('exact', 0)} exact, {c.get('near', 0)} near"
                       for s, c in (d.get("by_source") or {}).items())
        out += ['<h2 id="duplicates-h">Duplicate documents</h2>',
                f'<p id="duplicates">The corpus held {d.get("n_documents", 0):,} documents: '
                f'{d.get("n_exact_duplicates", 0):,} exact duplicates (same text up to case and whitespace) and '
                f'{d.get("n_near_duplicates", 0):,} near duplicates (word 5-gram Jaccard \u2265 '
                f'{d.get("near_threshold", 0.9)}) of earlier documents, {_e(what)}'
                + (f" ({_e(by)})" if by else "") + "."
                + (f" {d['n_kept']:,} documents remained; the run's activations come from the first of them (the "
                   "sample above says how many)." if d.get("dropped") and d.get("n_kept") is not None else "")
                + "</p>"]
    return out


def render_report(
    *,
    run_key: Mapping[str, Any],
    run_description: str,
    summary: Mapping[str, Any],
    sweep: pd.DataFrame,
    figures: Mapping[str, bytes],
    cards: Sequence[Card],
    notes: Iterable[str] = (),
    precision: str | None = None,
    transition: Mapping[str, Any] | None = None,
    scaling: pd.DataFrame | None = None,
    study: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None,
    duplicates: Mapping[str, Any] | None = None,
    title: str = "actgeo: components of the residual stream",
    explorer_href: str | None = None,
    layers_section: str | None = None,
    sources: Mapping[str, Any] | None = None,
    artefacts: Mapping[str, Any] | None = None,
    uncertainty: str | None = None,
    sample: Mapping[str, Any] | None = None,
) -> str:
    """The report as an HTML string (see :func:`write_report`). ``baseline``: the token-identity baseline
    (``lib.cards.token_baseline``); ``duplicates``: the duplicate documents found in the corpus (counts);
    ``explorer_href``: a link to the run's interactive explorer (``lib/outputs/explorer.py``), shown under the title;
    ``layers_section``: the layer comparison's HTML fragment (``lib/depth.section_html``, data already escaped),
    placed after the cards (``<h2 id="layers-h">``, ``<table id="layer-geometry">``, ``<table id="layer-landing">``)."""
    threshold = run_key.get("threshold")
    top = summary.get("top_sizes", [])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<section id="run"><p class="runline">' + _e(run_description) + "</p>",
        _run_table(run_key, precision),
        f'<p class="meta">Generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}. Summary, figures and '
        "cards below all come from this one run.</p>"
        + (f'<p id="explorer-link"><a href="{_e(explorer_href)}">Open the explorer</a>: the size spectrum, the '
           "curve of components across thresholds, a threshold slider and the largest component's hierarchy, each clickable to a "
           "card.</p>" if explorer_href else "")
        + "</section>",
        *([sample_section(sample)] if sample else []),
        '<h2 id="summary-h">Summary</h2>',
        _summary_table(summary),
        *([artefact_section(artefacts)] if artefacts else []),
        *_study_section(study),
        '<h2 id="top-sizes-h">Top-20 component sizes</h2>',
        '<ol id="top-sizes">' + "".join(f"<li>{int(s):,}</li>" for s in top[:20]) + "</ol>",
    ]
    if "size_spectrum" in figures:
        out += ['<h2 id="fig1-h">Figure 1: component sizes</h2>',
                _figure("size_spectrum", figures["size_spectrum"],
                        "Component size vs rank (log-log) and number of components per size.")]
    if "cosine_histogram" in figures:
        out += ['<h2 id="cosines-h">Pairwise cosines</h2>',
                _figure("cosine_histogram", figures["cosine_histogram"],
                        "Histogram of the cosines of uniformly sampled pairs (log scale); dashed: the threshold. "
                        "The sweep's graph_edges column counts every pair exactly in the tile pass.")]
    out.append('<h2 id="percolation-h">Components across thresholds, and the threshold sweep</h2>')
    if "percolation" in figures:
        out.append(_figure("percolation", figures["percolation"],
                           "Top: largest-component fraction and number of components vs threshold; bottom: the "
                           "second-largest component (activations). Dashed line: the chosen threshold; light "
                           "shading: the interval of the second-largest's peak over the shard resamples."))
    if transition:
        out.append(f'<p id="transition">{_e(transition["words"])}</p>')
    if uncertainty:
        out.append(uncertainty)
    out.append(_sweep_section(sweep, threshold))
    out += _scaling_section(scaling, figures)
    for key, png in figures.items():
        if key not in FIGURE_IDS:
            out.append(_figure(key, png, key.replace("_", " ")))
    main = [c for c in cards if not c.subcomponent_of]
    subs = [c for c in cards if c.subcomponent_of]
    out += _baseline_section(baseline, duplicates, {c.rank for c in main})
    if sources:
        out.append(source_section(sources))
    if main:
        lo, hi = min(c.rank for c in main), max(c.rank for c in main)
        out.append(f'<h2 id="cards-h">Component cards, ranks {lo}\u2013{hi}</h2>')
        out.append('<p class="meta">Labels are provisional guesses from the evidence shown (top tokens, '
                   "sources, number of documents); the highlighted span is the exact token.</p>")
        out += [card_html(c, explorer_href) for c in main]
    if subs:
        out.append('<h2 id="subcards-h">Sub-components of the largest component at a higher threshold</h2>')
        out += [card_html(c, explorer_href) for c in subs]
    if layers_section:
        out.append(layers_section)
    notes = list(notes)
    if notes:
        out.append('<h2 id="notes-h">Notes</h2><ul id="notes" class="notes">'
                   + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(path: str | os.PathLike[str], **fields: Any) -> Path:
    """Write the self-contained HTML report of :func:`render_report` (``fields`` are its keyword
    arguments) atomically to ``path`` and return the path.

    ``figures``: PNG bytes by key; ``size_spectrum``, ``percolation`` and ``n_scaling`` have fixed places
    (ids ``fig-size-spectrum``, ``fig-percolation``, ``fig-n-scaling``), others follow the sweep table.
    ``cards`` with ``subcomponent_of`` set go in a separate section after the main cards. ``precision``
    (e.g. ``"float32 unit rows, float64 edge rule"``) is shown with the run key (kept out of ``run_key``
    so that the run id stays :meth:`RunSettings.run_id`).
    """
    text = render_report(**fields)
    path = Path(path)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
