"""Drive Debian's chromium headless through Playwright (no browser download), for report and UI tests.

    with chromium_context() as ctx:
        page = ctx.new_page()
        page.goto(path.as_uri())

Each context gets a fresh user-data directory (deleted afterwards), so no state leaks between tests.
Missing chromium or Playwright is a test *failure* naming the fix (``make test`` installs them), never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from actgeo_tests.support.paths import REPO

CHROMIUM = os.environ.get("ACTGEO_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Screenshots and other test artefacts go here (repo root, ignored by git).
TEST_OUTPUT = REPO / "test-output"


def chromium_missing() -> str | None:
    """Why a browser test cannot run (a message naming the fix), or None when it can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"chromium not found at {CHROMIUM}: `make test` installs Debian's chromium (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is missing: `make test` installs the dev dependencies"
    return None


def require_chromium() -> None:
    """Fail the calling test (not skip) when chromium or Playwright is missing."""
    why = chromium_missing()
    if why:
        import pytest

        pytest.fail(why, pytrace=False)


@contextlib.contextmanager
def chromium_context(
    viewport: tuple[int, int] = (1280, 900), timeout_ms: int = 30_000, **kwargs: Any
) -> Iterator[Any]:
    """Yield a Playwright ``BrowserContext`` of a headless chromium with a fresh user-data dir.

    ``kwargs`` go to ``launch_persistent_context`` (e.g. ``device_scale_factor``). The browser is closed and
    the profile deleted on exit.
    """
    why = chromium_missing()
    if why:
        raise RuntimeError(why)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="actgeo-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": viewport[0], "height": viewport[1]},
                **kwargs,
            )
            ctx.set_default_timeout(timeout_ms)
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
