"""`actgeo lookup` says where its time goes: run as a command (a fresh process, as a user runs it) on a copy of the
shared tiny run with its lookup index, its last line on stderr names every part (start-up, imports, settings,
components, index load or build, model load, forward pass, search, output), the parts add up to the total it
states, and that total is the process' wall time as the caller measures it, less only the interpreter's exit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from actgeo_tests.support.live_lookup import run_with_index
from actgeo_tests.support.paths import REPO
from actgeo_tests.support.tiny_run import FinishedRun

LINE = re.compile(r"^actgeo lookup: (\d+\.\d\d) s in all: (.+)$")


def _timed(args: list[str]) -> tuple[float, float, dict[str, float], str]:
    """(the caller's wall seconds, the stated total, {part: seconds}, stdout) of `actgeo` with ``args``."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "actgeo_assets.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    match = LINE.match(proc.stderr.strip().splitlines()[-1])
    assert match, proc.stderr
    parts = {}
    for part in match.group(2).split(" + "):
        name, seconds, unit = part.rsplit(" ", 2)
        assert unit == "s", part
        parts[name] = float(seconds)
    return wall, float(match.group(1)), parts, proc.stdout


@pytest.fixture(scope="module")
def indexed(tiny_runs: Callable[..., FinishedRun], tmp_path_factory: pytest.TempPathFactory):
    run = tiny_runs()
    return run_with_index(run, tmp_path_factory.mktemp("lookup-timing"))


def test_actgeo_lookup_says_where_its_time_goes(indexed) -> None:
    data_dir, config = indexed
    base = ["lookup", "shall mean the union", "--data-dir", str(data_dir), "--config", str(config)]
    wall, total, parts, out = _timed(base)
    assert "joins rank" in out
    assert list(parts) == ["start-up", "imports", "settings", "components", "index load", "model load",
                           "forward pass", "search", "output"] + (["other"] if "other" in parts else [])
    assert all(v >= 0 for v in parts.values()) and parts["start-up"] > 0 and parts["model load"] > 0
    assert abs(sum(parts.values()) - total) <= 0.006 * len(parts)  # each part is rounded to 0.01 s
    # the total runs from the process' start to the last line: the caller's wall time less the exit
    assert 0.5 * wall <= total <= wall + 0.02, (total, wall)

    (data_dir / "demo" / "lookup" / "neighbours.faiss").unlink()  # built on the way: said so
    _, total, parts, _ = _timed([*base, "--json"])
    assert "index build" in parts and "index load" not in parts
    assert abs(sum(parts.values()) - total) <= 0.006 * len(parts)
