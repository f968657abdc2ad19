"""One self-contained HTML report of a run (inline CSS, figures as base64 data URIs; no scripts, no
network: it opens offline from a file).

Order, as in the study: title and which run; summary table; top-20 sizes; Figure 1 (size spectrum);
percolation curve and the sweep table; cards for ranks 2..20; notes.

Stable hooks for tests and readers: ``<section id="run">``, ``<table id="summary">``, ``<ol id="top-sizes">``,
``<img id="fig-size-spectrum">``, ``<img id="fig-percolation">`` (other figures ``fig-{key}``),
``<table id="sweep">``, ``<section class="card" data-rank="2">``, ``<mark class="hl">``,
``<ul id="notes">``. Every piece of text from data is HTML-escaped.
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

from actgeo_assets.lib.cards import Card, quote_token
from actgeo_assets.lib.layout import atomic_path

#: Keys of ``figures`` with a fixed place in the report; other keys follow the percolation section.
FIGURE_IDS = {"size_spectrum": "fig-size-spectrum", "percolation": "fig-percolation"}

#: Run-key fields shown first, in this order (the rest follow alphabetically).
RUN_FIELDS = ("model", "layer", "corpus", "corpus_split", "budget", "normalization", "threshold",
              "min_threshold", "precision")

SUMMARY_FIELDS = (
    ("n_components", "components"),
    ("largest", "largest component"),
    ("largest_fraction", "largest-component fraction"),
    ("non_singleton", "non-singleton components outside the largest"),
    ("singletons", "singletons"),
)

_CSS = """
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
"""


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


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v.is_integer() and abs(v) >= 1:
            return f"{int(v):,}"
        return f"{v:.4g}" if abs(v) < 1 else f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)


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
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(run_key[k]))}</td></tr>" for k in keys)
    return f'<table id="run-key">{rows}</table>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr data-key="{_e(k)}"><th>{_e(name)}</th><td class="num">{_e(_fmt(summary[k]))}</td></tr>'
        for k, name in SUMMARY_FIELDS if k in summary
    )
    return f'<table id="summary">{rows}</table>'


def _sweep_table(sweep: pd.DataFrame, threshold: float | None) -> str:
    cols = list(sweep.columns)
    head = "".join(f'<th class="num">{_e(c)}</th>' for c in cols)
    body = []
    for rec in sweep.sort_values("threshold").to_dict("records") if "threshold" in cols else []:
        chosen = threshold is not None and abs(float(rec["threshold"]) - float(threshold)) < 1e-9
        cells = "".join(f'<td class="num">{_e(_fmt(_py(rec[c])))}</td>' for c in cols)
        body.append(f'<tr{" class=chosen" if chosen else ""}>{cells}</tr>')
    return f'<table id="sweep"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _chips(items: Iterable[tuple[str, str]], cls: str) -> str:
    lis = "".join(f'<li><span class="tok">{_e(a)}</span> {_e(b)}</li>' for a, b in items)
    return f'<ul class="chips {cls}">{lis}</ul>'


def _card(card: Card) -> str:
    mix = ", ".join(f"{_e(s)} {c:,}" for s, c in card.source_mix.items())
    sub = f" of rank {card.subcomponent_of} at t={card.threshold:g}" if card.subcomponent_of else ""
    docs = "1 document" if card.n_documents == 1 else f"{card.n_documents:,} documents"
    parts = [
        f'<section class="card" id="card-{card.rank}{"-sub" if card.subcomponent_of else ""}" '
        f'data-rank="{card.rank}" data-size="{card.size}">',
        f"<header><h3>Rank {card.rank}{_e(sub)}</h3>"
        f'<span class="meta size">size {card.size:,}</span>'
        f'<span class="meta ndocs">{docs}</span>'
        f'<span class="meta mix">sources: {mix}</span></header>',
        f'<p class="plabel"><b>Provisional label:</b> {_e(card.provisional_label)}</p>',
        '<div class="meta">Top tokens</div>',
        _chips(((quote_token(t), f"\u00d7{c:,}") for t, c in card.top_tokens), "top-tokens"),
    ]
    if card.readout:
        parts.append('<div class="meta">Next-token readout of the mean direction (final norm + unembedding)</div>')
        parts.append(_chips(((quote_token(t), f"{v:.2f}") for t, v in card.readout), "readout"))
    parts.append('<ul class="ctxs">')
    for c in card.contexts:
        parts.append(
            f'<li class="ctx" data-doc="{_e(c.doc_id)}"><span class="src">{_e(c.source)} \u00b7 doc {_e(c.doc_id)}'
            f" \u00b7 position {c.position} \u00b7 cos to mean {c.cosine_to_mean:.3f}</span>"
            f'{_e(c.left)}<mark class="hl">{_e(c.token)}</mark>{_e(c.right)}</li>'
        )
    parts.append("</ul></section>")
    return "".join(parts)


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
    title: str = "actgeo: components of the residual stream",
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    threshold = run_key.get("threshold")
    top = summary.get("top_sizes", [])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<section id="run"><p class="runline">' + _e(run_description) + "</p>",
        _run_table(run_key, precision),
        f'<p class="meta">Generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}. Summary, figures and '
        "cards below all come from this one run.</p></section>",
        '<h2 id="summary-h">Summary</h2>',
        _summary_table(summary),
        '<h2 id="top-sizes-h">Top-20 component sizes</h2>',
        '<ol id="top-sizes">' + "".join(f"<li>{int(s):,}</li>" for s in top[:20]) + "</ol>",
    ]
    if "size_spectrum" in figures:
        out += ['<h2 id="fig1-h">Figure 1: component sizes</h2>',
                _figure("size_spectrum", figures["size_spectrum"],
                        "Component size vs rank (log-log) and number of components per size.")]
    out.append('<h2 id="percolation-h">Percolation curve and threshold sweep</h2>')
    if "percolation" in figures:
        out.append(_figure("percolation", figures["percolation"],
                           "Largest-component fraction and number of components vs threshold; "
                           "dashed line: the chosen threshold."))
    out.append(_sweep_table(sweep, threshold))
    for key, png in figures.items():
        if key not in FIGURE_IDS:
            out.append(_figure(key, png, key.replace("_", " ")))
    main = [c for c in cards if not c.subcomponent_of]
    subs = [c for c in cards if c.subcomponent_of]
    if main:
        lo, hi = min(c.rank for c in main), max(c.rank for c in main)
        out.append(f'<h2 id="cards-h">Component cards, ranks {lo}\u2013{hi}</h2>')
        out.append('<p class="meta">Labels are provisional guesses from the evidence shown (top tokens, '
                   "sources, number of documents); the highlighted span is the exact token.</p>")
        out += [_card(c) for c in main]
    if subs:
        out.append('<h2 id="subcards-h">Sub-components of the largest component at a higher threshold</h2>')
        out += [_card(c) for c in subs]
    notes = list(notes)
    if notes:
        out.append('<h2 id="notes-h">Notes</h2><ul id="notes" class="notes">'
                   + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(
    path: str | os.PathLike[str],
    *,
    run_key: Mapping[str, Any],
    run_description: str,
    summary: Mapping[str, Any],
    sweep: pd.DataFrame,
    figures: Mapping[str, bytes],
    cards: Sequence[Card],
    notes: Iterable[str] = (),
    precision: str | None = None,
) -> Path:
    """Write the self-contained HTML report atomically to ``path`` and return the path.

    ``figures``: PNG bytes by key; ``size_spectrum`` and ``percolation`` have fixed places (ids
    ``fig-size-spectrum``, ``fig-percolation``), others follow the sweep table. ``cards`` with
    ``subcomponent_of`` set go in a separate section after the main cards. ``precision`` (e.g.
    ``"float32 unit rows, float64 edge rule"``) is shown with the run key (kept out of ``run_key`` so
    that the run id stays :meth:`RunSettings.run_id`).
    """
    text = render_report(run_key=run_key, run_description=run_description, summary=summary, sweep=sweep,
                         figures=figures, cards=cards, notes=notes, precision=precision)
    path = Path(path)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
