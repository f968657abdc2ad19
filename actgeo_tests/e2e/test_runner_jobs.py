"""`actgeo run` (what `make demo` calls) runs the stage jobs of the Definitions, not ephemeral jobs: every run
of one invocation carries one `actgeo/invocation` tag, the code location's origin (so the UI re-executes
it), the settings as run config (never the database URL) and its captured stdout/stderr; a second
invocation with nothing changed launches no run, and one with other card settings re-renders only the cards."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from actgeo_assets.defs.jobs import INVOCATION_TAG
from actgeo_assets.defs.pipeline import run_stages
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.dagster_ui import instance_home
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values


def _by_invocation(runs: list) -> dict[str, list]:
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.tags[INVOCATION_TAG], []).append(run)
    return groups


def test_runs_are_stage_jobs_grouped_by_invocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACTGEO_DATABASE_URL", raising=False)
    db = tmp_path / "db-k3v9.sqlite"
    # budget and card settings of its own: the runs' config must show the resource's values
    resource = ActgeoResource(data_dir=str(tmp_path / "data"), database_url=f"sqlite:///{db}",
                              **tiny_values(model=tiny_gemma2(tmp_path), budget=400, card_ranks=[2, 3],
                                            contexts_per_card=2))
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path / "home"))) as instance:
        first = materialize_run(resource, instance, echo=lambda s: None)
        assert db.is_file()  # the resource's URL reached the runs (through $ACTGEO_DATABASE_URL) ...
        runs = instance.get_runs()
        assert {r.job_name for r in runs} == {s.job for s in run_stages()}
        (invocation,) = _by_invocation(runs)
        assert len(runs) == 2 + 1 + 2 + 3 + 1  # capture, mean, normalize, tiles, merge (components + cards)
        capture = next(r for r in runs if r.job_name == "capture_job")
        assert capture.tags["dagster/partition"] in ("shard-000", "shard-001")
        assert capture.remote_job_origin.location_name == "actgeo_assets.definitions"
        assert capture.remote_job_origin.repository_origin.repository_name == "__repository__"
        settings = capture.run_config["resources"]["actgeo"]["config"]
        assert settings["budget"] == 400 and settings["card_ranks"] == [2, 3] and "database_url" not in settings
        assert "k3v9" not in json.dumps([r.run_config for r in runs])  # ... but never their stored config
        # the step's output went to the run's compute logs (the run page's stdout/stderr)
        logs = list((tmp_path / "home" / "storage" / capture.run_id / "compute_logs").glob("*.err"))
        assert logs and "capturing shard-" in logs[0].read_text()
        assert "\r" not in logs[0].read_text(), "no tqdm bars in a captured log"

        again = materialize_run(resource, instance, echo=lambda s: None)
        assert again["summary"] == first["summary"]
        assert len(instance.get_runs()) == len(runs), "nothing was stale: no run"
        other_cards = resource.model_copy(update={"contexts_per_card": 3})
        lines: list[str] = []
        materialize_run(other_cards, instance, echo=lines.append)
        groups = _by_invocation(instance.get_runs())
        (second,) = [runs for tag, runs in groups.items() if tag != invocation]
        assert [(r.job_name, r.asset_selection) for r in second] == [("merge_job", {dg.AssetKey("component_cards")})]
        assert any("component_cards:" in line and "contexts_per_card" in line for line in lines), lines
