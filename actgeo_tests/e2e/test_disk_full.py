"""A full disk during `actgeo run`, on a real small filesystem (a 4 MiB tmpfs as the run's data_dir, filled
with a ballast file to leave a chosen amount free; skipped with the reason where a tmpfs cannot be mounted).

The tiny run fails in the stage where the disk fills, with one line naming the file being written, the bytes
it needed and those free on that filesystem, and what to free; nothing half-written is left (no temporary
file, no sidecar of the failed partition); every finished partition is kept. With the ballast removed the next
`actgeo run` resumes (the finished stages' files untouched, none of them rerun) and ends with the same labels
and summary as the run on a normal disk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actgeo_assets.cli import main
from actgeo_assets.lib.store.disk import run_usage
from actgeo_tests.support.small_disk import NoSmallDisk, leave_free, small_tmpfs
from actgeo_tests.support.tiny_model import tiny_gemma2
from actgeo_tests.support.tiny_run import tiny_set_args, tiny_values


@dataclass(frozen=True)
class Baseline:
    model: str
    data: Path
    usage: dict  # stage -> Usage of the finished run's folder
    instance: Any  # the Dagster instance it was materialized in (its materializations' metadata)


def _argv(model: str, data: Path) -> list[str]:
    return ["run", "--data-dir", str(data), *tiny_set_args(model=model)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    root = tmp_path_factory.mktemp("disk_full")
    model = tiny_gemma2(root)
    import dagster as dg

    from actgeo_assets.defs.resources import ActgeoResource
    from actgeo_assets.runner import materialize_run

    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DAGSTER_HOME", "ACTGEO_DATABASE_URL", "ACTGEO_CONFIG"):
            mp.delenv(name, raising=False)
        materialize_run(ActgeoResource(data_dir=str(root / "data"), **tiny_values(model=model)), instance,
                        echo=lambda _: None)
    return Baseline(model=model, data=root / "data", usage=run_usage(root / "data" / "demo"), instance=instance)


def test_materializations_record_their_disk_use(baseline: Baseline) -> None:
    """Each materialization's ``disk_bytes`` is its partition's files' bytes on disk (``du``); the cards' also
    give the whole run folder's."""
    import subprocess

    import dagster as dg

    root = baseline.data / "demo"

    def du(*paths: Path) -> int:
        files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*") if p.is_dir() else []) if f.is_file()]
        out = subprocess.run(["du", "-c", "-B1", *map(str, files)], capture_output=True, text=True, check=True)
        return int(out.stdout.splitlines()[-1].split()[0])

    def meta(asset: str) -> dict[str | None, dict]:
        records = baseline.instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        return {r.asset_materialization.partition: {k: v.value for k, v in r.asset_materialization.metadata.items()}
                for r in records}

    raw = meta("raw_activations")
    assert set(raw) == {"shard-000", "shard-001"}
    for shard, m in raw.items():
        files = [root / "raw" / f"{shard}{ext}" for ext in (".npy", ".json", ".tokens.parquet", ".docs.parquet")]
        assert m["disk_bytes"] == du(*files) > 0 and m["disk"].endswith("in 4 files")
    for shard, m in meta("normalized").items():
        assert m["disk_bytes"] == du(*(root / "normalized").glob(f"{shard}.*")), shard
    for pair, m in meta("edge_tiles").items():
        assert m["disk_bytes"] == du(*(root / "tiles").glob(f"{pair}.*")), pair
    assert meta("activation_mean")[None]["disk_bytes"] == du(root / "mean.npy", root / "mean.json")
    assert meta("components")[None]["disk_bytes"] == du(root / "components")
    cards = meta("component_cards")[None]
    assert cards["disk_bytes"] == du(root / "cards") and cards["run_folder_bytes"] == du(root)



def _files(root: Path, folders: tuple[str, ...]) -> dict[str, int]:
    """Files of the finished stages (relative path -> modification time in ns)."""
    out = {}
    for folder in folders:
        for p in sorted((root / folder).rglob("*") if (root / folder).is_dir() else [root / folder]):
            if p.is_file():
                out[str(p.relative_to(root))] = p.stat().st_mtime_ns
    return out


#: scenario -> (the stages that finish before the disk fills, the folder of the file that fills it)
SCENARIOS = {
    # the case: the first normalized shard's .npy does not fit (checked before writing it)
    "normalized": (("raw_activations", "activation_mean"), "normalized"),
    # the merge's files: some known in size (checked first), some not (the write fills the disk midway)
    "components": (("raw_activations", "activation_mean", "normalized", "edge_tiles"), "components"),
}
FOLDERS = {"raw_activations": ("raw",), "activation_mean": ("mean.npy", "mean.json"), "normalized": ("normalized",),
           "edge_tiles": ("tiles",)}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_full_disk_fails_clearly_keeps_finished_partitions_and_resumes(
        baseline: Baseline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        scenario: str) -> None:
    for name in ("DAGSTER_HOME", "ACTGEO_DATABASE_URL", "ACTGEO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    finished, failing = SCENARIOS[scenario]
    # what the finished stages take on disk, and half of the next stage
    free = sum(baseline.usage[s].bytes for s in finished) + baseline.usage[failing].bytes // 2
    try:
        with small_tmpfs(tmp_path / "mnt", "4m") as mnt:
            ballast = leave_free(mnt, free)
            data = mnt / "data"
            capsys.readouterr()
            assert main(_argv(baseline.model, data)) == 2
            err = capsys.readouterr().err.strip().splitlines()[-1]
            root = data / "demo"
            # one line: the file, the bytes it needed, those free on this filesystem, what to free
            m = re.search(rf"disk full: writing ({re.escape(str(root / failing))}/\S+) needs (more than the )?"
                          r"[\d.]+ [KM]?i?B \(([\d,]+) bytes\).*?, [\d.]+ [KM]?i?B \(([\d,]+) bytes\) free on "
                          rf"{re.escape(str(mnt))}; free .* there or set data_dir", err)
            assert m, err
            assert err.startswith(f"actgeo run: error: {failing}") and "the run resumes" in err
            assert int(m.group(4).replace(",", "")) <= free
            # nothing half-written: no temporary file anywhere, no file under the name being written
            temps = [p for p in root.rglob(".*") if p.is_file()]
            assert temps == []
            assert not Path(m.group(1)).exists()
            assert not (root / "components" / "summary.json").exists()
            if failing == "normalized":
                assert not (root / "normalized" / "shard-000.json").exists()
            kept = _files(root, tuple(f for s in finished for f in FOLDERS[s]))
            assert any(k.startswith("raw/") for k in kept) and len(kept) >= 10

            ballast.unlink()  # space freed: the next run resumes
            capsys.readouterr()
            assert main(_argv(baseline.model, data)) == 0
            out = capsys.readouterr().out
            assert _files(root, tuple(f for s in finished for f in FOLDERS[s])) == kept  # not rewritten
            ran = set(re.findall(r"^  (\w+)[\[:]", out, flags=re.MULTILINE))  # "  normalized: ...", "  edge_tiles[..."
            assert failing in ran and not ran & set(finished), out
            print(err)
            np.testing.assert_array_equal(np.load(root / "components" / "labels.npy"),
                                          np.load(baseline.data / "demo" / "components" / "labels.npy"))
            summary = json.loads((root / "components" / "summary.json").read_text())["summary"]
            assert summary == json.loads((baseline.data / "demo" / "components" / "summary.json").read_text())["summary"]
    except NoSmallDisk as exc:
        pytest.skip(f"no small filesystem: {exc}")
