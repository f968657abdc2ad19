"""What is stale: content fingerprints of shard sources and outputs, and the next work to do.

Every output records the content hashes of what it was computed from:

- ``raw/{shard}.json``: ``capture.source_fingerprint`` (sha256 of the shard's corpus file, or of the whole
  corpus in split mode), ``sha256`` of the activations and ``files_sha256`` of its three files;
- ``normalized/{shard}.json``: ``raw_sha256``, ``mean_sha256`` (``center_l2`` only), its own ``sha256``
  and ``kept_sha256``;
- ``tiles/{pair}.json``: the two normalized ``sha256`` it joined, the thresholds and its own ``sha256``;
- ``mean.json``: the raw ``sha256`` of every shard it averaged, and its own;
- ``components/summary.json``: the ``tile_sha256`` it merged, ``labels_sha256`` and ``files_sha256``.

:func:`plan` compares them with what is on disk now and names the stale partitions stage by stage, so the
runner and the shard sensor recompute only what changed. It also checks every output file against the
sha256 recorded when it was written (``layout.verify_file``, hashed once per file version per process): a
missing, truncated or changed file makes its partition stale, with a warning naming the file
(:attr:`Plan.problems`), so a plain rerun heals it. A new shard file means its capture, its
normalization and the tiles that involve it (with ``l2``/``rmsnorm``; ``center_l2``'s mean moves with
every shard, so then every shard re-normalizes and every tile reruns, as the arithmetic requires).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actgeo_assets.lib.config.settings import RunSettings, split_pair_key
from actgeo_assets.lib.store.layout import IntegrityError, RunLayout, load_json, sha256_file, verify_file

log = logging.getLogger("actgeo")


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
        from actgeo_assets.lib import corpus

        fp = f"{settings.corpus}:recipe-v{getattr(corpus, '_RECIPE_VERSION', 0)}"
    else:
        fp = f"hub:{settings.corpus}:{settings.corpus_split}"
    return dict.fromkeys(settings.shard_keys, fp)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return load_json(path)
    except (OSError, ValueError):
        return None


@dataclass
class Plan:
    """Stale partitions per stage, in lineage order. Later stages assume earlier ones are done."""

    raw: list[str] = field(default_factory=list)
    mean: bool = False
    normalized: list[str] = field(default_factory=list)
    tiles: list[str] = field(default_factory=list)
    merge: bool = False
    #: Output files found missing, truncated or changed (one line each, naming the file and what reruns).
    problems: list[str] = field(default_factory=list)

    def intact(self, files: Iterable[tuple[Path, str | None]], reruns: str) -> bool:
        """Whether every ``(path, recorded sha256)`` matches; a problem naming the file otherwise."""
        for path, sha in files:
            try:
                verify_file(path, sha)
            except IntegrityError as exc:
                message = f"{exc.path} {exc.problem}: {reruns} is recomputed"
                log.warning(message)
                self.problems.append(message)
                return False
        return True

    def first_stage(self) -> tuple[str, list[str | None]] | None:
        """(asset name, partition keys) of the earliest stage with work, or None when all is current."""
        if self.raw:
            return "raw_activations", list(self.raw)
        if self.mean:
            return "activation_mean", [None]
        if self.normalized:
            return "normalized", list(self.normalized)
        if self.tiles:
            return "edge_tiles", list(self.tiles)
        if self.merge:
            return "components", [None]
        return None


def plan(settings: RunSettings, layout: RunLayout, fingerprints: dict[str, str] | None = None) -> Plan:
    """What must be recomputed for ``settings`` given the files under ``layout`` (see module docstring).

    A stage downstream of stale work is judged against the current files, so call again after running a
    stage (the runner and the sensor do).
    """
    fps = fingerprints if fingerprints is not None else source_fingerprints(settings)
    keys = settings.shard_keys
    capture = settings.capture_key()
    out = Plan()
    raw_sha: dict[str, str | None] = {}
    for s in keys:
        meta = _json(layout.raw_meta(s))
        ok = (meta is not None and layout.raw(s).exists()
              and all(meta.get("capture", {}).get(k) == v for k, v in capture.items())
              and meta.get("capture", {}).get("source_fingerprint") == fps.get(s))
        ok = ok and meta is not None and out.intact(
            [(layout.raw(s), meta.get("sha256")),
             *((f(s), (meta.get("files_sha256") or {}).get(k)) for k, f in (("tokens", layout.tokens),
                                                                             ("docs", layout.docs)))],
            f"raw_activations[{s}]")
        raw_sha[s] = meta.get("sha256") if ok and meta else None
        if not ok:
            out.raw.append(s)
    if settings.normalization == "rmsnorm" and keys and not out.raw:  # any capture rewrites next_norm.npz
        from actgeo_assets.lib.store.shards import next_norm_meta

        recorded = (_json(next_norm_meta(layout)) or {}).get("sha256")
        if not out.intact([(layout.next_norm, recorded)], f"raw_activations[{keys[0]}]"):
            out.raw.append(keys[0])
            raw_sha[keys[0]] = None
    uses_mean = settings.normalization == "center_l2"
    mean_meta = _json(layout.mean_meta)
    mean_sha = mean_meta.get("sha256") if mean_meta else None
    if uses_mean and (mean_meta is None or mean_meta.get("raw_sha256") != raw_sha
                      or not out.intact([(layout.mean, mean_sha)], "activation_mean")):
        out.mean = True
    norm_sha: dict[str, str | None] = {}
    for s in keys:
        meta = _json(layout.normalized_meta(s))
        ok = (meta is not None and layout.normalized(s).exists() and raw_sha[s] is not None
              and meta.get("raw_sha256") == raw_sha[s] and meta.get("normalization") == settings.normalization
              and (not uses_mean or (meta.get("mean_sha256") == mean_sha and not out.mean))
              and meta.get("prune_at") == settings.prune_at)
        pruned = ([(layout.shard_forest(s), meta.get("shard_forest_sha256"))]
                  if settings.prune_at is not None and meta is not None else [])
        ok = ok and meta is not None and out.intact(
            [(layout.normalized(s), meta.get("sha256")), (layout.kept(s), meta.get("kept_sha256")), *pruned],
            f"normalized[{s}]")
        norm_sha[s] = meta.get("sha256") if ok and meta else None
        if not ok:
            out.normalized.append(s)
    tile_sha: dict[str, str | None] = {}
    for p in settings.pair_keys:
        a, b = split_pair_key(p)
        meta = _json(layout.tile_meta(p))
        ok = (meta is not None and layout.tile(p).exists() and norm_sha[a] is not None and norm_sha[b] is not None
              and meta.get("normalized_sha256") == [norm_sha[a], norm_sha[b]]
              and meta.get("min_threshold") == settings.min_threshold
              and settings.threshold in meta.get("exact_at", [])
              and meta.get("prune_at") == settings.prune_at)
        ok = ok and meta is not None and out.intact([(layout.tile(p), meta.get("sha256"))], f"edge_tiles[{p}]")
        tile_sha[p] = meta.get("sha256") if ok and meta else None
        if not ok:
            out.tiles.append(p)
    summary = _json(layout.summary)
    out.merge = bool(summary is None or summary.get("run_key") != settings.run_key()
                     or summary.get("tile_sha256") != tile_sha or any(v is None for v in tile_sha.values()))
    if not out.merge and summary is not None:
        from actgeo_assets.lib.stages.graph import component_files

        recorded = summary.get("files_sha256") or {}
        out.merge = not out.intact([(layout.labels, summary.get("labels_sha256")),
                                    *((f, recorded.get(k)) for k, f in component_files(layout).items())],
                                   "components")
    return out
