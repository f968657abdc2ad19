"""Serve the runs' HTML reports and figures over http, on 127.0.0.1 only (`make ui` starts it beside the
Dagster UI), so that the ``report_url`` link of ``component_cards`` opens with one click (browsers refuse
``file://`` links from an http page) and the asset pages show the figures inline.

    python -m actgeo_assets.report_server [--port 3001] [--data-dir DIR]

It serves the data directory (the run's ``data_dir``, as the ``actgeo`` resource resolves it: ``data`` in the project root unless a
settings file says otherwise) read-only, and only the files a report is made of (``.html``, ``.png``,
``.json``, ``.csv``; no listings, nothing outside the directory): never the activations or the database.
``/`` redirects to the report of the resource's profile.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

#: The server's base URL, as the assets link to it (``component_cards``' report_url, the figures).
URL_ENV = "ACTGEO_REPORT_URL"
DEFAULT_URL = "http://127.0.0.1:3001"
SERVED_SUFFIXES = (".html", ".png", ".json", ".csv")


class ReportHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of report types under the served directory; 404 for anything else."""

    index_path = ""

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
    handler = functools.partial(ReportHandler, directory=str(root))
    ReportHandler.index_path = f"{profile}/cards/report.html" if profile else ""
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as exc:
        print(f"report server: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report server: http://127.0.0.1:{args.port}/ serves the reports under {root}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
