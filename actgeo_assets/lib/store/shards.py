"""Storage of one raw-activation shard on top of :mod:`actgeo_assets.lib.store.layout`.

Files of shard ``s`` (all under ``{run}/raw/``, each written atomically):

- ``s.npy``: float32 ``[n, d]`` activations (memory-mappable): exactly what the model computed when it
  runs in float32, bfloat16 or float16, and no overflow where float16 storage would (above 65,504),
- ``s.tokens.parquet``: the token table (row, doc_id, position, token_id, token, char_start, char_end,
  source), ``n`` rows, ``row == 0..n-1``,
- ``s.docs.parquet``: the documents the tokens come from (doc_id, source, pile_analogue, work, text; ``work``:
  the work a text is part of where the corpus names it, e.g. the builtin corpus' Gutenberg texts; shards
  written before it existed lack the column),
- ``s.json``: the sidecar, written LAST: a shard is complete only when its sidecar exists (a rewrite
  removes the old sidecar first). Keys: ``format``, ``shard``, ``model``, ``revision``, ``layer``,
  ``dtype``, ``shape``, ``normalization`` (``"none"``), ``capture`` (the capture settings the caller
  passed, e.g. ``RunSettings.capture_key()`` plus the shard's budget), ``stats`` (from capture),
  ``sha256`` (of the .npy), ``files``, ``files_sha256`` (sha256 of each of the three files, by the keys
  of ``files``), ``n_docs``, ``sources`` (tokens per source), ``created_at``.

``raw/next_norm.npz`` (the next block's input norm, for ``rmsnorm``) has its sha256 in ``next_norm.json``.
Every read verifies the files against the recorded sha256 (``layout.verify_file``: hashed once per file
version per process) and raises :class:`ShardError` naming the file that differs.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from actgeo_assets.lib.config.constants import RAW_DTYPE, TOKEN_COLUMNS
from actgeo_assets.lib.store.layout import (
    IntegrityError,
    RunLayout,
    atomic_path,
    jsonable,
    load_json,
    save_json,
    save_npy,
    sha256_file,
    verify_file,
)

FORMAT = "actgeo.raw-shard.v1"


class ShardError(ValueError):
    """A shard is missing, incomplete, corrupted or from other capture settings. The message names the
    file and what differs."""


class CapturedRows(Protocol):
    """What a shard stores of one capture (``capture.residual.CaptureResult`` is one): ``acts`` ``[n, d]``,
    ``tokens`` (columns ``TOKEN_COLUMNS``, ``n`` rows), ``stats``. Declared here so storage does not import
    the capture layer above it."""

    acts: np.ndarray
    tokens: pd.DataFrame
    stats: dict[str, Any]


class StoredDocument(Protocol):
    """What a shard stores of one document (``capture.corpus.Document``, a frozen dataclass, is one)."""

    @property
    def doc_id(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def pile_analogue(self) -> str | None: ...


@dataclass
class RawShard:
    """One shard read back: ``acts`` ``[n, d]`` in the sidecar's dtype (float32; float16 in shards written
    before it was the default), a read-only memory map by default; ``tokens`` (``n`` rows), ``docs``
    (doc_id, source, pile_analogue, work, text; older shards lack work) and ``meta`` (the sidecar)."""

    acts: np.ndarray
    tokens: pd.DataFrame
    docs: pd.DataFrame
    meta: dict[str, Any]


def write_raw_shard(
    layout: RunLayout,
    shard: str,
    result: CapturedRows,
    docs: Sequence[StoredDocument],
    meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write shard ``shard`` (see module docstring) and return its sidecar (``extra``: more top-level fields
    of the sidecar, e.g. a stage record's other input fields).

    ``docs`` may be the whole shard's documents; only those referenced by the token table are stored.
    ``meta`` holds the capture settings (``model`` and ``layer`` in it name the run; they default to the
    capture's own stats) and goes into the sidecar as ``capture``.
    """
    acts = result.acts
    if acts.ndim != 2 or acts.shape[0] != len(result.tokens):
        raise ValueError(
            f"shard {shard}: activations {acts.shape} do not match the token table ({len(result.tokens)} rows)"
        )
    sidecar_path = layout.raw_meta(shard)
    sidecar_path.unlink(missing_ok=True)  # the shard is incomplete from here until the new sidecar lands
    stored = acts if acts.dtype == RAW_DTYPE else acts.astype(RAW_DTYPE)  # float16 -> float32 is exact
    npy = layout.raw(shard)
    save_npy(npy, stored)
    digest = sha256_file(npy)

    tokens = result.tokens.reset_index(drop=True)
    missing_cols = [c for c in TOKEN_COLUMNS if c not in tokens.columns]
    if missing_cols:
        raise ValueError(f"shard {shard}: token table lacks columns {missing_cols}")
    _write_parquet(layout.tokens(shard), tokens)

    used = set(tokens["doc_id"].unique().tolist())
    kept_docs = [d for d in docs if d.doc_id in used]
    absent = used - {d.doc_id for d in kept_docs}
    if absent:
        raise ValueError(f"shard {shard}: tokens refer to documents not given: {sorted(absent)[:10]}")
    doc_table = pd.DataFrame(
        {
            "doc_id": np.asarray([d.doc_id for d in kept_docs], dtype=np.int64),
            "source": pd.Series([d.source for d in kept_docs], dtype=object),
            "pile_analogue": pd.Series([d.pile_analogue for d in kept_docs], dtype=object),
            # what work the text is (a part) of, where the corpus names it (getattr: older document types)
            "work": pd.Series([getattr(d, "work", None) for d in kept_docs], dtype=object),
            "text": pd.Series([d.text for d in kept_docs], dtype=object),
        }
    )
    _write_parquet(layout.docs(shard), doc_table)
    files_sha256 = {"acts": digest, "tokens": sha256_file(layout.tokens(shard)), "docs": sha256_file(layout.docs(shard))}

    stats = dict(result.stats)
    sidecar = {
        "format": FORMAT,
        "shard": shard,
        "model": meta.get("model", stats.get("model")),
        "revision": stats.get("revision"),
        "layer": meta.get("layer", stats.get("layer")),
        "dtype": str(stored.dtype),
        "shape": [int(stored.shape[0]), int(stored.shape[1])],
        "normalization": "none",
        "capture": jsonable(meta),
        "stats": jsonable(stats),
        "sha256": digest,
        "files": {
            "acts": npy.name,
            "tokens": layout.tokens(shard).name,
            "docs": layout.docs(shard).name,
        },
        "files_sha256": files_sha256,
        "n_docs": len(kept_docs),
        "sources": {str(k): int(v) for k, v in tokens["source"].value_counts().sort_index().items()},
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **jsonable(extra or {}),
    }
    save_json(sidecar_path, sidecar)
    return sidecar


def read_raw_shard(
    layout: RunLayout,
    shard: str,
    expect: dict[str, Any] | None = None,
    mmap: bool = True,
    verify: bool = True,
) -> RawShard:
    """Read shard ``shard`` back, checking it against its sidecar and ``expect``.

    Always checked: the sidecar exists and parses, the .npy loads with the sidecar's dtype and shape,
    the token table has ``shape[0]`` rows, the docs table exists. ``verify=True`` (the default) also checks
    the .npy and both tables against the sha256 the sidecar recorded (each file version is hashed once per
    process). ``expect``: capture settings that must equal the sidecar's ``capture`` entries (and
    ``model``/``layer``), e.g. ``settings.capture_key()``.

    Raises :class:`ShardError` naming the file and what differs.
    """
    sidecar_path = layout.raw_meta(shard)
    if not sidecar_path.exists():
        raise ShardError(
            f"shard {shard} is missing or incomplete: no sidecar {sidecar_path} "
            "(it is written last; re-run the capture of this shard)"
        )
    try:
        meta = load_json(sidecar_path)
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"shard {shard}: sidecar {sidecar_path} is unreadable: {exc}") from exc
    if not isinstance(meta, dict) or "shape" not in meta:
        raise ShardError(f"shard {shard}: sidecar {sidecar_path} is not an actgeo raw-shard sidecar")

    if expect:
        diffs = []
        for key, want in expect.items():
            have = meta.get("capture", {}).get(key, meta.get(key, "<absent>"))
            if jsonable(have) != jsonable(want):
                diffs.append(f"{key}: stored {have!r}, expected {want!r}")
        if diffs:
            raise ShardError(
                f"shard {shard} ({sidecar_path}) was captured with other settings: " + "; ".join(diffs)
            )

    npy = layout.raw(shard)
    if not npy.exists():
        raise ShardError(f"shard {shard}: activation file {npy} is missing")
    if verify:
        recorded = meta.get("files_sha256") or {}
        try:
            verify_file(npy, meta.get("sha256"))
            verify_file(layout.tokens(shard), recorded.get("tokens"))
            verify_file(layout.docs(shard), recorded.get("docs"))
        except IntegrityError as exc:
            raise ShardError(f"shard {shard}: {exc}") from None
    try:
        acts = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure to parse the file is corruption
        raise ShardError(f"shard {shard}: activation file {npy} is corrupted: {exc}") from exc
    shape = tuple(meta["shape"])
    if acts.shape != shape or str(acts.dtype) != meta.get("dtype", "float16"):
        raise ShardError(
            f"shard {shard}: activation file {npy} holds {acts.dtype} {acts.shape}, "
            f"sidecar says {meta.get('dtype')} {shape}"
        )

    tokens = _read_parquet(layout.tokens(shard), shard)
    if len(tokens) != shape[0]:
        raise ShardError(
            f"shard {shard}: token table {layout.tokens(shard)} has {len(tokens)} rows, expected {shape[0]}"
        )
    docs = _read_parquet(layout.docs(shard), shard)
    return RawShard(acts=acts, tokens=tokens, docs=docs, meta=meta)


def write_next_norm(layout: RunLayout, norm: dict[str, Any]) -> Path:
    """Store ``next_block_norm``'s dict as ``raw/next_norm.npz`` (for the ``rmsnorm`` normalization)."""
    path = layout.next_norm
    arrays: dict[str, Any] = {
        "weight": np.asarray(norm["weight"], dtype=np.float32),
        "eps": np.float64(norm["eps"]),
        "kind": np.str_(norm["kind"]),
        "module": np.str_(norm.get("module") or ""),
    }
    if norm.get("bias") is not None:
        arrays["bias"] = np.asarray(norm["bias"], dtype=np.float32)
    with atomic_path(path, ".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    save_json(next_norm_meta(layout), {"sha256": sha256_file(path)})
    return path


def next_norm_meta(layout: RunLayout) -> Path:
    """``raw/next_norm.json``: the sha256 of ``raw/next_norm.npz``."""
    return layout.next_norm.with_suffix(".json")


def verify_next_norm(layout: RunLayout) -> Path:
    """``raw/next_norm.npz`` checked against its recorded sha256 (``IntegrityError`` naming it)."""
    try:
        recorded = load_json(next_norm_meta(layout)).get("sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return verify_file(layout.next_norm, recorded)


def read_next_norm(layout: RunLayout) -> dict[str, Any]:
    """Inverse of :func:`write_next_norm`, verified against its sha256; ``ShardError`` when absent,
    changed or unreadable."""
    path = layout.next_norm
    try:
        verify_next_norm(layout)
    except IntegrityError as exc:
        raise ShardError(f"next-block norm: {exc}") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {
                "weight": z["weight"].astype(np.float32),
                "bias": z["bias"].astype(np.float32) if "bias" in z.files else None,
                "eps": float(z["eps"]),
                "kind": str(z["kind"]),
                "module": str(z["module"]) or None,
            }
    except (OSError, KeyError, ValueError) as exc:
        raise ShardError(f"next-block norm file {path} is missing or unreadable: {exc}") from exc


def _write_parquet(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path, ".parquet") as tmp:
        table.to_parquet(tmp, index=False)


def _read_parquet(path: Path, shard: str) -> pd.DataFrame:
    if not path.exists():
        raise ShardError(f"shard {shard}: {path} is missing")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is corruption
        raise ShardError(f"shard {shard}: {path} is corrupted: {exc}") from exc
