"""Environment variables in tests."""

from __future__ import annotations

import pytest


def unset_env(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset ``names`` for the test and restore each to what it was before the test (unset included) when the
    test ends, even when the code under test sets it: `actgeo run --database-url` puts the URL into
    ``$ACTGEO_DATABASE_URL`` for the rest of the process. (``monkeypatch.delenv`` of an unset variable records
    nothing, so a value set later would leak into the next tests.)"""
    for name in names:
        monkeypatch.setenv(name, "")  # records the value before the test (or its absence) for the teardown
        monkeypatch.delenv(name)
