"""Folder reads of the settings: the files of a corpus folder and the shard key each becomes
(``shard_by="file"``: one shard per file, ``shard-<file stem>``)."""

from __future__ import annotations

import re
from pathlib import Path

from actgeo_assets.lib.config.constants import CORPUS_SUFFIXES


def corpus_shard_files(corpus: str) -> dict[str, Path]:
    """Shard key -> corpus file, sorted by file name: each non-hidden ``CORPUS_SUFFIXES`` file of the folder
    ``corpus`` (its stem with other characters than ``A-Za-z0-9_.-`` written ``-``). ValueError naming the
    folder when it is not one, holds no such file, or two files map to one key."""
    folder = Path(corpus).expanduser()
    if not folder.is_dir():
        raise ValueError(f"shard_by='file' needs a corpus folder; {corpus!r} is not a folder")
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in CORPUS_SUFFIXES and not f.name.startswith("."):
            key = "shard-" + re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.-]+", "-", f.stem))
            if key in files:
                raise ValueError(f"corpus files {files[key].name} and {f.name} map to one shard key {key}")
            files[key] = f
    if not files:
        raise ValueError(f"corpus folder {corpus!r} has no {'/'.join(CORPUS_SUFFIXES)} files")
    return files
