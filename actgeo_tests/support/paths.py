"""Paths the tests share, each built once here (never from a test file's own location, so a test module
can move between folders without its paths changing)."""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder.
REPO = Path(__file__).resolve().parents[2]
#: The small text corpus of the tiny runs: 42 JSON lines ``{"text", "meta"}``, no download.
MINI_CORPUS = REPO / "actgeo_tests" / "fixtures" / "mini_corpus.jsonl"
#: The README, whose Python examples some tests execute.
README = REPO / "README.md"
