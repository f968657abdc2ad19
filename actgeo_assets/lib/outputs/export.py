"""A finished run's activations as Parquet files that the ``datasets`` library (or pandas, pyarrow, polars,
DuckDB) loads: one file per shard, ``{out_dir}/{shard}.parquet``, each carrying the run's id, run key and description in its schema metadata (key ``actgeo``).

Each file has one row per activation of the run's components (the rows normalization kept, in global
row order) with the columns

- ``activation_normalized``: fixed-size list of float32 ``[d]``, the unit row the components were built from;
- ``activation_raw``: fixed-size list of float32 ``[d]``, the residual-stream row the model computed;
- ``row`` (global row, as in ``labels.npy``), ``component`` (canonical label at the run's threshold,
  0 = the largest), ``shard``, ``shard_row``, ``token``, ``token_id``, ``position``, ``char_start``,
  ``char_end``, ``doc_id``, ``source``, ``pile_analogue`` and any other provenance column of the shard's
  documents table (not the document text).

Load with::

    from datasets import load_dataset
    ds = load_dataset("parquet", data_files="data/demo/dataset/*.parquet", split="train").with_format("numpy")
    x = ds["activation_normalized"]  # float32 [N, d]

Files are written in row batches (``batch_rows`` rows per Parquet row group, read from the memory-mapped
shard files), one shard at a time, each to a temporary name renamed into place; a run of any size needs
memory for one shard's token table and one batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actgeo_assets.lib.outputs.results import RunResults, open_run
from actgeo_assets.lib.store.layout import atomic_path, json_default

#: Which activations an export can hold, and their column names.
ACTIVATION_COLUMNS = {"normalized": "activation_normalized", "raw": "activation_raw"}
#: Key of the Parquet schema metadata that says which run (and export format) a file is of.
METADATA_KEY = b"actgeo"
FORMAT = "actgeo.dataset-export.v1"


def _fixed_list(rows: np.ndarray) -> pa.FixedSizeListArray:
    """float32 [m, d] -> a FixedSizeListArray of m lists of d float32 (no copy of a contiguous array)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), type=pa.float32()), rows.shape[1])


def _check_out_dir(out: Path, shards: Sequence[str]) -> list[Path]:
    """Parquet files of an earlier export in ``out`` that this one does not rewrite (to remove); ValueError
    naming the other files of ``out`` (loading the folder or ``*.parquet`` would mix them in)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise ValueError(f"export folder {out} exists and is not a folder")
    ours = {f"{s}.parquet" for s in shards}
    stale, others = [], []
    for p in sorted(out.iterdir()):
        if p.name in ours or p.name.startswith("."):
            continue
        if p.suffix == ".parquet" and _export_metadata(p) is not None:
            stale.append(p)
        else:
            others.append(p.name)
    if others:
        raise ValueError(f"export folder {out} holds files no actgeo export wrote ({', '.join(others[:5])}); "
                         "choose an empty or new folder")
    return stale


def _export_metadata(path: Path) -> dict[str, Any] | None:
    """The ``actgeo`` schema metadata of a Parquet file an export wrote, or None (not Parquet, or not ours)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None
    except (OSError, ValueError, pa.ArrowException):
        return None


def export_dataset(
    run: RunResults | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    activations: Sequence[str] = ("normalized", "raw"),
    batch_rows: int = 8192,
) -> list[Path]:
    """Write ``run``'s activations, tokens and provenance as ``{out_dir}/{shard}.parquet`` (module
    docstring); returns the Parquet files in shard order.

    ``run``: a :class:`RunResults` or a run folder. ``activations``: which of ``normalized`` and ``raw``
    to include (at least one). ``batch_rows``: rows per batch (and Parquet row group). Parquet files of an
    earlier export into the same folder that this export does not rewrite are removed; ValueError when the
    folder holds other Parquet files."""
    res = run if isinstance(run, RunResults) else open_run(run)
    kinds = list(dict.fromkeys(activations))
    bad = [k for k in kinds if k not in ACTIVATION_COLUMNS]
    if bad or not kinds:
        raise ValueError(f"activations must be one or more of {', '.join(ACTIVATION_COLUMNS)}, got {list(activations)}")
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    out = Path(out_dir).expanduser()
    stale = _check_out_dir(out, res.shards)
    out.mkdir(parents=True, exist_ok=True)
    labels = res.labels
    about = {"format": FORMAT, "run_folder": str(res.root), "run_id": res.run_id, "run_key": res.run_key,
             "description": res.description, "n": res.n,
             "activation_columns": [ACTIVATION_COLUMNS[k] for k in kinds]}
    written: list[Path] = []
    for shard in res.shards:
        tokens = res.shard_tokens(shard)
        sources = {k: res.shard_rows(shard, normalized=(k == "normalized")) for k in kinds}
        meta = tokens.reset_index(drop=True)
        meta.insert(1, "component", labels[meta["row"].to_numpy()])
        path = out / f"{shard}.parquet"
        with atomic_path(path, ".parquet") as tmp:
            writer: pq.ParquetWriter | None = None
            try:
                for a in range(0, max(len(meta), 1), int(batch_rows)):
                    b = min(a + int(batch_rows), len(meta))
                    cols: dict[str, Any] = {}
                    for k, (x, idx) in sources.items():
                        cols[ACTIVATION_COLUMNS[k]] = _fixed_list(x[a:b] if idx is None else x[idx[a:b]])
                    table = pa.Table.from_pandas(meta.iloc[a:b], preserve_index=False)
                    for i, (name, arr) in enumerate(cols.items()):
                        table = table.add_column(i, name, arr)
                    if writer is None:
                        schema = table.schema.with_metadata({**(table.schema.metadata or {}),
                                                             METADATA_KEY: json.dumps({**about, "shard": shard}, default=json_default)})
                        writer = pq.ParquetWriter(tmp, schema)
                    table = table.replace_schema_metadata(schema.metadata)
                    writer.write_table(table, row_group_size=int(batch_rows))
            finally:
                if writer is not None:
                    writer.close()
        written.append(path)
    for p in stale:
        p.unlink()
    return written
