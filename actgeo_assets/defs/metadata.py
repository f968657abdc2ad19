"""Small helpers that turn library results into Dagster metadata (markdown tables, inline images)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg

from actgeo_assets.lib.analysis.numbers import round_number as fmt  # the library's one number rule
from actgeo_assets.lib.outputs.report import summary_rows
from actgeo_assets.lib.outputs.report_uncertainty import format_value

#: Short column headers for the asset pages' tables (the metadata panel is about 400 px wide).
SHORT_HEADERS = {"n_components": "comps", "largest_fraction": "giant share", "second_largest": "2nd",
                 "singletons": "single", "non_singleton": "non-single", "forest_edges": "forest edges",
                 "graph_edges": "edges"}
#: A word (no spaces: a path) longer than this shows only its end in a table cell.
CELL_WORD_CHARS = 24


def short_word(word: str, limit: int = CELL_WORD_CHARS) -> str:
    """``word`` if it fits, else ``…`` and its last characters (a path's file name survives)."""
    return word if len(word) <= limit else "\u2026" + word[-(limit - 1):]


def table_md(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table that fits the asset page's panel: numbers formatted (:func:`fmt`), known long headers
    shortened (:data:`SHORT_HEADERS`), long words (paths) cut to their end, pipes escaped."""
    def cell(v: Any) -> str:
        text = " ".join(short_word(w) for w in str(fmt(v)).split(" "))
        return text.replace("|", "\\|").replace("\n", "\\n")

    header = [SHORT_HEADERS.get(h, h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def disk_metadata(*paths: str | os.PathLike[str], run_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What a materialization's files take on disk (a folder: every file under it; a missing path: nothing):
    ``disk_bytes`` (bytes allocated, ``lib.store.disk.Usage.bytes``) and ``disk`` (e.g. ``1.6 MiB in 5
    files``); with ``run_root``, also ``run_folder_bytes`` and ``run_folder``: the whole run folder's."""
    from actgeo_assets.lib.store.disk import Usage, folder_usage, human_bytes

    usages = [folder_usage(p) for p in paths]
    total = Usage(sum(u.bytes for u in usages), sum(u.apparent for u in usages), sum(u.files for u in usages))
    out: dict[str, Any] = {"disk_bytes": total.bytes, "disk": f"{human_bytes(total.bytes)} in {total.files} files"}
    if run_root is not None:
        run = folder_usage(run_root)
        out |= {"run_folder_bytes": run.bytes, "run_folder": f"{human_bytes(run.bytes)} in {run.files} files"}
    return out


def png_md(png: bytes, alt: str) -> str:
    """Markdown image with the PNG inlined as a data URI (shows in the asset's metadata panel)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def run_md(description: str) -> str:
    """A run's one-line description (``key=value`` pairs) as a list that fits its cell: a value longer than
    24 characters (a path) shows its end."""
    parts = [p.split("=", 1) for p in description.split(" ") if "=" in p]
    if not parts:
        return md_escape(description)
    return "\n".join(f"- {md_escape(k)}: `{v if len(v) <= 24 else chr(0x2026) + v[-23:]}`" for k, v in parts)


def uncertainty_md(doc: dict[str, Any]) -> str:
    """The shard jackknife's intervals (``ComponentsRecord.uncertainty``) as a Markdown table, its method first."""
    if not doc:
        return "no resampling in this run's record"
    rows = [(q["label"], format_value(q["key"], q["estimate"]),
             "none" if q.get("low") is None else f"{format_value(q['key'], q['low'])} to {format_value(q['key'], q['high'])}")
            for q in doc.get("quantities", [])]
    return f"{doc.get('method', '')}\n\n" + table_md(["quantity", "estimate", "95% interval"], rows)


def summary_md(summary: dict[str, Any], description: str) -> str:
    """The study's summary table (the rows the CLI prints, lib/report.summary_rows) in markdown; the run
    (``description``) is the `run` entry beside it, so the table stays narrow enough for its panel."""
    rows = [(label, number + remark) for label, number, remark in summary_rows(summary)]
    return table_md(["", "value"], rows)


def table_value(header: Sequence[str], rows: Iterable[Sequence[Any]],
                descriptions: Sequence[str | None] | None = None) -> dg.TableMetadataValue:
    """A table the asset page shows inline (a markdown table of more than 1000 characters hides behind
    "[Show Markdown]"), numbers formatted; ``descriptions`` of the columns show in its schema."""
    records = [dg.TableRecord({h: fmt(v) if isinstance(fmt(v), int | float | bool) else str(v)
                               for h, v in zip(header, row, strict=True)}) for row in rows]
    notes = list(descriptions) if descriptions else [None] * len(header)
    columns = [dg.TableColumn(h, _column_type([r.data[h] for r in records]), description=d)
               for h, d in zip(header, notes, strict=True)]
    return dg.MetadataValue.table(records, schema=dg.TableSchema(columns=columns))


def _column_type(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "float"
    return "string"


# --- component cards as Markdown the asset page renders inline (under 1000 characters each)

#: Markdown under this many characters is rendered in place on the asset page (Dagster's UI shows longer
#: values behind "[Show Markdown]").
INLINE_MD_CHARS = 1000
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md_escape(text: str) -> str:
    """``text`` shown literally in Markdown (Dagster's renderer: GFM)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _bold(token: str) -> str:
    """The token in bold, its surrounding whitespace outside the ``**`` (``** hon**`` would not be bold)."""
    core = token.strip()
    if not core:
        return "**" + md_escape(token.replace(" ", "\u2423") or "\u2205") + "**"
    lead = token[: len(token) - len(token.lstrip())]
    trail = token[len(token.rstrip()):]
    return f"{lead}**{md_escape(core)}**{trail}"


def context_md(left: str, token: str, right: str, source: str = "", width: int = 44) -> str:
    """One context line: up to ``width`` characters each side, the member token in bold."""
    left = ("\u2026" + left[-width:].lstrip()) if len(left) > width else left
    right = (right[:width].rstrip() + "\u2026") if len(right) > width else right
    tail = f" *({md_escape(source)})*" if source else ""
    return f"{md_escape(left)}{_bold(token)}{md_escape(right)}{tail}"


def card_md(card: Any, limit: int = INLINE_MD_CHARS - 10) -> str:
    """One card in Markdown: rank, size, documents, label, top tokens, then its contexts (the member token in
    bold), as many as fit in ``limit`` characters, so the asset page shows it inline."""
    tokens = " \u00b7 ".join(f"`{t!r}` \u00d7{fmt(n)}" for t, n in card.top_tokens[:4] if "`" not in t)
    docs = f"{fmt(card.n_documents):,} document{'s' if card.n_documents != 1 else ''}"
    head = (f"**rank {card.rank}** \u00b7 {fmt(card.size):,} activations \u00b7 {docs} "
            f"\u00b7 {md_escape(str(card.provisional_label))}")
    lines = [head, "", f"top tokens: {tokens}", ""] if tokens else [head, ""]
    for width in (44, 30, 20):
        body = [f"- {context_md(c.left, c.token, c.right, c.source, width)}" for c in card.contexts]
        while body and len("\n".join(lines + body)) > limit:
            body.pop()
        if len(body) == len(card.contexts) or width == 20:
            break
    text = "\n".join(lines + body)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def report_base_url() -> str:
    """Where `make ui`'s report server (``python -m actgeo_assets.report_server``) serves the data directory:
    ``$ACTGEO_REPORT_URL``, default http://127.0.0.1:3001."""
    from actgeo_assets.report_server import DEFAULT_URL, URL_ENV

    return (os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


#: Width in pixels of the figures on the asset pages (the metadata table's value column is about 400 px).
INLINE_FIGURE_PX = 320


def served_url(path: os.PathLike[str] | str, data_root: os.PathLike[str] | str, version: str = "",
               width: int | None = None) -> str:
    """The report server's URL of ``path`` (a file under the data directory ``data_root``); ``version``
    (e.g. a content hash) keeps a browser from showing an older figure from its cache; ``width`` asks the
    server for a PNG scaled to that many pixels."""
    from pathlib import Path

    rel = Path(path).resolve().relative_to(Path(data_root).resolve()).as_posix()
    query = "&".join(q for q in (f"v={version[:12]}" if version else "", f"w={width}" if width else "") if q)
    return f"{report_base_url()}/{rel}" + (f"?{query}" if query else "")


#: The sweep's columns on the asset page: (header short enough for the table to fit its panel, description
#: shown by "Show schema").
SWEEP_SHOWN = {
    "threshold": ("t", "cosine threshold"),
    "n_components": ("comps", "number of components"),
    "largest_fraction": ("giant %", "the largest component's share of all activations"),
    "second_largest": ("2nd", "size of the second-largest component"),
    "singletons": ("single", "components of one activation"),
}


#: The N-scaling table's columns on the asset page (as :data:`SWEEP_SHOWN`).
SCALING_SHOWN = {
    "shards": ("shards", "the first k shards"),
    "n": ("N", "activations in them"),
    "n_components": ("comps", "number of components"),
    "largest_fraction": ("giant %", "the largest component's share of the N activations"),
    "singletons": ("single", "components of one activation"),
}


def compact_table(frame: Any, shown: dict[str, tuple[str, str]]) -> dg.TableMetadataValue:
    """The ``shown`` columns of ``frame`` (those it has) as an inline table with short headers and column
    descriptions, ``largest_fraction`` in percent."""
    cols = [c for c in shown if c in frame.columns]

    def value(col: str, v: Any) -> Any:
        return f"{100 * float(v):.1f}%" if col == "largest_fraction" else v

    return table_value([shown[c][0] for c in cols],
                       ([value(c, getattr(r, c)) for c in cols] for r in frame.itertuples(index=False)),
                       descriptions=[shown[c][1] for c in cols])


def sweep_table(sweep: Any) -> dg.TableMetadataValue:
    """The threshold sweep's exact rows (all rows when it has no ``exact`` column) as an inline table of
    the :data:`SWEEP_SHOWN` columns, the largest component's share in percent."""
    return compact_table(sweep[sweep["exact"].astype(bool)] if "exact" in sweep.columns else sweep, SWEEP_SHOWN)


def image_md(url: str, alt: str) -> str:
    """A Markdown image by URL: short, so the asset page shows it inline."""
    return f"![{md_escape(alt)}]({url})"
