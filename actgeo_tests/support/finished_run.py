"""A small finished run, built once per test session by the project's own runner (every asset materialized in
lineage on an ephemeral Dagster instance) on the tiny random Gemma 2 and ``fixtures/mini_corpus.jsonl``:
2 shards, 600 activations, d = 64. About 10-20 s on 2 cores; tests that read a finished run's folder share it.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actgeo_assets.lib.store.layout import load_json, save_json, save_npy, sha256_file

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mini_corpus.jsonl"

#: The settings of the run (``actgeo run --set`` would give the same ones).
SETTINGS: dict[str, Any] = {
    "layer": 2, "n_shards": 2, "budget": 600, "context_len": 48, "batch_size": 4, "normalization": "center_l2",
    "threshold": 0.6, "min_threshold": 0.4, "sweep": [0.4, 0.5, 0.6, 0.8], "card_ranks": [2, 5],
    "contexts_per_card": 3, "subcard_threshold": 0.8, "subcard_ranks": [1, 3],
}


@dataclass(frozen=True)
class FinishedRun:
    """``resource``: the ActgeoResource it ran with; ``root``: its run folder; ``data_dir``; ``db_url``:
    the SQLite database its SQL rows went to; ``overrides``: ``model`` and ``corpus`` plus :data:`SETTINGS`."""

    resource: Any
    root: Path
    data_dir: Path
    db_url: str
    overrides: dict[str, Any]


@functools.cache
def finished_run(base: Path) -> FinishedRun:
    """Build the run under ``base`` (once per process and folder) and return where it is."""
    import dagster as dg

    from actgeo_assets.defs.resources import ActgeoResource
    from actgeo_assets.runner import materialize_run
    from actgeo_tests.support.tiny_model import tiny_gemma2

    base.mkdir(parents=True, exist_ok=True)
    overrides = {"model": tiny_gemma2(base / "model"), "corpus": str(FIXTURE), **SETTINGS}
    resource = ActgeoResource(profile="demo", data_dir=str(base / "data"), **overrides)
    materialize_run(resource, dg.DagsterInstance.ephemeral(), echo=lambda s: None)
    return FinishedRun(resource=resource, root=resource.layout().root, data_dir=base / "data",
                       db_url=resource.db_url(), overrides=overrides)


def drop_rows(root: Path, copy: Path, shard: str, rows: list[int]) -> None:
    """Copy the run to ``copy`` as if normalization had dropped raw ``rows`` of ``shard`` (a zero or
    non-finite row): its kept mask, unit rows, labels, offsets and their recorded sha256, consistently."""
    shutil.copytree(root, copy)
    norm, kept_path = copy / "normalized" / f"{shard}.npy", copy / "normalized" / f"{shard}.kept.npy"
    off = load_json(copy / "components" / "offsets.json")
    kept = np.load(kept_path)
    drop_global = [off["offsets"][shard] + int(np.flatnonzero(kept)[:r].size) for r in rows if kept[r]]
    kept[rows] = False
    save_npy(kept_path, kept)
    unit = np.load(norm)
    save_npy(norm, np.delete(unit, [g - off["offsets"][shard] for g in drop_global], axis=0))
    meta = load_json(copy / "normalized" / f"{shard}.json")
    save_json(copy / "normalized" / f"{shard}.json", {**meta, "rows": int(kept.sum()), "sha256": sha256_file(norm),
                                                      "kept_sha256": sha256_file(kept_path)})
    labels = np.delete(np.load(copy / "components" / "labels.npy"), drop_global)
    save_npy(copy / "components" / "labels.npy", labels)
    shards = sorted(off["offsets"], key=off["offsets"].__getitem__)
    off["sizes"][shard] -= len(drop_global)
    start = 0
    for s in shards:
        off["offsets"][s], start = start, start + off["sizes"][s]
    off["n"] = start
    save_json(copy / "components" / "offsets.json", off)
    summary = load_json(copy / "components" / "summary.json")
    summary["n"] = start
    summary["labels_sha256"] = sha256_file(copy / "components" / "labels.npy")
    summary["files_sha256"]["offsets"] = sha256_file(copy / "components" / "offsets.json")
    save_json(copy / "components" / "summary.json", summary)

