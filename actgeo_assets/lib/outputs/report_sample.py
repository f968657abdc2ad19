"""The report's sample section: what the run's activations are a sample of (``<section id="sample">``, its
sentences in ``<p id="sample-documents">``, ``<p id="sample-windows">``, ``<p id="sample-per-document">``,
and ``<table id="sample-sources">``, one row per source in the one source order, with ``data-source``).

Input: the JSON of :func:`actgeo_assets.lib.analysis.sample.describe_sample`. Every data-derived string is
escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from actgeo_assets.lib.analysis.numbers import format_number


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def sample_section(sample: Mapping[str, Any]) -> str:
    """``<section id="sample">``: plain sentences a reader can check against the members table and the
    documents (documents used out of the corpus, how windows are cut, activations per document, how much of
    each document's text the windows reach) and the sources' table (activations, documents and their shares;
    the works of a source that names them)."""
    n = int(sample["n_activations"])
    used = int(sample["documents_used"])
    corpus = sample.get("corpus_documents")
    lo, hi = sample.get("doc_id_range") or (None, None)
    where = f" of the corpus {_e(sample['corpus'])}" if sample.get("corpus") else " of the corpus"
    if corpus:
        out_of = (f"{_plural(used, 'document')} of the {int(corpus):,}{where} ({_pct(used / int(corpus))}; "
                  "counted after duplicate documents were dropped)")
    else:
        out_of = f"{_plural(used, 'document')}{where} (how many documents it holds is not recorded)"
    order = (f" Documents are taken in corpus order: the {used:,} used lie between doc_id {int(lo):,} and {int(hi):,}."
             if lo is not None else "")
    parts = [
        '<section id="sample">',
        '<h2 id="sample-h">The sample</h2>',
        f'<p id="sample-documents">These {n:,} activations come from {out_of}.{order}</p>',
        f'<p id="sample-windows">{_e(sample["windows"])}</p>',
    ]
    per = sample["activations_per_document"]
    full, short = int(sample["documents_full_window"]), int(sample["documents_short"])
    window = int(sample["context_len"]) - int(sample["first_position"])
    text = (f"Activations per document: {format_number(per['min'])} at least, median {format_number(per['median'])}, "
            f"at most {format_number(per['max'])} (mean {per['mean']:.1f}). {_plural(full, 'document')} fill"
            f"{'s' if full == 1 else ''} a whole window ({window:,} activations); {_plural(short, 'document')} "
            f"give{'s' if short == 1 else ''} fewer (the text, or the budget, ended inside the window).")
    cap = sample.get("capture")
    if cap:
        text += (f" {_plural(int(cap['documents_longer_than_window']), 'document')} used went on past the window "
                 f"(that text is not in the sample); the budget cut {_plural(int(cap['activations_cut_by_budget']), 'activation')} "
                 "of the last documents' windows.")
    cov = sample.get("text_covered")
    if cov:
        text += (f" A document's activations reach a median {_pct(cov['median'])} of its characters "
                 f"(from {_pct(cov['min'])} to {_pct(cov['max'])}).")
    parts.append(f'<p id="sample-per-document">{_e(text)}</p>')
    off = used - int(sample["documents_from_window_start"])
    if off:
        parts.append(f'<p id="sample-window-check" class="warn">{_plural(off, "document")} of {used:,}: their '
                     "activations are not the consecutive positions from the start of a window, as the sentence "
                     "above says windows are cut.</p>")
    has_works = any(s.get("works") for s in sample["sources"])
    head = ("<tr><th>source</th><th class=\"num\">activations</th><th class=\"num\">share of activations</th>"
            "<th class=\"num\">documents</th><th class=\"num\">share of documents</th>"
            + ("<th>works (documents, activations)</th>" if has_works else "") + "</tr>")
    rows = []
    for s in sample["sources"]:
        cells = (f'<th>{_e(s["source"])}</th><td class="num">{int(s["activations"]):,}</td>'
                 f'<td class="num">{_pct(float(s["activation_share"]))}</td><td class="num">{int(s["documents"]):,}</td>'
                 f'<td class="num">{_pct(float(s["document_share"]))}</td>')
        if has_works:
            chips = "".join(f"<li>{_e(w)} ({int(d):,}, {int(a):,})</li>" for w, d, a in s.get("works") or [])
            cells += f'<td><ul class="chips works">{chips}</ul></td>' if chips else "<td></td>"
        rows.append(f'<tr data-source="{_e(s["source"])}">{cells}</tr>')
    parts += [
        f'<table id="sample-sources"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>',
        '<p class="meta">Sources in the one order of this report: by activations, most first, ties by name. '
        "A source's share of activations and its share of documents differ where its documents are shorter "
        "than a window.</p>",
        "</section>",
    ]
    return "\n".join(parts)
