"""One function per pipeline step, over a run's files (layout.py). The Dagster assets are thin wrappers.

Each step reads what the previous step wrote, computes with one library module, writes atomically and
returns a plain dict of facts for metadata. Every step is usable without Dagster (tests, notebooks, CLI).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.incremental import mean_meta_path, source_fingerprints, tile_meta_path
from actgeo_assets.lib.layout import RunLayout, load_json, save_json, save_npy, sha256_file
from actgeo_assets.lib.settings import RunSettings, split_pair_key

log = logging.getLogger("actgeo")


# --------------------------------------------------------------------------------------------- capture
@functools.lru_cache(maxsize=2)
def _cached_model(spec: str, cache_dir: str, device: str, threads: int) -> Any:
    from actgeo_assets.lib.model import load_model

    return load_model(spec, Path(cache_dir), device=device, threads=threads)


def load_run_model(settings: RunSettings, layout: RunLayout) -> Any:
    """The run's model (LoadedModel), loaded once per process."""
    return _cached_model(settings.model, str(layout.model_cache), settings.device, settings.torch_threads)


@functools.lru_cache(maxsize=8)
def _cached_corpus(settings: RunSettings, cache_dir: str, stamp: tuple[int, int] = (0, 0)) -> tuple[Any, ...]:
    """The corpus' documents, loaded once per process (``stamp``: a local file's mtime and size)."""
    from actgeo_assets.lib.corpus import load_corpus

    return tuple(load_corpus(settings, Path(cache_dir)))


def shard_plan(settings: RunSettings, layout: RunLayout, shard: str) -> tuple[list[Any], int]:
    """The documents and the activation budget of one shard (deterministic).

    ``shard_by="split"``: corpus document i goes to shard i % n_shards and the budget is dealt out.
    ``shard_by="file"``: the shard's own file, ``budget_per_shard`` activations, and doc ids made unique
    across files (crc32 of the file name in the high bits) so that adding a file renumbers nothing.
    """
    import dataclasses
    import zlib

    from actgeo_assets.lib.corpus import shard_budgets, shard_documents

    keys = settings.shard_keys
    if shard not in keys:
        raise ValueError(f"unknown shard {shard!r}: this run has shards {keys}")
    if settings.shard_by == "file":
        path = settings.shard_files()[shard]
        st = path.stat()
        docs = _cached_corpus(settings.replace(corpus=str(path), shard_by="split", budget_per_shard=None),
                              str(layout.corpus_cache), (st.st_mtime_ns, st.st_size))
        high = (zlib.crc32(path.name.encode()) & 0x7FFFFFFF) << 32
        return [dataclasses.replace(d, doc_id=high | d.doc_id) for d in docs], int(settings.budget_per_shard or 0)
    docs = list(_cached_corpus(settings, str(layout.corpus_cache)))
    index = keys.index(shard)
    return shard_documents(docs, settings.n_shards)[index], shard_budgets(settings.budget, settings.n_shards)[index]


def capture_shard(settings: RunSettings, layout: RunLayout, shard: str) -> dict[str, Any]:
    """Capture one shard's residual stream; writes raw/{shard}.* and raw/next_norm.npz."""
    from actgeo_assets.lib.capture import capture_activations, next_block_norm
    from actgeo_assets.lib.shards import write_next_norm, write_raw_shard

    docs, budget = shard_plan(settings, layout, shard)
    loaded = load_run_model(settings, layout)
    result = capture_activations(
        loaded, docs, layer=settings.layer, context_len=settings.context_len, budget=budget,
        batch_size=settings.batch_size, exclude_bos=settings.exclude_bos,
    )
    write_next_norm(layout, next_block_norm(loaded, settings.layer))
    fingerprint = source_fingerprints(settings)[shard]
    meta = write_raw_shard(layout, shard, result, docs, {**settings.capture_key(), "source_fingerprint": fingerprint})
    sources = result.tokens["source"].value_counts().to_dict() if len(result.tokens) else {}
    return {"rows": int(result.acts.shape[0]), "dim": int(result.acts.shape[1]), "sources": sources,
            "stats": result.stats, "path": str(layout.raw(shard)), "sha256": meta.get("sha256", "")}


def read_raw(settings: RunSettings, layout: RunLayout, shard: str, verify: bool = False) -> Any:
    from actgeo_assets.lib.shards import read_raw_shard

    return read_raw_shard(layout, shard, expect=settings.capture_key(), mmap=True, verify=verify)


def compute_mean(settings: RunSettings, layout: RunLayout) -> dict[str, Any]:
    """Mean raw activation over all shards (float64 [d]) -> mean.npy; used by ``center_l2``."""
    from actgeo_assets.lib.normalize import shards_mean

    missing = [s for s in settings.shard_keys if not layout.raw_meta(s).exists()]
    if missing:
        raise ValueError(f"raw_activations missing for shards {missing}: materialize them first")
    shards = {s: read_raw(settings, layout, s) for s in settings.shard_keys}
    mean = shards_mean(r.acts for r in shards.values())
    save_npy(layout.mean, mean)
    sha = sha256_file(layout.mean)
    save_json(mean_meta_path(layout), {"sha256": sha, "raw_sha256": {s: r.meta["sha256"] for s, r in shards.items()}})
    return {"dim": int(mean.shape[0]), "norm": float(np.linalg.norm(mean)), "path": str(layout.mean), "sha256": sha}


# --------------------------------------------------------------------------------------- normalization
def normalize_shard(settings: RunSettings, layout: RunLayout, shard: str) -> dict[str, Any]:
    """Unit rows of one shard -> normalized/{shard}.npy (float32), kept mask and diagnostics."""
    from actgeo_assets.lib.normalize import geometry_diagnostics, normalize_rows
    from actgeo_assets.lib.shards import read_next_norm

    raw = read_raw(settings, layout, shard, verify=True)
    centered = settings.normalization == "center_l2"
    if centered and not (layout.mean.exists() and mean_meta_path(layout).exists()):
        raise ValueError(f"center_l2 needs {layout.mean}: materialize activation_mean first")
    mean = np.load(layout.mean) if centered else None
    norm = read_next_norm(layout) if settings.normalization == "rmsnorm" else None
    res = normalize_rows(raw.acts, settings.normalization, mean=mean, norm_weight=norm)
    diag = geometry_diagnostics(res.unit, threshold=settings.threshold, raw=raw.acts)
    save_npy(layout.normalized(shard), res.unit)
    save_npy(kept_path(layout, shard), res.kept)
    norm_error = max_norm_error(res.unit)
    mean_sha = load_json(mean_meta_path(layout))["sha256"] if centered else None
    meta = {"shard": shard, "rows": int(res.unit.shape[0]), "dim": int(res.unit.shape[1]),
            "dtype": "float32", "normalization": settings.normalization, "report": res.report,
            "diagnostics": diag, "run_key": settings.run_key(), "raw_sha256": raw.meta["sha256"],
            "mean_sha256": mean_sha, "sha256": sha256_file(layout.normalized(shard)),
            "max_norm_error": norm_error}
    save_json(layout.normalized_meta(shard), meta)
    return meta


def max_norm_error(unit: np.ndarray, chunk: int = 65_536) -> float:
    """max_i | ||row_i||_2 - 1 | in float64 over float32 [n, d] rows (0.0 for no rows), chunked."""
    worst = 0.0
    for start in range(0, unit.shape[0], chunk):
        block = np.asarray(unit[start:start + chunk], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(np.linalg.norm(block, axis=1) - 1.0), initial=0.0)))
    return worst


def kept_path(layout: RunLayout, shard: str) -> Path:
    return layout.normalized(shard).with_suffix(".kept.npy")


def normalized_rows(settings: RunSettings, layout: RunLayout, shard: str) -> np.ndarray:
    """Memory-mapped float32 [n, d] unit rows of one shard; ValueError naming what is missing or stale."""
    path, meta_path = layout.normalized(shard), layout.normalized_meta(shard)
    if not path.exists() or not meta_path.exists():
        raise ValueError(f"normalized shard {shard} is missing ({path}): materialize `normalized` first")
    meta = load_json(meta_path)
    if meta.get("normalization") != settings.normalization:
        raise ValueError(f"{meta_path} was normalized with {meta.get('normalization')!r}, "
                         f"this run asks for {settings.normalization!r}: rematerialize `normalized`")
    x = np.load(path, mmap_mode="r")
    if x.shape[0] != meta["rows"]:
        raise ValueError(f"{path} has {x.shape[0]} rows, its sidecar says {meta['rows']}")
    return x


# ------------------------------------------------------------------------------------------ graph step
def compute_tile(settings: RunSettings, layout: RunLayout, pair: str) -> dict[str, Any]:
    """Maximum spanning forest (cosine >= min_threshold) of one shard pair -> tiles/{pair}.npz.

    Indices in the saved forest are tile-local: rows of shard a are ``0..n_a-1`` and rows of shard b
    follow as ``n_a..n_a+n_b-1`` (for a == b there is one block); :func:`merge_components` maps them to
    global rows once all shard sizes are known.
    """
    from actgeo_assets.lib.graph import tile_forest

    a, b = split_pair_key(pair)
    for s in (a, b):
        if s not in settings.shard_keys:
            raise ValueError(f"tile {pair!r} names shard {s!r}, not one of {settings.shard_keys}")
    xa = normalized_rows(settings, layout, a)
    xb = None if a == b else normalized_rows(settings, layout, b)
    t0 = time.perf_counter()
    forest = tile_forest(xa, xb, offset_a=0, offset_b=xa.shape[0], min_threshold=settings.min_threshold,
                         exact_at=(settings.threshold,), device=settings.device, progress=True)
    seconds = time.perf_counter() - t0
    layout.tile(pair).parent.mkdir(parents=True, exist_ok=True)
    forest.save(layout.tile(pair))
    shas = [load_json(layout.normalized_meta(s))["sha256"] for s in (a, b)]
    tile_sha = sha256_file(layout.tile(pair))
    save_json(tile_meta_path(layout, pair), {"normalized_sha256": shas, "min_threshold": settings.min_threshold,
                                             "exact_at": [settings.threshold], "sha256": tile_sha})
    n_a, n_b = xa.shape[0], (xa.shape[0] if xb is None else xb.shape[0])
    pairs = n_a * (n_a - 1) // 2 if xb is None else n_a * n_b
    return {"pair": pair, "forest_edges": int(len(forest.weight)), "pairs_compared": int(pairs),
            "seconds": seconds, "path": str(layout.tile(pair)), "sha256": tile_sha}


@dataclass
class RunComponents:
    """The merged hierarchy of a run and what cards need to address rows."""

    forest: Any  # SingleLinkageForest
    labels: np.ndarray  # int64 [N], canonical at settings.threshold
    offsets: dict[str, int]  # global row offset of each shard
    sizes: dict[str, int]


def merge_components(settings: RunSettings, layout: RunLayout) -> dict[str, Any]:
    """Merge all tile forests (Kruskal) into the single-linkage hierarchy; labels, summary, sweep, figures."""
    from actgeo_assets.lib.figures import percolation_png, size_spectrum_png
    from actgeo_assets.lib.graph import ForestEdges, component_summary, merge_forests

    sizes = {s: int(load_json(layout.normalized_meta(s))["rows"]) for s in _require_normalized(settings, layout)}
    offsets = dict(zip(settings.shard_keys, np.cumsum([0] + [sizes[s] for s in settings.shard_keys])[:-1].tolist(), strict=True))
    n = int(sum(sizes.values()))
    missing = [p for p in settings.pair_keys if not layout.tile(p).exists()]
    if missing:
        raise ValueError(f"edge_tiles missing for {len(missing)} shard pairs, e.g. {missing[:5]}: "
                         "materialize every edge_tiles partition first")
    parts = []
    for pair in settings.pair_keys:
        a, b = split_pair_key(pair)
        local = ForestEdges.load(layout.tile(pair))
        n_a, n_tile = sizes[a], sizes[a] + (sizes[b] if a != b else 0)
        if len(local.src) and max(local.src.max(), local.dst.max()) >= n_tile:
            raise ValueError(f"{layout.tile(pair)} indexes rows beyond its shards: it is stale; rematerialize it")

        def to_global(v: np.ndarray, a: str = a, b: str = b, n_a: int = n_a) -> np.ndarray:
            return np.where(v < n_a, v + offsets[a], v - n_a + offsets[b]).astype(np.int64)

        parts.append(ForestEdges(to_global(local.src), to_global(local.dst), local.weight))
    forest = merge_forests(parts, n)
    labels = forest.labels_at(settings.threshold)
    summary = component_summary(labels, top=20)
    sweep = forest.sweep(sorted(set(settings.sweep) | {settings.threshold}))
    out = layout.components_dir
    forest.save(out / "forest.npz")
    save_npy(out / "labels.npy", labels)
    labels_sha = sha256_file(out / "labels.npy")
    save_json(out / "offsets.json", {"offsets": offsets, "sizes": sizes, "n": n})
    _write_csv(out / "sweep.csv", sweep)
    figures = {
        "size_spectrum": size_spectrum_png(labels, title=settings.describe()),
        "percolation": percolation_png(sweep, title=settings.describe(), threshold=settings.threshold),
    }
    for name, png in figures.items():
        _write_bytes(out / f"{name}.png", png)
    tile_sha = {p: load_json(tile_meta_path(layout, p)).get("sha256") if tile_meta_path(layout, p).exists() else None
                for p in settings.pair_keys}
    record = {"run_key": settings.run_key(), "run_id": settings.run_id(), "description": settings.describe(),
              "n": n, "summary": summary, "precision": "float32 unit rows; exact float64 edge rule at threshold",
              "tile_sha256": tile_sha, "labels_sha256": labels_sha}
    save_json(out / "summary.json", record)
    return {**record, "sweep": sweep, "figure_paths": {k: str(out / f"{k}.png") for k in figures}}


def _require_normalized(settings: RunSettings, layout: RunLayout) -> list[str]:
    missing = [s for s in settings.shard_keys if not layout.normalized_meta(s).exists()]
    if missing:
        raise ValueError(f"normalized missing for shards {missing}: materialize them first")
    return settings.shard_keys


def load_components(settings: RunSettings, layout: RunLayout) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """(summary record, labels, offsets record) of the last `components` run; ValueError if stale."""
    out = layout.components_dir
    if not (out / "summary.json").exists():
        raise ValueError(f"{out / 'summary.json'} is missing: materialize `components` first")
    record = load_json(out / "summary.json")
    if record["run_key"] != settings.run_key():
        raise ValueError(f"components in {out} are from another run ({record['run_key']}); rematerialize")
    return record, np.load(out / "labels.npy"), load_json(out / "offsets.json")


# ------------------------------------------------------------------------------------------------ cards
def run_tokens(settings: RunSettings, layout: RunLayout, offsets: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Token table (global row order, only rows kept by normalization) and the documents of all shards."""
    tables, docs = [], []
    for shard in settings.shard_keys:
        raw = read_raw(settings, layout, shard)
        kept = np.load(kept_path(layout, shard))
        tok = raw.tokens.loc[kept].reset_index(drop=True)
        tok["row"] = np.arange(len(tok), dtype=np.int64) + offsets[shard]
        tok["shard"] = shard
        tables.append(tok)
        docs.append(raw.docs)
    return pd.concat(tables, ignore_index=True), pd.concat(docs, ignore_index=True).drop_duplicates("doc_id")


def row_reader(settings: RunSettings, layout: RunLayout, offsets: dict[str, int], raw: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping global row indices (int64 [k]) to rows (float32 [k, d]) across shards."""
    keys = settings.shard_keys
    starts = np.array([offsets[s] for s in keys], dtype=np.int64)
    arrays = []
    for s in keys:
        if raw:
            kept = np.load(kept_path(layout, s))
            arrays.append((read_raw(settings, layout, s).acts, np.flatnonzero(kept)))
        else:
            arrays.append((normalized_rows(settings, layout, s), None))

    def rows(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(starts, idx, side="right") - 1
        out = None
        for k in np.unique(which):
            sel = which == k
            arr, kept_rows = arrays[k]
            local = idx[sel] - starts[k]
            if kept_rows is not None:
                local = kept_rows[local]
            block = np.asarray(arr[np.sort(local)], dtype=np.float32)[np.argsort(np.argsort(local))]
            if out is None:
                out = np.empty((len(idx), block.shape[1]), dtype=np.float32)
            out[sel] = block
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    return rows


def build_run_cards(settings: RunSettings, layout: RunLayout, database_url: str,
                    readout: bool = True) -> dict[str, Any]:
    """Cards for the configured ranks, the HTML report, and the SQL rows of this run."""
    from actgeo_assets.lib.cards import build_cards, giant_subcards
    from actgeo_assets.lib.graph import SingleLinkageForest
    from actgeo_assets.lib.report import write_report
    from actgeo_assets.lib.sqlstore import write_results

    record, labels, off = load_components(settings, layout)
    offsets = {k: int(v) for k, v in off["offsets"].items()}
    tokens, docs = run_tokens(settings, layout, offsets)
    if len(tokens) != len(labels):
        raise ValueError(f"token table has {len(tokens)} rows but labels have {len(labels)}: rerun upstream")
    readout_fns = _readout(settings, layout) if readout else None
    rows = row_reader(settings, layout, offsets)
    raw_rows = row_reader(settings, layout, offsets, raw=True) if readout_fns else None
    cards = build_cards(
        labels, rows, tokens, docs, ranks=settings.card_ranks, contexts_per_card=settings.contexts_per_card,
        threshold=settings.threshold, readout=readout_fns, raw_rows=raw_rows,
    )
    subcards: list[Any] = []
    t_sub = settings.subcard_threshold
    if t_sub is not None and t_sub <= settings.threshold:
        cards.notes.append(f"no sub-component cards: subcard_threshold {t_sub} is not above the threshold "
                           f"{settings.threshold} (single linkage only splits the giant at higher thresholds)")
    elif t_sub is not None and len(labels):
        forest = SingleLinkageForest.load(layout.components_dir / "forest.npz")
        giant = np.flatnonzero(labels == 0)
        subcards = giant_subcards(
            forest.labels_at(settings.subcard_threshold)[giant], giant, rows, tokens, docs,
            higher_threshold=settings.subcard_threshold, ranks=settings.subcard_ranks,
            contexts_per_card=settings.contexts_per_card, readout=readout_fns, raw_rows=raw_rows,
        )
    out = layout.cards_dir
    save_json(out / "cards.json", {"run_id": settings.run_id(), "run_key": settings.run_key(),
                                   "cards": [c.to_dict() for c in cards],
                                   "subcard_threshold": settings.subcard_threshold,
                                   "subcards": [c.to_dict() for c in subcards]})
    comp = layout.components_dir
    figures = {k: (comp / f"{k}.png").read_bytes() for k in ("size_spectrum", "percolation")}
    sweep = pd.read_csv(comp / "sweep.csv")
    report = write_report(out / "report.html", run_key=settings.run_key(), run_description=settings.describe(),
                          summary=record["summary"], sweep=sweep, figures=figures, cards=[*cards, *subcards],
                          notes=[*getattr(cards, "notes", []), *getattr(subcards, "notes", [])],
                          precision=record["precision"])
    n_rows = write_results(database_url, settings.run_key(), record["summary"], cards,
                           description=settings.describe())
    return {"cards": cards, "subcards": subcards, "report": str(report), "sql_rows": n_rows,
            "summary": record["summary"], "run_id": settings.run_id()}


def _readout(settings: RunSettings, layout: RunLayout) -> Any:
    """(final_norm, unembed, tokenizer) of the run's model, or None when it cannot be loaded."""
    from actgeo_assets.lib.model import final_norm_and_unembed

    try:
        loaded = load_run_model(settings, layout)
    except Exception as exc:  # the readout is an extra: cards are still built without the model
        log.warning("next-token readout skipped: model %s not loadable (%s)", settings.model, exc)
        return None
    norm, unembed = final_norm_and_unembed(loaded)
    return norm, unembed, loaded.tokenizer


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    from actgeo_assets.lib.layout import atomic_path

    with atomic_path(path, ".csv") as tmp:
        df.to_csv(tmp, index=False)


def _write_bytes(path: Path, data: bytes) -> None:
    from actgeo_assets.lib.layout import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def spot_check_edges(settings: RunSettings, layout: RunLayout, labels: np.ndarray, sample: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Float64 spot check of the partition: for ``sample`` random rows against ``sample`` others, every pair
    with float64 cosine >= threshold must share a label (a missed edge), and for sampled forest edges the
    stored weight must equal the float64 cosine within 1e-5."""
    from actgeo_assets.lib.graph import SingleLinkageForest

    off = load_json(layout.components_dir / "offsets.json")
    offsets = {k: int(v) for k, v in off["offsets"].items()}
    rows = row_reader(settings, layout, offsets)
    rng = np.random.default_rng(seed)
    n = len(labels)
    i = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    j = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    sims = rows(i).astype(np.float64) @ rows(j).astype(np.float64).T
    ii, jj = np.nonzero(sims >= settings.threshold)
    linked = i[ii] != j[jj]
    violations = int(np.count_nonzero(labels[i[ii][linked]] != labels[j[jj][linked]]))
    forest = SingleLinkageForest.load(layout.components_dir / "forest.npz")
    e = forest.edges
    pick = rng.choice(len(e.src), size=min(sample, len(e.src)), replace=False) if len(e.src) else np.array([], int)
    if len(pick):
        exact = np.einsum("ij,ij->i", rows(e.src[pick]).astype(np.float64), rows(e.dst[pick]).astype(np.float64))
        weight_err = float(np.max(np.abs(exact - e.weight[pick])))
    else:
        weight_err = 0.0
    weight_bad = int(weight_err > 1e-5)
    return {"pairs_checked": int(sims.size), "edges_in_sample": int(np.count_nonzero(linked)),
            "violations": violations + weight_bad, "forest_edges_checked": int(len(pick)),
            "max_forest_weight_error": weight_err}


def audit_cards(settings: RunSettings, layout: RunLayout, database_url: str, cards: list[Any],
                summary: dict[str, Any]) -> dict[str, tuple[bool, dict[str, Any]]]:
    """Checks that cards, summary and SQL rows describe one run: name -> (passed, facts)."""
    from actgeo_assets.lib.sqlstore import read_components

    lo, hi = settings.card_ranks
    expected = list(range(lo, min(hi, summary["n_components"]) + 1))
    got = [c.rank for c in cards]
    top = summary["top_sizes"]
    mismatched = [c.rank for c in cards if c.rank <= len(top) and c.size != top[c.rank - 1]]
    db = read_components(database_url, settings.run_id())
    db_pairs = sorted(zip(db["rank"].astype(int), db["size"].astype(int), strict=True)) if len(db) else []
    card_pairs = sorted((c.rank, c.size) for c in cards)
    return {
        "cards_cover_ranks": (got == expected, {"expected": str(expected), "got": str(got)}),
        "consistent_with_components": (not mismatched, {"mismatched_ranks": str(mismatched)}),
        "sql_rows_match_cards": (db_pairs == card_pairs, {"sql_rows": len(db), "cards": len(cards)}),
    }
