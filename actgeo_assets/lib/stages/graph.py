"""Stages of the assets in defs/assets/graph.py: one shard pair's forest, the merge of all of them into
the run's components, and the float64 spot check of the result."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.percolation import FINE_MAX, fine_thresholds, locate_transition, n_scaling
from actgeo_assets.lib.analysis.resample import replicate_stats, shard_jackknife
from actgeo_assets.lib.analysis.study import STUDY_SETUP, compare_with_study
from actgeo_assets.lib.config.keys import pair_key, split_pair_key
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.graph import (
    ForestEdges,
    SingleLinkageForest,
    component_summary,
    merge_forests,
    single_linkage_forest,
    tile_forest,
)
from actgeo_assets.lib.outputs.figures import (
    cosine_histogram_png,
    n_scaling_png,
    percolation_png,
    size_spectrum_png,
)
from actgeo_assets.lib.stages.common import normalized_rows, run_rows, show_progress
from actgeo_assets.lib.stages.record import PAIRS, Inputs, StageSpec, expected_inputs, input_field
from actgeo_assets.lib.store.layout import (
    RunLayout,
    load_json,
    save_bytes,
    save_csv,
    save_json,
    save_npy,
    sha256_file,
    verify_file,
)
from actgeo_assets.lib.store.lock import holds_writer_lock
from actgeo_assets.lib.store.rows import RowGetter, row_getter

#: The figures of the components, by name (files ``components/{name}.png``).
FIGURES = ("size_spectrum", "percolation", "n_scaling", "cosine_histogram")
#: How the run's similarities are computed, as the summary and the report say.
PRECISION = "float32 unit rows; exact float64 edge rule at threshold"


@dataclass(frozen=True)
class EdgeTile:
    """The maximum spanning forest of one shard pair (``path``, ``ForestEdges``), and what it cost."""

    pair: str
    forest_edges: int
    pairs_compared: int  # pairs whose cosine was computed
    pairs_total: int  # pairs of the tile (fewer are compared with prune_at)
    seconds: float
    path: Path
    sha256: str
    edge_counts: dict[str, int]  # graph edges (pairs with float64 cosine >= t) by exact threshold "t"


def exact_thresholds(settings: RunSettings) -> tuple[float, ...]:
    """The thresholds whose cuts are float64-exact: the run's and every listed sweep value."""
    return tuple(sorted({settings.threshold, *settings.sweep}))


def _pair_hashes(i: Inputs) -> list[str | None]:
    a, b = split_pair_key(str(i.key))
    shards = i.upstream["normalized"]
    return [shards.get(a), shards.get(b)]


@dataclass(frozen=True)
class TileRecord:
    """``tiles/{pair}.json``: the two normalized shards joined (their hashes), the forest's thresholds, and
    the tile's counts and hash."""

    normalized_sha256: list[str | None] = input_field(_pair_hashes)
    min_threshold: float = input_field(lambda i: i.settings.min_threshold)
    exact_at: list[float] = input_field(lambda i: list(exact_thresholds(i.settings)))
    prune_at: float | None = input_field(lambda i: i.settings.prune_at)
    edge_counts: dict[str, int] = dataclasses.field(default_factory=dict)  # graph edges by exact threshold
    pairs_total: int | None = None
    pairs_computed: int | None = None
    sha256: str = ""


@dataclass(frozen=True)
class ComponentsRecord:
    """``components/summary.json``: which run the components are of, and the study's summary of them."""

    run_id: str
    description: str
    n: int
    summary: dict[str, Any]  # lib.graph.component_summary at the run's threshold
    precision: str
    labels_sha256: str
    run_key: dict[str, Any] = input_field(lambda i: i.settings.run_key())
    tile_sha256: dict[str, str | None] = input_field(lambda i: dict(i.upstream["edge_tiles"]))  # every tile merged
    transition: dict[str, Any] = dataclasses.field(default_factory=dict)  # lib.percolation.Transition (+ bridges)
    uncertainty: dict[str, Any] = dataclasses.field(default_factory=dict)  # lib.resample.shard_jackknife
    study: dict[str, Any] = dataclasses.field(default_factory=dict)  # lib.study.compare_with_study
    files_sha256: dict[str, str] = dataclasses.field(default_factory=dict)  # forest, offsets, sweep, figures
    code_version: str | None = None  # the stage's version (record.expected_inputs writes it)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComponentsRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


def component_files(layout: RunLayout) -> dict[str, Path]:
    """The files of `components` that later stages read, by the key of ``ComponentsRecord.files_sha256``
    (the labels have their own ``labels_sha256``)."""
    return {"forest": layout.forest, "offsets": layout.offsets, "sweep": layout.sweep, "scaling": layout.scaling,
            **{name: layout.figure(name) for name in FIGURES}}


def verified_component_file(layout: RunLayout, record: ComponentsRecord, name: str) -> Path:
    """The path of one of :func:`component_files`, checked against the sha256 recorded by the merge
    (``IntegrityError`` naming the file)."""
    return verify_file(component_files(layout)[name], record.files_sha256.get(name))


@dataclass(frozen=True)
class MergedComponents:
    """What :func:`merge_components` wrote: the record, the threshold sweep and the figures' files."""

    record: ComponentsRecord
    sweep: pd.DataFrame  # the fine sweep (every 0.01, plus the listed thresholds)
    scaling: pd.DataFrame  # components over the first k shards (lib.percolation.SCALING_COLUMNS)
    figures: dict[str, Path]


@dataclass(frozen=True)
class RunComponents:
    """The stored components of a run, as cards and checks read them."""

    record: ComponentsRecord
    labels: np.ndarray  # int64 [N], canonical at settings.threshold, global row order
    offsets: dict[str, int]  # global row offset of each shard
    sizes: dict[str, int]  # rows of each shard


@dataclass(frozen=True)
class SpotCheck:
    """Float64 spot check of a partition (see :func:`spot_check_edges`); passed iff ``violations == 0``."""

    pairs_checked: int
    edges_in_sample: int
    violations: int
    forest_edges_checked: int
    max_forest_weight_error: float

    def as_metadata(self) -> dict[str, int | float]:
        return dataclasses.asdict(self)


def write_shard_forest(settings: RunSettings, layout: RunLayout, shard: str, unit: np.ndarray) -> dict[str, Any]:
    """With ``prune_at``: the shard's own single-linkage forest (every pair within the shard above min_threshold,
    pruned at ``prune_at`` with its own landmark pass, so exact up to it; shard-local ids) ->
    normalized/{shard}.forest.npz. It is the shard's diagonal tile (which is then empty), and its components at
    ``prune_at`` are what the shard's other tiles start from. Returns the sidecar fields of
    :class:`~actgeo_assets.lib.stages.activations.NormalizedShard`."""
    assert settings.prune_at is not None
    forest = single_linkage_forest(unit, settings.min_threshold, exact_thresholds(settings), device=settings.device,
                                   prune_at=settings.prune_at, n_landmarks=settings.n_landmarks,
                                   progress=show_progress())
    path = layout.shard_forest(shard)
    forest.edges.save(path)
    n_comp = int(forest.labels_at(settings.prune_at).max() + 1) if len(unit) else 0
    return {"prune_at": settings.prune_at, "shard_forest_sha256": sha256_file(path), "shard_components": n_comp}


def shard_forest(settings: RunSettings, layout: RunLayout, shard: str) -> ForestEdges:
    """With ``prune_at``: the shard's stored forest (shard-local ids), checked against the sha256 its sidecar
    recorded; ValueError naming the sidecar when it holds none at the current ``prune_at``."""
    meta = load_json(layout.normalized_meta(shard))
    if meta.get("prune_at") != settings.prune_at or not meta.get("shard_forest_sha256"):
        raise ValueError(f"{layout.normalized_meta(shard)} holds no shard forest at prune_at {settings.prune_at}: "
                         f"rematerialize normalized[{shard}]")
    return ForestEdges.load(verify_file(layout.shard_forest(shard), meta["shard_forest_sha256"]))


def shard_forest_labels(settings: RunSettings, layout: RunLayout, shard: str, rows: int) -> np.ndarray:
    """int64 [rows]: the shard's components at ``prune_at``, cut from :func:`shard_forest`."""
    return SingleLinkageForest(rows, shard_forest(settings, layout, shard)).labels_at(settings.prune_at)


@holds_writer_lock
def compute_tile(settings: RunSettings, layout: RunLayout, pair: str) -> EdgeTile:
    """Maximum spanning forest (cosine >= min_threshold) of one shard pair -> tiles/{pair}.npz and .json.

    Indices in the saved forest are tile-local: rows of shard a are ``0..n_a-1`` and rows of shard b
    follow as ``n_a..n_a+n_b-1`` (for a == b there is one block); :func:`merge_components` maps them to
    global rows once all shard sizes are known.
    """
    a, b = split_pair_key(pair)
    for s in (a, b):
        if s not in settings.shard_keys:
            raise ValueError(f"tile {pair!r} names shard {s!r}, not one of {settings.shard_keys}")
    xa = normalized_rows(settings, layout, a)
    xb = None if a == b else normalized_rows(settings, layout, b)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    if settings.prune_at is not None and xb is None:
        # the shard's own forest (normalized/{shard}.forest.npz) holds its pairs: the diagonal tile is empty
        shard_forest(settings, layout, a)  # it exists and is intact
        empty = np.zeros(0, dtype=np.int64)
        forest = ForestEdges(empty, empty, np.zeros(0), min_threshold=settings.min_threshold,
                             exact_at=tuple(sorted({settings.min_threshold, *exact_thresholds(settings)})),
                             exact_up_to=settings.prune_at)
        stats.update(pairs_computed=0, pairs_total=xa.shape[0] * (xa.shape[0] - 1) // 2)
    else:
        known = None
        if settings.prune_at is not None:  # start from the two shards' components: only pairs between them
            known = np.concatenate([shard_forest_labels(settings, layout, a, xa.shape[0]),
                                    shard_forest_labels(settings, layout, b, xb.shape[0]) + xa.shape[0]])
        forest = tile_forest(xa, xb, offset_a=0, offset_b=xa.shape[0], min_threshold=settings.min_threshold,
                             exact_at=exact_thresholds(settings), device=settings.device, progress=show_progress(),
                             count_edges=known is None, stats=stats, prune_at=settings.prune_at, known_labels=known)
    edge_counts = {f"{t:g}": int(c) for t, c in stats.get("edge_counts", {}).items()}
    seconds = time.perf_counter() - t0
    path = layout.tile(pair)
    path.parent.mkdir(parents=True, exist_ok=True)
    forest.save(path)
    upstream = {"normalized": {s: load_json(layout.normalized_meta(s))["sha256"] for s in (a, b)}}
    tile_sha = sha256_file(path)
    save_json(layout.tile_meta(pair), {**expected_inputs(TileRecord, Inputs(settings, layout, pair, upstream)),
                                       "edge_counts": edge_counts, "pairs_total": stats.get("pairs_total"),
                                       "pairs_computed": stats.get("pairs_computed"), "sha256": tile_sha})
    pairs = int(stats.get("pairs_computed", 0))
    return EdgeTile(pair=pair, forest_edges=int(len(forest.weight)), pairs_compared=int(pairs),
                    pairs_total=int(stats.get("pairs_total", pairs)), seconds=seconds,
                    path=path, sha256=tile_sha, edge_counts=edge_counts)


@holds_writer_lock
def merge_components(settings: RunSettings, layout: RunLayout) -> MergedComponents:
    """Merge all tile forests (Kruskal) into the single-linkage hierarchy; labels, summary, sweep, the transition
    with the forest edges that carry it (``record.transition["bridges"]``), the shard jackknife's intervals
    (``record.uncertainty``: each replicate the exact merge of the tiles of the shards it keeps), figures."""
    missing = [s for s in settings.shard_keys if not layout.normalized_meta(s).exists()]
    if missing:
        raise ValueError(f"normalized missing for shards {missing}: no {layout.normalized_meta(missing[0])}"
                         f"{' (and the others beside it)' if len(missing) > 1 else ''}; materialize them first")
    sizes = {s: int(load_json(layout.normalized_meta(s))["rows"]) for s in settings.shard_keys}
    offsets = dict(zip(settings.shard_keys, np.cumsum([0] + [sizes[s] for s in settings.shard_keys])[:-1].tolist(), strict=True))
    n = int(sum(sizes.values()))
    missing = [p for p in settings.pair_keys if not layout.tile(p).exists()]
    if missing:
        raise ValueError(f"edge_tiles missing for {len(missing)} shard pairs, e.g. {missing[:5]}: no "
                         f"{layout.tile(missing[0])}; materialize every edge_tiles partition first")
    # each tile read (and hash-checked) once: the merge, the edge counts and the N-scaling all use it
    tiles = {pair: _global_tile(layout, pair, sizes, offsets) for pair in settings.pair_keys}
    # with prune_at the tiles skipped pairs inside each shard's components: the shard forests join them
    own = {s: _global_shard_forest(settings, layout, s, offsets[s]) for s in settings.shard_keys}
    forest = merge_forests([edges for edges, _ in tiles.values()] + [f for f in own.values() if f is not None], n)
    labels = forest.labels_at(settings.threshold)
    summary = component_summary(labels, top=20)
    top = FINE_MAX if settings.prune_at is None else min(FINE_MAX, settings.prune_at)
    fine = fine_thresholds(settings.min_threshold, exact_thresholds(settings), top=top)
    sweep = forest.sweep(fine)
    sweep["graph_edges"] = graph_edge_counts([meta for _, meta in tiles.values()], sweep["threshold"])
    # with the forest, the transition names the forest edges that carry the second-largest's jump (bridges)
    transition = locate_transition(sweep, settings.threshold, cut_off_at=settings.prune_at, forest=forest)
    cosines = pair_cosine_sample(settings, layout, offsets, n)
    keys = list(settings.shard_keys)

    def tile_of(i: int, j: int) -> ForestEdges:  # the pair's tile, and shard j's own forest with its diagonal
        edges = tiles[pair_key(keys[i], keys[j])][0]
        extra = own[keys[j]] if i == j else None
        return edges if extra is None else merge_forests([edges, extra], n).edges

    scaling = n_scaling([sizes[k] for k in keys], tile_of, settings.threshold)
    # intervals: the jackknife over shards, each replicate the exact merge of the tiles of the shards it keeps
    full = replicate_stats(forest, settings.threshold, fine, cut_off_at=settings.prune_at, sweep=sweep)
    bridge_rows = [r for e in transition.bridges.get("edges", []) for r in e["rows"]]
    uncertainty = shard_jackknife(keys, [sizes[k] for k in keys], tile_of, settings.threshold, fine, full,
                                  cut_off_at=settings.prune_at, bridge_rows=bridge_rows)
    tiles.clear()  # the forests are merged and scaled: free them before the figures
    own.clear()
    study = compare_with_study(settings.run_key(), summary)
    forest.save(layout.forest)
    save_npy(layout.labels, labels)
    labels_sha = sha256_file(layout.labels)
    save_json(layout.offsets, {"offsets": offsets, "sizes": sizes, "n": n})
    save_csv(layout.sweep, sweep)
    save_csv(layout.scaling, scaling)
    pngs = {
        "size_spectrum": size_spectrum_png(labels, title=settings.describe()),
        "percolation": percolation_png(sweep, title=settings.describe(), threshold=settings.threshold,
                                       t_c=transition.t_c, t_c_lower_bound=transition.at_or_above,
                                       t_c_interval=t_c_interval(uncertainty)),
        "n_scaling": n_scaling_png(scaling, title=settings.describe(), study_n=STUDY_SETUP["n"]),
        "cosine_histogram": cosine_histogram_png(
            cosines, threshold=settings.threshold, n=n, title=settings.describe(),
            edges_at_threshold=_edges_at(sweep, settings.threshold)),
    }
    for name, png in pngs.items():
        save_bytes(layout.figure(name), png)
    tile_sha = {p: load_json(layout.tile_meta(p)).get("sha256") if layout.tile_meta(p).exists() else None
                for p in settings.pair_keys}
    inputs = expected_inputs(ComponentsRecord, Inputs(settings, layout, None, {"edge_tiles": tile_sha}))
    record = ComponentsRecord(run_id=settings.run_id(), description=settings.describe(), n=n, summary=summary,
                              precision=PRECISION, labels_sha256=labels_sha, transition=transition.as_dict(),
                              study=study, uncertainty=uncertainty, files_sha256={k: sha256_file(f) for k, f in component_files(layout).items()},
                              **inputs)
    save_json(layout.summary, record.to_json())
    return MergedComponents(record=record, sweep=sweep, scaling=scaling,
                            figures={k: layout.figure(k) for k in FIGURES})


def t_c_interval(uncertainty: dict[str, Any]) -> tuple[float, float] | None:
    """The transition threshold's interval from :func:`shard_jackknife`'s result, or None where it has none."""
    q = next((q for q in uncertainty.get("quantities", []) if q["key"] == "t_c"), None)
    return None if q is None or q.get("low") is None or q.get("high") is None else (q["low"], q["high"])


def _global_tile(layout: RunLayout, pair: str, sizes: dict[str, int],
                 offsets: dict[str, int]) -> tuple[ForestEdges, dict[str, Any]]:
    """One tile's forest (checked against its recorded sha256) in global row ids, and its sidecar."""
    a, b = split_pair_key(pair)
    meta = load_json(layout.tile_meta(pair)) if layout.tile_meta(pair).exists() else {}
    local = ForestEdges.load(verify_file(layout.tile(pair), meta.get("sha256")))
    n_a, n_tile = sizes[a], sizes[a] + (sizes[b] if a != b else 0)
    if len(local.src) and max(local.src.max(), local.dst.max()) >= n_tile:
        raise ValueError(f"{layout.tile(pair)} indexes rows beyond its shards: it is stale; rematerialize it")

    def to_global(v: np.ndarray) -> np.ndarray:
        return np.where(v < n_a, v + offsets[a], v - n_a + offsets[b]).astype(np.int64)

    return dataclasses.replace(local, src=to_global(local.src), dst=to_global(local.dst)), meta


def _global_shard_forest(settings: RunSettings, layout: RunLayout, shard: str, offset: int) -> ForestEdges | None:
    """With ``prune_at``: :func:`shard_forest` in global row ids; else None."""
    if settings.prune_at is None:
        return None
    local = shard_forest(settings, layout, shard)
    return dataclasses.replace(local, src=local.src + offset, dst=local.dst + offset)


def graph_edge_counts(tile_metas: list[dict[str, Any]], thresholds: pd.Series) -> pd.Series:
    """The graph's exact edge count at each threshold that every tile counted (summed over the tiles'
    sidecars); <NA> at the others (the fine sweep's in-between thresholds) or when a tile has no count."""
    totals: dict[str, int] | None = None
    for meta in tile_metas:
        counts = meta.get("edge_counts")
        if not counts:
            return pd.Series(pd.NA, index=thresholds.index, dtype="Int64")
        totals = dict(counts) if totals is None else {k: totals[k] + counts[k] for k in totals if k in counts}
    totals = totals or {}
    return pd.Series([totals.get(f"{t:g}", pd.NA) for t in thresholds], index=thresholds.index, dtype="Int64")


def _edges_at(sweep: pd.DataFrame, t: float) -> int | None:
    row = sweep[np.isclose(sweep["threshold"], t)]
    v = row["graph_edges"].iloc[0] if len(row) else pd.NA
    return None if pd.isna(v) else int(v)


#: Pairs sampled for the histogram of pairwise cosines.
HISTOGRAM_PAIRS = 200_000


def pair_cosine_sample(settings: RunSettings, layout: RunLayout, offsets: dict[str, int], n: int,
                       n_pairs: int = HISTOGRAM_PAIRS, seed: int = 0) -> np.ndarray:
    """float64 cosines of ``n_pairs`` uniformly random pairs ``i != j`` of the run's unit rows (for the
    histogram of all pairwise cosines; the exact counts at the thresholds come from the tiles): see
    :func:`pair_cosines`."""
    if n < 2:
        return np.zeros(0)
    return pair_cosines(row_getter(run_rows(settings, layout, offsets)), n, n_pairs, seed)


#: Bytes of the two float64 blocks of rows :func:`pair_cosines` holds at once (the float32 rows read add half):
#: 64 MiB is 6,553 pairs a chunk at d = 640, 1,820 at d = 2,304 (each pair's cosine is the same whatever the
#: chunk: one row's dot product).
PAIR_BLOCK_BYTES = 64 * 2**20


def pair_cosines(get: RowGetter, n: int, n_pairs: int = HISTOGRAM_PAIRS, seed: int = 0) -> np.ndarray:
    """float64 [n_pairs]: ``<x_i, x_j>`` of uniformly random pairs ``i != j`` of rows ``0..n-1`` (``n >= 2``)
    read through ``get``, in chunks of at most :data:`PAIR_BLOCK_BYTES` of float64 rows. The rows come at
    random from the whole run: ``get`` should read them without mapping the files (``row_getter`` reads
    memory-mapped shards with ``preadv``), else readahead maps most of every shard into the process' RSS."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n
    out = np.empty(n_pairs)
    if n_pairs == 0:
        return out
    d = int(np.shape(get(i[:1]))[1])
    chunk = int(min(16_384, max(256, PAIR_BLOCK_BYTES // (16 * max(d, 1)))))
    for k in range(0, n_pairs, chunk):
        a = np.asarray(get(i[k : k + chunk]), dtype=np.float64)
        b = np.asarray(get(j[k : k + chunk]), dtype=np.float64)
        out[k : k + chunk] = np.einsum("ij,ij->i", a, b)
    return out


def invalidate_components(layout: RunLayout) -> None:
    """Remove ``components/summary.json`` (after a failed blocking check): the components are then stale,
    nothing reads them, and the next run merges again."""
    layout.summary.unlink(missing_ok=True)


def load_record(settings: RunSettings, layout: RunLayout) -> ComponentsRecord:
    """The summary record of the last `components` run; ValueError if missing or of another run."""
    if not layout.summary.exists():
        raise ValueError(f"{layout.summary} is missing: materialize `components` first")
    record = ComponentsRecord.from_json(load_json(layout.summary))
    if record.run_key != settings.run_key():
        raise ValueError(f"components in {layout.components_dir} are from another run ({record.run_key}); "
                         "rematerialize")
    return record


def load_components(settings: RunSettings, layout: RunLayout) -> RunComponents:
    """The record, labels and shard offsets of the last `components` run; ValueError if stale."""
    record = load_record(settings, layout)
    off = load_json(verified_component_file(layout, record, "offsets"))
    return RunComponents(record=record, labels=np.load(verify_file(layout.labels, record.labels_sha256)),
                         offsets={k: int(v) for k, v in off["offsets"].items()},
                         sizes={k: int(v) for k, v in off["sizes"].items()})


def spot_check_edges(settings: RunSettings, layout: RunLayout, components: RunComponents, sample: int = 2000,
                     seed: int = 0) -> SpotCheck:
    """Float64 spot check of the partition: for ``sample`` random rows against ``sample`` others, every pair
    with float64 cosine >= threshold must share a label (a missed edge), and for sampled forest edges the
    stored weight must equal the float64 cosine within 1e-5."""
    labels = components.labels
    rows = row_getter(run_rows(settings, layout, components.offsets))
    rng = np.random.default_rng(seed)
    n = len(labels)
    i = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    j = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    sims = rows(i).astype(np.float64) @ rows(j).astype(np.float64).T
    ii, jj = np.nonzero(sims >= settings.threshold)
    linked = i[ii] != j[jj]
    violations = int(np.count_nonzero(labels[i[ii][linked]] != labels[j[jj][linked]]))
    e = SingleLinkageForest.load(verified_component_file(layout, components.record, "forest")).edges
    pick = rng.choice(len(e.src), size=min(sample, len(e.src)), replace=False) if len(e.src) else np.array([], int)
    if len(pick):
        exact = np.einsum("ij,ij->i", rows(e.src[pick]).astype(np.float64), rows(e.dst[pick]).astype(np.float64))
        weight_err = float(np.max(np.abs(exact - e.weight[pick])))
    else:
        weight_err = 0.0
    weight_bad = int(weight_err > 1e-5)
    return SpotCheck(pairs_checked=int(sims.size), edges_in_sample=int(np.count_nonzero(linked)),
                     violations=violations + weight_bad, forest_edges_checked=int(len(pick)),
                     max_forest_weight_error=weight_err)


TILES = StageSpec(
    name="edge_tiles", partitions=PAIRS, upstream=("normalized",), record=TileRecord, version="tile-forest-1",
    sidecar=lambda layout, pair: layout.tile_meta(str(pair)),
    files=lambda layout, pair, meta: [(layout.tile(str(pair)), meta.get("sha256"))],
)
MERGE = StageSpec(
    # `normalized`: the merge reads the shards' sizes, their forests (prune_at) and rows (the spot check, the
    # histogram); their hashes reach it through the tiles
    name="components", partitions=None, upstream=("normalized", "edge_tiles"), record=ComponentsRecord,
    # kruskal-2: the record holds the shard jackknife (uncertainty) and the transition's bridges
    version="kruskal-2", unrecorded_version="kruskal-1", output_field="labels_sha256",
    sidecar=lambda layout, _: layout.summary,
    files=lambda layout, _, meta: [(layout.labels, meta.get("labels_sha256")),
                                   *((f, (meta.get("files_sha256") or {}).get(k))
                                     for k, f in component_files(layout).items())],
)
