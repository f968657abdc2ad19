"""The SQL table of component metadata (SQLAlchemy 2.0 Core; SQLite files and PostgreSQL).

Two tables:

- ``actgeo_runs``: one row per run: ``run_id`` (primary key, 12 hex chars = :meth:`RunSettings.run_id`),
  ``run_key`` (JSON text), ``description``, ``n_components``, ``largest``, ``non_singleton``, ``singletons``,
  ``top_sizes`` (JSON), ``created_at`` (UTC); nullable: the token-identity baseline ``token_baseline``
  (JSON, ``lib.analysis.baseline.token_baseline``) with its headline figures ``share_one_token``, ``token_ami``,
  ``token_v_measure`` (over the small components' activations), ``token_ami_all``, ``token_v_measure_all`` (over
  every activation), ``corpus_duplicates`` (JSON counts of exact and near-duplicate documents), and the
  artefact controls ``artefacts`` (JSON), ``distinct_inputs``, ``activations_sharing_input``.
- ``actgeo_components``: one row per card: primary key ``(run_id, rank)``; ``label_id``, ``size``,
  ``provisional_label``, ``n_documents`` and JSON text columns ``source_mix``, ``top_tokens``, ``contexts``,
  ``readout`` (the mid-depth logit lens against the corpus mean); nullable: ``token_purity``,
  ``n_distinct_tokens``, ``next_tokens`` (JSON: the next tokens in the corpus with counts),
  ``n_next_unknown``, ``model_next`` (JSON: the model's predictions, ``[token, mean probability, top-1
  count]``), ``model_next_members``, ``n_inputs`` (distinct model inputs among the members), ``n_input_documents`` (their documents,
  each input counted once), ``n_early``
  (members at early positions), ``recall_token``, ``recall_held``, ``recall_total`` (the top token string's
  occurrences the component holds, of all in the run).

JSON is stored as text so the schema is the same on every backend. :func:`write_results` is idempotent:
it replaces a run's rows in one transaction (delete, then insert), so rerunning never duplicates; a table
created by an earlier version gains the nullable columns it lacks (``ALTER TABLE ... ADD COLUMN``) first.
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

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.config.keys import run_id_of
from actgeo_assets.lib.config.secrets import mask_passwords, mask_url
from actgeo_assets.lib.store.layout import json_default

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
    sa.Column("token_baseline", sa.Text),
    sa.Column("share_one_token", sa.Float),
    sa.Column("token_ami", sa.Float),
    sa.Column("token_v_measure", sa.Float),
    sa.Column("corpus_duplicates", sa.Text),
    sa.Column("token_ami_all", sa.Float),
    sa.Column("token_v_measure_all", sa.Float),
    sa.Column("distinct_inputs", sa.BigInteger),
    sa.Column("activations_sharing_input", sa.BigInteger),
    sa.Column("artefacts", sa.Text),
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
    sa.Column("token_purity", sa.Float),
    sa.Column("n_distinct_tokens", sa.BigInteger),
    sa.Column("next_tokens", sa.Text),
    sa.Column("n_next_unknown", sa.BigInteger),
    sa.Column("model_next", sa.Text),
    sa.Column("model_next_members", sa.BigInteger),
    sa.Column("n_inputs", sa.BigInteger),
    sa.Column("n_input_documents", sa.BigInteger),
    sa.Column("n_early", sa.BigInteger),
    sa.Column("recall_token", sa.Text),
    sa.Column("recall_held", sa.BigInteger),
    sa.Column("recall_total", sa.BigInteger),
)

#: Cards of the giant's sub-components at a higher threshold: the component columns, keyed also by that
#: threshold, with the parent's rank.
subcomponents_table = sa.Table(
    "actgeo_subcomponents",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("actgeo_runs.run_id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("threshold", sa.Float, primary_key=True),
    sa.Column("rank", sa.Integer, primary_key=True),
    sa.Column("parent_rank", sa.Integer, nullable=False),
    *[c.copy() for c in components_table.columns if c.name not in ("run_id", "rank")],
)

RUN_JSON = ("run_key", "top_sizes", "token_baseline", "corpus_duplicates", "artefacts")
COMPONENT_JSON = ("source_mix", "top_tokens", "contexts", "readout", "next_tokens", "model_next")


def _dumps(obj: Any) -> str | None:
    return None if obj is None else json.dumps(obj, default=json_default, ensure_ascii=False)


def _safe(url: str | URL) -> str:
    """``url`` for a message: the password shown as ``***``, also when SQLAlchemy cannot parse it."""
    return mask_url(url)


def make_engine(url: str | URL, connect_timeout: int | None = None) -> Engine:
    """A SQLAlchemy engine for ``url``; for a SQLite file, its parent folder is created.
    ``connect_timeout`` (seconds) bounds a PostgreSQL connection attempt.

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
    extra: dict[str, Any] = {}
    if connect_timeout is not None and parsed.get_backend_name() == "postgresql":
        extra["connect_args"] = {"connect_timeout": int(connect_timeout)}
    try:
        engine = sa.create_engine(parsed, **extra)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise ValueError(f"cannot use database URL {_safe(parsed)!r}: {mask_passwords(str(exc))}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_fk_on)
    return engine


def check_database(url: str | URL, connect_timeout: int = 15) -> None:
    """Connect to the database once and disconnect, before a run computes anything. ValueError naming the
    URL (password hidden) and why it failed (unreachable, refused, bad credentials, no such database)."""
    try:
        with _engine(url, connect_timeout) as engine, engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ValueError(
            f"cannot connect to the database {_safe(url)!r}: {mask_passwords(reason[0] if reason else type(exc).__name__)} "
            "(set database_url, --database-url or $ACTGEO_DATABASE_URL to a reachable database)") from None


def _sqlite_fk_on(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


@contextmanager
def _engine(url: str | URL, connect_timeout: int | None = None) -> Iterator[Engine]:
    engine = make_engine(url, connect_timeout)
    try:
        yield engine
    finally:
        engine.dispose()


def component_row(run_id: str, card: Card) -> dict[str, Any]:
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
        "token_purity": d.get("token_purity"),
        "n_distinct_tokens": d.get("n_distinct_tokens"),
        "next_tokens": _dumps(d.get("next_tokens")),
        "n_next_unknown": d.get("n_next_unknown"),
        "model_next": _dumps(d.get("model_next")),
        "model_next_members": d.get("model_next_members"),
        "n_inputs": d.get("n_inputs"),
        "n_input_documents": d.get("n_input_documents"),
        "n_early": d.get("n_early"),
        "recall_token": (d.get("recall") or {}).get("token"),
        "recall_held": (d.get("recall") or {}).get("held"),
        "recall_total": (d.get("recall") or {}).get("total"),
    }


def _add_missing_columns(conn: sa.Connection) -> list[str]:
    """Add the nullable columns a table created by an earlier version lacks; returns ``table.column`` of each
    added (idempotent: nothing the second time)."""
    insp = sa.inspect(conn)
    added = []
    for table in (runs_table, components_table, subcomponents_table):
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name in have or not col.nullable:
                continue
            q = conn.dialect.identifier_preparer
            conn.execute(sa.text(f"ALTER TABLE {q.quote(table.name)} ADD COLUMN {q.quote(col.name)} "
                                 f"{col.type.compile(dialect=conn.dialect)}"))
            added.append(f"{table.name}.{col.name}")
    return added


def write_results(
    url: str | URL,
    run_key: Mapping[str, Any],
    summary: Mapping[str, Any],
    cards: Sequence[Card],
    description: str = "",
    baseline: Mapping[str, Any] | None = None,
    duplicates: Mapping[str, Any] | None = None,
    artefacts: Mapping[str, Any] | None = None,
) -> int:
    """Store one run's summary and cards.
    ``baseline``: the run's token-identity baseline (``lib.analysis.baseline.token_baseline``: ``token_ami``
    and ``token_v_measure`` over the small components, ``*_all`` over every activation); ``duplicates``: the
    duplicate documents found in its corpus (counts); ``artefacts``: identical inputs and early positions
    (``lib.analysis.inputs.artefact_summary``).

    Idempotent: in one transaction the run's existing rows are deleted and the new ones inserted, so a
    rerun replaces values and never duplicates. Cards must have distinct ranks (ValueError otherwise);
    cards of sub-components (``subcomponent_of`` set) go to ``actgeo_subcomponents``, keyed by
    (threshold, rank). Returns the number of rows written to both.
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
        "token_baseline": _dumps(None if baseline is None else dict(baseline)),
        "share_one_token": _float_or_none((baseline or {}).get("share_one_token")),
        "token_ami": _float_or_none((baseline or {}).get("ami")),
        "token_v_measure": _float_or_none((baseline or {}).get("v_measure")),
        "corpus_duplicates": _dumps(None if duplicates is None else dict(duplicates)),
        "token_ami_all": _float_or_none(_whole(baseline, "ami")),
        "token_v_measure_all": _float_or_none(_whole(baseline, "v_measure")),
        "distinct_inputs": _int_or_none((artefacts or {}).get("n_inputs")),
        "activations_sharing_input": _int_or_none((artefacts or {}).get("rows_sharing_input")),
        "artefacts": _dumps(None if artefacts is None else dict(artefacts)),
    }
    rows = [component_row(rid, c) for c in main]
    subs = [{**component_row(rid, c), "threshold": float(c.threshold), "parent_rank": int(c.subcomponent_of)}
            for c in cards if c.subcomponent_of]
    keys = [(r["threshold"], r["rank"]) for r in subs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"sub-component cards have duplicate (threshold, rank): {sorted(keys)}")
    with _engine(url) as engine, engine.begin() as conn:
        metadata.create_all(conn, checkfirst=True)
        _add_missing_columns(conn)
        conn.execute(sa.delete(subcomponents_table).where(subcomponents_table.c.run_id == rid))
        conn.execute(sa.delete(components_table).where(components_table.c.run_id == rid))
        conn.execute(sa.delete(runs_table).where(runs_table.c.run_id == rid))
        conn.execute(sa.insert(runs_table), [run_row])
        if rows:
            conn.execute(sa.insert(components_table), rows)
        if subs:
            conn.execute(sa.insert(subcomponents_table), subs)
    return len(rows) + len(subs)


def _whole(baseline: Mapping[str, Any] | None, key: str) -> Any:
    """A figure of the token-string baseline over every activation (None when the baseline has none)."""
    for entry in (baseline or {}).get("baselines", []):
        if entry.get("grouping") == "token" and entry.get("coverage") == "all":
            return entry.get(key)
    return None


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def _read(url: str | URL, stmt: sa.Select[Any], json_cols: Sequence[str]) -> pd.DataFrame:
    with _engine(url) as engine, engine.connect() as conn:
        insp = sa.inspect(conn)
        table = stmt.get_final_froms()[0].name  # type: ignore[attr-defined]
        if not insp.has_table(table):
            cols = [c.name for c in stmt.selected_columns]
            return pd.DataFrame(columns=cols)
        existing = {c["name"] for c in insp.get_columns(table)}
        if any(c.name not in existing for c in stmt.selected_columns):  # a table of an earlier version
            stmt = stmt.with_only_columns(*[c for c in stmt.selected_columns if c.name in existing])
            json_cols = [c for c in json_cols if c in existing]
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


def read_subcomponents(url: str | URL, run_id: str) -> pd.DataFrame:
    """The run's sub-component cards, ordered by threshold and rank; JSON columns decoded. Empty if none."""
    t = subcomponents_table
    stmt = sa.select(t).where(t.c.run_id == run_id).order_by(t.c.threshold, t.c.rank)
    return _read(url, stmt, COMPONENT_JSON)


def read_runs(url: str | URL) -> pd.DataFrame:
    """All runs, newest first; ``run_key`` and ``top_sizes`` decoded. Empty if none."""
    stmt = sa.select(runs_table).order_by(runs_table.c.created_at.desc(), runs_table.c.run_id)
    return _read(url, stmt, RUN_JSON)


def delete_run(url: str | URL, run_id: str) -> dict[str, int]:
    """Delete every row of run ``run_id`` from each actgeo table, in one transaction (children first, so
    it holds without ``ON DELETE CASCADE``). Returns rows deleted per table name (0 where the table is
    absent); the tables themselves and other runs' rows stay."""
    deleted: dict[str, int] = {}
    with _engine(url) as engine, engine.begin() as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in (subcomponents_table, components_table, runs_table):
            if table.name in present:
                deleted[table.name] = int(conn.execute(sa.delete(table).where(table.c.run_id == run_id)).rowcount)
            else:
                deleted[table.name] = 0
    return deleted
