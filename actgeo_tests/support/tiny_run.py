"""The tiny run: one place for its settings, and a factory of finished tiny runs built by the library's stages.

The tiny run is the tiny random Gemma 2 (:func:`~actgeo_tests.support.tiny_model.tiny_gemma2`, d = 64) on
:data:`~actgeo_tests.support.paths.MINI_CORPUS` with :data:`TINY` laid over the demo profile: 2 shards,
600 activations, 3 tiles, cards of ranks 2..5 and the giant's sub-components. A test that needs other
settings passes them as overrides (``finished_tiny_run(base, budget=800)``, ``tiny_values(model=m,
n_shards=3)``), so the difference is visible where it is needed.

- :func:`tiny_values`: the settings as plain values (resource fields, a settings file's keys);
- :func:`tiny_settings`: the same as a validated :class:`RunSettings`;
- :func:`tiny_assignments`, :func:`tiny_set_args`: the same as ``KEY=VALUE`` texts and as CLI arguments;
- :func:`finished_tiny_run`: a finished run of those settings, every stage of ``lib/stages`` run in
  lineage without Dagster (capture, mean, normalize, tiles, merge, cards), built once per process and
  settings, so every module that asks for the same settings shares one run (about 10 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.config.sources import resolve_settings
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json, save_npy, sha256_file
from actgeo_tests.support.paths import MINI_CORPUS

#: The tiny run's settings over the demo profile (``model`` and ``corpus`` aside). One torch thread: the
#: tests share the machine's cores, and the tiny model gains nothing from more.
TINY: dict[str, Any] = {
    "layer": 2, "n_shards": 2, "budget": 600, "context_len": 48, "batch_size": 4, "normalization": "center_l2",
    "threshold": 0.6, "min_threshold": 0.4, "sweep": [0.4, 0.5, 0.6, 0.7, 0.8], "card_ranks": [2, 5],
    "contexts_per_card": 3, "subcard_threshold": 0.8, "subcard_ranks": [1, 3], "torch_threads": 1,
}


def tiny_values(**overrides: Any) -> dict[str, Any]:
    """``corpus`` (the fixture corpus), :data:`TINY`, then ``overrides`` (``model``, ``profile``, any setting;
    a value of None drops the key, i.e. keeps the profile's value). Plain values: resource fields or the keys
    of a settings file."""
    values = {"corpus": str(MINI_CORPUS), **TINY, **overrides}
    return {k: v for k, v in values.items() if v is not None}


def tiny_settings(**overrides: Any) -> RunSettings:
    """:func:`tiny_values` laid over their profile (demo unless ``profile`` is given), validated as every
    settings source is (``resolve_settings``)."""
    return resolve_settings([("tiny run", tiny_values(**overrides))])


def tiny_assignments(**overrides: Any) -> list[str]:
    """:func:`tiny_values` as ``KEY=VALUE`` texts of ``--set`` (lists as ``[a, b]``), ``profile`` included."""
    return [f"{key}={json.dumps(value) if isinstance(value, list | tuple) else value}"
            for key, value in tiny_values(**overrides).items()]


def tiny_set_args(**overrides: Any) -> list[str]:
    """:func:`tiny_values` as CLI arguments ``["--set", "KEY=VALUE", ...]``; ``profile`` as ``--profile``; and
    ``--experiment <profile>``: the tiny run is the profile's own run (``data_dir/<profile>``, the unprefixed
    assets), as :func:`finished_tiny_run` lays it out, not an experiment of its own."""
    args: list[str] = []
    profile = "demo"
    for item in tiny_assignments(**overrides):
        key, _, value = item.partition("=")
        if key == "profile":
            profile = value
        args += ["--profile", value] if key == "profile" else ["--set", item]
    return [*args, "--experiment", profile]


@dataclass(frozen=True)
class FinishedRun:
    """A finished tiny run. ``settings`` and ``layout`` (its folder ``root`` = ``data_dir / profile``);
    ``db_url``: the SQLite database its SQL rows went to; ``overrides``: the values it was built from
    (:func:`tiny_values`, ``model`` included); ``record``: the components' summary record
    (``ComponentsRecord.to_json()``: ``n``, ``summary``, ``run_key``, ...)."""

    settings: RunSettings
    layout: RunLayout
    root: Path
    data_dir: Path
    db_url: str
    overrides: dict[str, Any]
    record: dict[str, Any]


#: A text for lookups in a tiny run: it starts as the fixture corpus' first document does (its first tokens are
#: that document's rows) and is longer than ``context_len`` (48) tokens of the tiny tokenizer.
QUERY_TEXT = ("\"Legal Entity\" shall mean the union of the acting entity and all other entities. "
              "class TextWrapper: zebra quartz 1789")


def run_rows(settings: RunSettings, layout: RunLayout) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All normalized rows of a finished run (float64 [N, d], shard order), its labels.npy [N] and the kept
    rows' token table [N], read straight from the files."""
    x = np.concatenate([np.load(layout.normalized(s)) for s in settings.shard_keys]).astype(np.float64)
    tokens = pd.concat([pd.read_parquet(layout.tokens(s)).loc[np.load(layout.kept(s))] for s in settings.shard_keys],
                       ignore_index=True)
    return x, np.load(layout.labels), tokens


_RUNS: dict[tuple[str, str], FinishedRun] = {}


def finished_tiny_run(base: Path, **overrides: Any) -> FinishedRun:
    """The finished tiny run of ``overrides`` (see :func:`tiny_values`; ``model`` defaults to the tiny Gemma 2
    saved under ``base / "model"``), built under ``base`` the first time these settings are asked for in this
    process and shared after that: a test that changes the run's files works on a copy."""
    from actgeo_tests.support.tiny_model import tiny_gemma2

    base = Path(base)
    values = tiny_values(**{"model": None, **overrides})
    values.setdefault("model", tiny_gemma2(base / "model"))
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]
    key = (str(base.resolve()), digest)
    if key not in _RUNS:
        _RUNS[key] = _build(base / f"run-{digest}", values)
    return _RUNS[key]


def _build(folder: Path, values: dict[str, Any]) -> FinishedRun:
    """Every stage of ``actgeo run`` in lineage, as the assets call them, then their blocking checks."""
    from actgeo_assets.lib.stages.activations import capture_shard, compute_mean, normalize_shard
    from actgeo_assets.lib.stages.cards import audit_cards, build_run_cards
    from actgeo_assets.lib.stages.graph import (
        compute_tile,
        load_components,
        load_record,
        merge_components,
        spot_check_edges,
    )

    settings = tiny_settings(**values)
    data_dir = folder / "data"
    layout = RunLayout(data_dir, settings.profile)
    db_url = f"sqlite:///{data_dir / 'actgeo.sqlite'}"
    for shard in settings.shard_keys:
        capture_shard(settings, layout, shard)
    compute_mean(settings, layout)
    for shard in settings.shard_keys:
        normalize_shard(settings, layout, shard)
    for pair in settings.pair_keys:
        compute_tile(settings, layout, pair)
    merge_components(settings, layout)
    spot = spot_check_edges(settings, layout, load_components(settings, layout))
    if spot.violations:
        raise AssertionError(f"tiny run {folder}: float64 spot check failed: {spot}")
    cards = build_run_cards(settings, layout, db_url)
    failed = [c.name for c in audit_cards(settings, db_url, cards) if not c.passed]
    if failed:
        raise AssertionError(f"tiny run {folder}: card checks failed: {failed}")
    return FinishedRun(settings=settings, layout=layout, root=layout.root, data_dir=data_dir, db_url=db_url,
                       overrides=values, record=load_record(settings, layout).to_json())


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


def split_corpus(folder: Path, names: tuple[str, ...] = ("a", "b", "c"), docs_per_file: int = 14) -> list[Path]:
    """The fixture corpus split into one ``.jsonl`` file per name (``docs_per_file`` documents each) under
    ``folder``: a corpus to run with ``shard_by="file"``."""
    lines = MINI_CORPUS.read_text().splitlines()
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, name in enumerate(names):
        f = folder / f"{name}.jsonl"
        f.write_text("\n".join(lines[i * docs_per_file:(i + 1) * docs_per_file]) + "\n")
        files.append(f)
    return files
