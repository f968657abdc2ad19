"""Serve the runs' HTML reports and figures over http, on 127.0.0.1 only (`make ui` starts it beside the
Dagster UI), so that the ``report_url`` link of ``component_cards`` opens with one click (browsers refuse
``file://`` links from an http page) and the asset pages show the figures inline; and answer the explorer's
text box live (:class:`LookupService`, ``GET /api/lookup``).

    python -m actgeo_assets.report_server [--port 3001] [--data-dir DIR]

It serves the data directory (the run's ``data_dir``, as the ``actgeo`` resource resolves it: ``data`` in the project root unless a
settings file says otherwise) read-only, and only the files a report is made of (``.html``, ``.png``,
``.json``, ``.csv``; no listings, nothing outside the directory): never the activations or the database.
``/`` redirects to the report of the resource's profile.

The lookup API (what `actgeo lookup --json` answers, with one run's model and lookup index kept loaded between
calls; JSON in, JSON out, errors as ``{"error": "..."}`` with status 400, 404, 409 or 500)::

    GET /api/lookup?run=demo&text=The+House+met.&k=3   -> {"run", "run_id", "description", "threshold",
        "text", "truncated", "context_len", "index_rows", "device", "loaded_now", "seconds": {phase: s},
        "tokens": [lib.stages.lookup.answer_json(...) per token]}
    GET /api/lookup?run=demo&warm=1                     -> the same without text and tokens: loads the run
    GET /api/status                                     -> {"lookup": true, "loaded": run or null, "max_text_chars",
                                                            "max_k", "comparison": comparison/comparison.json exists}

Only requests whose ``Host`` is 127.0.0.1 or localhost are answered (no DNS rebinding from a web page).
"""

from __future__ import annotations

import argparse
import functools
import gc
import http.server
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: The server's base URL, as the assets link to it (``component_cards``' report_url, the figures).
URL_ENV = "ACTGEO_REPORT_URL"
DEFAULT_URL = "http://127.0.0.1:3001"
SERVED_SUFFIXES = (".html", ".png", ".json", ".csv")
#: The longest text the lookup API takes (characters; the run's context_len caps the tokens anyway).
MAX_TEXT_CHARS = 2000
#: The most nearest members per token the lookup API returns.
MAX_K = 10
#: A run is a folder name of the data directory: letters, digits, ``.``, ``_``, ``-`` (no path).
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class ApiError(Exception):
    """A request the lookup API cannot answer: ``status`` (400 bad input, 404 no such run, 409 the run
    cannot answer yet, 500 unexpected) and a message naming the problem and, where there is one, the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _load_session(root: Path, run: str, release: Callable[[], None]) -> Any:
    """A ``LookupSession`` of the finished run ``run`` in data directory ``root``, with the settings the run
    recorded (``open_run``); ApiError when the run is not there or has no current lookup index. ``release()``
    frees the session loaded before, once the run is known to answer and before its model is loaded (so a
    mistyped run keeps the loaded one, and two models are never held at once)."""
    from actgeo_assets.lib.outputs.results import RunNotFinished, open_run
    from actgeo_assets.lib.stages.lookup import BUILD_HINT, LookupSession, index_problem

    try:
        results = open_run(root, run)
    except RunNotFinished as exc:
        runs = sorted(p.parent.parent.name for p in root.glob("*/components/summary.json"))
        raise ApiError(404, f"no finished run {run!r} in {root}: {exc} (runs here: {', '.join(runs) or 'none'})"
                       ) from None
    settings, layout = results.settings, results.layout
    try:
        problem = index_problem(settings, layout)
    except ValueError as exc:
        raise ApiError(409, f"run {run!r} cannot answer: {exc}") from None
    if problem:
        raise ApiError(409, f"run {run!r} has no current lookup index ({problem}): build it with {BUILD_HINT}, "
                            "then ask again")
    release()
    try:
        return LookupSession(settings, layout, build=False)
    except ValueError as exc:
        raise ApiError(409, f"run {run!r} cannot answer: {exc}") from None


class LookupService:
    """`actgeo lookup` kept loaded: one run's ``LookupSession`` (model, index, components) at a time, loaded
    on the first query of that run, replaced (the old one freed first) when another run is asked or the
    run's files change; a lock makes concurrent requests safe (they are answered one after another).

    ``root``: the data directory; ``loader(root, run, release)``: the session factory, calling ``release()``
    before it loads (tests pass their own)."""

    def __init__(self, root: Path, loader: Callable[[Path, str, Callable[[], None]], Any] = _load_session) -> None:
        self.root = Path(root)
        self.loader = loader
        self.lock = threading.Lock()
        self.run: str | None = None
        self.session: Any = None

    def status(self) -> dict[str, Any]:
        """``{"lookup": true, "loaded": run or None, "max_text_chars", "max_k", "comparison"}``; ``comparison``:
        whether ``comparison/comparison.json`` exists (the explorer fetches it only then: no 404 in its console)."""
        return {"lookup": True, "loaded": self.run, "max_text_chars": MAX_TEXT_CHARS, "max_k": MAX_K,
                "comparison": (self.root / "comparison" / "comparison.json").is_file()}

    def _release(self) -> None:
        """Free the loaded session and the models the process caches (one model at a time)."""
        from actgeo_assets.lib.stages.lookup import release_models

        self.run = self.session = None
        release_models()
        gc.collect()

    def _session_of(self, run: str) -> tuple[Any, bool]:
        """The session of ``run`` and whether it was loaded now (the caller holds the lock)."""
        if self.session is not None and self.run == run and not self.session.stale():
            return self.session, False
        session = self.loader(self.root, run, self._release if self.session is not None else lambda: None)
        self.session, self.run = session, run
        return session, True

    def lookup(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """The answer to ``GET /api/lookup`` with ``query`` (``parse_qs``: ``run``, ``text``, ``k``,
        ``warm``); ApiError naming what it cannot take."""
        from actgeo_assets.lib.stages.lookup import answer_json

        run = (query.get("run") or [""])[0]
        if not run:
            raise ApiError(400, "name the run: ?run=<profile>, the run's folder in the data directory (e.g. demo)")
        if not _RUN_NAME.fullmatch(run):
            raise ApiError(400, f"{run[:100]!r} is not a run's folder name (letters, digits, '.', '_', '-')")
        warm = (query.get("warm") or [""])[0] not in ("", "0")
        text = (query.get("text") or [""])[0]
        if not warm:
            if not text.strip():
                raise ApiError(400, "the text is empty: give some text to place, e.g. ?text=my+hon.+Friend")
            if len(text) > MAX_TEXT_CHARS:
                raise ApiError(400, f"the text has {len(text):,} characters; the lookup takes at most "
                                    f"{MAX_TEXT_CHARS:,} (and captures the run's first context_len tokens of it)")
        try:
            k = int((query.get("k") or ["3"])[0])
        except ValueError:
            raise ApiError(400, f"k must be a whole number from 0 to {MAX_K}, got {query['k'][0][:20]!r}") from None
        if not 0 <= k <= MAX_K:
            raise ApiError(400, f"k must be a whole number from 0 to {MAX_K}, got {k}")
        t0 = time.perf_counter()
        with self.lock:
            session, loaded_now = self._session_of(run)
            try:
                result = None if warm else session.answer(text, k=k)
            except ValueError as exc:
                raise ApiError(400, f"cannot place this text: {exc}") from None
        seconds = {**(session.timings if loaded_now else {}), **(result.timings if result else {}),
                   "total": time.perf_counter() - t0}
        settings = session.settings
        out: dict[str, Any] = {
            "run": run, "run_id": settings.run_id(), "description": settings.describe(),
            "threshold": settings.threshold, "context_len": settings.context_len,
            "index_rows": int(session.index.index.ntotal), "device": session.index.device,
            "loaded_now": loaded_now, "seconds": {k_: round(v, 4) for k_, v in seconds.items()},
        }
        if result is not None:
            out.update(text=text, truncated=result.truncated,
                       tokens=[answer_json(result, a) for a in result.tokens])
        return out


class ReportHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of report types under the served directory; 404 for anything else."""

    index_path = ""
    #: the lookup API's service (None: the API answers 404, as a static server would)
    lookup: LookupService | None = None

    def __init__(self, *args: Any, lookup: LookupService | None = None, **kwargs: Any) -> None:
        if lookup is not None:
            self.lookup = lookup
        super().__init__(*args, **kwargs)  # handles the request: the attributes are set first

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        """``/api/status`` and ``/api/lookup`` (see the module docstring)."""
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if host not in ("127.0.0.1", "localhost", "::1"):
            self._send_json(403, {"error": f"the lookup API answers requests to 127.0.0.1 only, not {host!r}"})
            return
        if self.lookup is None or path not in ("/api/status", "/api/lookup"):
            self._send_json(404, {"error": f"no API {path} here (the report server has /api/lookup, /api/status)"})
            return
        try:
            body = self.lookup.status() if path == "/api/status" else self.lookup.lookup(query)
        except ApiError as exc:
            self._send_json(exc.status, {"error": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - the page shows the message; the server keeps serving
            self._send_json(500, {"error": f"the lookup failed: {type(exc).__name__}: {exc}"})
            return
        self._send_json(200, body)

    def send_head(self):  # noqa: ANN201 - the base class' signature
        path = urlsplit(self.path).path
        if path in ("", "/") and self.index_path:
            self.send_response(302)
            self.send_header("Location", "/" + self.index_path)
            self.end_headers()
            return None
        local = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        try:
            inside = local.resolve().is_relative_to(root)
        except OSError:
            inside = False
        if not inside or local.is_dir() or local.suffix.lower() not in SERVED_SUFFIXES:
            self.send_error(404, "not a report file")
            return None
        return super().send_head()

    def do_GET(self) -> None:  # noqa: N802 - the base class' name
        """``?w=N`` on a PNG: the figure scaled down to N pixels wide (what the asset pages show inline)."""
        query = parse_qs(urlsplit(self.path).query)
        if urlsplit(self.path).path.startswith("/api/"):
            self._api(urlsplit(self.path).path, query)
            return
        if urlsplit(self.path).path == "/favicon.ico":  # what a browser asks of every page: no icon, no error
            self.send_response(204)
            self.end_headers()
            return
        if "w" in query and urlsplit(self.path).path.lower().endswith(".png"):
            local = Path(self.translate_path(self.path))
            try:
                width = max(64, min(2000, int(query["w"][0])))
                if not local.resolve().is_relative_to(Path(self.directory).resolve()):
                    raise OSError("outside the served directory")
                body = scaled_png(local, width)
            except (OSError, ValueError):
                self.send_error(404, "not a report figure")
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
        pass  # quiet: `make ui` shares the console with dagster dev


def scaled_png(path: Path, width: int) -> bytes:
    """The PNG at ``path`` scaled to ``width`` pixels wide (never up), as PNG bytes."""
    import io

    from PIL import Image

    with Image.open(path) as img:
        if img.width > width:
            img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def default_data_dir() -> tuple[Path, str]:
    """(data directory, profile) of the run the deployment's settings name (``$ACTGEO_CONFIG``, if set), as
    the ``actgeo`` resource resolves them (``lib.store.run.resolve_run``)."""
    from actgeo_assets.lib.store.run import resolve_run

    run = resolve_run()
    return run.data_dir, run.settings.profile


def main(argv: Sequence[str] | None = None) -> int:
    default_port = urlsplit(os.environ.get(URL_ENV) or DEFAULT_URL).port or 3001
    parser = argparse.ArgumentParser(prog="python -m actgeo_assets.report_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=default_port, help=f"port on 127.0.0.1 (default {default_port})")
    parser.add_argument("--data-dir", default=None, help="directory to serve (default: the resource's data_dir)")
    args = parser.parse_args(argv)
    if args.data_dir:
        root, profile = Path(args.data_dir).expanduser().resolve(), ""
    else:
        root, profile = default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(ReportHandler, directory=str(root), lookup=LookupService(root))
    ReportHandler.index_path = f"{profile}/cards/report.html" if profile else ""
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as exc:
        print(f"report server: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report server: http://127.0.0.1:{args.port}/ serves the reports under {root}; the explorers' "
          f"lookups at /api/lookup", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
