"""The report's baselines and per-source sections (HTML fragments, every data-derived string escaped).

:func:`baseline_section` renders ``lib.analysis.baseline.token_baseline``: ``<section id="baselines">`` with
``<p id="baseline-headline">``, ``<table id="baselines-whole">`` (one row per reference grouping and set of
activations, ``data-grouping``/``data-coverage``), ``<table id="baseline">`` (per-component facts, each with
what it covers) and ``<table id="mixed-components">`` (``<tr data-rank>``). :func:`source_section` renders
``lib.analysis.sources.source_breakdown``: ``<section id="sources">`` with ``<table id="source-breakdown">``
(``<tr data-source>``), ``<p id="transition-sources">``, ``<table id="transition-separated">`` and
``<table id="transition-left">``.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from actgeo_assets.lib.analysis.numbers import format_number
from actgeo_assets.lib.analysis.tokens import quote_token

#: Shown for a figure that was not computed.
MISSING = "n/a"
#: The sets of activations a baseline covers, as the table names them (the list above it says what each holds).
COVERAGE_WORDS = {"all": "all activations", "non_giant": "outside the largest component",
                  "small": "in the small components"}
#: Sources listed per component in the transition table (the rest are counted).
SOURCES_LISTED = 5


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(v: Any) -> str:
    """A share as a percentage with one decimal (``0.1234`` -> ``12.3%``); ``n/a`` for None."""
    return MISSING if v is None else f"{100 * float(v):.1f}%"


def num(v: Any) -> str:
    """A figure by the report's number rule (``lib.analysis.numbers``); ``n/a`` for None."""
    return MISSING if v is None else format_number(v)


def _td(text: str, cls: str = "num", title: str | None = None) -> str:
    t = f' title="{_e(title)}"' if title else ""
    return f'<td class="{cls}"{t}>{_e(text)}</td>'


def _th(text: str, cls: str = "num", extra: str = "") -> str:
    return f'<th class="{cls}"{extra}>{_e(text)}</th>' if cls else f"<th{extra}>{_e(text)}</th>"


def counted(pairs: Sequence[Sequence[Any]], n_more: int, quote: bool = False) -> str:
    """``'a' 7, 'b' 2, +3 more`` from ``[[value, count], ...]`` and the number not listed (plain text)."""
    items = [f"{quote_token(str(v)) if quote else v} {int(c):,}" for v, c in pairs]
    if n_more:
        items.append(f"+{n_more:,} more")
    return ", ".join(items)


def counted_html(pairs: Sequence[Sequence[Any]], n_more: int, quote: bool = False) -> str:
    """:func:`counted` as escaped HTML, each token string in ``<span class="tok">`` (the list wraps between
    items, never inside a token string)."""
    items = [(f'<span class="tok">{_e(quote_token(str(v)))}</span>' if quote else _e(v)) + f" {int(c):,}"
             for v, c in pairs]
    if n_more:
        items.append(f"+{n_more:,} more")
    return ", ".join(items)


def _td_html(inner: str) -> str:
    return f"<td>{inner}</td>"


def baseline_section(baseline: Mapping[str, Any] | None, carded: Collection[int] = ()) -> str:
    """The baselines (``token_baseline``'s dict) as HTML; ``carded``: ranks that have a card (linked from
    the mixed-components table). Empty string for no baseline."""
    if not baseline:
        return ""
    b = baseline
    out = ['<section id="baselines">', '<h2 id="baseline-h">Baselines: token string, previous and current token '
           "string, position in the window</h2>",
           '<p class="meta">How much of the partition a simpler grouping of the same activations already gives: '
           "scikit-learn's agreement of the components with grouping by token string, by the pair of previous "
           "and current token string (within the document; position 1 follows &lt;bos&gt;), and by position in "
           "the window (1 = identical groupings, 0 = unrelated). Homogeneity: each component holds one group; "
           "completeness: each group lies in one component; V-measure: their harmonic mean; adjusted mutual "
           "information (AMI): agreement beyond chance. Singletons are homogeneous by construction, so the "
           "figures outside the largest component flatter the partition in homogeneity and V-measure, not in "
           "AMI. Each figure names the activations it covers.</p>"]
    whole = list(b.get("baselines") or [])
    out += _headline(b, whole)
    if whole:
        covers = {r["coverage"]: r["covers"] for r in whole}
        out.append('<ul id="baseline-coverages" class="meta">' + "".join(
            f'<li data-coverage="{_e(k)}"><b>{_e(COVERAGE_WORDS.get(k, k))}</b>: {_e(v)}</li>' for k, v in covers.items())
            + "</ul>")
        head = ("<tr>" + _th("reference grouping", "") + _th("activations covered") + _th("which activations", "")
                + _th("components among them") + _th("groups of the reference among them") + _th("homogeneity")
                + _th("completeness") + _th("V-measure") + _th("adjusted mutual information") + "</tr>")
        body = "".join(
            f'<tr data-grouping="{_e(r["grouping"])}" data-coverage="{_e(r["coverage"])}">'
            + _td(r["reference"], "") + _td(f'{r["n_activations"]:,}') + _td(COVERAGE_WORDS.get(r["coverage"], r["coverage"]), "")
            + _td(f'{r["n_components"]:,}') + _td(f'{r["n_groups"]:,}') + _td(num(r["homogeneity"]))
            + _td(num(r["completeness"])) + _td(num(r["v_measure"]))
            + _td(num(r["ami"]) if r["ami"] is not None or not r.get("ami_skipped") else "skipped",
                  title=r.get("ami_skipped")) + "</tr>"
            for r in whole)
        out.append(f'<table id="baselines-whole"><thead>{head}</thead><tbody>{body}</tbody></table>')
    out += [f'<p class="meta">{_e(n)}</p>' for n in b.get("notes", [])]
    out += _facts(b)
    out += _mixed(b, carded)
    out.append("</section>")
    return "\n".join(out)


def _headline(b: Mapping[str, Any], whole: list[Mapping[str, Any]]) -> list[str]:
    """One sentence: the token-string agreement over all activations beside the small components' figure."""
    by = {(r["grouping"], r["coverage"]): r for r in whole}
    every, small = by.get(("token", "all")), by.get(("token", "small"))
    if not every:
        return []
    text = (f"Token string over {every['covers']}: V-measure {num(every['v_measure'])}, adjusted mutual "
            f"information {num(every['ami'])}.")
    if small and small["n_activations"]:
        text += (f" Over the {small['covers']} only ({pct(small['n_activations'] / max(every['n_activations'], 1))}"
                 f" of all): V-measure {num(small['v_measure'])}, adjusted mutual information {num(small['ami'])}.")
    return [f'<p id="baseline-headline">{_e(text)}</p>']


def _facts(b: Mapping[str, Any]) -> list[str]:
    """Table ``baseline``: the small components' token facts, each with what it covers."""
    n_small = int(b.get("n_small", 0))
    comps = f"the {n_small:,} small components (non-singleton, besides the largest)"
    covers = b.get("covers") or f"{b.get('n_members', 0):,} activations of the {n_small:,} small components"
    rows = [
        ("small components (non-singleton components besides the largest)", f"{n_small:,}",
         f"{n_small:,} of {int(b.get('n_components', 0)):,} components"),
        ("... of one token string", pct(b.get("share_one_token")), comps),
        ("... whose most frequent token string is at least half of their activations",
         pct(b.get("share_majority_token")), comps),
        ("... from one document", pct(b.get("share_one_document")), comps),
        ("mean share of the most frequent token string (token purity)", pct(b.get("mean_token_purity")), comps),
        ("their activations / distinct token strings",
         f"{int(b.get('n_members', 0)):,} / {int(b.get('n_token_strings', 0)):,}", covers),
        ("homogeneity with token string (each component is one token string)", num(b.get("homogeneity")), covers),
        ("completeness with token string (each token string is one component)", num(b.get("completeness")), covers),
        ("V-measure with token string", num(b.get("v_measure")), covers),
        ("adjusted mutual information with token string", num(b.get("ami")), covers),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th>{_td(v)}{_td(c, 'meta')}</tr>" for k, v, c in rows)
    return ['<h3 id="baseline-facts-h">The small components and token strings</h3>',
            f'<table id="baseline"><thead><tr><th>figure</th>{_th("value")}{_th("covers", "")}</tr></thead>'
            f"<tbody>{body}</tbody></table>"]


def _mixed(b: Mapping[str, Any], carded: Collection[int]) -> list[str]:
    """Table ``mixed-components``: the largest small components with no majority token string."""
    mixed = b.get("mixed") or []
    out = ['<h2 id="mixed-h">Components that span several distinct token strings</h2>']
    if not mixed:
        out.append('<p id="mixed-components" class="meta">None: every non-singleton component besides the '
                   "largest has a token string that is at least half of its activations.</p>")
        return out
    out.append(f'<p class="meta">The {len(mixed):,} largest of the {int(b.get("n_mixed", len(mixed))):,} small '
               "components whose most frequent token string is under half of their activations (size rank at "
               "the run's threshold; linked to its card when carded).</p>")
    head = ("<tr>" + _th("size rank") + _th("activations") + _th("share of the most frequent token string")
            + _th("distinct token strings") + _th("documents") + _th("most frequent token strings (activations)", "")
            + _th("sources (activations)", "") + "</tr>")
    body = []
    for m in mixed:
        rank = int(m["rank"])
        cell = f'<a href="#card-{rank}">{rank}</a>' if rank in carded else str(rank)
        body.append(
            f'<tr data-rank="{rank}"><td class="num">{cell}</td>' + _td(f'{int(m["size"]):,}')
            + _td(pct(m["token_purity"])) + _td(f'{int(m["n_distinct_tokens"]):,}') + _td(f'{int(m["n_documents"]):,}')
            + _td_html(counted_html(m["top_tokens"], int(m.get("n_more_tokens", 0)), quote=True))
            + _td_html(counted_html(m["sources"], int(m.get("n_more_sources", 0)))) + "</tr>")
    out.append(f'<table id="mixed-components"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')
    return out


def _parts_words(a: Mapping[str, Any]) -> str:
    return (f"giant {a['n_giant']:,}, small components {a['n_small']:,} in {a['n_small_components']:,}, "
            f"singletons {a['n_singletons']:,} activations")


def source_section(breakdown: Mapping[str, Any] | None) -> str:
    """The per-source breakdown (``source_breakdown``'s dict) as HTML; empty string for none."""
    if not breakdown:
        return ""
    t = breakdown["at_threshold"]
    c = breakdown.get("at_transition")
    cols = [("share_of_giant", "share of the giant"), ("share_of_small", "share of the small components"),
            ("share_of_singletons", "share of the singletons"), ("in_giant", "its own activations in the giant")]
    at = [(t, f"at the run's threshold {num(t['threshold'])} ({_parts_words(t)})")]
    if c:
        at.append((c, f"at the transition t_c = {num(c['threshold'])} ({_parts_words(c)})"))
    head = ('<tr><th rowspan="2">source</th><th class="num" rowspan="2">activations in the run</th>'
            + "".join(f'<th colspan="{len(cols)}">{_e(w)}</th>' for _, w in at) + "</tr><tr>"
            + "".join(_th(name) for _ in at for _, name in cols) + "</tr>")
    rows = []
    for i, s in enumerate(t["sources"]):
        cells = "".join(_td(pct(a["sources"][i][k])) for a, _ in at for k, _ in cols)
        n_s = _td(f"{s['n']:,}")
        rows.append(f'<tr data-source="{_e(s["source"])}"><th>{_e(s["source"])}</th>{n_s}{cells}</tr>')
    total = "".join(
        _td(pct(1.0 if a["n_giant"] else None)) + _td(pct(1.0 if a["n_small"] else None))
        + _td(pct(1.0 if a["n_singletons"] else None)) + _td(pct(a["n_giant"] / a["n"] if a["n"] else None))
        for a, _ in at)
    n_all = _td(f"{t['n']:,}")
    rows.append(f'<tr data-source="" class="total"><th>all sources</th>{n_all}{total}</tr>')
    out = ['<section id="sources">', '<h2 id="sources-h">Sources in the giant, the small components and the '
           "singletons</h2>",
           '<p class="meta">Each source\'s share of the activations of the largest component (the giant), of the '
           "small components (non-singleton, besides the largest) and of the singletons; and the share of the "
           "source's own activations that the giant holds. Sources in one order everywhere: by their "
           "activations in the run, descending.</p>",
           f'<table id="source-breakdown"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>']
    out += [f'<p class="meta">{_e(n)}</p>' for n in breakdown.get("notes", [])]
    if breakdown.get("transition"):
        out += _transition(breakdown["transition"])
    out.append("</section>")
    return "\n".join(out)


def _transition(tr: Mapping[str, Any]) -> list[str]:
    """What separates from the giant between the run's threshold and t_c, by source and token string."""
    lg = tr["left_giant"]
    t, t_c = num(tr["threshold"]), num(tr["t_c"])
    listed = tr.get("separated") or []
    text = (f"Between the run's threshold {t} and t_c = {t_c}, {lg['n']:,} of the giant's "
            f"{lg['n_giant_at_threshold']:,} activations leave it ({pct(lg['n'] / max(lg['n_giant_at_threshold'], 1))}): "
            f"{lg['to_listed']:,} to the {len(listed):,} largest components listed below, {lg['to_other_small']:,} "
            f"to other small components and {lg['to_singletons']:,} become singletons; the giant at {t_c} holds "
            f"{lg['n_giant_at_t_c']:,}.")
    if listed:
        first = listed[0]
        srcs = first["sources"][:2]
        text += (f" The largest that separates (rank {int(first['rank'])} at {t_c}, {int(first['size']):,} activations, "
                 f"{int(first['n_distinct_tokens']):,} distinct token strings) is "
                 + " and ".join(f"{pct(n / max(int(first['size']), 1))} {s}" for s, n in srcs) + ".")
    ranked = sorted((r for r in lg["by_source"] if r["of_its_giant"] is not None),
                    key=lambda r: -float(r["of_its_giant"]))  # stable: ties keep the one source order
    if len(ranked) >= 2:
        text += (f" Of each source's activations in the giant at {t}, {ranked[0]['source']} loses the most "
                 f"({pct(ranked[0]['of_its_giant'])}) and {ranked[-1]['source']} the least "
                 f"({pct(ranked[-1]['of_its_giant'])}).")
    if lg.get("n_joined"):
        text += f" {lg['n_joined']:,} activations are in the giant at {t_c} but not at {t}."
    out = ['<h3 id="transition-sources-h">What separates at the transition</h3>',
           f'<p id="transition-sources" class="meta">{_e(text)}</p>']
    if listed:
        head = ("<tr>" + _th(f"size rank at {t_c}") + _th("activations") + _th(f"of them in the giant at {t}")
                + _th("distinct token strings") + _th("documents") + _th("most frequent token strings (activations)", "")
                + _th("sources (activations)", "") + "</tr>")
        body = "".join(
            f'<tr data-rank="{int(s["rank"])}">' + _td(f'{int(s["rank"])}') + _td(f'{int(s["size"]):,}')
            + _td(f'{int(s["from_giant"]):,}') + _td(f'{int(s["n_distinct_tokens"]):,}') + _td(num(s.get("n_documents")))
            + _td_html(counted_html(s["top_tokens"], int(s.get("n_more_tokens", 0)), quote=True))
            + _td_html(counted_html(s["sources"][:SOURCES_LISTED], max(len(s["sources"]) - SOURCES_LISTED, 0)))
            + "</tr>"
            for s in listed)
        out.append(f'<table id="transition-separated"><thead>{head}</thead><tbody>{body}</tbody></table>')
    head = ("<tr>" + _th("source", "") + _th("activations that leave the giant") + _th("share of those that leave")
            + _th(f"share of its activations in the giant at {t} that leave") + "</tr>")
    body = "".join(f'<tr data-source="{_e(r["source"])}"><th>{_e(r["source"])}</th>' + _td(f'{int(r["n_left"]):,}')
                   + _td(pct(r["share_of_left"])) + _td(pct(r["of_its_giant"])) + "</tr>" for r in lg["by_source"])
    out.append(f'<table id="transition-left"><thead>{head}</thead><tbody>{body}</tbody></table>')
    return out
