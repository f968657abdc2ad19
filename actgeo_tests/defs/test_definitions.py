"""The Definitions load: eight assets in lineage, their partitions, the resource derived from RunSettings."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap

from actgeo_assets.definitions import defs
from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.settings import SETTINGS, RunSettings
from actgeo_tests.support.paths import REPO


def _graph():
    return defs.get_repository_def().asset_graph


def test_asset_keys_and_lineage() -> None:
    g = _graph()
    keys = {k.to_user_string() for k in g.get_all_asset_keys()}
    assert keys == {"raw_activations", "activation_mean", "normalized", "edge_tiles", "components",
                    "component_cards", "lookup", "layers", "experiment_comparison"}
    parents = {k.to_user_string(): {p.to_user_string() for p in g.get(k).parent_keys}
               for k in g.get_all_asset_keys()}
    assert parents["raw_activations"] == set()
    assert parents["activation_mean"] == {"raw_activations"}
    assert parents["normalized"] == {"raw_activations", "activation_mean"}
    assert parents["edge_tiles"] == {"normalized"}
    # the merge reads the shards' sizes, forests and rows; the cards the token tables, rows and the layer section
    assert parents["components"] == {"edge_tiles", "normalized"}
    assert parents["component_cards"] == {"raw_activations", "activation_mean", "normalized", "components", "layers"}
    assert parents["lookup"] == {"normalized", "components"}
    assert parents["layers"] == set()  # the layer sweep captures its own activations
    # no experiment in the tests' data directory: the comparison reads the profile's run only
    assert parents["experiment_comparison"] == {"components", "component_cards"}


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
    assert pdef("lookup") is None


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
    with pytest.raises(ValueError, match=r"run\.yaml \(\$ACTGEO_CONFIG\): unknown key 'budgett'; known keys: "):
        ActgeoResource().settings()


# --- one list of settings: the resource derives its fields from RunSettings

OWN_FIELDS = {"config_file", "data_dir", "database_url"}
SECRET = "secret-9f2c"
SECRET_URL = f"postgresql://user:{SECRET}@db.example:5432/actgeo"


def _launchpad_type(hint: object) -> object:
    """A RunSettings annotation as the launchpad shows it: Optional stripped, a tuple as a list."""
    args = typing.get_args(hint)
    base = next(a for a in args if a is not type(None)) if type(None) in args else hint
    return list[typing.get_args(base)[0]] if typing.get_origin(base) is tuple else base


def test_resource_fields_are_the_runsettings_fields() -> None:
    fields = ActgeoResource.model_fields
    assert set(fields) == {f.name for f in dataclasses.fields(RunSettings)} | OWN_FIELDS
    hints = typing.get_type_hints(RunSettings)
    for f in dataclasses.fields(RunSettings):
        field = fields[f.name]
        assert field.default is None, f.name  # None: keep the profile's value
        assert field.annotation == (_launchpad_type(hints[f.name]) | None), f.name
        assert f.metadata["doc"] in (field.description or ""), f.name


def test_launchpad_describes_every_setting() -> None:
    snap = RepositorySnap.from_def(defs.get_repository_def())
    (resource,) = [r for r in snap.resources if r.name == "actgeo"]
    described = {f.name: f.description or "" for f in resource.config_field_snaps}
    assert set(described) == set(SETTINGS) | OWN_FIELDS
    for name, spec in SETTINGS.items():
        assert spec.doc in described[name], name
    assert {f.name: f.type_key for f in resource.config_field_snaps}["card_ranks"] == "Noneable.Array.IntSourceType"


@pytest.mark.parametrize("kw, message", [
    ({"layer": 9.5}, "resource config: layer must be an integer, got 9.5"),
    ({"layer": "nine"}, "resource config: layer must be an integer, got 'nine'"),
    ({"threshold": True}, "resource config: threshold must be a number, got True"),
    ({"threshold": 1.5}, "resource config: threshold must lie in (-1, 1]"),
    ({"sweep": [2, 3]}, "resource config: sweep values must lie in (-1, 1] (a cosine), got 2.0"),
    ({"card_ranks": [1]}, "resource config: card_ranks must be two integers [first, last], got [1]"),
    ({"profile": "nope"}, "resource config: unknown profile 'nope'"),
    ({"database_url": "postgresql://u:secret-9f2c@h:port/db"}, "resource config: database_url is not a SQLAlchemy"),
])
def test_resource_rejects_bad_values_when_built(kw: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        ActgeoResource(**kw)
    assert message in str(exc.value)
    assert SECRET not in str(exc.value)


def test_resource_rules_between_settings(monkeypatch) -> None:
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    with pytest.raises(ValueError, match=r"^resource config: budget 3 is below n_shards 4"):
        ActgeoResource(budget=3).settings()
    assert ActgeoResource(budget=3, n_shards=3).settings().budget == 3


def test_yaml_layer_9_5_names_the_file(tmp_path, monkeypatch) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("layer: 9.5\n")
    with pytest.raises(ValueError, match=rf"^config file {cfg}: layer must be an integer, got 9\.5$"):
        ActgeoResource(config_file=str(cfg)).settings()
    monkeypatch.setenv("ACTGEO_CONFIG", str(cfg))
    with pytest.raises(ValueError, match=r"bad\.yaml \(\$ACTGEO_CONFIG\): layer must be an integer, got 9\.5$"):
        ActgeoResource().settings()
    cfg.write_text("threshold: 0.8\nmin_threshold: 0.85\n")
    with pytest.raises(ValueError, match=r"bad\.yaml \(\$ACTGEO_CONFIG\): min_threshold 0\.85 is above threshold"):
        ActgeoResource().settings()


def test_config_file_parsed_once(tmp_path, monkeypatch) -> None:
    import yaml

    calls: list[str] = []
    real = yaml.safe_load
    monkeypatch.setattr(yaml, "safe_load", lambda text: calls.append(text) or real(text))
    cfg = tmp_path / "once.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'd'}\nbudget: 1234\nthreshold: 0.8\nlayer: 3\n")
    r = ActgeoResource(config_file=str(cfg))
    s = r.settings()
    assert (s.budget, s.threshold, s.layer) == (1234, 0.8, 3)
    r.layout(), r.db_url(), r.settings()
    assert len(calls) == 1


def _probe(ran: list) -> dg.AssetsDefinition:
    @dg.asset
    def probe(actgeo: ActgeoResource) -> None:
        ran.append(actgeo.db_url())

    return probe


def test_bad_settings_fail_before_any_compute(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    monkeypatch.delenv("ACTGEO_DATABASE_URL", raising=False)
    ran: list = []
    probe_defs = dg.Definitions(assets=[_probe(ran)], resources={"actgeo": ActgeoResource()})
    job = probe_defs.resolve_implicit_global_asset_job_def()
    # launchpad config that breaks a rule between settings: the run fails when its resources are set up
    with pytest.raises(dg.DagsterResourceFunctionError) as exc:
        job.execute_in_process(run_config={"resources": {"actgeo": {"config": {"budget": 3}}}})
    assert "resource config: budget 3 is below n_shards 4" in str(exc.value.user_exception)
    # a settings file with a bad value
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("layer: 9.5\n")
    with pytest.raises(dg.DagsterResourceFunctionError) as exc:
        job.execute_in_process(run_config={"resources": {"actgeo": {"config": {"config_file": str(cfg)}}}})
    assert f"config file {cfg}: layer must be an integer, got 9.5" in str(exc.value.user_exception)
    # a value of the wrong type: Dagster's own config check refuses it
    with pytest.raises(dg.DagsterInvalidConfigError):
        job.execute_in_process(run_config={"resources": {"actgeo": {"config": {"layer": 9.5}}}})
    assert ran == []
    assert job.execute_in_process(run_config={"resources": {"actgeo": {"config": {"data_dir": str(tmp_path)}}}}).success
    assert ran == [f"sqlite:///{tmp_path.resolve()}/actgeo.sqlite"]


def test_database_url_sources(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    monkeypatch.delenv("ACTGEO_DATABASE_URL", raising=False)
    assert ActgeoResource(data_dir=str(tmp_path)).db_url() == f"sqlite:///{tmp_path.resolve()}/actgeo.sqlite"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("database_url: sqlite:///from-file.db\n")
    assert ActgeoResource(config_file=str(cfg)).db_url() == "sqlite:///from-file.db"
    monkeypatch.setenv("ACTGEO_DATABASE_URL", SECRET_URL)
    assert ActgeoResource(config_file=str(cfg)).db_url() == SECRET_URL  # the environment beats the file
    assert ActgeoResource(database_url="sqlite:///x.db").db_url() == "sqlite:///x.db"  # the field wins
    assert ActgeoResource(database_url=dg.EnvVar("ACTGEO_DATABASE_URL")).db_url() == SECRET_URL
    assert SECRET not in repr(ActgeoResource(database_url=SECRET_URL))
    assert SECRET not in str(ActgeoResource(database_url=SECRET_URL))
    monkeypatch.setenv("ACTGEO_DATABASE_URL", SECRET_URL.replace("5432", "port"))
    with pytest.raises(ValueError) as exc:
        ActgeoResource().db_url()
    assert str(exc.value).startswith("environment $ACTGEO_DATABASE_URL: database_url is not a SQLAlchemy URL")
    assert SECRET not in str(exc.value)


def test_wired_env_var_resolves_in_a_run(monkeypatch, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'wired-7c1e.sqlite'}"
    monkeypatch.setenv("ACTGEO_DATABASE_URL", url)
    ran: list = []
    dg.materialize([_probe(ran)], resources={"actgeo": ActgeoResource(database_url=dg.EnvVar("ACTGEO_DATABASE_URL"))})
    assert ran == [url]


def test_a_run_that_cannot_reach_its_database_fails_naming_it(monkeypatch, tmp_path) -> None:
    """Before any compute, with the password masked; on Kubernetes a pod without a database URL fails too,
    never falling back to a SQLite file on the volume."""
    monkeypatch.delenv("ACTGEO_CONFIG", raising=False)
    monkeypatch.setenv("ACTGEO_DATABASE_URL", SECRET_URL)  # db.example does not resolve
    ran: list = []
    resource = ActgeoResource(data_dir=str(tmp_path), database_url=dg.EnvVar("ACTGEO_DATABASE_URL"))
    with pytest.raises(dg.DagsterResourceFunctionError) as exc:
        dg.materialize([_probe(ran)], resources={"actgeo": resource})
    cause = str(exc.value.__cause__)
    assert "cannot connect to the database 'postgresql://user:***@db.example:5432/actgeo'" in cause
    assert SECRET not in cause and ran == []
    monkeypatch.delenv("ACTGEO_DATABASE_URL")
    monkeypatch.setenv("ACTGEO_DEPLOYMENT", "k8s")
    with pytest.raises(dg.DagsterResourceFunctionError) as exc:
        dg.materialize([_probe(ran)], resources={"actgeo": ActgeoResource(data_dir=str(tmp_path))})
    assert "ACTGEO_DATABASE_URL" in str(exc.value.__cause__), exc.value.__cause__
    assert ran == [] and not list(tmp_path.rglob("*.sqlite"))


_SHOW_CONFIG = """
import json, os
import dagster as dg
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from actgeo_assets.definitions import defs
from actgeo_assets.defs.resources import ActgeoResource

def shown(d):
    snap = RepositorySnap.from_def(d.get_repository_def())
    (res,) = [r for r in snap.resources if r.name == "actgeo"]
    return serialize_value(res.configured_values), serialize_value(snap)

plain = dg.Definitions(resources={"actgeo": ActgeoResource(database_url=os.environ["ACTGEO_DATABASE_URL"])})
print(json.dumps({"wired": shown(defs), "plain": shown(plain)}))
"""


@pytest.mark.parametrize("url", ["postgresql://u:secret@h/db", SECRET_URL])
def test_database_password_never_in_dagster_config(tmp_path, url: str) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "ACTGEO_DATABASE_URL": url}
    env.pop("ACTGEO_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", _SHOW_CONFIG], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    password = url.split(":")[2].split("@")[0]
    configured, repository = shown["wired"]
    assert "ACTGEO_DATABASE_URL" in configured and password not in configured
    if password == SECRET:  # unique: it may not appear anywhere in what the UI is sent
        assert SECRET not in repository
    # the same URL written into the resource would show: the check can fail
    assert password in shown["plain"][0]
