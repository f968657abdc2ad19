"""lib/store/run.py: a run resolved from its sources (settings file, explicit values, environment) as the
Dagster resource resolves it, and its database URL with the Kubernetes rule (no SQLite fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actgeo_assets.lib.config.spec import SettingsError
from actgeo_assets.lib.store.run import resolve_run


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "actgeo.yaml"
    path.write_text(text)
    return str(path)


def test_file_from_the_environment_then_explicit_values_win(tmp_path: Path) -> None:
    cfg = _file(tmp_path, f"profile: full\nlayer: 5\ndata_dir: {tmp_path / 'd'}\n")
    run = resolve_run(values={"layer": 7}, environ={"ACTGEO_CONFIG": cfg})
    assert run.settings.profile == "full" and run.settings.layer == 7
    assert run.layout.root == tmp_path / "d" / "full" and run.data_dir == tmp_path / "d"
    assert resolve_run(cfg, environ={}).settings.layer == 5  # an explicit file needs no environment
    assert resolve_run(environ={}).settings.profile == "demo"  # no file: the demo profile


def test_a_bad_value_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^command line: layer must be an integer"):
        resolve_run(values={"layer": "x"}, source="command line", environ={})
    cfg = _file(tmp_path, "threshold: 3\n")
    with pytest.raises(SettingsError, match=r"\(\$ACTGEO_CONFIG\): threshold must lie in"):
        resolve_run(environ={"ACTGEO_CONFIG": cfg})


def test_database_url_order_and_the_kubernetes_rule(tmp_path: Path) -> None:
    cfg = _file(tmp_path, f"database_url: sqlite:///{tmp_path}/file.sqlite\ndata_dir: {tmp_path}\n")
    env = {"ACTGEO_CONFIG": cfg}
    assert resolve_run(environ=env).database_url == f"sqlite:///{tmp_path}/file.sqlite"
    from_env = {**env, "ACTGEO_DATABASE_URL": "postgresql://u:pw@h/db"}
    assert resolve_run(environ=from_env).database_url == "postgresql://u:pw@h/db"
    explicit = resolve_run(values={"database_url": "sqlite:///x.sqlite"}, environ=from_env)
    assert explicit.database_url == "sqlite:///x.sqlite"
    local = resolve_run(values={"data_dir": str(tmp_path)}, environ={})
    assert local.database_url == f"sqlite:///{tmp_path}/actgeo.sqlite"
    pod = resolve_run(values={"data_dir": str(tmp_path)}, environ={"ACTGEO_DEPLOYMENT": "k8s"})
    assert pod.settings.profile == "demo"  # settings resolve without a database
    with pytest.raises(SettingsError, match="ACTGEO_DATABASE_URL is unset in this pod"):
        _ = pod.database_url
    with pytest.raises(SettingsError) as exc:
        _ = resolve_run(environ={"ACTGEO_DATABASE_URL": "postgresql://u:s3cr3t@h:port/db"}).database_url
    assert "s3cr3t" not in str(exc.value) and "environment $ACTGEO_DATABASE_URL" in str(exc.value)


def test_relative_data_dir_is_taken_from_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actgeo_assets.lib.store.layout import project_root

    repo = Path(__file__).resolve().parents[3]
    assert project_root() == repo  # lib/store/layout.py sits three folders below it
    monkeypatch.chdir(tmp_path)
    run = resolve_run(environ={})
    assert run.layout.root == repo / "data" / "demo" and run.database_url == f"sqlite:///{repo / 'data' / 'actgeo.sqlite'}"
