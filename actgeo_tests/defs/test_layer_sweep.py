"""The layer sweep on the tiny model: the Definitions' job `layer_sweep` (asset `layers`) runs as its
own run, its table agrees with an independent single-layer capture and a float64 brute force, the report of a
finished run gains the section, `actgeo layers` prints the table, and a layer beyond the model's depth is
refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.cli import main
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.store.layout import sha256_file
from actgeo_assets.runner import RunFailed, materialize_layers, materialize_run
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_set_args, tiny_values


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_gemma2(tmp_path_factory.mktemp("tiny-layers"))


def _read(settings, cache_dir):
    """The run's corpus, read with the fields the library takes."""
    from actgeo_assets.lib.capture.corpus import read_corpus

    return read_corpus(settings.corpus, cache_dir, split=settings.corpus_split, text_field=settings.text_field,
                       dedup=settings.dedup)


def test_layer_sweep_job_table_and_report_section(model: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    # the tiny run at layer 1 (the comparison's reference layer), in one small shard: the run only has to finish
    resource = ActgeoResource(data_dir=str(data), **tiny_values(model=model, layer=1, n_shards=1, budget=150,
                                                                compare_layers=[3, 0, 1], compare_budget=200))
    instance = dg.DagsterInstance.ephemeral()
    materialize_run(resource, instance, echo=lambda s: None)
    report = data / "demo" / "cards" / "report.html"
    assert 'id="layers-h"' not in report.read_text()

    out = materialize_layers(resource, instance, echo=lambda s: None)
    assert out["cards"]  # the run was finished, so its cards (and report) were rendered again
    jobs = [r.job_name for r in instance.get_runs()]
    assert jobs.count("layers_job") == 1 and jobs.count("merge_job") == 2
    meta = instance.get_latest_materialization_event(dg.AssetKey("layers")).asset_materialization.metadata
    assert meta["n"].value == 200 and meta["reference_layer"].value == 1 and "at_0.6" in meta

    layers_dir = data / "demo" / "layers"
    table = pd.read_csv(layers_dir / "geometry.csv")
    assert set(table["layer"]) == {0, 1, 3} and set(table["normalization"]) == {"l2", "center_l2", "rmsnorm"}
    assert {0.3, 0.4, 0.6, 0.95} <= set(table["threshold"].round(6))
    recorded = json.loads((layers_dir / "layers.json").read_text())
    assert recorded["files_sha256"]["geometry.csv"] == sha256_file(layers_dir / "geometry.csv")
    landing = pd.read_csv(layers_dir / "landing.csv")
    assert set(landing["layer"]) == {0, 3} and (landing["ref_layer"] == 1).all()

    # independent check of one layer: a single-layer capture of the corpus' first 200 tokens, L2 in float64,
    # the float64 brute force
    from actgeo_assets.lib.capture.model import load_model
    from actgeo_assets.lib.capture.residual import capture_activations

    docs = list(_read(resource.settings(), data / "_corpus"))
    loaded = load_model(model, tmp_path / "cache", device="cpu", threads=1)
    raw = capture_activations(loaded, docs, layer=3, context_len=48, budget=200, batch_size=4, progress=False).acts
    x = raw.astype(np.float64)
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    l2 = table[(table["layer"] == 3) & (table["normalization"] == "l2")]
    for t in (0.6, 0.8, 0.9):
        ref = np.bincount(brute_force_labels(unit, t))
        row = l2[np.isclose(l2["threshold"], t)].iloc[0]
        assert (row["n_components"], row["largest"]) == (len(ref), ref[0])
    u64 = unit.astype(np.float64)
    gram = u64 @ u64.T
    assert l2["mean_cosine"].iloc[0] == pytest.approx((gram.sum() - np.trace(gram)) / (200 * 199), abs=1e-9)

    text = report.read_text()
    for hook in ('id="layers-h"', 'id="layer-geometry"', 'id="fig-layer-giant"', 'id="layer-landing"'):
        assert hook in text, hook
    # other capture settings: the old section no longer describes the run and is left out
    from actgeo_assets.lib.stages.layers import layer_section

    assert layer_section(resource.settings(), resource.layout()) is not None
    assert layer_section(resource.settings().replace(context_len=32), resource.layout()) is None


def test_actgeo_layers_prints_the_table(model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    argv = ["layers", "--data-dir", str(tmp_path / "data"),
            *tiny_set_args(model=model, threshold=0.7, compare_layers=[0, 2], compare_budget=120)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "layers x normalizations at cosine 0.7 (120 tokens)" in out
    table = pd.read_csv(tmp_path / "data" / "demo" / "layers" / "geometry.csv")
    at = table[np.isclose(table["threshold"], 0.7)].set_index(["layer", "normalization"])
    line = next(s for s in out.splitlines() if s.strip().startswith("2 "))
    assert f"{at.loc[(2, 'center_l2'), 'mean_cosine']:.3f}" in line
    assert f"{int(at.loc[(2, 'rmsnorm'), 'n_components']):,}" in line
    assert "the next `actgeo run` adds the section" in out


def test_actgeo_layers_reuses_a_current_comparison(model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `actgeo layers` with the same settings computes nothing (files untouched, "current"); --force,
    other settings and an edited file each compute the comparison again."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    base = ["layers", "--data-dir", str(tmp_path / "data"),
            *tiny_set_args(model=model, threshold=0.7, compare_layers=[0, 2])]
    layers_dir = tmp_path / "data" / "demo" / "layers"
    meta = layers_dir / "layers.json"

    def run(*extra: str) -> tuple[str, int]:
        assert main([*base, *extra]) == 0
        return capsys.readouterr().out, meta.stat().st_mtime_ns

    out, first = run("--set", "compare_budget=120")
    assert "layers" in out and "ok in" in out
    def results() -> pd.DataFrame:  # the table without its timing column
        return pd.read_csv(layers_dir / "geometry.csv").drop(columns="seconds")

    table, raw = results(), (layers_dir / "geometry.csv").read_bytes()
    out, again = run("--set", "compare_budget=120")
    assert again == first and "current (" in out and "ok in" not in out.split("layers")[1].splitlines()[0]
    assert (layers_dir / "geometry.csv").read_bytes() == raw
    assert "layers x normalizations at cosine 0.7 (120 tokens)" in out  # the table is still printed
    out, forced = run("--set", "compare_budget=120", "--force")
    assert forced != first and "current (" not in out
    pd.testing.assert_frame_equal(results(), table)  # the same comparison, computed again
    out, other = run("--set", "compare_budget=100")
    assert other != forced and "current (" not in out and "(100 tokens)" in out
    (layers_dir / "landing.csv").write_text("rank\n1\n")  # an edited file: its sha256 no longer matches
    out, edited = run("--set", "compare_budget=100")
    assert edited != other and "current (" not in out
    assert (layers_dir / "landing.csv").read_text() != "rank\n1\n"


def test_layers_beyond_the_models_depth_are_refused(model: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    resource = ActgeoResource(data_dir=str(tmp_path / "data"),
                              **tiny_values(model=model, compare_layers=[1, 3, 6], compare_budget=50))
    with pytest.raises(RunFailed, match=r"compare_layers \[1, 3, 6\]: \[6\] out of range .*n_layers=4"):
        materialize_layers(resource, dg.DagsterInstance.ephemeral(), echo=lambda s: None)
    assert not (tmp_path / "data" / "demo" / "layers" / "geometry.csv").exists()
    assert main(["layers", "--set", "compare_layers=3,-1"]) == 2
    assert "compare_layers values must be >= 0, got -1" in capsys.readouterr().err
