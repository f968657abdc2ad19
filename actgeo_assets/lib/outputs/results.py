"""A finished run's files from Python (notebooks, scripts): :func:`open_run` and :class:`RunResults`.

Everything is read from the run folder (``{data_dir}/{profile}/``, :class:`RunLayout`); nothing is
recomputed and no database is needed. Each file whose writer recorded its sha256 (all but
``summary.json`` and ``cards.json``, which name the run) is checked against it (``layout.verify_file``,
hashed once per file version per process) before it is read, so a damaged file raises
:class:`IntegrityError` naming it instead of giving a wrong answer. No dagster import.

Row order: global row ``g`` (``0 <= g < N``) is the ``g``-th row kept by normalization over the shards in
order (``components/offsets.json``): ``labels[g]``, ``tokens.loc[g]``, and row ``g - offset`` of that
shard's :meth:`RunResults.activations` are the same activation.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.config.profiles import PROFILES
from actgeo_assets.lib.config.settings import SETTINGS, RunSettings
from actgeo_assets.lib.config.sources import resolve_settings
from actgeo_assets.lib.graph import SingleLinkageForest
from actgeo_assets.lib.outputs.sql import COMPONENT_JSON, component_row, components_table, subcomponents_table
from actgeo_assets.lib.store.layout import RunLayout, load_json, resolve_data_dir, verify_file

#: Columns of :attr:`RunResults.tokens` (index: the global row).
TOKEN_TABLE_COLUMNS = ("row", "shard", "shard_row", "doc_id", "position", "token_id", "token", "char_start",
                       "char_end", "source", "pile_analogue")


class RunNotFinished(ValueError):
    """The folder is not a finished actgeo run: the message names the missing or inconsistent file."""


def _existing(path: str | os.PathLike[str]) -> Path:
    """``path`` from the working directory when it exists there, else from the project root (as
    ``data_dir`` settings are read), absolute."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    return resolve_data_dir(p)


def open_run(path: str | os.PathLike[str], run: str | None = None) -> RunResults:
    """The finished run in folder ``path`` (e.g. ``data/demo``), or with ``run`` given, the run named
    ``run`` (its profile, e.g. ``demo``) in the data directory ``path`` (e.g. ``data``). A relative path is
    taken from the working directory, else from the project root.

    Raises :class:`RunNotFinished` naming the first file a finished run has and this folder lacks (or,
    for a data directory given without ``run``, the runs in it)."""
    root = _existing(path) / run if run else _existing(path)
    if not root.is_dir():
        raise RunNotFinished(f"no run folder {root}")
    return RunResults(root)


class RunResults:
    """One finished run's results, read lazily from its folder ``root``.

    ``summary``: ``components/summary.json`` (its ``summary`` key is the study's table); ``settings``: the
    settings the run recorded; ``labels``: int64 ``[N]`` canonical labels at the run's threshold;
    ``components``: the ``actgeo_components`` SQL table's rows of this run as a DataFrame;
    :meth:`card`; :meth:`labels_at` any threshold the forest covers; ``tokens``: one row per activation;
    :meth:`activations` of a shard."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.layout = RunLayout(self.root.parent, self.root.name)
        lay = self.layout
        if not lay.summary.is_file():
            runs = sorted(p.parent.parent.name for p in self.root.glob("*/components/summary.json"))
            if runs:
                raise RunNotFinished(f"{self.root} is a data directory, not a run folder: name a run, e.g. "
                                     f"open_run({str(self.root)!r}, {runs[0]!r}) (runs: {', '.join(runs)})")
            raise RunNotFinished(f"{self.root} is not a finished actgeo run: {lay.summary} is missing "
                                 "(run `actgeo run` to finish it)")
        self.summary: dict[str, Any] = load_json(lay.summary)
        off = load_json(self._verified(lay.offsets, self.summary.get("files_sha256", {}).get("offsets")))
        #: global row offset and number of rows of each shard, in row order
        self.offsets: dict[str, int] = {str(k): int(v) for k, v in off["offsets"].items()}
        self.sizes: dict[str, int] = {str(k): int(v) for k, v in off["sizes"].items()}
        self.shards: list[str] = sorted(self.offsets, key=self.offsets.__getitem__)
        self.n = int(self.summary["n"])
        wanted = [lay.labels, lay.forest, lay.cards]
        for s in self.shards:
            wanted += [lay.raw_meta(s), lay.raw(s), lay.tokens(s), lay.docs(s), lay.normalized_meta(s),
                       lay.normalized(s), lay.kept(s)]
        missing = [p for p in wanted if not p.is_file()]
        if missing:
            raise RunNotFinished(f"{self.root} is not a finished actgeo run: {missing[0]} is missing"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self._cards = load_json(lay.cards)
        if self._cards.get("run_id") != self.run_id:
            raise RunNotFinished(f"{lay.cards} is of run {self._cards.get('run_id')}, the components of run "
                                 f"{self.run_id}: the cards are stale (run `actgeo run` to finish the run)")
        if sum(self.sizes.values()) != self.n:
            raise RunNotFinished(f"{lay.offsets} counts {sum(self.sizes.values())} rows, {lay.summary} {self.n}")

    # --- what the run recorded

    @property
    def run_id(self) -> str:
        """12 hex chars: the run's id in its files and the SQL tables."""
        return str(self.summary["run_id"])

    @property
    def run_key(self) -> dict[str, Any]:
        """What determines the components (``RunSettings.run_key`` of the run's settings)."""
        return dict(self.summary["run_key"])

    @property
    def description(self) -> str:
        return str(self.summary.get("description", ""))

    @functools.cached_property
    def settings(self) -> RunSettings:
        """The run's settings: every value of its run key (model, layer, corpus, shards, budget, context,
        normalization, threshold, min_threshold) as recorded; ``sweep`` = the forest's exact thresholds (the
        run's sweep and its threshold) and ``subcard_threshold`` as the cards recorded; the others (device,
        batch size, card ranks, ...) do not change the components and are the profile's."""
        values = {k: v for k, v in self.run_key.items() if k in SETTINGS}
        values["sweep"] = list(self.forest.exact_at)
        values["subcard_threshold"] = self._cards.get("subcard_threshold")
        profile = self.root.name if self.root.name in PROFILES else None
        return resolve_settings([(f"profile of {self.root}", {"profile": profile}),
                                 (f"run key in {self.layout.summary}", values)])

    def summary_text(self) -> str:
        """The study's summary table as `actgeo run` prints it."""
        from actgeo_assets.lib.outputs.report import format_summary

        return format_summary(self.summary["summary"], f"run: {self.description}")

    # --- components

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """int64 [N] canonical labels at the run's threshold (0 = the largest component = rank 1)."""
        labels = np.load(self._verified(self.layout.labels, self.summary.get("labels_sha256")), allow_pickle=False)
        if labels.shape != (self.n,):
            raise RunNotFinished(f"{self.layout.labels} has shape {labels.shape}, the run has {self.n} rows")
        return labels

    @functools.cached_property
    def forest(self) -> SingleLinkageForest:
        """The merged single-linkage forest (``components/forest.npz``): the whole hierarchy."""
        path = self._verified(self.layout.forest, self.summary.get("files_sha256", {}).get("forest"))
        forest = SingleLinkageForest.load(path)
        if forest.n != self.n:
            raise RunNotFinished(f"{path} spans {forest.n} rows, the run has {self.n}")
        return forest

    def labels_at(self, threshold: float) -> np.ndarray:
        """int64 [N] canonical labels of the components at cosine ``threshold``, cut from the forest (no
        recompute). Exact (float64 rule) at the forest's ``exact_at`` thresholds; elsewhere within its
        ``error_bound``. ValueError when ``threshold`` is outside ``[min_threshold, exact_up_to or 1]``."""
        f = self.forest
        t = float(threshold)
        low, high = f.min_threshold, f.exact_up_to if f.exact_up_to is not None else 1.0
        if not np.isfinite(t) or (low is not None and t < low) or t > high:
            why = ("it is not a number" if not np.isfinite(t) else
                   f"below {low} the forest holds no edge (rerun with a lower min_threshold)"
                   if low is not None and t < low else
                   f"above {high} the forest was pruned" if f.exact_up_to is not None else "a cosine is at most 1")
            raise ValueError(f"threshold {threshold} is outside the range this run's forest covers, "
                             f"[{low}, {high}] ({self.layout.forest}): {why}")
        return f.labels_at(t)

    @functools.cached_property
    def components(self) -> pd.DataFrame:
        """One row per card of the run's components, with the columns of the SQL table ``actgeo_components``
        (built by the SQL writer's row function; JSON columns decoded, as ``sqlstore.read_components``)."""
        return self._table([Card.from_dict(d) for d in self._cards.get("cards", [])], components_table.columns)

    @functools.cached_property
    def subcomponents(self) -> pd.DataFrame:
        """The giant's sub-component cards, with the columns of the SQL table ``actgeo_subcomponents``."""
        cards = [Card.from_dict(d) for d in self._cards.get("subcards", [])]
        return self._table(cards, subcomponents_table.columns, sub=True)

    def _table(self, cards: list[Card], columns: Any, sub: bool = False) -> pd.DataFrame:
        cols = [c.name for c in columns]
        records = []
        for c in cards:
            row = component_row(self.run_id, c)
            if sub:
                row |= {"threshold": float(c.threshold), "parent_rank": int(c.subcomponent_of or 0)}
            records.append({k: (json.loads(row[k]) if k in COMPONENT_JSON and row[k] is not None else row[k])
                            for k in cols})
        if sub:
            records.sort(key=lambda r: (r["threshold"], r["rank"]))
        df = pd.DataFrame(records, columns=cols)
        for col in COMPONENT_JSON:  # Python objects; None stays None
            df[col] = pd.Series([r[col] for r in records], dtype=object, index=df.index)
        return df

    def card(self, rank: int) -> Card:
        """The card of the component of size rank ``rank`` (2 = the largest after the giant), with its
        token contexts (``Card.contexts``). ValueError listing the carded ranks when it has none."""
        for d in self._cards.get("cards", []):
            if int(d["rank"]) == int(rank):
                return Card.from_dict(d)
        ranks = [int(d["rank"]) for d in self._cards.get("cards", [])]
        raise ValueError(f"no card of rank {rank} in {self.layout.cards}; carded ranks: "
                         f"{', '.join(map(str, ranks)) or 'none'} (setting card_ranks)")

    # --- tokens and activations

    def _shard(self, shard: str | int) -> str:
        if isinstance(shard, int | np.integer) and not isinstance(shard, bool):
            if not 0 <= int(shard) < len(self.shards):
                raise ValueError(f"shard index {shard} out of range: this run has {len(self.shards)} shards")
            return self.shards[int(shard)]
        if shard not in self.offsets:
            raise ValueError(f"no shard {shard!r} in this run; shards: {', '.join(self.shards)}")
        return str(shard)

    def _verified(self, path: Path, sha: str | None) -> Path:
        if not path.is_file():
            raise RunNotFinished(f"{self.root} is not a finished actgeo run: {path} is missing")
        return verify_file(path, sha)

    def _meta(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise RunNotFinished(f"{self.root} is not a finished actgeo run: {path} is missing")
        return load_json(path)

    def kept(self, shard: str | int) -> np.ndarray:
        """bool [n_raw]: the shard's captured rows that normalization kept (the others were not finite or zero)."""
        s = self._shard(shard)
        meta = self._meta(self.layout.normalized_meta(s))
        return np.load(self._verified(self.layout.kept(s), meta.get("kept_sha256")), allow_pickle=False)

    def shard_tokens(self, shard: str | int) -> pd.DataFrame:
        """The rows of :attr:`tokens` of one shard (:data:`TOKEN_TABLE_COLUMNS`; index: global row)."""
        s = self._shard(shard)
        raw = self._meta(self.layout.raw_meta(s))
        recorded = raw.get("files_sha256") or {}
        every = pd.read_parquet(self._verified(self.layout.tokens(s), recorded.get("tokens")))
        docs = pd.read_parquet(self._verified(self.layout.docs(s), recorded.get("docs")))
        kept = self.kept(s)
        if len(kept) != len(every):
            raise RunNotFinished(f"{self.layout.kept(s)} has {len(kept)} rows, {self.layout.tokens(s)} {len(every)}")
        tok = every.loc[kept].rename(columns={"row": "shard_row"}).reset_index(drop=True)
        if len(tok) != self.sizes[s]:
            raise RunNotFinished(f"shard {s} keeps {len(tok)} rows, {self.layout.offsets} says {self.sizes[s]}")
        provenance = docs.drop(columns=[c for c in ("text", "source") if c in docs.columns])
        tok = tok.merge(provenance.drop_duplicates("doc_id"), on="doc_id", how="left", validate="many_to_one")
        tok.insert(0, "row", np.arange(len(tok), dtype=np.int64) + self.offsets[s])
        tok.insert(1, "shard", s)
        tok.index = pd.RangeIndex(self.offsets[s], self.offsets[s] + len(tok))
        first = [c for c in TOKEN_TABLE_COLUMNS if c in tok.columns]
        return tok[first + [c for c in tok.columns if c not in first]]

    @functools.cached_property
    def tokens(self) -> pd.DataFrame:
        """One row per activation of the components, index = global row (aligned with :attr:`labels`):
        row, shard, shard_row (its row in the shard's raw files), doc_id, position (in the document's
        tokens), token_id, token, char_start, char_end, source (what the text is), pile_analogue and any
        other provenance column of the documents table (not its text)."""
        return pd.concat([self.shard_tokens(s) for s in self.shards])

    def documents(self, shard: str | int) -> pd.DataFrame:
        """The documents of one shard (doc_id, source, pile_analogue, text)."""
        s = self._shard(shard)
        recorded = self._meta(self.layout.raw_meta(s)).get("files_sha256") or {}
        return pd.read_parquet(self._verified(self.layout.docs(s), recorded.get("docs")))

    def shard_rows(self, shard: str | int, normalized: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(read-only memory map of the shard's file, raw row index of each kept row or None when the file
        holds exactly the kept rows): what :meth:`activations` and the export read in batches."""
        s = self._shard(shard)
        if normalized:
            meta = self._meta(self.layout.normalized_meta(s))
            x = np.load(self._verified(self.layout.normalized(s), meta.get("sha256")), mmap_mode="r")
            idx = None
        else:
            meta = self._meta(self.layout.raw_meta(s))
            x = np.load(self._verified(self.layout.raw(s), meta.get("sha256")), mmap_mode="r")
            kept = self.kept(s)
            if len(kept) != x.shape[0]:
                raise RunNotFinished(f"{self.layout.kept(s)} has {len(kept)} rows, {self.layout.raw(s)} {x.shape[0]}")
            idx = None if kept.all() else np.flatnonzero(kept)
        n = self.sizes[s]
        if (len(idx) if idx is not None else x.shape[0]) != n:
            raise RunNotFinished(f"shard {s}: {x.shape[0]} rows in its file, {self.layout.offsets} says {n}")
        return x, idx

    def activations(self, shard: str | int, normalized: bool = True) -> np.ndarray:
        """float32 [n, d] activations of one shard, row i = ``tokens`` row ``offsets[shard] + i``: the unit
        rows the components were built from (``normalized=True``, a read-only memory map), or the raw
        residual-stream rows the model computed (``normalized=False``; a memory map, or a copy of the kept
        rows when normalization dropped any)."""
        x, idx = self.shard_rows(shard, normalized)
        return x if idx is None else x[idx]

    def __repr__(self) -> str:
        return f"RunResults({str(self.root)!r}, run_id={self.run_id!r}, n={self.n}, shards={len(self.shards)})"
