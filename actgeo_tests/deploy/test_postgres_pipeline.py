"""The whole pipeline on the deploy instance (deploy/dagster.yaml: runs, events, schedules in PostgreSQL)
with the component table in the same real PostgreSQL server; a rerun writes no duplicate rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.paths import REPO
from actgeo_tests.support.postgres import postgres_available, running_postgres
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_values


@pytest.mark.postgres
def test_pipeline_on_postgres_instance_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert postgres_available(), "PostgreSQL not found: `make test` installs Debian's postgresql"
    with running_postgres() as url:
        u = make_url(url)
        home = tmp_path / "home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        for key, value in (("DAGSTER_HOME", str(home)), ("DAGSTER_PG_HOST", u.host), ("DAGSTER_PG_PORT", str(u.port)),
                           ("DAGSTER_PG_USER", u.username), ("DAGSTER_PG_PASSWORD", "trust"),
                           ("DAGSTER_PG_DB", u.database)):
            monkeypatch.setenv(key, value)
        resource = ActgeoResource(data_dir=str(tmp_path / "data"), database_url=url,
                                  **tiny_values(model=tiny_gemma2(tmp_path)))
        engine = sa.create_engine(url)
        instance = dg.DagsterInstance.get()
        try:
            record = materialize_run(resource, instance, echo=lambda s: None)
            run_id = resource.settings().run_id()
            with engine.connect() as conn:
                statuses = [r[0] for r in conn.execute(sa.text("SELECT status FROM runs")).all()]
                comps = conn.execute(sa.text("SELECT rank, size FROM actgeo_components WHERE run_id = :r ORDER BY rank"),
                                     {"r": run_id}).all()
                run_row = conn.execute(sa.text("SELECT n_components, largest FROM actgeo_runs WHERE run_id = :r"),
                                       {"r": run_id}).one()
            # 2 raw + mean + 2 normalized + 3 tiles + one merge (components + cards), all stored in Postgres
            assert len(statuses) == 9 and set(statuses) == {"SUCCESS"}
            sizes = record["summary"]["top_sizes"]
            assert [tuple(r) for r in comps] == [(k, sizes[k - 1]) for k in range(2, min(5, len(sizes)) + 1)]
            assert tuple(run_row) == (record["summary"]["n_components"], record["summary"]["largest"])
            materialize_run(resource, instance, echo=lambda s: None)  # rerun: only the cards
            with engine.connect() as conn:
                n = conn.execute(sa.text("SELECT count(*) FROM actgeo_components WHERE run_id = :r"),
                                 {"r": run_id}).scalar_one()
            assert n == len(comps), "rerun duplicated component rows"
        finally:
            instance.dispose()
            engine.dispose()
