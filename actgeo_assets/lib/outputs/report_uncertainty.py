"""The report's uncertainty section: the shard jackknife's intervals and the transition's bridges.

:func:`uncertainty_section` renders the ``uncertainty`` dict of ``components/summary.json``
(:func:`actgeo_assets.lib.analysis.resample.shard_jackknife`) as one HTML fragment: ``<section
id="uncertainty">`` with the method in words (``<p id="uncertainty-method">``), ``<table id="intervals">``
(quantity | estimate | interval | replicates; one ``<tr data-key=...>`` per quantity), the delete-two check
(``<table id="intervals-delete-two">``, when computed) and the bridge sentence (``<p id="bridges">``). Every
data-derived string is HTML-escaped; the classes are the report's (``meta``, ``num``, ``warn``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def format_value(key: str, v: Any) -> str:
    """A quantity's value as the table shows it: the giant's fraction in percent, t_c to 0.01, counts with
    thousands separators, rates to 0.1."""
    if v is None:
        return "n/a"
    if key == "largest_fraction":
        return f"{100 * float(v):.1f}%"
    if key == "t_c":
        return f"{float(v):.2f}"
    if key == "components_per_1000":
        return f"{float(v):.1f}"
    return f"{round(float(v)):,}"


def _interval(q: Mapping[str, Any]) -> str:
    if q.get("low") is None or q.get("high") is None:
        return "none"
    if q.get("se") == 0:
        return "no spread: every replicate gives the same value"
    key = q["key"]
    return f"{format_value(key, q['low'])} to {format_value(key, q['high'])}"


def _table(quantities: Sequence[Mapping[str, Any]], replicates: Sequence[Mapping[str, Any]], table_id: str) -> str:
    head = ('<tr><th>quantity</th><th class="num">estimate</th><th class="num">95% interval</th>'
            "<th>replicates (left out: value)</th></tr>")
    body = []
    for q in quantities:
        key = q["key"]
        reps = "; ".join(f"{'+'.join(r['left_out'])}: {format_value(key, v)}"
                         for r, v in zip(replicates, q.get("replicates", []), strict=False))
        note = f'<br><span class="meta">{_e(q["note"])}</span>' if q.get("note") else ""
        body.append(f'<tr data-key="{_e(key)}"><th>{_e(q["label"])}</th>'
                    f'<td class="num">{_e(format_value(key, q["estimate"]))}</td>'
                    f'<td class="num">{_e(_interval(q))}</td><td>{_e(reps)}{note}</td></tr>')
    return f'<table id="{_e(table_id)}"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _bridge_replicates(doc: Mapping[str, Any]) -> str:
    """Whether the replicates that keep the bridge's endpoints peak where the others do."""
    reps = [r for r in doc.get("replicates", []) if r.get("bridge_kept") is not None]
    if not reps:
        return ""
    kept = [r for r in reps if r["bridge_kept"]]
    lost = [r for r in reps if not r["bridge_kept"]]

    def tcs(rs: list[Mapping[str, Any]]) -> str:
        return ", ".join(f"{r['t_c']:.2f} ({r['second_largest_at_t_c']:,} activations)" for r in rs) or "none"

    plural = "s" if doc.get("estimate", {}).get("bridge_count", 1) != 1 else ""
    out = (f" Of the {len(reps)} delete-one replicates, {len(kept)} keep both endpoints of the bridge edge"
           f"{plural} (second-largest component's peak there: {tcs(kept)}) and "
           f"{len(lost)} lose one (peak: {tcs(lost)}).")
    counts = [r.get("bridge_count") for r in reps]
    if all(c is not None for c in counts):
        each = "; ".join(f"{'+'.join(r['left_out'])} out: {r['bridge_count']} edge"
                         f"{'s' if r['bridge_count'] != 1 else ''}"
                         + (f" ({', '.join(f'{w:.4f}' for w in sorted(r.get('bridge_weights', [])))})"
                            if r.get("bridge_weights") else "") for r in reps)
        out += f" In each replicate, the forest edges joining its peak's second-largest component to the giant: {each}."
    return out


def uncertainty_section(doc: Mapping[str, Any], bridges_text: str | None) -> str:
    """The section as HTML (see the module docstring). ``doc``: the ``uncertainty`` dict of the components'
    record; ``bridges_text``: :func:`actgeo_assets.lib.analysis.percolation.describe_bridges` of the
    transition's bridges (plain text, escaped here), or None to leave the bridge sentence out."""
    if not doc:
        return ('<section id="uncertainty"><h2 id="uncertainty-h">Uncertainty</h2><p class="warn" '
                'id="uncertainty-method">No resampling was recorded for this run (rematerialize `components`).'
                "</p></section>")
    cls = "meta" if doc.get("possible") else "warn"
    out = ['<section id="uncertainty"><h2 id="uncertainty-h">Uncertainty: resampling the shards</h2>',
           f'<p class="{cls}" id="uncertainty-method">{_e(doc.get("method", ""))}</p>',
           _table(doc.get("quantities", []), doc.get("replicates", []), "intervals")]
    two = doc.get("delete_two")
    if two:
        out += ['<p class="meta">Delete-two check: the same quantities from every pair of shards left out '
                "(fewer activations each, so counts per 1,000 and the giant's fraction drift with N).</p>",
                _table(two["quantities"], two["replicates"], "intervals-delete-two")]
    if bridges_text is not None or any(r.get("bridge_kept") is not None for r in doc.get("replicates", [])):
        out.append(f'<p id="bridges">{_e((bridges_text or "").strip())}{_e(_bridge_replicates(doc))}</p>')
    out.append("</section>")
    return "".join(out)
