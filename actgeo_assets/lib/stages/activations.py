"""Stages of the assets in defs/assets/activations.py: capture one shard, the mean over all shards, and
one shard's unit rows; each with its sidecar record and :class:`~.record.StageSpec` (CAPTURE, MEAN,
NORMALIZE)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actgeo_assets.lib.capture.corpus import read_corpus, shard_budgets, shard_documents
from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.normalize import geometry_diagnostics, normalize_rows, shards_mean
from actgeo_assets.lib.config.constants import RAW_DTYPE
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.stages.common import load_run_model, read_raw, show_progress
from actgeo_assets.lib.stages.record import SHARDS, Inputs, StageSpec, expected_inputs, input_field
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json, save_npy, sha256_file, verify_file
from actgeo_assets.lib.store.lock import holds_writer_lock
from actgeo_assets.lib.store.shards import read_next_norm, write_next_norm, write_raw_shard


@dataclass(frozen=True)
class CapturedShard:
    """One shard captured: ``rows`` activations of width ``dim`` in ``path`` (float32 .npy)."""

    shard: str
    rows: int
    dim: int
    sources: dict[str, int]  # tokens per corpus source
    stats: dict[str, Any]  # counts and timings of the capture
    path: Path
    sha256: str  # of the .npy ("" if the sidecar has none)


@dataclass(frozen=True)
class ActivationMean:
    """The float64 [dim] mean raw activation over all shards, in ``path``."""

    dim: int
    norm: float
    path: Path
    sha256: str


def _raw_hash(i: Inputs) -> str | None:
    return i.upstream["raw_activations"].get(i.key)


def _mean_hash(i: Inputs) -> str | None:
    return i.upstream["activation_mean"].get(None) if i.settings.normalization == "center_l2" else None


@dataclass(frozen=True)
class RawRecord:
    """``raw/{shard}.json`` (written by :func:`~actgeo_assets.lib.store.shards.write_raw_shard`, which adds
    the shard's shape, dtype, stats and sources): what the activations were captured from, and their hashes."""

    capture: dict[str, Any] = input_field(
        lambda i: {**i.settings.capture_key(), "source_fingerprint": i.once(
            "fingerprints", lambda: source_fingerprints(i.settings)).get(i.key)})
    sha256: str = ""  # of raw/{shard}.npy: the shard's output hash
    files_sha256: dict[str, str] = dataclasses.field(default_factory=dict)  # acts, tokens, docs


@dataclass(frozen=True)
class MeanRecord:
    """``mean.json``: the raw shards the mean averaged (their hashes) and the mean's own hash."""

    raw_sha256: dict[str, str | None] = input_field(lambda i: dict(i.upstream["raw_activations"]))
    sha256: str = ""


@dataclass(frozen=True)
class NormalizedShard:
    """One shard's unit rows (float32 [rows, dim] in ``path``) and what its sidecar records (the input
    fields say what they were computed from)."""

    shard: str
    rows: int
    dim: int
    report: dict[str, Any]  # normalize_rows' report: counts and reasons of excluded rows
    diagnostics: dict[str, Any]  # geometry_diagnostics of the unit rows
    run_key: dict[str, Any]
    sha256: str
    kept_sha256: str  # of normalized/{shard}.kept.npy
    max_norm_error: float  # max | ||row||_2 - 1 | in float64
    path: Path
    raw_sha256: str = input_field(_raw_hash)
    normalization: str = input_field(lambda i: i.settings.normalization)
    mean_sha256: str | None = input_field(_mean_hash)  # center_l2 only
    prune_at: float | None = input_field(lambda i: i.settings.prune_at)  # when the shard forest was written
    # early_positions="exclude": rows at positions below this are left out (None: every finite row is kept)
    early_excluded_below: int | None = input_field(lambda i: i.settings.early_excluded_below())
    shard_forest_sha256: str | None = None  # of normalized/{shard}.forest.npz (prune_at only)
    shard_components: int | None = None  # components of the shard at prune_at (prune_at only)
    code_version: str | None = None  # the stage's version (record.expected_inputs writes it)

    def sidecar(self) -> dict[str, Any]:
        """``normalized/{shard}.json``."""
        meta = dataclasses.asdict(self)
        del meta["path"]
        return {**meta, "dtype": "float32"}


def _hash_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\0")
    return h.hexdigest()


def source_fingerprints(settings: RunSettings) -> dict[str, str]:
    """Shard key -> fingerprint of the text it is captured from.

    ``shard_by="file"``: sha256 of each file. Split mode: one fingerprint for every shard (a local corpus'
    files hashed; the builtin corpus' recipe version; a hub dataset's name and split, since its revision
    cannot be read offline).
    """
    if settings.shard_by == "file":
        return {k: sha256_file(p) for k, p in settings.shard_files().items()}
    path = Path(settings.corpus).expanduser()
    if path.is_dir():
        fp = _hash_files(sorted(p for p in path.rglob("*") if p.is_file()))
    elif path.is_file():
        fp = _hash_files([path])
    elif settings.corpus.startswith("builtin:"):
        from actgeo_assets.lib.capture.builtin_corpus import RECIPE_VERSION

        fp = f"{settings.corpus}:recipe-v{RECIPE_VERSION}"
    else:
        fp = f"hub:{settings.corpus}:{settings.corpus_split}"
    return dict.fromkeys(settings.shard_keys, fp)


@functools.lru_cache(maxsize=8)
def _cached_corpus_and_duplicates(settings: RunSettings, cache_dir: str,
                                  stamp: tuple[int, int]) -> tuple[tuple[Document, ...], dict[str, Any]]:
    corpus = read_corpus(settings.corpus, Path(cache_dir), split=settings.corpus_split,
                         text_field=settings.text_field, dedup=settings.dedup)
    return tuple(corpus), corpus.duplicates.to_dict() if corpus.duplicates is not None else {}


def cached_corpus(settings: RunSettings, cache_dir: str, stamp: tuple[int, int] = (0, 0)) -> tuple[Document, ...]:
    """The corpus' documents, loaded once per process (``stamp``: a local file's mtime and size)."""
    return _cached_corpus_and_duplicates(settings, cache_dir, stamp)[0]


def corpus_duplicates(settings: RunSettings, layout: RunLayout, shard: str) -> dict[str, Any]:
    """What :func:`actgeo_assets.lib.capture.corpus.find_duplicates` found in the corpus a shard's documents come
    from (the whole corpus, or with ``shard_by="file"`` the shard's file): counts, JSON."""
    if settings.shard_by == "file":
        path = settings.shard_files()[shard]
        st = path.stat()
        return _cached_corpus_and_duplicates(
            settings.replace(corpus=str(path), shard_by="split", budget_per_shard=None),
            str(layout.corpus_cache), (st.st_mtime_ns, st.st_size))[1]
    return _cached_corpus_and_duplicates(settings, str(layout.corpus_cache), (0, 0))[1]


def shard_plan(settings: RunSettings, layout: RunLayout, shard: str) -> tuple[list[Document], int]:
    """The documents and the activation budget of one shard (deterministic).

    ``shard_by="split"``: corpus document i goes to shard i % n_shards and the budget is dealt out.
    ``shard_by="file"``: the shard's own file, ``budget_per_shard`` activations, and doc ids made unique
    across files (crc32 of the file name in the high bits) so that adding a file renumbers nothing.
    """
    keys = settings.shard_keys
    if shard not in keys:
        raise ValueError(f"unknown shard {shard!r}: this run has shards {keys}")
    if settings.shard_by == "file":
        path = settings.shard_files()[shard]
        st = path.stat()
        docs = cached_corpus(settings.replace(corpus=str(path), shard_by="split", budget_per_shard=None),
                              str(layout.corpus_cache), (st.st_mtime_ns, st.st_size))
        high = (zlib.crc32(path.name.encode()) & 0x7FFFFFFF) << 32
        return [dataclasses.replace(d, doc_id=high | d.doc_id) for d in docs], int(settings.budget_per_shard or 0)
    docs = list(cached_corpus(settings, str(layout.corpus_cache)))
    _check_enough_documents(settings, len(docs))
    index = keys.index(shard)
    return shard_documents(docs, settings.n_shards)[index], shard_budgets(settings.budget, settings.n_shards)[index]


def _check_enough_documents(settings: RunSettings, n_docs: int) -> None:
    if settings.shard_by == "split" and n_docs < settings.n_shards:
        from actgeo_assets.lib.config.spec import SettingsError

        raise SettingsError(f"corpus {settings.corpus!r} has {n_docs} document{'s' if n_docs != 1 else ''}, fewer "
                            f"than n_shards {settings.n_shards}: every shard needs a document; lower n_shards "
                            f"to at most {n_docs} or use a larger corpus", names=("n_shards", "corpus"))


def check_corpus(settings: RunSettings, layout: RunLayout) -> int:
    """Before any compute: the corpus loads (cached for the capture) and deals a document to every shard
    (``shard_by="split"``), and every shard file holds one (``shard_by="file"``). Returns the number of
    documents; ``ValueError`` naming the corpus (or the file) and the fix."""
    if settings.shard_by == "file":
        total = 0
        for shard in settings.shard_keys:
            docs, _ = shard_plan(settings, layout, shard)
            if not docs:
                raise ValueError(f"corpus file {settings.shard_files()[shard]} holds no document with text")
            total += len(docs)
        return total
    n_docs = len(cached_corpus(settings, str(layout.corpus_cache)))
    _check_enough_documents(settings, n_docs)
    return n_docs


@holds_writer_lock
def capture_shard(settings: RunSettings, layout: RunLayout, shard: str) -> CapturedShard:
    """Capture one shard's residual stream; writes raw/{shard}.* and raw/next_norm.npz."""
    # torch is imported here, not at module level: see common._cached_model.
    from actgeo_assets.lib.capture.residual import capture_activations, next_block_norm

    docs, budget = shard_plan(settings, layout, shard)
    loaded = load_run_model(settings, layout)
    result = capture_activations(
        loaded, docs, layer=settings.layer, context_len=settings.context_len, budget=budget,
        batch_size=settings.batch_size, exclude_bos=settings.exclude_bos, out_dtype=RAW_DTYPE,
        progress=show_progress(),
    )
    result.stats["corpus_duplicates"] = corpus_duplicates(settings, layout, shard)
    write_next_norm(layout, next_block_norm(loaded, settings.layer))
    recorded = expected_inputs(RawRecord, Inputs(settings, layout, shard, {}))
    meta = write_raw_shard(layout, shard, result, docs, recorded.pop("capture"), extra=recorded)
    sources = result.tokens["source"].value_counts().to_dict() if len(result.tokens) else {}
    return CapturedShard(shard=shard, rows=int(result.acts.shape[0]), dim=int(result.acts.shape[1]),
                         sources=sources, stats=result.stats, path=layout.raw(shard),
                         sha256=meta.get("sha256", ""))


@holds_writer_lock
def compute_mean(settings: RunSettings, layout: RunLayout) -> ActivationMean:
    """Mean raw activation over all shards (float64 [d]) -> mean.npy and mean.json; used by ``center_l2``."""
    missing = [s for s in settings.shard_keys if not layout.raw_meta(s).exists()]
    if missing:
        raise ValueError(f"raw_activations missing for shards {missing}: no {layout.raw_meta(missing[0])}"
                         f"{' (and the others beside it)' if len(missing) > 1 else ''}; materialize them first")
    raw_sha256: dict[str, str] = {}

    def each_shard() -> Iterator[np.ndarray]:  # one shard open at a time: memory bounded by a shard, not N
        for shard in settings.shard_keys:
            raw = read_raw(settings, layout, shard)
            raw_sha256[shard] = raw.meta["sha256"]
            yield raw.acts

    mean = shards_mean(each_shard())
    save_npy(layout.mean, mean)
    sha = sha256_file(layout.mean)
    upstream = {"raw_activations": raw_sha256}
    save_json(layout.mean_meta, {**expected_inputs(MeanRecord, Inputs(settings, layout, None, upstream)),
                                 "sha256": sha})
    return ActivationMean(dim=int(mean.shape[0]), norm=float(np.linalg.norm(mean)), path=layout.mean, sha256=sha)


@holds_writer_lock
def normalize_shard(settings: RunSettings, layout: RunLayout, shard: str) -> NormalizedShard:
    """Unit rows of one shard -> normalized/{shard}.npy (float32), its kept mask and its sidecar."""
    raw = read_raw(settings, layout, shard, verify=True)
    centered = settings.normalization == "center_l2"
    if centered and not (layout.mean.exists() and layout.mean_meta.exists()):
        raise ValueError(f"center_l2 needs {layout.mean}: materialize activation_mean first")
    mean = np.load(verify_file(layout.mean, load_json(layout.mean_meta).get("sha256"))) if centered else None
    norm = read_next_norm(layout) if settings.normalization == "rmsnorm" else None
    below = settings.early_excluded_below()  # early_positions="exclude": those rows stay out of the graph
    exclude = None if below is None else raw.tokens["position"].to_numpy() < below
    res = normalize_rows(raw.acts, settings.normalization, mean=mean, norm_weight=norm, exclude=exclude)
    diag = geometry_diagnostics(res.unit, threshold=settings.threshold, raw=raw.acts)
    save_npy(layout.normalized(shard), res.unit)
    save_npy(layout.kept(shard), res.kept)
    pruned: dict[str, Any] = {}
    if settings.prune_at is not None:
        from actgeo_assets.lib.stages.graph import write_shard_forest

        pruned = write_shard_forest(settings, layout, shard, res.unit)
    upstream = {"raw_activations": {shard: raw.meta["sha256"]},
                "activation_mean": {None: load_json(layout.mean_meta)["sha256"] if centered else None}}
    result = NormalizedShard(
        shard=shard, rows=int(res.unit.shape[0]), dim=int(res.unit.shape[1]),
        report=res.report, diagnostics=diag, run_key=settings.run_key(),
        sha256=sha256_file(layout.normalized(shard)), kept_sha256=sha256_file(layout.kept(shard)),
        max_norm_error=max_norm_error(res.unit),
        path=layout.normalized(shard),
        **{**pruned, **expected_inputs(NormalizedShard, Inputs(settings, layout, shard, upstream))},
    )
    save_json(layout.normalized_meta(shard), result.sidecar())
    return result


def invalidate_normalized(layout: RunLayout, shard: str) -> None:
    """Remove ``normalized/{shard}.json`` (after a failed blocking check): the shard is then stale, no tile
    joins it, and the next run normalizes it again."""
    layout.normalized_meta(shard).unlink(missing_ok=True)


def max_norm_error(unit: np.ndarray) -> float:
    """max_i | ||row_i||_2 - 1 | in float64 over float32 [n, d] rows (0.0 for no rows), in 64 MB chunks."""
    worst = 0.0
    chunk = max(1, (64 << 20) // (8 * max(unit.shape[1], 1)))
    for start in range(0, unit.shape[0], chunk):
        block = np.asarray(unit[start:start + chunk], dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(np.linalg.norm(block, axis=1) - 1.0), initial=0.0)))
    return worst


def _next_norm_intact(i: Inputs, meta: Any) -> str | None:
    """rmsnorm: the next block's norm weights (raw/next_norm.npz, rewritten by every capture) match their
    recorded sha256; checked with the first shard, which reruns when they do not."""
    if i.settings.normalization != "rmsnorm" or i.key != i.settings.shard_keys[0]:
        return None
    from actgeo_assets.lib.store.shards import next_norm_meta

    try:
        verify_file(i.layout.next_norm, (load_json(next_norm_meta(i.layout)) or {}).get("sha256"))
    except (OSError, ValueError) as exc:
        return f"{i.layout.next_norm}: {exc}"
    return None


#: Version of each stage's code (the assets' code_version).
CAPTURE = StageSpec(
    name="raw_activations", partitions=SHARDS, upstream=(), record=RawRecord, version="capture-1",
    sidecar=lambda layout, shard: layout.raw_meta(shard),
    files=lambda layout, shard, meta: [
        (layout.raw(shard), meta.get("sha256")),
        (layout.tokens(shard), (meta.get("files_sha256") or {}).get("tokens")),
        (layout.docs(shard), (meta.get("files_sha256") or {}).get("docs"))],
    check=_next_norm_intact,
)
MEAN = StageSpec(
    name="activation_mean", partitions=None, upstream=("raw_activations",), record=MeanRecord, version="mean-1",
    sidecar=lambda layout, _: layout.mean_meta,
    files=lambda layout, _, meta: [(layout.mean, meta.get("sha256"))],
    enabled=lambda settings: settings.normalization == "center_l2",
)
NORMALIZE = StageSpec(
    name="normalized", partitions=SHARDS, upstream=("raw_activations", "activation_mean"), record=NormalizedShard,
    version="normalize-1",
    sidecar=lambda layout, shard: layout.normalized_meta(shard),
    files=lambda layout, shard, meta: [
        (layout.normalized(shard), meta.get("sha256")), (layout.kept(shard), meta.get("kept_sha256")),
        *([(layout.shard_forest(shard), meta.get("shard_forest_sha256"))] if meta.get("prune_at") is not None
          else [])],
)
