"""Fault injection on a tiny `actgeo run` (the tiny Gemma 2, the fixture corpus, 2 shards, 3 tiles).

One baseline run is shared by the module; each fault is injected into a copy of its data directory and
`actgeo run` is run again. Every outcome is one of two: the run heals (exit 0, the baseline's summary, a
warning naming the damaged file), or it exits 2 with one clear line. It never exits 0 with another result.

Faults: truncated, overwritten (same size) and bit-flipped files of every kind a stage reads (raw .npy,
token and document tables, the mean, normalized .npy and its kept mask, tile .npz, labels, merged forest),
a damaged sidecar, a deleted file; SIGKILL during the capture and during the tiles (a subprocess paused
mid-write); a second concurrent run; failed blocking checks; every bad setting of issue 11.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actgeo_assets.cli import main
from actgeo_tests.support.env import unset_env
from actgeo_tests.support.paths import MINI_CORPUS, REPO
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_set_args, tiny_values

if TYPE_CHECKING:
    from actgeo_assets.defs.resources import ActgeoResource


@dataclass(frozen=True)
class Baseline:
    root: Path
    model: str
    data: Path
    summary: dict
    printed: list[str]  # the summary block `actgeo run` printed

    def argv(self, data: Path, *more: str) -> list[str]:
        """`actgeo run` of the tiny run (this baseline's model) on ``data``, then ``more``."""
        return ["run", "--data-dir", str(data), *tiny_set_args(model=self.model), *more]

    def resource(self, data: Path) -> ActgeoResource:
        """The same settings as an ``ActgeoResource`` on ``data`` (dagster imported only where it is used)."""
        from actgeo_assets.defs.resources import ActgeoResource

        return ActgeoResource(data_dir=str(data), **tiny_values(model=self.model))


def _printed_summary(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run: "))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip())
    return lines[start:end]


def _summary(data: Path) -> dict:
    return json.loads((data / "demo" / "components" / "summary.json").read_text())["summary"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("faults")
    model = tiny_gemma2(root)
    data = root / "baseline"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_HOME", raising=False)
        mp.delenv("ACTGEO_DATABASE_URL", raising=False)
        mp.delenv("ACTGEO_CONFIG", raising=False)
        import io
        from contextlib import redirect_stdout

        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main(Baseline(root, model, data, {}, []).argv(data))
    assert rc == 0, buf.getvalue()
    return Baseline(root, model, data, _summary(data), _printed_summary(buf.getvalue()))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    unset_env(monkeypatch, "DAGSTER_HOME", "ACTGEO_DATABASE_URL", "ACTGEO_CONFIG")
    return monkeypatch


def _copy(baseline: Baseline, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(baseline.data, data)
    return data


def _run(baseline: Baseline, data: Path, capsys: pytest.CaptureFixture[str], *more: str) -> tuple[int, str, str]:
    rc = main(baseline.argv(data, *more))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _assert_healed(baseline: Baseline, data: Path, rc: int, out: str, err: str) -> None:
    """Exit 0 with the baseline's summary, printed and stored (never exit 0 with another result)."""
    assert rc == 0, err[-2000:]
    assert _printed_summary(out) == baseline.printed
    assert _summary(data) == baseline.summary


# --------------------------------------------------------------------------------------------------
# damaged files: every kind a stage reads, truncated / overwritten at the same size / bit-flipped


FILES = {
    "raw": ("raw/shard-000.npy", "raw_activations[shard-000]"),
    "tokens": ("raw/shard-001.tokens.parquet", "raw_activations[shard-001]"),
    "docs": ("raw/shard-000.docs.parquet", "raw_activations[shard-000]"),
    "mean": ("mean.npy", "activation_mean"),
    "normalized": ("normalized/shard-001.npy", "normalized[shard-001]"),
    "kept": ("normalized/shard-000.kept.npy", "normalized[shard-000]"),
    "tile": ("tiles/shard-000__shard-001.npz", "edge_tiles[shard-000__shard-001]"),
    "labels": ("components/labels.npy", "components"),
    "forest": ("components/forest.npz", "components"),
}


def _damage(path: Path, how: str) -> None:
    before = path.read_bytes()
    data = bytearray(before)
    n = len(data)
    if how == "truncate":
        path.write_bytes(bytes(data[: n // 2]))
    elif how == "overwrite":  # same size: a stretch of the file replaced by another stretch of it (rows)
        k = max(n // 8, 1)
        data[n // 2: n // 2 + k] = data[n // 4: n // 4 + k]
        if bytes(data) == before:  # a constant stretch: make sure something changes
            data[n // 2] ^= 0x55
        path.write_bytes(bytes(data))
    elif how == "flip":
        for i in range(n // 3, min(n // 3 + 16, n)):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "delete":
        path.unlink()
    else:  # pragma: no cover
        raise ValueError(how)
    assert not path.exists() or path.read_bytes() != before


@pytest.mark.parametrize("how", ["truncate", "overwrite", "flip"])
@pytest.mark.parametrize("kind", list(FILES))
def test_damaged_file_is_recomputed(kind: str, how: str, baseline: Baseline, tmp_path: Path, env,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = _copy(baseline, tmp_path)
    rel, stage = FILES[kind]
    _damage(data / "demo" / rel, how)
    rc, out, err = _run(baseline, data, capsys)
    _assert_healed(baseline, data, rc, out, err)
    warning = next(line for line in out.splitlines() if "warning:" in line)
    assert str(data / "demo" / rel) in warning and "is corrupted or was changed" in warning
    assert f"{stage} is recomputed" in warning
    assert f"  {stage} " in out  # ... and it was
    again = _run(baseline, data, capsys)  # healed for good: nothing stale any more
    _assert_healed(baseline, data, *again)
    assert "warning:" not in again[1] and "every stage is current" in again[1]


@pytest.mark.parametrize("rel, how, stage", [
    ("tiles/shard-000__shard-000.npz", "delete", "edge_tiles[shard-000__shard-000]"),
    ("normalized/shard-000.json", "truncate", "normalized[shard-000]"),  # a damaged sidecar
    ("raw/shard-001.json", "flip", "raw_activations[shard-001]"),
])
def test_deleted_file_or_damaged_sidecar_is_recomputed(rel: str, how: str, stage: str, baseline: Baseline,
                                                       tmp_path: Path, env, capsys) -> None:
    data = _copy(baseline, tmp_path)
    _damage(data / "demo" / rel, how)
    rc, out, err = _run(baseline, data, capsys)
    _assert_healed(baseline, data, rc, out, err)
    assert f"  {stage} " in out


def test_stage_reading_a_changed_file_names_it(baseline: Baseline, tmp_path: Path, env, capsys) -> None:
    """Outside the planner (a single asset materialized from the UI), a stage that reads a damaged input
    fails naming the file instead of computing from it; the next `actgeo run` heals it."""
    import dagster as dg

    from actgeo_assets.definitions import pipeline_assets

    data = _copy(baseline, tmp_path)
    target = data / "demo" / "normalized" / "shard-001.npy"
    _damage(target, "overwrite")
    resource = baseline.resource(data)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(ValueError, match=rf"{target}.* is corrupted or was changed"):
        dg.materialize(pipeline_assets(), selection=["components"], instance=instance, resources={"actgeo": resource})
    capsys.readouterr()
    _assert_healed(baseline, data, *_run(baseline, data, capsys))


def test_run_over_several_partitions_records_the_ones_it_finished(baseline: Baseline, tmp_path: Path, env,
                                                                 capsys) -> None:
    """A single-run backfill (one run over every shard, as "Materialize all" launches it) that fails at its
    second shard still records its first as materialized, with that shard's metadata; the failed shard stays
    unmaterialized, the error names the damaged file, and the next `actgeo run` heals it."""
    import dagster as dg

    from actgeo_assets.definitions import deployment_assets

    data = _copy(baseline, tmp_path)
    target = data / "demo" / "raw" / "shard-001.npy"
    _damage(target, "flip")
    resource = baseline.resource(data)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("actgeo_shards", ["shard-000", "shard-001"])
    key = dg.AssetKey("normalized")
    both = {"dagster/asset_partition_range_start": "shard-000", "dagster/asset_partition_range_end": "shard-001"}
    result = dg.materialize(deployment_assets("local"), selection=["normalized"], instance=instance,
                            resources={"actgeo": resource}, tags=both, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert str(target) in failure.step_failure_data.error.cause.message  # names the damaged file
    assert instance.get_materialized_partitions(key) == {"shard-000"}
    event = instance.get_latest_materialization_event(key)
    assert event.asset_materialization.partition == "shard-000"
    assert event.asset_materialization.metadata["rows"].value > 0
    assert event.run_id == result.run_id
    logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert any("partition shard-001 failed" in m and "(shard-000) are recorded" in m for m in logs)
    # a run of the failed partition alone (still damaged) fails and records nothing
    one = dg.materialize(deployment_assets("local"), selection=["normalized"], instance=instance, partition_key="shard-001",
                         resources={"actgeo": resource}, raise_on_error=False)
    assert not one.success and instance.get_materialized_partitions(key) == {"shard-000"}
    capsys.readouterr()
    _assert_healed(baseline, data, *_run(baseline, data, capsys))


# --------------------------------------------------------------------------------------------------
# SIGKILL mid-stage, a second run at the same time, the Dagster runs of the killed process


PAUSED_RUN = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import {module} as target
    real = target.save_json

    def save_json(path, obj):  # pause mid-stage, just before the sidecar that completes the output
        if {pattern!r} in str(path):
            print("PAUSED", flush=True)
            time.sleep(600)
        return real(path, obj)

    target.save_json = save_json
    from actgeo_assets.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _start_paused(baseline: Baseline, data: Path, home: Path, module: str, pattern: str,
                  log: Path) -> subprocess.Popen[str]:
    script = PAUSED_RUN.format(root=str(REPO), module=module, pattern=pattern)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("ACTGEO_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-c", script, *baseline.argv(data)], stdout=subprocess.PIPE,
                            stderr=log.open("w"), text=True, env=env, cwd=str(REPO))
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "PAUSED":
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"the run never reached the pause (exit {proc.returncode}): {log.read_text()[-3000:]}")


def _kill_and_heal(baseline: Baseline, data: Path, home: Path, proc: subprocess.Popen[str], env, capsys,
                   stage: str) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    env.setenv("DAGSTER_HOME", str(home))
    rc, out, err = _run(baseline, data, capsys)
    _assert_healed(baseline, data, rc, out, err)
    assert f"  {stage} " in out  # the interrupted partition was recomputed
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        killed = instance.get_runs(filters=dg.RunsFilter(tags={"actgeo/pid": str(proc.pid)}))
        assert killed, "the killed process recorded no run"
        unfinished = [r for r in killed if r.status != dg.DagsterRunStatus.SUCCESS]
        assert len(unfinished) == 1 and unfinished[0].status == dg.DagsterRunStatus.FAILURE
        assert unfinished[0].run_id[:8] in out and "marked failed" in out
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))


def test_kill_during_capture_then_concurrent_run_refused_then_heals(baseline: Baseline, tmp_path: Path, env,
                                                                   capsys) -> None:
    data, home = _copy(baseline, tmp_path), tmp_path / "home"
    (data / "demo" / "raw" / "shard-001.json").unlink()  # shard-001 is captured again ...
    proc = _start_paused(baseline, data, home, "actgeo_assets.lib.store.shards", "raw/shard-001.json",
                         tmp_path / "run.log")  # ... and its process stops after the .npy, before the sidecar
    try:
        # a second run on the same data directory, with other settings, while the first one writes
        rc, out, err = _run(baseline, data, capsys, "--set", "threshold=0.65")
        assert rc == 2, err
        (line,) = [x for x in err.splitlines() if x.startswith("actgeo run: error:")]
        assert f"is in use by PID {proc.pid}" in line and "actgeo" in line and str(data) in line
        assert "Traceback" not in err and not out.count("ok in")
        # a materialization started elsewhere (the UI, a sensor) is refused as well, naming the holder
        import dagster as dg

        from actgeo_assets.definitions import pipeline_assets

        resource = baseline.resource(data)
        with pytest.raises(ValueError, match=rf"is in use by PID {proc.pid}"):
            dg.materialize(pipeline_assets(), selection=["components"], instance=dg.DagsterInstance.ephemeral(),
                           resources={"actgeo": resource})
        capsys.readouterr()
    finally:
        if proc.poll() is None:
            _kill_and_heal(baseline, data, home, proc, env, capsys, "raw_activations[shard-001]")


def test_kill_during_tiles_heals(baseline: Baseline, tmp_path: Path, env, capsys) -> None:
    data, home = _copy(baseline, tmp_path), tmp_path / "home"
    (data / "demo" / "tiles" / "shard-000__shard-001.json").unlink()
    proc = _start_paused(baseline, data, home, "actgeo_assets.lib.stages.graph", "tiles/shard-000__shard-001.json",
                         tmp_path / "run.log")  # the tile's .npz is written, its sidecar not yet
    _kill_and_heal(baseline, data, home, proc, env, capsys, "edge_tiles[shard-000__shard-001]")


# --------------------------------------------------------------------------------------------------
# failed blocking checks


def test_correctness_checks_are_blocking() -> None:
    from actgeo_assets.definitions import pipeline_assets

    blocking = {spec.name: spec.blocking for a in pipeline_assets() for spec in a.check_specs}
    assert blocking == {"unit_norms": True, "graph_not_near_complete": False, "sizes_sum_to_n": True,
                        "float64_spot_check": True, "cards_cover_ranks": True,
                        "consistent_with_components": True, "sql_rows_match_cards": True}


def test_failed_blocking_check_fails_the_run_then_heals(baseline: Baseline, tmp_path: Path, env, capsys) -> None:
    import actgeo_assets.defs.assets.graph as graph_assets
    from actgeo_assets.lib.stages.graph import SpotCheck

    data = _copy(baseline, tmp_path)
    with pytest.MonkeyPatch.context() as mp:  # the float64 spot check finds a missed edge
        mp.setattr(graph_assets, "spot_check_edges", lambda *a, **k: SpotCheck(100, 4, 1, 10, 0.0))
        rc, out, err = _run(baseline, data, capsys, "--force")
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("actgeo run: error: components") and "check float64_spot_check of asset components" in line
    assert "violations=1" in line and "run: " not in out  # no summary printed
    assert not (data / "demo" / "components" / "summary.json").exists()  # never served afterwards
    _assert_healed(baseline, data, *_run(baseline, data, capsys))  # the next run merges again


def test_failed_card_check_fails_the_run(baseline: Baseline, tmp_path: Path, env, capsys) -> None:
    import actgeo_assets.defs.assets.cards as card_assets
    from actgeo_assets.lib.stages.cards import CheckOutcome

    data = _copy(baseline, tmp_path)
    real = card_assets.audit_cards
    broken = lambda *a: [*(c for c in real(*a) if c.name != "sql_rows_match_cards"),  # noqa: E731
                         CheckOutcome("sql_rows_match_cards", False, {"sql_rows": 0, "cards": 3})]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(card_assets, "audit_cards", broken)
        rc, out, err = _run(baseline, data, capsys)
    assert rc == 2 and "check sql_rows_match_cards of asset component_cards failed" in err.splitlines()[-1]
    assert "run: " not in out
    _assert_healed(baseline, data, *_run(baseline, data, capsys))


# --------------------------------------------------------------------------------------------------
# bad settings and inputs: exit 2 with one line, before any compute


def _few_docs(tmp_path: Path) -> Path:
    path = tmp_path / "two_docs.jsonl"
    path.write_text("\n".join(MINI_CORPUS.read_text().splitlines()[:2]) + "\n")
    return path


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


BAD = [
    ("corpus path", lambda t: ["--set", "corpus=/no/such/corpus.jsonl"], "corpus '/no/such/corpus.jsonl': no such file"),
    ("unparsable database URL", lambda t: ["--database-url", "postgresql://u:s3cret@host:notaport/db"],
     "database_url is not a SQLAlchemy URL"),
    ("unreachable database", lambda t: ["--database-url", "postgresql://u:s3cret@127.0.0.1:1/db"],
     "cannot connect to the database 'postgresql://u:***@127.0.0.1:1/db'"),
    ("layer 9.5", lambda t: ["--config", str(_config(t, "layer: 9.5\n"))], "layer must be an integer, got 9.5"),
    ("layer nine", lambda t: ["--config", str(_config(t, "layer: nine\n"))], "layer must be an integer, got 'nine'"),
    ("sweep", lambda t: ["--set", "sweep=[2,3]"], "sweep values must lie in (-1, 1]"),
    ("budget below shards", lambda t: ["--set", "budget=1"], "budget 1 is below n_shards 2"),
    ("fewer documents than shards", lambda t: ["--set", f"corpus={_few_docs(t)}", "--set", "n_shards=3"],
     "has 2 documents, fewer than n_shards 3"),
    ("card ranks", lambda t: ["--set", "card_ranks=[1]"], "card_ranks must be two integers"),
    ("threshold true", lambda t: ["--set", "threshold=true"], "threshold must be a number, got True"),
]


@pytest.mark.parametrize("name, extra, message", BAD, ids=[b[0] for b in BAD])
def test_bad_setting_exits_2_before_any_compute(name: str, extra, message: str, baseline: Baseline,
                                                tmp_path: Path, env, capsys) -> None:
    data = tmp_path / "data"
    rc, out, err = _run(baseline, data, capsys, *extra(tmp_path))
    assert rc == 2, (out, err)
    lines = [line for line in err.splitlines() if line.startswith("actgeo")
             and "DAGSTER_HOME is not set" not in line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and "s3cret" not in out + err
    assert not (data / "demo" / "raw").exists()  # nothing was computed


@pytest.mark.parametrize("make, args, message", [
    ("complex", [], "holds complex values (complex64)"),
    ("text", [], "is not a .npy file"),
    ("float", ["--tile-size", "0"], "tile_size"),
])
def test_components_bad_input(make: str, args: list[str], message: str, tmp_path: Path, capsys) -> None:
    import numpy as np

    path = tmp_path / "acts.npy"
    rng = np.random.default_rng(0)
    if make == "complex":
        np.save(path, (rng.normal(size=(20, 4)) + 1j * rng.normal(size=(20, 4))).astype(np.complex64))
    elif make == "text":
        path.write_text("0.1, 0.2\n0.3, 0.4\n")
    else:
        np.save(path, rng.normal(size=(20, 4)).astype(np.float32))
    rc = main(["components", str(path), "--normalize", "l2", "--out", str(tmp_path / "l.npy"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "l.npy").exists()
