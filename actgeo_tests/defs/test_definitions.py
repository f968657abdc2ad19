"""The Definitions load, and name the five assets in lineage with the partitions DESIGN.md asks for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from actgeo_assets.definitions import defs
from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS
from actgeo_assets.defs.resources import ActgeoResource

REPO = Path(__file__).resolve().parents[2]


def _graph():
    return defs.get_repository_def().asset_graph


def test_asset_keys_and_lineage() -> None:
    g = _graph()
    keys = {k.to_user_string() for k in g.get_all_asset_keys()}
    assert keys == {"raw_activations", "activation_mean", "normalized", "edge_tiles", "components",
                    "component_cards"}
    parents = {k.to_user_string(): {p.to_user_string() for p in g.get(k).parent_keys}
               for k in g.get_all_asset_keys()}
    assert parents["raw_activations"] == set()
    assert parents["activation_mean"] == {"raw_activations"}
    assert parents["normalized"] == {"raw_activations", "activation_mean"}
    assert parents["edge_tiles"] == {"normalized"}
    assert parents["components"] == {"edge_tiles"}
    assert parents["component_cards"] == {"components"}


def test_partitions() -> None:
    g = _graph()

    def pdef(name: str):
        return g.get(dg.AssetKey(name)).partitions_def

    assert isinstance(pdef("raw_activations"), dg.DynamicPartitionsDefinition)
    assert pdef("raw_activations").name == SHARDS
    assert pdef("normalized").name == SHARDS
    assert pdef("edge_tiles").name == SHARD_PAIRS
    assert pdef("activation_mean") is None
    assert pdef("components") is None
    assert pdef("component_cards") is None


def test_checks_declared() -> None:
    g = defs.get_repository_def().asset_graph
    names = {k.name for k in g.asset_check_keys}
    assert {"graph_not_near_complete", "unit_norms", "sizes_sum_to_n", "float64_spot_check", "cards_cover_ranks",
            "consistent_with_components", "sql_rows_match_cards"} <= names


def test_resource_profiles_and_overrides() -> None:
    demo = ActgeoResource().settings()
    assert demo.profile == "demo" and demo.normalization == "center_l2" and demo.threshold == 0.7
    full = ActgeoResource(profile="full").settings()
    assert (full.model, full.layer, full.corpus, full.budget, full.normalization) == (
        "google/gemma-2-2b", 12, "NeelNanda/pile-10k", 1_000_000, "l2")
    assert ActgeoResource(profile="full", budget=5000, sweep=[0.6, 0.7]).settings().sweep == (0.6, 0.7)
    with pytest.raises(ValueError, match="unknown profile"):
        ActgeoResource(profile="nope").settings()
    with pytest.raises(ValueError, match="normalization"):
        ActgeoResource(normalization="zscore").settings()
    assert ActgeoResource(data_dir="/tmp/x").db_url() == "sqlite:////tmp/x/actgeo.sqlite"


def test_dagster_definitions_validate(tmp_path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                          "actgeo_assets.definitions"], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stdout + out.stderr


def test_lib_never_imports_dagster() -> None:
    code = ("import sys, importlib, pkgutil, actgeo_assets.lib as L\n"
            "for m in pkgutil.iter_modules(L.__path__): importlib.import_module('actgeo_assets.lib.' + m.name)\n"
            "print('dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_config_file_and_env(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("profile: demo\ndata_dir: %s\nbudget: 1234\nthreshold: 0.8\n" % (tmp_path / "d"))
    monkeypatch.setenv("ACTGEO_CONFIG", str(cfg))
    r = ActgeoResource()
    assert r.settings().budget == 1234 and r.settings().threshold == 0.8
    assert r.layout().root == (tmp_path / "d" / "demo").resolve()
    assert ActgeoResource(threshold=0.75).settings().threshold == 0.75  # explicit field wins
    cfg.write_text("budgett: 5\n")
    with pytest.raises(ValueError, match="unknown keys"):
        ActgeoResource().settings()


def test_database_url_from_environment(monkeypatch) -> None:
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    monkeypatch.setenv("ACTGEO_DATABASE_URL", "postgresql+psycopg2://u:secret@db:5432/actgeo")
    assert ActgeoResource().db_url() == "postgresql+psycopg2://u:secret@db:5432/actgeo"
    assert ActgeoResource(database_url="sqlite:///x.db").db_url() == "sqlite:///x.db"
