"""What the stages share: the run's model (loaded once per process), its shards read back, and rows of
all shards addressed by global row index."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.store.layout import RunLayout, load_json, verify_file
from actgeo_assets.lib.store.rows import RowsSource, SelectedRows, unmapped
from actgeo_assets.lib.store.shards import RawShard, read_raw_shard

if TYPE_CHECKING:
    from actgeo_assets.lib.capture.model import LoadedModel


@functools.lru_cache(maxsize=2)
def _cached_model(spec: str, cache_dir: str, device: str, threads: int) -> LoadedModel:
    # torch is imported here, not at module level: only capture and the cards' readout run the model,
    # and the code server, the sensor and the CPU steps never pay for it.
    from actgeo_assets.lib.capture.model import load_model

    return load_model(spec, Path(cache_dir), device=device, threads=threads)


def load_run_model(settings: RunSettings, layout: RunLayout) -> LoadedModel:
    """The run's model, loaded once per process."""
    return _cached_model(settings.model, str(layout.model_cache), settings.device, settings.torch_threads)


def read_raw(settings: RunSettings, layout: RunLayout, shard: str, verify: bool = True) -> RawShard:
    """One raw shard, memory-mapped, checked against the run's capture settings and (``verify``) the sha256
    of its files (hashed once per file version per process)."""
    return read_raw_shard(layout, shard, expect=settings.capture_key(), mmap=True, verify=verify)


def normalized_rows(settings: RunSettings, layout: RunLayout, shard: str) -> np.ndarray:
    """Memory-mapped float32 [n, d] unit rows of one shard; ValueError naming what is missing or stale."""
    path, meta_path = layout.normalized(shard), layout.normalized_meta(shard)
    if not path.exists() or not meta_path.exists():
        raise ValueError(f"normalized shard {shard} is missing ({path}): materialize `normalized` first")
    meta = load_json(meta_path)
    if meta.get("normalization") != settings.normalization:
        raise ValueError(f"{meta_path} was normalized with {meta.get('normalization')!r}, "
                         f"this run asks for {settings.normalization!r}: rematerialize `normalized`")
    verify_file(path, meta.get("sha256"))  # IntegrityError naming the file
    x = np.load(path, mmap_mode="r")
    if x.shape[0] != meta["rows"]:
        raise ValueError(f"{path} has {x.shape[0]} rows, its sidecar says {meta['rows']}")
    return x


def load_kept(layout: RunLayout, shard: str) -> np.ndarray:
    """bool [n_raw]: the raw rows of ``shard`` that normalization kept, verified against its sidecar."""
    meta = load_json(layout.normalized_meta(shard))
    return np.load(verify_file(layout.kept(shard), meta.get("kept_sha256")), allow_pickle=False)


class _KeptRawRows(SelectedRows):
    """The raw rows of one shard that normalization kept, indexed like its normalized rows (row i is the
    i-th kept raw row): a shard array for :func:`actgeo_assets.lib.analysis.cards.row_getter`. A read-only
    memory map is read with ``preadv`` (:func:`~actgeo_assets.lib.store.rows.unmapped`): rows read at random
    never pull the file's pages into the process' resident memory."""

    def __init__(self, acts: np.ndarray, kept: np.ndarray) -> None:
        super().__init__(unmapped(acts), np.flatnonzero(kept))


def run_rows(settings: RunSettings, layout: RunLayout, offsets: dict[str, int], raw: bool = False) -> RowsSource:
    """Every shard's rows as ``[(global offset, rows), ...]`` (see :func:`actgeo_assets.lib.analysis.cards.row_getter`):
    the normalized unit rows, or with ``raw=True`` the raw activations of the same (kept) rows."""
    if raw:
        return [(offsets[s], _KeptRawRows(read_raw(settings, layout, s).acts, load_kept(layout, s)))
                for s in settings.shard_keys]
    return [(offsets[s], normalized_rows(settings, layout, s)) for s in settings.shard_keys]


def show_progress() -> bool:
    """Whether a stage draws tqdm bars: only onto a terminal (a step's stderr is its captured compute log, a
    file) and never under ``dagster dev``, whose processes share one console (bars would interleave)."""
    import os
    import sys

    return sys.stderr.isatty() and not os.environ.get("DAGSTER_IS_DEV_CLI")
