"""Stage of the asset ``layers`` (job ``layers``, `actgeo layers`): several layers of the corpus' first
documents captured in one forward pass, compared across layers and normalizations
(:mod:`actgeo_assets.lib.analysis.layers`), written under ``{profile}/layers/`` and shown as a section of the
report (the cards stage reads it: ``component_cards`` declares ``layers`` upstream).

Not part of what `actgeo run` plans: it runs as its own job (``actgeo layers``); the report includes its section
whenever it is current for the run's settings (:data:`LAYERS`).
"""

from __future__ import annotations

import dataclasses
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
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.config.spec import SettingsError
from actgeo_assets.lib.stages.activations import cached_corpus
from actgeo_assets.lib.stages.common import load_run_model, show_progress
from actgeo_assets.lib.stages.record import Inputs, StageSpec, expected_inputs, input_field
from actgeo_assets.lib.store.layout import (
    RunLayout,
    atomic_path,
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


@dataclass(frozen=True)
class LayersRecord:
    """``layers/layers.json``: what the comparison was computed from, and the sha256 of each of its files."""

    version: str = input_field(lambda i: LAYERS_VERSION)
    compare_key: dict[str, Any] = input_field(lambda i: compare_key(i.settings))
    thresholds: list[float] = input_field(lambda i: list(comparison_thresholds(i.settings)))
    normalizations: list[str] = input_field(lambda i: list(METHODS))
    files_sha256: dict[str, str] = dataclasses.field(default_factory=dict)  # FILES by name


def layers_current(settings: RunSettings, layout: RunLayout) -> bool:
    """Whether ``layers/`` holds the comparison these settings ask for (:data:`LAYERS`' freshness: the same
    inputs, and every file of ``FILES`` matching the sha256 recorded for it)."""
    return LAYERS.freshness(Inputs(settings, layout, None, {})).current


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
    docs = list(cached_corpus(settings, str(layout.corpus_cache)))
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
        **expected_inputs(LayersRecord, Inputs(settings, layout, None, {})),
        "n": cmp.n, "n_dropped": cmp.n_dropped, "layers": list(layers), "reference_layer": cmp.reference_layer,
        "landing_threshold": cmp.landing_threshold, "capture": stats, "seconds": round(seconds, 3),
        "files_sha256": sha,
    })
    log.info("layers: %d tokens, layers %s, %d rows of comparison in %.1fs", cmp.n, layers,
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
    """The report's layer-comparison section when ``layers/`` is current for the run's settings (:data:`LAYERS`);
    None otherwise (never an error: the section is optional)."""
    fresh = LAYERS.freshness(Inputs(settings, layout, None, {}))
    if not fresh.current:
        log.info("report: no layer comparison section (%s)", fresh.why)
        return None
    try:
        return layout.layers_file("section.html").read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("report: cannot read the layer comparison (%s); no section", exc)
        return None


LAYERS = StageSpec(
    name="layers", partitions=None, upstream=(), record=LayersRecord, version=LAYERS_VERSION,
    output_field="files_sha256/geometry.csv",
    sidecar=lambda layout, _: layout.layers_file("layers.json"),
    files=lambda layout, _, meta: [(layout.layers_file(name), (meta.get("files_sha256") or {}).get(name))
                                   for name in FILES],
)
