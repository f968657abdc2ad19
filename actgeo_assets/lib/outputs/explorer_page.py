"""The explorer's page (``cards/explorer.html``): the data of :func:`~.explorer.explorer_data` embedded as
JSON in ``<script type="application/json" id="explorer-data">``, drawn by inline SVG and vanilla JavaScript
(no external file, no network), styled like the report (:data:`~.report.REPORT_CSS`). The stable hooks the
page offers are listed in :mod:`.explorer`.

The text box answers live where the page is served by the report server (``actgeo_assets/report_server.py``,
``GET ../../api/lookup?run=<run>&text=...``, the run being the page's folder ``<run>/cards/``): one
``#which-results tr.which-token[data-position][data-verdict][data-rank]`` per token, its verdict's components
as ``a.which-card[data-key]`` (opening the card) where the page has their card, else ``span.which-nocard``, its
nearest activations as ``li.ctx[data-row][data-rank]``; ``#which-status[data-state]`` says ``offline`` (a
file, another server, no answer: ``#lookup-command`` is the way), ``ready``, ``loading``, ``answered`` or
``error`` (the server's message). ``#lookup-command`` always shows the equivalent ``actgeo lookup``.

Served over http, the page also reads the comparison across experiments (``../../comparison/comparison.json``,
fetched only when the report server's ``/api/status`` says it exists, or when no report server answers): the
open card of the run's threshold gets ``section#card-matches[data-state]`` ("In other experiments"), one
``tr.match[data-experiment][data-kind=best|specific][data-rank][data-size][data-overlap][data-jaccard]
[data-method]`` per other experiment (its best match, and its most specific one where different), each
linking to that experiment's explorer card; ``data-state="stale"`` (a ``p.warn``, no matches) where the
comparison was computed from other labels of this run (``inputs``' ``labels_sha256`` is not the page's
``run_inputs``'). Opened from a file (the browser refuses the fetch) or with no comparison: no section."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from actgeo_assets.lib.outputs.report import REPORT_CSS


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
#lookup-command{display:block;padding:.4rem .6rem;background:#f4f6f9;border:1px solid #dde3ea;border-radius:4px;
 font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
#which-input{width:min(620px,100%);font-size:1rem;padding:.25rem .4rem}
#which-results .ctxs{margin:0}#which-results .ctx{margin:.1rem 0}.which-nocard{color:#6b7784}
#which-status{min-height:1.2em}
#card-matches{border-top:1px solid #d5dce4;margin-top:.6rem}#card-matches table,#card-matches p{font-size:.85rem}
.legend{font-size:.85rem;color:#44505c}.legend i{display:inline-block;width:.8em;height:.8em;margin:0 .25em}
@media (max-width:900px){.xgrid{grid-template-columns:1fr}#card-panel{position:static;max-height:none}}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title><style>__CSS__</style></head><body>
<h1>__TITLE__</h1>
<p class="runline">__DESCRIPTION__</p>
<p class="meta">__BACK__Click a point of the size spectrum or of the percolation curve, a node of the
giant's hierarchy, or a card of the report below, to open that component's card on the right.</p>
<nav id="card-index" class="meta"></nav>
<div class="xgrid"><main>
<h2 id="spectrum-h">Size spectrum at the run's threshold</h2>
<p class="meta" id="spectrum-note"></p>
<svg id="spectrum" viewBox="0 0 640 330" role="img" aria-label="component size vs rank, log-log"></svg>
<h2 id="percolation-h">Components across thresholds</h2>
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
<p class="meta" id="which-intro">Type a sentence. Served by the report server (<code>make ui</code>), this page
answers as you type, token by token: the component of this run the token joins at the run's threshold (a click
opens its card where this page has one), or that it would be a new singleton or bridge components, with its
nearest activations in the corpus. The first query loads the run's model (seconds); later ones take well
under a second. Opened from a file, the page cannot run the model: the command below answers the same in a
terminal (<code>.venv/bin/actgeo</code> in the project's folder; add the <code>--config</code> or
<code>--set</code> options the run was made with, if any).</p>
<input id="which-input" type="text" placeholder="The House of Commons met today."
 aria-label="a sentence to look up" maxlength="2000">
<p class="meta" id="which-status" data-state="offline"></p>
<table id="which-results" hidden><thead><tr><th class="num">position</th><th>token</th><th>verdict</th>
<th class="num">best cosine</th><th>nearest activations in the corpus</th></tr></thead><tbody></tbody></table>
<code id="lookup-command"></code> <button id="which-copy" type="button">copy</button>
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
// this run's folder (the page is <data dir>/<run>/cards/explorer.html) and the comparison read for it
const RUN = (p => p.length >= 3 ? decodeURIComponent(p[p.length - 3]) : "")(location.pathname.split("/"));
const M = {state: "none", doc: null};
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
  renderMatches();
}

// ---- the open card in other experiments: its rows of comparison.json (`actgeo compare`), where this run is
// one of the comparison's experiments (named by run folder) and the comparison is of its current labels
function renderMatches() {
  const key = document.getElementById("card-panel").dataset.key, old = document.getElementById("card-matches");
  if (old) old.remove();
  const [t, lab] = (key || "").split(":");
  if (M.state === "none" || !key || Math.abs(Number(t) - D.threshold) > 1e-9) return;
  const rank = Number(lab) + 1, cmp = "../../comparison/";
  // a token string as the report quotes it (lib/analysis/tokens.quote_token): control characters escaped
  const quote = (x) => { const q = String(x).replace(/[\n\r\t]/g, c => ({"\n": "\\n", "\r": "\\r", "\t": "\\t"})[c])
    .replace(/[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]/g, c => { const h = c.charCodeAt(0)
      .toString(16); return c.charCodeAt(0) < 256 ? "\\x" + h.padStart(2, "0") : "\\u" + h.padStart(4, "0"); });
    return "'" + (q.length > 24 ? q.slice(0, 23) + "\u2026" : q) + "'"; };
  const add = (tag, parent, text, cls) => { const e = document.createElement(tag); if (text !== undefined)
    e.textContent = text; if (cls) e.className = cls; parent.appendChild(e); return e; };
  const sec = document.createElement("section");
  sec.id = "card-matches"; sec.dataset.state = M.state;
  add("h3", sec, "In other experiments");
  const pairs = M.doc.pairs.filter(p => p.a === RUN), why = (M.doc.notes || {})[RUN];
  const found = pairs.map(p => [p, p.rows.find(r => r.card_rank === rank)]).filter(([, r]) => r);
  if (M.state === "stale") {
    add("p", sec, "The comparison across experiments is out of date: it was computed from other components of " +
        "this run. Run `actgeo compare` again (or materialize the comparison) to see this card's matches.", "warn");
  } else if (!found.length) {
    if (!why && !pairs.length) return;
    add("p", sec, why ? why.join("; ") : "This card was not matched (only the report's cards are).", "meta");
  } else {
    const tb = add("tbody", add("table", sec));
    tb.parentNode.id = "card-matches-table";
    const head = add("tr", tb);
    for (const h of ["experiment", "component", "top token strings", "overlap", "Jaccard"])
      add("th", head, h, h === "overlap" || h === "Jaccard" ? "num" : "");
    for (const [p, r] of found) {
      for (const [kind, pre] of [["best", ""], ["specific", "specific_"]]) {
        if (kind === "specific" && (!r.specific_b_rank || r.specific_b_rank === r.b_rank)) continue;
        const tr = add("tr", tb, undefined, "match"), b = r[pre + "b_rank"], href = r[pre + "b_href"];
        Object.assign(tr.dataset, {experiment: p.b, kind: kind, method: p.method, rank: b || "", size:
          r[pre + "b_size"] ?? "", overlap: r[pre + "overlap"] ?? "", jaccard: r[pre + "jaccard"] ?? ""});
        const who = add("td", tr, kind === "best" ? p.b : "");
        if (kind === "best") add("div", who, p.method === "spans" ? "by character spans" : "by shared activations", "meta");
        const comp = add("td", tr, kind === "best" ? "" : "most specific: ");
        if (!b) { comp.textContent = "no counterpart"; continue; }
        const a = add(href ? "a" : "span", comp, `rank ${fmt(b)} (${fmt(r[pre + "b_size"])})`, "match-link");
        if (href) a.setAttribute("href", cmp + href);  // hrefs are relative to data/comparison/
        const toks = add("td", tr);
        for (const [tok, n] of r[pre + "b_top_tokens"] || []) { add("span", toks, quote(tok), "tok"); toks.append(` ${fmt(n)} `); }
        add("td", tr, `${(100 * r[pre + "overlap"]).toFixed(0)}%`, "num");
        add("td", tr, Number(r[pre + "jaccard"]).toFixed(3), "num");
      }
    }
    add("p", sec, "Overlap: the share of this card's activations in that component (by shared activations, or " +
        "by overlapping character spans across tokenizers); Jaccard: over both. The most specific match is the " +
        "component of the highest Jaccard.", "meta");
  }
  const more = add("a", add("p", sec, undefined, "meta"), "the comparison across experiments");
  more.href = cmp + "report.html";
  document.getElementById("card-body").appendChild(sec);
}
// fetched only over http (a file:// page cannot fetch), and only where the report server says it exists
(async function comparison() {
  if (!/^https?:$/.test(location.protocol) || !RUN) return;
  const here = (u) => new URL(u, location.href).href;
  try {
    const s = await fetch(here("../../api/status")).then(r => r.ok ? r.json() : {}, () => ({}));
    if ("comparison" in s && s.comparison !== true) return;
    const r = await fetch(here("../../comparison/comparison.json"));
    if (!r.ok) return;
    const doc = await r.json();
    if (!Array.isArray(doc.experiments) || !doc.experiments.includes(RUN) || !Array.isArray(doc.pairs)) return;
    const had = ((doc.inputs || {}).experiments || {})[RUN], mine = (D.run_inputs || {}).labels_sha256;
    M.doc = doc;
    M.state = had && mine && had.labels_sha256 !== mine ? "stale" : "ready";
  } catch (e) { return; }  // no comparison, or not readable: the page goes on without
  renderMatches();
})();

// ---- every full card of the report, one click away; explorer.html#<card key> opens one
(function cardIndex() {
  const nav = document.getElementById("card-index");
  const full = Object.entries(D.cards).filter(([k, c]) => c.full);
  if (!full.length) return;
  nav.appendChild(document.createTextNode("The report's cards: "));
  for (const [key, c] of full) {
    const a = document.createElement("a");
    a.href = "#" + (c.anchor || encodeURIComponent(key));
    a.dataset.key = key;
    a.className = "card-link";
    a.textContent = c.label;
    a.title = c.title;
    a.addEventListener("click", (ev) => { ev.preventDefault(); openCard(key, null); history.replaceState(null, "", a.href); });
    nav.appendChild(a);
    nav.appendChild(document.createTextNode(" "));
  }
})();
function openFromHash() {
  const want = decodeURIComponent(location.hash.slice(1));
  if (!want) return;
  const key = D.cards[want] ? want : Object.keys(D.cards).find(k => D.cards[k].anchor === want);
  if (key) openCard(key, null);
}
window.addEventListener("hashchange", openFromHash);
window.addEventListener("DOMContentLoaded", openFromHash);

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
              transform: `rotate(-90 14 ${(T + H - B) / 2})`}, svg, "size (activations)");
  el("polyline", {points: P.map(p => `${lx(p[0])},${ly(p[1])}`).join(" "), fill: "none",
                  stroke: "#7f8c9a", "stroke-width": 1}, svg);
  for (const [rank, size, key] of P) {
    const c = el("circle", {cx: lx(rank), cy: ly(size), r: rank === 1 ? 6 : 4, class: "pt",
                            fill: D.cards[key] && D.cards[key].full ? "#1f5f99" : "#7fb3d5",
                            "data-rank": rank, "data-size": size, "data-key": key}, svg);
    tip(c, `rank ${fmt(rank)}: ${fmt(size)} activations` + (D.cards[key] && D.cards[key].full ? " (full card)" : ""));
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
       D.transition.at_or_above ? `peak \u2265 ${fixed(tc)} (beyond the pruned range)`
                                : `${D.transition.kind === "bridge" ? "bridge" : "peak"} ${fixed(tc)} (second largest peaks)`)
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
    tip(r, `cosine \u2265 ${fixed(nd.t)}: sub-component ${nd.sub_rank} of the run's largest, ${fmt(nd.size)} activations ` +
           `(${(100 * nd.size / I.giant).toFixed(1)}% of it)`);
    r.addEventListener("click", () => openCard(nd.key, r));
    if (w > 34) {
      const lab = el("text", {x: L + nd.x * scale + 4, y: y + RH / 2 + 2, "pointer-events": "none"}, svg, fmt(nd.size));
      lab.setAttribute("style", nd.level < 3 ? "fill:#fff" : "fill:#1d232a");
    }
  }
  document.getElementById("icicle-note").textContent =
    `Top row: the run's largest component (${fmt(I.giant)} activations at cosine \u2265 ${D.threshold}). Each row below ` +
    `raises the threshold by 0.05 (up to ${fixed(I.levels[I.levels.length - 1])}); single linkage only splits, ` +
    `so each block lies under the one it came from. Width is proportional to size; only sub-components of at ` +
    `least ${fmt(I.min_size)} activations are drawn (at most 60 per row, and at least a few pixels wide), so a gap is ` +
    `activations that fell into smaller pieces or singletons. Rows of the icicle at thresholds the forest is not exact at ` +
    `(${D.exact_at.join(", ")} are) are within its error bound. A click opens the block's card.` +
    (D.exact_up_to !== null && I.levels[I.levels.length - 1] >= D.exact_up_to - 1e-9
      ? ` This run's forest was pruned at ${D.exact_up_to} (prune_at): it is exact only up to there, so the ` +
        `sub-components above it were not computed; a run without prune_at shows them.` : "");
})();

// ---- which component does my sentence join? Live from the report server's /api/lookup where the page is
// served by it; else (a file, another server, no answer) the `actgeo lookup` command to run
(function which() {
  const input = document.getElementById("which-input"), out = document.getElementById("lookup-command");
  const status = document.getElementById("which-status"), table = document.getElementById("which-results");
  const tbody = table.tBodies[0];
  const quote = (s) => "'" + s.replace(/'/g, "'\\''") + "'";
  const acts = (n) => `${fmt(n)} activation${n === 1 ? "" : "s"}`;
  const show = () => {
    out.textContent = "actgeo lookup " + (D.lookup_args ? D.lookup_args + " " : "") + quote(input.value || input.placeholder);
  };
  const run = RUN;  // the page's run folder, served from the data directory's root
  const api = (q) => new URL("../../api/" + q, location.href).href;
  let live = false, loaded = false, seq = 0, timer = null, ctrl = null;
  const OFFLINE = "This page is not served by the report server (opened from a file, or the server does not " +
                  "answer): run the command below in a terminal to look the sentence up.";
  function setStatus(state, text) {
    status.dataset.state = state;
    status.className = state === "error" ? "warn" : "meta";
    status.textContent = text;
  }
  function node(tag, cls, text, parent) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  // a component of the run's threshold: a link opening its card where the page has one
  function component(label, rank, parent) {
    const key = `${Number(D.threshold).toFixed(4)}:${label}`, c = D.cards[key];
    if (!c) {
      const s = node("span", "which-nocard", `rank ${fmt(rank)}`, parent);
      s.title = "this page has no card of this component";
      return s;
    }
    const a = node("a", "which-card", `rank ${fmt(rank)}`, parent);
    a.href = "#" + (c.anchor || encodeURIComponent(key));
    a.dataset.key = key;
    a.title = c.title;
    a.addEventListener("click", (ev) => { ev.preventDefault(); openCard(key, null); });
    return a;
  }
  function render(j) {
    tbody.textContent = "";
    for (const t of j.tokens) {
      const tr = node("tr", "which-token", undefined, tbody);
      tr.dataset.position = t.position;
      tr.dataset.verdict = t.verdict;
      tr.dataset.rank = t.rank === null ? "" : t.rank;
      node("td", "num", String(t.position), tr);
      node("span", "tok", t.text, node("td", "", undefined, tr));
      const v = node("td", "which-verdict", undefined, tr);
      if (t.verdict === "joins") {
        v.appendChild(document.createTextNode("joins "));
        component(t.label_id, t.rank, v);
        v.appendChild(document.createTextNode(` (${acts(t.size)})`));
      } else if (t.verdict === "bridges") {
        v.appendChild(document.createTextNode("bridges "));
        t.components.forEach((c, i) => {
          if (i) v.appendChild(document.createTextNode(i === t.components.length - 1 ? " and " : ", "));
          component(c.label_id, c.rank, v);
        });
      } else {
        v.appendChild(document.createTextNode(t.verdict === "new singleton" ? "a new singleton" : t.verdict));
      }
      if (t.n_linked) node("div", "meta", `${acts(t.n_linked)} at cosine \u2265 ${t.threshold}`, v);
      node("td", "num", t.best_cosine === null ? "" : t.best_cosine.toFixed(4), tr);
      const ul = node("ul", "ctxs", undefined, node("td", "", undefined, tr));
      for (const c of t.nearest) {
        const li = node("li", "ctx", undefined, ul);
        li.dataset.row = c.row;
        li.dataset.rank = c.rank;
        const src = node("span", "src", `cosine ${c.cosine.toFixed(4)} \u00b7 `, li);
        component(c.label_id, c.rank, src);
        src.appendChild(document.createTextNode(` \u00b7 ${c.source} \u00b7 doc ${c.doc_id}`));
        li.appendChild(document.createTextNode(c.left));
        node("mark", "hl", c.token, li);
        li.appendChild(document.createTextNode(c.right));
      }
    }
    table.hidden = false;
  }
  async function ask() {
    if (!live) return;
    const text = input.value;
    const my = ++seq;
    if (ctrl) ctrl.abort();
    if (!text.trim()) { table.hidden = true; setStatus("ready", "Type a sentence: the report server answers."); return; }
    ctrl = new AbortController();
    setStatus("loading", loaded ? "Looking it up\u2026" : "Loading the run's model for the first query (seconds)\u2026");
    const t0 = performance.now();
    let r, j;
    try {
      r = await fetch(api("lookup?" + new URLSearchParams({run: run, text: text, k: "3"})), {signal: ctrl.signal});
      j = await r.json();
    } catch (e) {
      if (e.name === "AbortError" || my !== seq) return;
      live = false; table.hidden = true; setStatus("offline", OFFLINE);
      return;
    }
    if (my !== seq) return;
    if (!r.ok) { table.hidden = true; setStatus("error", j.error || `the report server answered ${r.status}`); return; }
    loaded = true;
    render(j);
    setStatus("answered", `${fmt(j.tokens.length)} tokens, answered by the report server in ` +
      `${((performance.now() - t0) / 1000).toFixed(2)} s (run ${j.run_id}, cosine \u2265 ${j.threshold}, ` +
      `${fmt(j.index_rows)} activations on ${j.device})` +
      (j.truncated ? `; the text is longer than the run's ${j.context_len} tokens: only its start was placed` : "") + ".");
  }
  async function probe() {
    if (!/^https?:$/.test(location.protocol) || !run) { setStatus("offline", OFFLINE); return; }
    try {
      const r = await fetch(api("status"));
      const j = await r.json();
      live = r.ok && j.lookup === true;
      loaded = live && j.loaded === run;
    } catch (e) { live = false; }
    if (!live) { setStatus("offline", OFFLINE); return; }
    setStatus("ready", "Type a sentence: the report server answers" + (loaded ? "." : " (the first query loads the model)."));
    if (input.value.trim()) ask();
  }
  input.addEventListener("input", () => { show(); clearTimeout(timer); timer = setTimeout(ask, 250); });
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { clearTimeout(timer); ask(); } });
  // focusing the box starts loading the model, so the first sentence waits less
  input.addEventListener("focus", () => {
    if (live && !loaded) fetch(api("lookup?" + new URLSearchParams({run: run, warm: "1"}))).catch(() => {});
  }, {once: true});
  show();
  setStatus("offline", OFFLINE);
  probe();
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
