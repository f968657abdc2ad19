"""Small helpers that turn library results into Dagster metadata (markdown tables, inline images)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

from actgeo_assets.lib.report import summary_rows


def table_md(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; cells are str()-ed and pipes escaped."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "\\n")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def png_md(png: bytes, alt: str) -> str:
    """Markdown image with the PNG inlined as a data URI (shows in the asset's metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def summary_md(summary: dict[str, Any], description: str) -> str:
    """The study's summary table (the rows the CLI prints, lib/report.summary_rows) in markdown."""
    rows = [(label, number + remark) for label, number, remark in summary_rows(summary)]
    return table_md(["", "value"], [("run", description), *rows])
