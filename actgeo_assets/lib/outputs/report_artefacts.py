"""The report's artefact controls: the section that counts identical model inputs and early positions over the
run (``<section id="artefacts">``, ``<table id="artefact-summary">``), and each card's header spans (its
distinct inputs, its early positions, its recall of its top token string).

Input: the JSON of :func:`actgeo_assets.lib.analysis.inputs.artefact_summary` and the cards
(:class:`~actgeo_assets.lib.analysis.cards.Card` or their dicts). Every data-derived string is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from actgeo_assets.lib.analysis.tokens import quote_token

#: The rows of the artefact table: summary key, what it counts.
ARTEFACT_ROWS = (
    ("n", "nodes of the graph (activations; distinct inputs in the middle column)"),
    ("n_components", "components"),
    ("largest", "largest component"),
    ("largest_fraction", "largest / all nodes"),
    ("second_largest", "second largest component"),
    ("non_singleton", "non-singleton components besides the largest"),
    ("singletons", "singletons"),
)

#: How many one-input components the section names (the rest are counted).
NAMED_ONE_INPUT = 12


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _cell(summary: Mapping[str, Any] | None, key: str) -> str:
    """One table cell of a summary (``—`` when the summary was not computed)."""
    if not summary or "skipped" in summary:
        return '<td class="num">\u2014</td>'
    if key == "second_largest":
        top = summary.get("top_sizes") or []
        value = f"{int(top[1]):,}" if len(top) > 1 else "\u2014"
    elif key == "largest_fraction":
        value = f"{100 * float(summary[key]):.1f}%"
    else:
        value = f"{int(summary[key]):,}"
    return f'<td class="num">{_e(value)}</td>'


def _early_sentence(doc: Mapping[str, Any]) -> str:
    """What the run does with early positions, and what the last column is."""
    setting = str(doc.get("early_positions", "flag"))
    limit = int(doc.get("early_position_limit", 4))
    after = {1: "none: position 0 is &lt;bos&gt;", 2: "position 1 after &lt;bos&gt;"}.get(
        limit, f"positions 1\u2013{limit - 1} after &lt;bos&gt;")
    which = f"Early positions, those below {limit} ({after}), hold the model's position-specific artefacts whatever the document"
    n_early = int(doc.get("n_early", 0))
    without = doc.get("summary_without_early") or {}
    if setting == "exclude":
        return (f"{which}. Setting <code>early_positions=exclude</code>: the normalize stage left "
                f"{_e(_plural(int(doc.get('excluded_early', 0)), 'early activation'))} out of the graph, so every "
                "column is already without them.")
    kept = ("kept in the graph and counted on each card" if setting == "flag"
            else "kept in the graph, not flagged on the cards")
    out = (f"{which}. Setting <code>early_positions={_e(setting)}</code>: "
           f"{_e(_plural(n_early, 'early activation'))} {kept}. ")
    if "skipped" in without:
        out += f"The summary without them was not recomputed: {_e(without['skipped'])}."
    else:
        out += ("The last column is the graph recomputed exactly without them (same threshold, every remaining "
                "pair), so it is their whole effect on the summary.")
    return out


def artefact_section(doc: Mapping[str, Any]) -> str:
    """``<section id="artefacts">``: identical model inputs and early positions over the run, from the JSON of
    :func:`~actgeo_assets.lib.analysis.inputs.artefact_summary`; the table ``#artefact-summary`` (quantity | as
    captured | identical inputs once | without early positions) and sentences naming the one-input components
    and the setting in force."""
    n, n_inputs = int(doc["n"]), int(doc["n_inputs"])
    shared, repeated = int(doc["rows_sharing_input"]), int(doc["repeated_inputs"])
    excluded = doc.get("early_positions") == "exclude"
    first = "as run (early positions excluded)" if excluded else "as captured"
    cols = (first, "identical inputs counted once", "without early positions")
    summaries = (doc.get("summary"), doc.get("summary_distinct"), doc.get("summary_without_early"))
    head = "<tr><th>quantity</th>" + "".join(f'<th class="num">{_e(c)}</th>' for c in cols) + "</tr>"
    body = "".join(f'<tr data-key="{_e(k)}"><th>{_e(name)}</th>' + "".join(_cell(s, k) for s in summaries) + "</tr>"
                   for k, name in ARTEFACT_ROWS)
    parts = [
        '<section id="artefacts"><h2 id="artefacts-h">Artefact controls: identical inputs and early positions</h2>',
        f'<p class="meta" id="artefact-inputs">{_e(f"{shared:,}")} of the {_e(f"{n:,}")} activations share their '
        "model input (the same token ids from the window's start through their position) with another activation: "
        f"{_e(f'{n_inputs:,}')} distinct inputs, {_e(_plural(repeated, 'input'))} held more than once. Identical "
        "inputs are one activation computed several times (cosine 1.000 to each other), so the middle column "
        "counts each once: a component that is one input repeated becomes a singleton there.</p>",
    ]
    listed = list(doc.get("one_input_components") or [])
    n_one = int(doc.get("n_one_input_components", len(listed)))
    if n_one:
        named = ", ".join(
            f"rank {int(c['rank'])} ({int(c['size']):,} copies"
            + (f" of {quote_token(str(c['token']))} at position {int(c['position'])}" if "token" in c else "") + ")"
            for c in listed[:NAMED_ONE_INPUT])
        more = f" and {n_one - min(len(listed), NAMED_ONE_INPUT):,} more" if n_one > min(len(listed), NAMED_ONE_INPUT) else ""
        parts.append(f'<p class="warn" id="one-input-components">{_e(_plural(n_one, "component"))} '
                     f"{'is' if n_one == 1 else 'are'} ONE model input repeated, not a cluster: {_e(named)}{_e(more)}. "
                     "Their cards say so.</p>")
    else:
        parts.append('<p class="ok" id="one-input-components">No component is one model input repeated.</p>')
    split = int(doc.get("inputs_split", 0))
    if split:
        parts.append(f'<p class="warn" id="inputs-split">{_e(_plural(split, "distinct input"))} '
                     "have activations in more than one component (a threshold at ~1 separates copies of one "
                     "activation); the middle column counts such an input once in each of its components.</p>")
    parts += [f'<table id="artefact-summary">{head}{body}</table>',
              f'<p class="meta" id="early-positions">{_early_sentence(doc)}</p>',
              '<p class="meta">"Non-singleton components besides the largest" leaves the largest component out, '
              "as the study's table does.</p></section>"]
    return "".join(parts)


def _field(card: Any, name: str) -> Any:
    return card.get(name) if isinstance(card, Mapping) else getattr(card, name, None)


def documents_phrase(card: Any) -> str:
    """The card's documents as its header says them: ``27 documents``, or for a component that is one model
    input repeated ``10 copies of one model input, in 10 documents`` (never 10 documents as evidence)."""
    size, n_docs, n_inputs = int(_field(card, "size")), int(_field(card, "n_documents")), _field(card, "n_inputs")
    docs = _plural(n_docs, "document")
    if n_inputs == 1 and size >= 2:
        return f"{size:,} copies of one model input, in {docs}"
    once = _field(card, "n_input_documents")
    if once is not None and int(once) != n_docs:  # copies of one input in several documents are not evidence
        return f"{docs} ({int(once):,} counting each input once)"
    return docs


def card_artefact_html(card: Any) -> str:
    """A card's artefact spans for its header (a :class:`~actgeo_assets.lib.analysis.cards.Card` or its dict;
    fields not computed give no span): ``<span class="meta inputs">`` (``21 distinct inputs of 27 activations``,
    or the one-input phrase of :func:`documents_phrase`), ``<span class="meta early">`` (``early positions 2 of
    27``) and ``<span class="meta recall">`` (``holds 30 of 30 ' hon'``: members carrying the top token string,
    of its occurrences among all activations of the run)."""
    size = int(_field(card, "size"))
    n_inputs, n_early, recall = _field(card, "n_inputs"), _field(card, "n_early"), _field(card, "recall")
    out = []
    if n_inputs is not None:
        if n_inputs == 1 and size >= 2:
            out.append(f'<span class="meta inputs one-input">{_e(documents_phrase(card))}: an artefact, not a '
                       "cluster</span>")
        else:
            out.append(f'<span class="meta inputs">{_e(f"{int(n_inputs):,}")} distinct input'
                       f'{"s" if n_inputs != 1 else ""} of {_e(f"{size:,}")} activations</span>')
    if n_early is not None:
        out.append(f'<span class="meta early">early positions {_e(f"{int(n_early):,}")} of {_e(f"{size:,}")}</span>')
    if recall:
        held, total = int(recall["held"]), int(recall["total"])
        out.append('<span class="meta recall" title="members carrying the top token string, of its occurrences '
                   f'among all activations of the run">holds {_e(f"{held:,}")} of {_e(f"{total:,}")} '
                   f"{_e(quote_token(str(recall['token'])))}</span>")
    return "".join(out)
