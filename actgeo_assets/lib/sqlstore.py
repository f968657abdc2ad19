"""The SQL table of component metadata (SQLAlchemy 2.0 Core; SQLite files and PostgreSQL).

Two tables:

- ``actgeo_runs``: one row per run: ``run_id`` (primary key, 12 hex chars = :meth:`RunSettings.run_id`),
  ``run_key`` (JSON text), ``description``, ``n_components``, ``largest``, ``non_singleton``, ``singletons``,
  ``top_sizes`` (JSON), ``created_at`` (UTC).
- ``actgeo_components``: one row per card: primary key ``(run_id, rank)``; ``label_id``, ``size``,
  ``provisional_label``, ``n_documents`` and JSON text columns ``source_mix``, ``top_tokens``, ``contexts``,
  ``readout``.

JSON is stored as text so the schema is the same on every backend. :func:`write_results` is idempotent:
it replaces a run's rows in one transaction (delete, then insert), so rerunning never duplicates.
No engine is created at import time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from actgeo_assets.lib.cards import Card
from actgeo_assets.lib.layout import json_default
from actgeo_assets.lib.settings import mask_passwords, mask_url, run_id_of

metadata = sa.MetaData()

runs_table = sa.Table(
    "actgeo_runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("run_key", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("n_components", sa.BigInteger),
    sa.Column("largest", sa.BigInteger),
    sa.Column("non_singleton", sa.BigInteger),
    sa.Column("singletons", sa.BigInteger),
    sa.Column("top_sizes", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

components_table = sa.Table(
    "actgeo_components",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("actgeo_runs.run_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("label_id", sa.BigInteger, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("provisional_label", sa.Text, nullable=False),
    sa.Column("n_documents", sa.BigInteger, nullable=False),
    sa.Column("source_mix", sa.Text, nullable=False),
    sa.Column("top_tokens", sa.Text, nullable=False),
    sa.Column("contexts", sa.Text, nullable=False),
    sa.Column("readout", sa.Text),
)

RUN_JSON = ("run_key", "top_sizes")
COMPONENT_JSON = ("source_mix", "top_tokens", "contexts", "readout")


def _dumps(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, default=json_default, ensure_ascii=False)


def _safe(url: str | URL) -> str:
    """``url`` for a message: the password shown as ``***``, also when SQLAlchemy cannot parse it."""
    return mask_url(url)


def make_engine(url: str | URL) -> Engine:
    """A SQLAlchemy engine for ``url``; for a SQLite file, its parent folder is created.

    Raises ValueError naming the URL (password hidden) when it cannot be parsed or names an unknown or
    uninstalled dialect/driver.
    """
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:  # its text may quote the URL: not chained
        raise ValueError(f"not a database URL: {_safe(url)!r} ({type(exc).__name__})") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sa.create_engine(parsed)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise ValueError(f"cannot use database URL {_safe(parsed)!r}: {mask_passwords(str(exc))}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_fk_on)
    return engine


def _sqlite_fk_on(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@contextmanager
def _engine(url: str | URL) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _component_row(run_id: str, card: Card) -> dict[str, Any]:
    d = card.to_dict()
    return {
        "run_id": run_id,
        "rank": int(d["rank"]),
        "label_id": int(d["label_id"]),
        "size": int(d["size"]),
        "provisional_label": str(d["provisional_label"]),
        "n_documents": int(d["n_documents"]),
        "source_mix": _dumps(d["source_mix"]),
        "top_tokens": _dumps(d["top_tokens"]),
        "contexts": _dumps(d["contexts"]),
        "readout": _dumps(d["readout"]),
    }


def write_results(
    url: str | URL,
    run_key: Mapping[str, Any],
    summary: Mapping[str, Any],
    cards: Sequence[Card],
    description: str = "",
) -> int:
    """Store one run's summary and cards; return the number of component rows written (= ``len(cards)``).

    Idempotent: in one transaction the run's existing rows are deleted and the new ones inserted, so a
    rerun replaces values and never duplicates. Cards must have distinct ranks (ValueError otherwise);
    cards of sub-components (``subcomponent_of`` set) are not stored here.
    """
    main = [c for c in cards if not c.subcomponent_of]
    ranks = [c.rank for c in main]
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"cards have duplicate ranks: {sorted(ranks)}")
    rid = run_id_of(run_key)
    run_row = {
        "run_id": rid,
        "run_key": _dumps(dict(run_key)),
        "description": description,
        "n_components": _int_or_none(summary.get("n_components")),
        "largest": _int_or_none(summary.get("largest")),
        "non_singleton": _int_or_none(summary.get("non_singleton")),
        "singletons": _int_or_none(summary.get("singletons")),
        "top_sizes": _dumps([int(s) for s in summary.get("top_sizes", [])]),
        "created_at": datetime.now(UTC),
    }
    rows = [_component_row(rid, c) for c in main]
    with _engine(url) as engine, engine.begin() as conn:
        metadata.create_all(conn, checkfirst=True)
        conn.execute(sa.delete(components_table).where(components_table.c.run_id == rid))
        conn.execute(sa.delete(runs_table).where(runs_table.c.run_id == rid))
        conn.execute(sa.insert(runs_table), [run_row])
        if rows:
            conn.execute(sa.insert(components_table), rows)
    return len(rows)


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _read(url: str | URL, stmt: sa.Select[Any], json_cols: Sequence[str]) -> pd.DataFrame:
    with _engine(url) as engine, engine.connect() as conn:
        insp = sa.inspect(conn)
        if not insp.has_table(stmt.get_final_froms()[0].name):  # type: ignore[attr-defined]
            cols = [c.name for c in stmt.selected_columns]
            return pd.DataFrame(columns=cols)
        result = conn.execute(stmt)
        cols = list(result.keys())
        records = [dict(r) for r in result.mappings()]
    # decode before building the frame: pandas would turn None in a text column into NaN
    for rec in records:
        for col in json_cols:
            v = rec[col]
            rec[col] = None if v is None else json.loads(v)
    df = pd.DataFrame(records, columns=cols)
    for col in json_cols:  # keep Python objects (None stays None)
        df[col] = pd.Series([r[col] for r in records], dtype=object, index=df.index)
    return df


def read_components(url: str | URL, run_id: str) -> pd.DataFrame:
    """The run's component rows, ordered by rank; JSON columns decoded (dicts/lists). Empty if none."""
    stmt = (sa.select(components_table).where(components_table.c.run_id == run_id)
            .order_by(components_table.c.rank))
    return _read(url, stmt, COMPONENT_JSON)


def read_runs(url: str | URL) -> pd.DataFrame:
    """All runs, newest first; ``run_key`` and ``top_sizes`` decoded. Empty if none."""
    stmt = sa.select(runs_table).order_by(runs_table.c.created_at.desc(), runs_table.c.run_id)
    return _read(url, stmt, RUN_JSON)
