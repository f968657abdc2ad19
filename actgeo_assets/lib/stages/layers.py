"""Stage of the asset in defs/assets/layers.py (``layer_geometry``, job ``layer_sweep``): several layers of
the corpus' first documents captured in one forward pass, compared across layers and normalizations
(:mod:`actgeo_assets.lib.analysis.layers`), written under ``{profile}/layers/`` and shown as a section of the report.

Not part of the stage jobs `actgeo run` plans: it runs as its own job (``actgeo layers``), and the report
includes its section whenever its files describe the run's model and corpus.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actgeo_assets.lib.analysis.layers import (
    GeometryComparison,
    compare_geometry,
    giant_fraction_png,
    section_html,
)
from actgeo_assets.lib.capture.normalize import METHODS
from actgeo_assets.lib.config.settings import RunSettings, SettingsError
from actgeo_assets.lib.stages.activations import _cached_corpus
from actgeo_assets.lib.stages.common import load_run_model, show_progress
from actgeo_assets.lib.store.layout import (
    RunLayout,
    atomic_path,
    load_json,
    save_bytes,
    save_json,
    sha256_file,
)
from actgeo_assets.lib.store.lock import holds_writer_lock

log = logging.getLogger("actgeo")

#: Thresholds of the comparison besides the run's threshold and sweep: the figure's curve.
GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.3 .. 0.95
#: Components of the reference layer whose landing is tabulated.
TOP_K = 10
FILES = ("geometry.csv", "geometry.parquet", "landing.csv", "giant_fraction.png", "section.html")
#: Version of what :func:`compare_layers` writes (also the asset's code_version): files of another are stale.
LAYERS_VERSION = "layer-geometry-1"


@dataclass(frozen=True)
class LayerGeometry:
    """What :func:`compare_layers` wrote: the comparison, its files (name -> path) and their sha256."""

    comparison: GeometryComparison
    layers: tuple[int, ...]
    thresholds: tuple[float, ...]
    files: dict[str, Path]
    sha256: dict[str, str]
    capture: dict[str, Any]  # capture stats (tokens/s, documents, overflow per layer)
    seconds: float  # of the comparison (normalizations and components), not the capture


def compare_key(settings: RunSettings) -> dict[str, Any]:
    """What determines the layer comparison's files."""
    key = settings.capture_key()
    for k in ("layer", "n_shards", "budget", "budget_per_shard", "shard_by"):
        key.pop(k, None)
    return {**key, "compare_layers": list(settings.compare_layers), "compare_budget": settings.compare_budget,
            "threshold": settings.threshold, "normalization": settings.normalization,
            "reference_layer": reference_layer(settings)}


def comparison_thresholds(settings: RunSettings) -> tuple[float, ...]:
    """The thresholds of the comparison: ``GRID``, the run's sweep and its threshold, sorted."""
    return tuple(sorted({*GRID, *settings.sweep, settings.threshold}))


def layers_current(settings: RunSettings, layout: RunLayout) -> bool:
    """Whether ``layers/`` already holds the comparison these settings ask for: ``layers.json`` records the same
    :func:`compare_key`, thresholds, normalizations and ``LAYERS_VERSION``, and every file of ``FILES`` exists
    with the sha256 recorded for it (a missing, edited or truncated file makes it stale)."""
    meta_path = layout.layers_file("layers.json")
    if not meta_path.exists():
        return False
    try:
        meta = load_json(meta_path)
        recorded = meta.get("files_sha256", {})
        return (meta.get("version") == LAYERS_VERSION and meta.get("compare_key") == compare_key(settings)
                and meta.get("thresholds") == list(comparison_thresholds(settings))
                and meta.get("normalizations") == list(METHODS)
                and all(layout.layers_file(name).exists()
                        and sha256_file(layout.layers_file(name)) == recorded.get(name) for name in FILES))
    except (OSError, ValueError, AttributeError) as exc:
        log.info("layer_geometry: %s unreadable (%s); computing the comparison again", meta_path, exc)
        return False


def reference_layer(settings: RunSettings) -> int:
    """The layer whose top components are followed: the run's layer when compared, else the middle one."""
    layers = sorted(settings.compare_layers)
    return settings.layer if settings.layer in layers else layers[len(layers) // 2]


def check_layers(settings: RunSettings, n_layers: int, model: str) -> None:
    """``compare_layers`` against the model's depth: SettingsError naming the setting, the bad layers and
    the valid range."""
    if not settings.compare_layers:
        raise SettingsError("compare_layers is empty: give the layers to compare, e.g. [3, 6, 9]",
                            names=("compare_layers",))
    bad = [x for x in settings.compare_layers if not 0 <= x < n_layers]
    if bad:
        raise SettingsError(f"compare_layers {list(settings.compare_layers)}: {bad} out of range for {model}, "
                            f"which has n_layers={n_layers} (valid layers 0..{n_layers - 1})",
                            names=("compare_layers",))
    if len(set(settings.compare_layers)) != len(settings.compare_layers):
        raise SettingsError(f"compare_layers {list(settings.compare_layers)} repeats a layer",
                            names=("compare_layers",))


def _device(settings: RunSettings) -> str:
    return settings.device if settings.device in ("auto", "cpu") or settings.device.startswith("cuda") else "cpu"


@holds_writer_lock
def compare_layers(settings: RunSettings, layout: RunLayout) -> LayerGeometry:
    """Capture ``compare_layers`` over the first ``compare_budget`` tokens of the corpus (one forward pass),
    compare them under every normalization, write ``layers/*`` and return what was written."""
    import time

    from actgeo_assets.lib.capture.residual import capture_layers, next_block_norm

    loaded = load_run_model(settings, layout)
    check_layers(settings, loaded.n_layers, loaded.name)
    layers = tuple(sorted(settings.compare_layers))
    docs = list(_cached_corpus(settings, str(layout.corpus_cache)))
    cap = capture_layers(loaded, docs, layers=layers, context_len=settings.context_len,
                         budget=settings.compare_budget, batch_size=settings.batch_size,
                         exclude_bos=settings.exclude_bos, progress=show_progress())
    weights = {layer: next_block_norm(loaded, layer) for layer in layers}
    thresholds = comparison_thresholds(settings)
    t0 = time.perf_counter()
    cmp = compare_geometry(cap.acts, METHODS, thresholds, norm_weights=weights,
                           reference_layer=reference_layer(settings), landing_threshold=settings.threshold,
                           top_k=TOP_K, device=_device(settings))
    seconds = time.perf_counter() - t0
    tokens = cap.tokens["token"].to_numpy()[cmp.rows]
    top_tokens = {(m, int(lab) + 1): _modal(tokens[labels == lab])
                  for m, labels in cmp.reference_labels.items() for lab in range(min(TOP_K, int(labels.max()) + 1))}
    landing = cmp.landing.copy()
    landing.insert(4, "top_token", [top_tokens.get((m, int(r))) for m, r in zip(landing["normalization"],
                                                                                 landing["rank"], strict=True)])
    title = (f"{settings.model}: {cmp.n:,} tokens of {settings.corpus}, layers {', '.join(map(str, layers))}")
    png = giant_fraction_png(cmp.table, title)
    html_text = section_html(cmp, threshold=settings.threshold, png=png, describe=title,
                             landing_normalization=settings.normalization, top_tokens=top_tokens)
    files = {name: layout.layers_file(name) for name in FILES}
    _save_csv(files["geometry.csv"], cmp.table)
    with atomic_path(files["geometry.parquet"], ".parquet") as tmp:
        cmp.table.to_parquet(tmp, index=False)
    _save_csv(files["landing.csv"], landing)
    save_bytes(files["giant_fraction.png"], png)
    with atomic_path(files["section.html"], ".html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    sha = {name: sha256_file(p) for name, p in files.items()}
    stats = {k: v for k, v in cap.stats.items() if k in ("n_kept", "n_docs", "n_forward_tokens", "tokens_per_s",
                                                          "forward_seconds", "n_overflow_rows", "max_abs")}
    save_json(layout.layers_file("layers.json"), {
        "version": LAYERS_VERSION, "compare_key": compare_key(settings), "n": cmp.n, "n_dropped": cmp.n_dropped, "layers": list(layers),
        "thresholds": list(thresholds), "normalizations": list(METHODS), "reference_layer": cmp.reference_layer,
        "landing_threshold": cmp.landing_threshold, "capture": stats, "seconds": round(seconds, 3),
        "files_sha256": sha,
    })
    log.info("layer_geometry: %d tokens, layers %s, %d rows of comparison in %.1fs", cmp.n, layers,
             len(cmp.table), seconds)
    return LayerGeometry(comparison=cmp, layers=layers, thresholds=thresholds, files=files, sha256=sha,
                         capture=stats, seconds=seconds)


def _modal(values: np.ndarray) -> str | None:
    if values.size == 0:
        return None
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    return str(uniq[int(np.argmax(counts))])


def _save_csv(path: Path, table: pd.DataFrame) -> None:
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    with atomic_path(path, ".csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def layer_section(settings: RunSettings, layout: RunLayout) -> str | None:
    """The report's layer-comparison section, when ``layers/`` holds one for the run's model, corpus and
    capture settings and its file matches the sha256 recorded with it; None otherwise (never an error: the
    section is optional)."""
    meta_path, path = layout.layers_file("layers.json"), layout.layers_file("section.html")
    if not meta_path.exists() or not path.exists():
        return None
    try:
        meta = load_json(meta_path)
        if meta.get("compare_key") != compare_key(settings):
            log.info("report: %s describes other settings; no layer comparison section", meta_path)
            return None
        if sha256_file(path) != meta.get("files_sha256", {}).get("section.html"):
            log.warning("report: %s does not match its recorded sha256; no layer comparison section", path)
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read the layer comparison (%s); no section", exc)
        return None
