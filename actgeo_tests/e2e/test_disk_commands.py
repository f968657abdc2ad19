"""`actgeo du` and `actgeo remove` on a copy of a finished tiny run (its folder and its SQLite database).

`du`: each stage's bytes and files against ``du`` of the same files, and the total; `remove`: refuses without
``--profile``, and without ``--yes`` when stdin is no terminal (nothing removed); with ``--yes`` it removes the
run folder and every SQL row of the run (each table), keeps another run's rows, the other run folders and the
shared caches, and says what it removed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from actgeo_assets.cli import main
from actgeo_tests.support.tiny_run import tiny_set_args

TABLES = ("actgeo_runs", "actgeo_components", "actgeo_subcomponents")


@pytest.fixture
def copy(tiny_runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("DAGSTER_HOME", "ACTGEO_DATABASE_URL", "ACTGEO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    run = tiny_runs()
    data = tmp_path / "data"
    shutil.copytree(run.data_dir, data)
    shutil.copytree(data / "demo", data / "other")  # a second run folder that must stay: another run of its own
    for rel in ("components/summary.json", "cards/cards.json"):
        doc = json.loads((data / "other" / rel).read_text())
        doc["run_key"] = {**doc["run_key"], "threshold": 0.55}
        (data / "other" / rel).write_text(json.dumps(doc))
    (data / "_models").mkdir(exist_ok=True)
    (data / "_models" / "m.bin").write_bytes(b"m" * 10_000)
    return run, data


def _count(db: Path, run_id: str) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE run_id = ?", (run_id,)).fetchone()[0] for t in TABLES}


def _du(*files: Path) -> int:
    out = subprocess.run(["du", "-c", "-B1", *map(str, files)], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def test_du(copy, capsys: pytest.CaptureFixture) -> None:
    run, data = copy
    argv = ["du", "--data-dir", str(data), *tiny_set_args(model=run.overrides["model"])]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    stages = report["runs"]["demo"]
    assert list(report["runs"]) == ["demo"]
    root = data / "demo"
    for stage, folder in (("normalized", "normalized"), ("edge_tiles", "tiles"), ("components", "components"),
                          ("component_cards", "cards")):
        files = [p for p in (root / folder).rglob("*") if p.is_file()]
        assert stages[stage]["files"] == len(files) > 0 and stages[stage]["bytes"] == _du(*files), stage
    every = [p for p in root.rglob("*") if p.is_file()]
    assert stages["total"]["bytes"] == _du(*every) == sum(v["bytes"] for k, v in stages.items() if k != "total")
    assert report["caches"]["_models"]["files"] == 1 and report["caches"]["_models"]["apparent"] == 10_000
    assert abs(report["free"] - shutil.disk_usage(data).free) < 2**24  # other processes write meanwhile
    assert main([*argv, "--all", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["runs"]) == ["demo", "other"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"run folder {root}" in text and "normalized" in text and "total" in text and "free on" in text


def test_remove(copy, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    run, data = copy
    db = data / "actgeo.sqlite"
    rid = run.settings.run_id()
    with sqlite3.connect(db) as conn:  # another run's rows, which must stay
        conn.execute("INSERT INTO actgeo_runs (run_id, run_key, description, n_components, largest, non_singleton, "
                     "singletons, top_sizes, created_at) VALUES ('otherrun0000', '{}', 'x', 1, 1, 0, 0, '[1]', "
                     "'2026-01-01')")
    before = _count(db, rid)
    assert before["actgeo_runs"] == 1 and before["actgeo_components"] > 0
    argv = ["remove", "--data-dir", str(data), *tiny_set_args(model=run.overrides["model"])]
    no_profile = [a for i, a in enumerate(argv) if a not in ("--profile", "--experiment")
                  and (i == 0 or argv[i - 1] not in ("--profile", "--experiment"))]
    assert main(no_profile) == 2 and "--profile" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # noqa: SIM115 - not a terminal
    assert main([*argv, "--profile", "demo"]) == 2
    assert "without --yes" in capsys.readouterr().err
    assert (data / "demo").is_dir() and _count(db, rid) == before
    assert main([*argv, "--profile", "demo", "--yes"]) == 0
    out = capsys.readouterr().out
    assert not (data / "demo").exists() and _count(db, rid) == dict.fromkeys(TABLES, 0)
    assert _count(db, "otherrun0000")["actgeo_runs"] == 1
    assert (data / "other" / "components" / "labels.npy").is_file() and (data / "_models" / "m.bin").is_file()
    assert f"removed {data / 'demo'}" in out and f"{before['actgeo_components']} from actgeo_components" in out
    assert "Dagster instance keeps" in out


def test_remove_waits_for_no_writer(copy, capsys: pytest.CaptureFixture) -> None:
    """While another process holds the data directory's writer lock (an `actgeo run`), `remove` exits 2
    naming it and removes nothing."""
    import subprocess
    import sys

    run, data = copy
    db = data / "actgeo.sqlite"
    before = _count(db, run.settings.run_id())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom actgeo_assets.lib.store.lock import data_dir_lock\n"
         f"with data_dir_lock({str(data / '.actgeo.lock')!r}, command='actgeo run'):\n"
         "    print('held', flush=True)\n    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["remove", "--profile", "demo", "--yes", "--data-dir", str(data),
                *tiny_set_args(model=run.overrides["model"])]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "in use by" in err and str(holder.pid) in err
        assert (data / "demo" / "components" / "labels.npy").is_file() and _count(db, run.settings.run_id()) == before
    finally:
        holder.kill()
        holder.wait()
