"""Stage of the asset in defs/assets/cards.py: cards of the run's components, the HTML report and the SQL
rows, and the audit that they describe one run. Its record (``cards/cards.json``, :class:`CardsRecord`) says
what the cards were built from: the labels, the card settings, the layer comparison shown (if any) and the
database the rows went to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.baseline import previous_token_column, token_baseline
from actgeo_assets.lib.analysis.cards import Card, CardList, build_cards, giant_subcards
from actgeo_assets.lib.analysis.inputs import (
    SUMMARY_WITHOUT_MAX_ROWS,
    artefact_summary,
    early_mask,
    input_keys,
)
from actgeo_assets.lib.analysis.percolation import describe_bridges
from actgeo_assets.lib.analysis.readout import (
    LENS_ALPHA,
    LENS_CONTROL_ROWS,
    LENS_CONTROLS,
    LENS_SEED,
    READOUT_MEMBERS,
    TOP_PREDICTIONS,
    Predictor,
    Readout,
    hidden_token_ids,
    readout_rows,
)
from actgeo_assets.lib.analysis.sample import describe_sample
from actgeo_assets.lib.analysis.sources import source_breakdown, source_order
from actgeo_assets.lib.analysis.study import compare_with_study, plain_l2_result
from actgeo_assets.lib.analysis.tokens import next_token_column
from actgeo_assets.lib.capture.model import weights_format
from actgeo_assets.lib.config.secrets import mask_url
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.graph import SingleLinkageForest, canonical_labels
from actgeo_assets.lib.outputs.explorer import write_explorer
from actgeo_assets.lib.outputs.report import write_report
from actgeo_assets.lib.outputs.report_uncertainty import uncertainty_section
from actgeo_assets.lib.outputs.sql import read_components, read_subcomponents, write_results
from actgeo_assets.lib.stages.activations import MEAN
from actgeo_assets.lib.stages.common import load_kept, load_run_model, read_raw, run_rows
from actgeo_assets.lib.stages.graph import FIGURES, load_components, verified_component_file
from actgeo_assets.lib.stages.layers import LAYERS, layer_section
from actgeo_assets.lib.stages.record import Inputs, StageSpec, expected_inputs, input_field
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json, save_parquet, sha256_file
from actgeo_assets.lib.store.lock import holds_writer_lock

log = logging.getLogger("actgeo")

#: Below this fraction of the activations the largest component is not called a giant (a note then says that
#: card_ranks leaves it out).
GIANT_FRACTION = 0.5


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
    baseline: dict[str, Any] | None = None  # lib.cards.token_baseline of the run
    duplicates: dict[str, Any] | None = None  # duplicate documents found in the corpus (counts)
    explorer: Path | None = None  # the interactive page (lib/outputs/explorer.py), next to the report
    report_sha256: str = ""  # the stage's output hash (CARDS.output_field), the asset's data version


def card_settings(settings: RunSettings) -> dict[str, Any]:
    """The settings that decide the cards beyond the components themselves."""
    return {"card_ranks": settings.card_ranks, "contexts_per_card": settings.contexts_per_card,
            "subcard_threshold": settings.subcard_threshold, "subcard_ranks": settings.subcard_ranks,
            "early_positions": settings.early_positions, "early_position_limit": settings.early_position_limit}


@dataclass(frozen=True)
class CardsRecord:
    """The input fields and file hashes of ``cards/cards.json`` (which also holds the cards themselves)."""

    run_key: dict[str, Any] = input_field(lambda i: i.settings.run_key())
    labels_sha256: str | None = input_field(lambda i: i.upstream["components"].get(None))
    card_settings: dict[str, Any] = input_field(lambda i: card_settings(i.settings))
    mean_sha256: str | None = input_field(lambda i: i.upstream["activation_mean"].get(None))  # the logit lens
    layers_sha256: str | None = input_field(lambda i: i.upstream["layers"].get(None))  # the section shown
    database: str | None = input_field(lambda i: mask_url(i.database_url) if i.database_url else None)
    report_sha256: str = ""
    explorer_sha256: str = ""
    members_sha256: str = ""  # cards/members.parquet: every activation with its component


CARDS = StageSpec(
    # raw_activations, activation_mean and normalized: the cards read the token tables, the corpus mean (the
    # logit lens), the kept masks and the rows
    name="component_cards", partitions=None,
    upstream=("raw_activations", "activation_mean", "normalized", "components", "layers"),
    record=CardsRecord, version="cards-2", unrecorded_version="cards-1", output_field="report_sha256",
    sidecar=lambda layout, _: layout.cards,
    files=lambda layout, _, meta: [(layout.report, meta.get("report_sha256")),
                                   (layout.explorer, meta.get("explorer_sha256")),
                                   (layout.members, meta.get("members_sha256"))],
)


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's verdict and the facts behind it."""

    name: str
    passed: bool
    metadata: dict[str, Any]


def run_tokens(settings: RunSettings, layout: RunLayout, offsets: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Token table (global row order, only rows kept by normalization) and the documents of all shards.
    ``next_token``: the token at ``position + 1`` of the same document among all captured rows (a document
    lies in one shard), None where the captured context ended; ``previous_token`` likewise at ``position - 1``;
    ``input_key`` (uint64): the model input's key (:func:`~actgeo_assets.lib.analysis.inputs.input_keys`), equal
    for activations of identical inputs."""
    tables, docs = [], []
    for shard in settings.shard_keys:
        raw = read_raw(settings, layout, shard)
        kept = load_kept(layout, shard)
        every = raw.tokens.copy()
        every["next_token"] = next_token_column(every)
        every["previous_token"] = previous_token_column(every)  # before the kept rows: a dropped one still names it
        every["input_key"] = input_keys(every)  # from every captured position: the input is the window's prefix
        tok = every.loc[kept].reset_index(drop=True)
        tok["row"] = np.arange(len(tok), dtype=np.int64) + offsets[shard]
        tok["shard"] = shard
        tables.append(tok)
        docs.append(raw.docs)
    return pd.concat(tables, ignore_index=True), pd.concat(docs, ignore_index=True).drop_duplicates("doc_id")


#: The columns of ``cards/members.parquet``: the activation's global row (as labels.npy), its component at the
#: run's threshold (0 = the largest), its document, source, position in the document, token and shard, its model
#: input's key (equal keys: identical inputs, one activation computed several times) and whether its position is
#: early (below ``early_position_limit``).
MEMBER_COLUMNS = ("row", "component", "doc_id", "source", "position", "token_id", "token", "shard", "input_key",
                  "early")


def members_table(tokens: pd.DataFrame, labels: np.ndarray, early: np.ndarray) -> pd.DataFrame:
    """One row per activation (global row order): :data:`MEMBER_COLUMNS` from the run's token table, its
    canonical labels (int64 [N]) and early flags (bool [N])."""
    if len(tokens) != len(labels) or len(early) != len(labels):
        raise ValueError(f"token table has {len(tokens)} rows, early flags {len(early)}, but labels have "
                         f"{len(labels)}: rerun upstream")
    table = tokens.assign(component=np.asarray(labels, dtype=np.int64), early=np.asarray(early, dtype=bool))
    return table.loc[:, list(MEMBER_COLUMNS)].reset_index(drop=True)


@holds_writer_lock
def build_run_cards(settings: RunSettings, layout: RunLayout, database_url: str, readout: bool = True) -> RunCards:
    """Cards for the configured ranks, the HTML report, and the SQL rows of this run."""
    comps = load_components(settings, layout)
    labels, summary = comps.labels, comps.record.summary
    tokens, docs = run_tokens(settings, layout, comps.offsets)
    if len(tokens) != len(labels):
        raise ValueError(f"token table has {len(tokens)} rows but labels have {len(labels)}: rerun upstream")
    readout_fns = _readout(settings, layout, tokens, comps.offsets) if readout else None
    rows = run_rows(settings, layout, comps.offsets)
    raw_rows = run_rows(settings, layout, comps.offsets, raw=True) if readout_fns else None
    t_sub = settings.subcard_threshold
    sub_labels = giant = None
    forest = SingleLinkageForest.load(verified_component_file(layout, comps.record, "forest"))
    inputs = tokens["input_key"].to_numpy(np.uint64)
    early = early_mask(tokens["position"].to_numpy(), settings.early_position_limit)
    card_early = early if settings.early_positions == "flag" else None
    if t_sub is not None and t_sub > settings.threshold and len(labels):
        giant = np.flatnonzero(labels == 0)
        sub_labels = forest.labels_at(t_sub)[giant]
    if readout_fns is not None and readout_fns.predict is not None:  # every card's predictions in one pass
        wanted = [readout_rows(labels, settings.card_ranks, cap=readout_fns.members)]
        if sub_labels is not None:
            wanted.append(readout_rows(canonical_labels(sub_labels), settings.subcard_ranks, rows=giant,
                                       cap=readout_fns.members))
        readout_fns.predict(np.unique(np.concatenate(wanted)))
    cards = build_cards(
        labels, rows, tokens, docs, ranks=settings.card_ranks, contexts_per_card=settings.contexts_per_card,
        threshold=settings.threshold, readout=readout_fns, raw_rows=raw_rows, inputs=inputs, early=card_early,
    )
    subcards = CardList()
    if settings.card_ranks[0] > 1 and len(labels) and summary["largest_fraction"] < GIANT_FRACTION:
        cards.notes.append(f"the largest component holds only {summary['largest_fraction']:.1%} of the activations: "
                           f"not a giant, yet card_ranks starts at {settings.card_ranks[0]}; card it with "
                           f"--set card_ranks=1,{settings.card_ranks[1]}")
    if t_sub is not None and t_sub <= settings.threshold:
        cards.notes.append(f"no sub-component cards: subcard_threshold {t_sub} is not above the threshold "
                           f"{settings.threshold} (single linkage only splits the giant at higher thresholds)")
    elif sub_labels is not None and giant is not None:
        subcards = giant_subcards(
            sub_labels, giant, rows, tokens, docs,
            higher_threshold=t_sub, ranks=settings.subcard_ranks,
            contexts_per_card=settings.contexts_per_card, readout=readout_fns, raw_rows=raw_rows,
            inputs=inputs, early=card_early,
        )
    order = source_order(tokens)  # one ordering of sources everywhere: by activations in the run
    for card in [*cards, *subcards]:
        card.source_mix = {src: card.source_mix[src] for src in order if src in card.source_mix}
    baseline = token_baseline(labels, tokens)
    artefacts = artefact_summary(labels, inputs, early, rows, threshold=settings.threshold,
                                 setting=settings.early_positions, limit=settings.early_position_limit,
                                 tokens=tokens, excluded_early=_excluded_early(settings, layout),
                                 device=settings.device)
    bridges_text = describe_bridges((comps.record.transition or {}).get("bridges") or {}, tokens)
    uncertainty = (uncertainty_section(comps.record.uncertainty, bridges_text or None)
                   if comps.record.uncertainty else None)
    sources = source_breakdown(labels, tokens, settings.threshold, *_transition_labels(forest, comps.record))
    stats = capture_stats(settings, layout)  # the raw shards' sidecars (run_tokens checked the shards)
    duplicates = corpus_duplicates(settings, stats)
    layers = LAYERS.freshness(Inputs(settings, layout, None, {}))
    sample, study = _provenance(settings, layout, comps.offsets, tokens, docs, summary, stats, duplicates,
                                layers.current)
    record_inputs = expected_inputs(CardsRecord, Inputs(
        settings, layout, None, {"components": {None: comps.record.labels_sha256},
                                 "activation_mean": {None: _mean_sha256(settings, layout)},
                                 "layers": {None: layers.output if layers.current else None}}, database_url))
    # written again at the end with the inputs and the pages' hashes: an interrupted stage stays stale
    cards_doc = {"run_id": settings.run_id(), "run_key": settings.run_key(),
                 "cards": [c.to_dict() for c in cards],
                 "subcard_threshold": settings.subcard_threshold,
                 "subcards": [c.to_dict() for c in subcards],
                 "token_baseline": baseline, "corpus_duplicates": duplicates, "artefacts": artefacts,
                 "source_breakdown": sources, "transition_bridges": bridges_text, "sample": sample,
                 "study": study,
                 "readout": {"model_next_members_cap": READOUT_MEMBERS,
                             "model_next_top_per_member": TOP_PREDICTIONS,
                             "logit_lens": "mean raw member activation minus the corpus mean, through the final "
                                           "norm and unembedding; readable tokens of the run's sample only, shown "
                                           "where they beat random groups of activations of the card's size "
                                           "(max-margin permutation test)",
                             "lens_control": {"groups": LENS_CONTROLS, "max_group_size": LENS_CONTROL_ROWS,
                                              "alpha": LENS_ALPHA, "seed": LENS_SEED}}}
    save_json(layout.cards, cards_doc)
    sweep = pd.read_csv(verified_component_file(layout, comps.record, "sweep"))
    # the explorer first, so the report's link to it never dangles
    explorer = write_explorer(
        layout, tokens=tokens, docs=docs, threshold=settings.threshold, description=settings.describe(), rows=rows,
        labels=labels, sweep=sweep, forest=forest)
    report = write_report(layout.report, run_key=settings.run_key(), run_description=settings.describe(),
                          summary=summary, sweep=sweep, explorer_href=explorer.name,
                          figures={k: verified_component_file(layout, comps.record, k).read_bytes() for k in FIGURES},
                          cards=[*cards, *subcards], notes=[*cards.notes, *subcards.notes],
                          precision=comps.record.precision, transition=comps.record.transition,
                          scaling=pd.read_csv(verified_component_file(layout, comps.record, "scaling")),
                          study=study, baseline=baseline, duplicates=duplicates,
                          layers_section=layer_section(settings, layout), sources=sources, artefacts=artefacts,
                          uncertainty=uncertainty, sample=sample)
    n_rows = write_results(database_url, settings.run_key(), summary, [*cards, *subcards],
                           description=settings.describe(), baseline=baseline, duplicates=duplicates,
                           artefacts=artefacts)
    save_parquet(layout.members, members_table(tokens, labels, early))
    report_sha = sha256_file(report)
    save_json(layout.cards, {**cards_doc, **record_inputs, "report_sha256": report_sha,
                             "explorer_sha256": sha256_file(explorer), "members_sha256": sha256_file(layout.members)})
    return RunCards(run_id=settings.run_id(), cards=cards, subcards=subcards, report=report, sql_rows=n_rows,
                    summary=summary, baseline=baseline, duplicates=duplicates, explorer=explorer,
                    report_sha256=report_sha)


def _provenance(settings: RunSettings, layout: RunLayout, offsets: dict[str, int], tokens: pd.DataFrame,
                docs: pd.DataFrame, summary: dict[str, Any], stats: list[dict[str, Any]],
                duplicates: dict[str, Any] | None, layers_current: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the run measured (:func:`describe_sample`) and the study side by side with what a reader needs
    beside it: the weights' format and, when the layer comparison is current, the study's own plain L2 on
    this model at the run's layer and threshold. ``stats``: :func:`capture_stats`."""
    sample = describe_sample(settings.run_key(), tokens, docs, (duplicates or {}).get("n_kept"),
                             capture_stats=stats)
    plain = None
    if settings.normalization != "l2":
        plain = _plain_l2_on_run(settings, layout, offsets, len(tokens))
        if plain is None and layers_current:
            plain = plain_l2_result(pd.read_parquet(layout.layers_file("geometry.parquet")), settings.layer,
                                    settings.threshold)
    study = compare_with_study(settings.run_key(), summary, plain_l2=plain,
                               weights=weights_format(settings.model, stats[0].get("model_dtype") if stats else None))
    return sample, study


#: Most activations whose plain-L2 graph the cards stage computes itself (above: the layer comparison's): the
#: same bound as for recomputing the graph without early positions.
PLAIN_L2_MAX_ROWS = SUMMARY_WITHOUT_MAX_ROWS


def _plain_l2_on_run(settings: RunSettings, layout: RunLayout, offsets: dict[str, int], n: int) -> dict[str, Any] | None:
    """The study's own normalization on this run's activations: the exact components at the run's threshold of
    the raw rows L2-normalized (float64 norms, float32 rows; :func:`cosine_components`, pruned at its own
    threshold, so a near-complete graph costs about one landmark pass) and the exact mean pairwise cosine
    ``(|sum x|^2 - N) / (N (N - 1))``. None above :data:`PLAIN_L2_MAX_ROWS` activations."""
    from actgeo_assets.lib.graph import component_summary, cosine_components

    if n > PLAIN_L2_MAX_ROWS or n < 2:
        return None
    shards = run_rows(settings, layout, offsets, raw=True)
    # filled shard by shard (no list of parts concatenated: one float64 copy of the rows, not two)
    unit64 = np.empty((sum(len(a) for _, a in shards), shards[0][1].shape[1]))
    k = 0
    for _, arr in shards:
        block = np.asarray(arr[np.arange(len(arr))], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        unit = (block / np.where(norms > 0, norms, 1.0))[norms[:, 0] > 0]  # l2 drops zero rows
        unit64[k : k + len(unit)] = unit
        k += len(unit)
    unit64 = unit64[:k]
    total = unit64.sum(axis=0)
    mean_cosine = float((total @ total - float((unit64 * unit64).sum())) / (len(unit64) * (len(unit64) - 1)))
    labels = cosine_components(unit64.astype(np.float32), settings.threshold, device=settings.device)
    s = component_summary(labels, top=1)
    return {"layer": settings.layer, "threshold": settings.threshold, "normalization": "l2", "n": int(s["n"]),
            "n_components": int(s["n_components"]), "largest_fraction": float(s["largest_fraction"]),
            "singletons": int(s["singletons"]), "mean_cosine": mean_cosine, "source": "this run"}


def _excluded_early(settings: RunSettings, layout: RunLayout) -> int:
    """Activations the normalize stage left out for their early position (``early_positions=exclude``)."""
    return sum(int(load_json(layout.normalized_meta(shard)).get("report", {}).get("excluded", {})
                   .get("early_position", 0)) for shard in settings.shard_keys)


def _transition_labels(forest: SingleLinkageForest, record: Any) -> tuple[np.ndarray | None, float | None]:
    """The canonical labels at the transition threshold ``t_c`` of the components' record and ``t_c`` (None,
    None when the record has no transition or the forest does not reach it)."""
    t_c = (record.transition or {}).get("t_c")
    if t_c is None:
        return None, None
    try:
        return forest.labels_at(float(t_c)), float(t_c)
    except ValueError:  # above prune_at or below min_threshold
        return None, None


def _readout(settings: RunSettings, layout: RunLayout, tokens: pd.DataFrame, offsets: dict[str, int]) -> Readout | None:
    """The cards' model readouts (:class:`Readout`): the model's next-token predictions at member positions
    and the mid-depth logit lens against the corpus mean; None when the model cannot be loaded."""
    # torch is imported here, not at module level: see common._cached_model.
    from actgeo_assets.lib.capture.model import final_logit_softcap, final_norm_and_unembed

    try:
        loaded = load_run_model(settings, layout)
    except Exception as exc:  # the readout is an extra: cards are still built without the model
        log.warning("next-token readout skipped: model %s not loadable (%s)", settings.model, exc)
        return None
    norm, unembed = final_norm_and_unembed(loaded)
    hidden = hidden_token_ids(loaded.tokenizer)
    return Readout(predict=_predictor(settings, layout, loaded, tokens, hidden), final_norm=norm, unembed=unembed,
                   center=_corpus_mean(settings, layout, offsets), tokenizer=loaded.tokenizer, hidden=hidden,
                   members=READOUT_MEMBERS, softcap=final_logit_softcap(loaded),
                   # the lens shows only tokens of the run's own sample, against random groups of its activations
                   vocabulary=frozenset(tokens["token_id"].astype(int).tolist()), n_rows=len(tokens))


def _mean_sha256(settings: RunSettings, layout: RunLayout) -> str | None:
    """The hash of the activation mean the logit lens reads (None when the run has no mean stage)."""
    if not MEAN.enabled(settings) or not layout.mean_meta.exists():
        return None
    return MEAN.output(load_json(layout.mean_meta))


def _corpus_mean(settings: RunSettings, layout: RunLayout, offsets: dict[str, int]) -> np.ndarray:
    """float64 [d] mean raw activation of the run: ``mean.npy`` when it was written (verified), else the
    mean of the kept raw rows (one chunked pass)."""
    from actgeo_assets.lib.store.layout import load_json, verify_file

    if layout.mean.exists() and layout.mean_meta.exists():
        try:
            return np.load(verify_file(layout.mean, load_json(layout.mean_meta).get("sha256")))
        except (OSError, ValueError) as exc:
            log.warning("corpus mean %s unusable (%s): recomputing it for the logit lens", layout.mean, exc)
    total, n = None, 0
    for _, arr in run_rows(settings, layout, offsets, raw=True):
        for lo in range(0, len(arr), 65_536):
            block = np.asarray(arr[np.arange(lo, min(lo + 65_536, len(arr)))])  # no float64 copy: same sums
            total = block.sum(axis=0, dtype=np.float64) if total is None else total + block.sum(axis=0, dtype=np.float64)
            n += block.shape[0]
    return total / max(n, 1) if total is not None else np.zeros(0)


def _predictor(settings: RunSettings, layout: RunLayout, loaded: Any, tokens: pd.DataFrame,
               hidden: frozenset[int]) -> Predictor:
    """The model's next-token distribution at global rows of ``tokens``: a full forward pass over each
    needed document up to its last needed position (token ids from the raw token tables, so exactly what
    was captured), batched by document. Results are kept in ``cards/next_token_predictions.npz`` with the
    raw shards' sha256, so a rerun over the same shards computes only positions it has not seen."""
    import hashlib
    import json

    from actgeo_assets.lib.capture.model import next_token_predictions

    doc_of, pos_of = tokens["doc_id"].to_numpy(), tokens["position"].to_numpy()
    raws = {s: read_raw(settings, layout, s) for s in settings.shard_keys}
    key = hashlib.sha256(json.dumps({"model": settings.model, "revision": loaded.revision, "k": TOP_PREDICTIONS,
                                     "raw": [raws[s].meta.get("sha256") for s in settings.shard_keys],
                                     "hidden": sorted(hidden)}).encode()).hexdigest()
    path = layout.cards_dir / "next_token_predictions.npz"
    cache = _load_predictions(path, key)
    sequences: dict[int, list[int]] = {}

    def sequence(doc: int) -> list[int]:
        if doc not in sequences:
            for raw in raws.values():
                t = raw.tokens[raw.tokens["doc_id"].to_numpy() == doc]
                if len(t):
                    t = t.sort_values("position")
                    first = int(t["position"].iloc[0])
                    bos = loaded.tokenizer.bos_token_id
                    if first not in (0, 1) or (first == 1 and bos is None):
                        raise ValueError(f"document {doc}: captured tokens start at position {first}")
                    sequences[doc] = [bos] * first + t["token_id"].astype(int).tolist()
                    break
        return sequences[doc]

    def predict(rows: np.ndarray) -> list[list[tuple[int, float]]]:
        wanted = list(zip(doc_of[rows].tolist(), pos_of[rows].tolist(), strict=True))
        need: dict[int, set[int]] = {}
        for d, p in wanted:
            if (d, p) not in cache:
                need.setdefault(d, set()).add(p)
        if need:
            import time

            t0 = time.perf_counter()
            docs = sorted(need)
            positions = [sorted(need[d]) for d in docs]
            found = next_token_predictions(loaded, [sequence(d) for d in docs], positions, k=TOP_PREDICTIONS,
                                           hidden=hidden, batch_size=settings.batch_size)
            for d, ps, dists in zip(docs, positions, found, strict=True):
                cache.update({(d, p): dist for p, dist in zip(ps, dists, strict=True)})
            log.info("next-token predictions at %d positions of %d documents in %.1fs",
                     sum(map(len, positions)), len(docs), time.perf_counter() - t0)
            _save_predictions(path, key, cache)
        return [cache[w] for w in wanted]

    return predict


def _load_predictions(path: Path, key: str) -> dict[tuple[int, int], list[tuple[int, float]]]:
    """The cached predictions of :func:`_predictor` when they were made for ``key``, else none."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return {}
            doc, pos, ids, probs = z["doc"], z["pos"], z["ids"], z["probs"]
    except (OSError, KeyError, ValueError):
        return {}
    return {(int(d), int(p)): [(int(i), float(q)) for i, q in zip(ii, qq, strict=True) if i >= 0]
            for d, p, ii, qq in zip(doc, pos, ids, probs, strict=True)}


def _save_predictions(path: Path, key: str, cache: dict[tuple[int, int], list[tuple[int, float]]]) -> None:
    from actgeo_assets.lib.store.layout import atomic_path

    items = sorted(cache.items())
    ids = np.full((len(items), TOP_PREDICTIONS), -1, dtype=np.int64)
    probs = np.zeros((len(items), TOP_PREDICTIONS), dtype=np.float64)
    for r, (_, dist) in enumerate(items):
        ids[r, : len(dist)] = [i for i, _ in dist]
        probs[r, : len(dist)] = [q for _, q in dist]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.str_(key), doc=np.array([k[0] for k, _ in items], dtype=np.int64),
                 pos=np.array([k[1] for k, _ in items], dtype=np.int64), ids=ids, probs=probs)


def capture_stats(settings: RunSettings, layout: RunLayout) -> list[dict[str, Any]]:
    """Each shard's capture statistics (its raw sidecar's ``stats``), in shard order: read once per cards
    build (the shards themselves were checked when the token tables were read)."""
    return [load_json(layout.raw_meta(s)).get("stats", {}) for s in settings.shard_keys]


def corpus_duplicates(settings: RunSettings, stats: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Duplicate documents found in the run's corpus, from the shards' capture ``stats``
    (:func:`capture_stats`): one corpus in split mode; with ``shard_by="file"`` the files' counts added up.
    None for shards captured before they were recorded."""
    found = [s.get("corpus_duplicates") for s in stats]
    if not found or any(not f for f in found):
        return None
    if settings.shard_by == "split":
        return found[0]
    total: dict[str, Any] = {"files": len(found), "near_threshold": found[0].get("near_threshold"),
                             "dropped": found[0].get("dropped"), "by_source": {}}
    for f in found:
        for k in ("n_documents", "n_exact_duplicates", "n_near_duplicates", "n_kept"):
            total[k] = total.get(k, 0) + int(f.get(k, 0))
        for src, counts in f.get("by_source", {}).items():
            mine = total["by_source"].setdefault(src, {"exact": 0, "near": 0})
            for kind in ("exact", "near"):
                mine[kind] += int(counts.get(kind, 0))
    return total


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
    sub_db = read_subcomponents(database_url, settings.run_id())
    sub_db_pairs = (sorted(zip(sub_db["rank"].astype(int), sub_db["size"].astype(int), strict=True))
                    if len(sub_db) else [])
    sub_pairs = sorted((c.rank, c.size) for c in result.subcards)
    return [
        CheckOutcome("cards_cover_ranks", got == expected, {"expected": str(expected), "got": str(got)}),
        CheckOutcome("consistent_with_components", not mismatched, {"mismatched_ranks": str(mismatched)}),
        CheckOutcome("sql_rows_match_cards", db_pairs == card_pairs and sub_db_pairs == sub_pairs,
                     {"sql_rows": len(db), "cards": len(cards), "sql_subcomponent_rows": len(sub_db),
                      "subcards": len(sub_pairs)}),
    ]
