"""The report server's live lookup in tests: a copy of a finished tiny run with its lookup index, and the report
server (``actgeo_assets/report_server.py``) answering in a thread of the test process.

    data_dir, config = run_with_index(run, tmp_path)      # a copy: the shared tiny run stays as it was
    with serving(data_dir) as base:                       # http://127.0.0.1:<free port>
        urllib.request.urlopen(f"{base}/api/lookup?run=demo&text=...")
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actgeo_tests.support.tiny_run import FinishedRun


def run_with_index(run: FinishedRun, dest: Path) -> tuple[Path, Path]:
    """(data directory, settings file): ``run``'s data directory copied to ``dest/data`` with the lookup index
    built by the library (``build_lookup_index``, what the ``lookup`` asset and `actgeo lookup --build-index`
    run), and a settings file of the run's values for `actgeo lookup --config`."""
    from actgeo_assets.lib.stages.lookup import build_lookup_index
    from actgeo_assets.lib.store.layout import RunLayout

    data_dir = Path(dest) / "data"
    shutil.copytree(run.data_dir, data_dir)
    build_lookup_index(run.settings, RunLayout(data_dir, run.settings.profile))
    config = Path(dest) / "settings.json"
    config.write_text(json.dumps(run.overrides))
    return data_dir, config


@contextlib.contextmanager
def serving(data_dir: Path, lookup: Any = "default") -> Iterator[str]:
    """The report server over ``data_dir`` on a free port of 127.0.0.1, in a daemon thread; yields its base URL.
    ``lookup``: the ``LookupService`` (``"default"``: a fresh one of ``data_dir``; None: no lookup API, as a
    plain static server)."""
    from actgeo_assets.report_server import LookupService, ReportHandler

    service = LookupService(data_dir) if lookup == "default" else lookup
    handler = functools.partial(ReportHandler, directory=str(data_dir), lookup=service)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """(status, parsed JSON body) of ``GET url``, for error statuses too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
