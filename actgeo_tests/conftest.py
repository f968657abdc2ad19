"""Fixtures of every test folder: the finished tiny runs of this session."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable

import pytest

from actgeo_assets.lib.config.experiments import EXPERIMENTS_DATA_DIR_ENV

# The Definitions build the experiments of a data directory when they load: in the tests, of an empty one (never
# the experiments a developer has in the checkout's data/). A test of experiments points it elsewhere.
os.environ.setdefault(EXPERIMENTS_DATA_DIR_ENV, tempfile.mkdtemp(prefix="actgeo-no-experiments-"))

from actgeo_tests.support.tiny_run import FinishedRun, finished_tiny_run


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., FinishedRun]:
    """``tiny_runs(**overrides)``: :func:`~actgeo_tests.support.tiny_run.finished_tiny_run` in this session's
    temporary folder; every module asking for the same overrides gets the same run (treat it as read-only)."""
    return functools.partial(finished_tiny_run, tmp_path_factory.getbasetemp() / "tiny-runs")
