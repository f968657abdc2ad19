"""Shared fixtures of the library tests: a tiny random Gemma 2 (fast) and the demo model's cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actgeo_tests.support.paths import REPO


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    from actgeo_tests.support.tiny_model import tiny_gemma2

    return tiny_gemma2(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory):
    from actgeo_assets.lib.capture.model import load_model

    return load_model(tiny_model_path, tmp_path_factory.mktemp("model-cache"), device="cpu", threads=1)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Where converted real models are cached across test runs (``ACTGEO_TEST_CACHE``)."""
    path = Path(os.environ.get("ACTGEO_TEST_CACHE", REPO / ".cache" / "test-models"))
    path.mkdir(parents=True, exist_ok=True)
    return path
