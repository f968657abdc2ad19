"""Stage of the asset in defs/assets/cards.py: cards of the run's components, the HTML report and the SQL
rows, and the audit that they describe one run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.cards import Card, CardList, Readout, build_cards, giant_subcards
from actgeo_assets.lib.graph import SingleLinkageForest
from actgeo_assets.lib.layout import RunLayout, save_json
from actgeo_assets.lib.report import write_report
from actgeo_assets.lib.settings import RunSettings
from actgeo_assets.lib.sqlstore import read_components, write_results
from actgeo_assets.lib.stages.common import load_run_model, read_raw, run_rows
from actgeo_assets.lib.stages.graph import FIGURES, load_components

log = logging.getLogger("actgeo")


@dataclass(frozen=True)
class RunCards:
    """What :func:`build_run_cards` wrote: cards of the ranks asked for, sub-cards of the giant, the HTML
    report, and the number of SQL rows of this run."""

    run_id: str
    cards: CardList
    subcards: CardList
    report: Path
    sql_rows: int
    summary: dict[str, Any]  # the components' summary the cards were built from


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's verdict and the facts behind it."""

    name: str
    passed: bool
    metadata: dict[str, Any]


def run_tokens(settings: RunSettings, layout: RunLayout, offsets: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Token table (global row order, only rows kept by normalization) and the documents of all shards."""
    tables, docs = [], []
    for shard in settings.shard_keys:
        raw = read_raw(settings, layout, shard)
        kept = np.load(layout.kept(shard))
        tok = raw.tokens.loc[kept].reset_index(drop=True)
        tok["row"] = np.arange(len(tok), dtype=np.int64) + offsets[shard]
        tok["shard"] = shard
        tables.append(tok)
        docs.append(raw.docs)
    return pd.concat(tables, ignore_index=True), pd.concat(docs, ignore_index=True).drop_duplicates("doc_id")


def build_run_cards(settings: RunSettings, layout: RunLayout, database_url: str, readout: bool = True) -> RunCards:
    """Cards for the configured ranks, the HTML report, and the SQL rows of this run."""
    comps = load_components(settings, layout)
    labels, summary = comps.labels, comps.record.summary
    tokens, docs = run_tokens(settings, layout, comps.offsets)
    if len(tokens) != len(labels):
        raise ValueError(f"token table has {len(tokens)} rows but labels have {len(labels)}: rerun upstream")
    readout_fns = _readout(settings, layout) if readout else None
    rows = run_rows(settings, layout, comps.offsets)
    raw_rows = run_rows(settings, layout, comps.offsets, raw=True) if readout_fns else None
    cards = build_cards(
        labels, rows, tokens, docs, ranks=settings.card_ranks, contexts_per_card=settings.contexts_per_card,
        threshold=settings.threshold, readout=readout_fns, raw_rows=raw_rows,
    )
    subcards = CardList()
    t_sub = settings.subcard_threshold
    if t_sub is not None and t_sub <= settings.threshold:
        cards.notes.append(f"no sub-component cards: subcard_threshold {t_sub} is not above the threshold "
                           f"{settings.threshold} (single linkage only splits the giant at higher thresholds)")
    elif t_sub is not None and len(labels):
        forest = SingleLinkageForest.load(layout.forest)
        giant = np.flatnonzero(labels == 0)
        subcards = giant_subcards(
            forest.labels_at(t_sub)[giant], giant, rows, tokens, docs,
            higher_threshold=t_sub, ranks=settings.subcard_ranks,
            contexts_per_card=settings.contexts_per_card, readout=readout_fns, raw_rows=raw_rows,
        )
    save_json(layout.cards, {"run_id": settings.run_id(), "run_key": settings.run_key(),
                             "cards": [c.to_dict() for c in cards],
                             "subcard_threshold": settings.subcard_threshold,
                             "subcards": [c.to_dict() for c in subcards]})
    report = write_report(layout.report, run_key=settings.run_key(), run_description=settings.describe(),
                          summary=summary, sweep=pd.read_csv(layout.sweep),
                          figures={k: layout.figure(k).read_bytes() for k in FIGURES},
                          cards=[*cards, *subcards], notes=[*cards.notes, *subcards.notes],
                          precision=comps.record.precision)
    n_rows = write_results(database_url, settings.run_key(), summary, cards, description=settings.describe())
    return RunCards(run_id=settings.run_id(), cards=cards, subcards=subcards, report=report, sql_rows=n_rows,
                    summary=summary)


def _readout(settings: RunSettings, layout: RunLayout) -> Readout | None:
    """(final_norm, unembed, tokenizer) of the run's model, or None when it cannot be loaded."""
    # torch is imported here, not at module level: see common._cached_model.
    from actgeo_assets.lib.model import final_norm_and_unembed

    try:
        loaded = load_run_model(settings, layout)
    except Exception as exc:  # the readout is an extra: cards are still built without the model
        log.warning("next-token readout skipped: model %s not loadable (%s)", settings.model, exc)
        return None
    norm, unembed = final_norm_and_unembed(loaded)
    return norm, unembed, loaded.tokenizer


def audit_cards(settings: RunSettings, database_url: str, result: RunCards) -> list[CheckOutcome]:
    """Checks that cards, summary and SQL rows describe one run."""
    cards: list[Card] = list(result.cards)
    lo, hi = settings.card_ranks
    expected = list(range(lo, min(hi, result.summary["n_components"]) + 1))
    got = [c.rank for c in cards]
    top = result.summary["top_sizes"]
    mismatched = [c.rank for c in cards if c.rank <= len(top) and c.size != top[c.rank - 1]]
    db = read_components(database_url, settings.run_id())
    db_pairs = sorted(zip(db["rank"].astype(int), db["size"].astype(int), strict=True)) if len(db) else []
    card_pairs = sorted((c.rank, c.size) for c in cards)
    return [
        CheckOutcome("cards_cover_ranks", got == expected, {"expected": str(expected), "got": str(got)}),
        CheckOutcome("consistent_with_components", not mismatched, {"mismatched_ranks": str(mismatched)}),
        CheckOutcome("sql_rows_match_cards", db_pairs == card_pairs, {"sql_rows": len(db), "cards": len(cards)}),
    ]
