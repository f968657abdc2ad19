"""`actgeo run`: the command `make demo` calls, on a tiny model, and its bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actgeo_assets.cli import main
from actgeo_tests.support.env import unset_env
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_set_args


def test_actgeo_run_prints_the_study_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    model = tiny_gemma2(tmp_path)
    argv = ["run", "--data-dir", str(tmp_path / "data"), *tiny_set_args(model=model),
            "--database-url", f"sqlite:///{tmp_path}/db-x7q2.sqlite"]
    unset_env(monkeypatch, "ACTGEO_DATABASE_URL")  # restored after the test: --database-url sets it
    assert main(argv) == 0
    out = capsys.readouterr().out
    for line in ("components", "largest", "non-singleton components besides it", "singletons",
                 "top-20 sizes", "report:", "database:"):
        assert line in out, line
    summary = json.loads((tmp_path / "data" / "demo" / "components" / "summary.json").read_text())
    assert f"{summary['summary']['n_components']:,}" in out
    assert (tmp_path / "home").is_dir()  # runs recorded for `make ui`
    assert (tmp_path / "db-x7q2.sqlite").is_file()  # --database-url was used ...
    _assert_not_stored(tmp_path / "home", "db-x7q2")  # ... but never entered the runs' stored config
    # second run: everything current, nothing recomputed
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "raw_activations" not in again and "edge_tiles" not in again and "component_cards" not in again
    assert "every stage is current" in again


@pytest.mark.parametrize("argv, message", [
    (["run", "--set", "bogus=1"], "bad --set 'bogus=1'"),
    (["run", "--set", "normalization=zscore"], "normalization must be one of"),
    (["run", "--profile", "nope"], "unknown profile 'nope'"),
])
def test_actgeo_run_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def _assert_not_stored(home: Path, secret: str) -> None:
    """``secret`` is in no run's config nor job snapshot (decoded: Dagster stores them compressed)."""
    import dagster as dg
    from dagster._serdes import serialize_value

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs
        for run in runs:
            assert secret not in json.dumps(run.run_config)
            snapshot = instance.get_job_snapshot(run.job_snapshot_id)
            text = serialize_value(snapshot)
            assert "ActgeoResource" in text or "actgeo" in text  # the snapshot really is the job's
            assert secret not in text
