"""`make ui`'s launcher (actgeo_assets/dev.py): `dagster dev` with the backfill daemon looping every 2 s.

The two Dagster internals it relies on are pinned here: the daemon process that `dagster dev` starts, and the
backfill loop's interval constant. A Dagster upgrade that moves either fails these tests."""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import SimpleNamespace

import dagster as dg
import dagster._cli.dev as dagster_dev
import dagster._daemon.controller as controller
import pytest

from actgeo_assets import dev


def test_only_the_daemon_process_is_swapped() -> None:
    daemon = [sys.executable, "-m", "dagster._daemon", "run", "--log-level", "info", "--instance-ref", "{}"]
    assert dev.daemon_command(daemon) == [sys.executable, "-m", "actgeo_assets.dev", "daemon", "run",
                                          "--log-level", "info", "--instance-ref", "{}"]
    webserver = [sys.executable, "-m", "dagster_webserver", "--port", "3000"]
    assert dev.daemon_command(webserver) == webserver


def test_dagster_dev_starts_its_daemon_through_the_hook(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """`dagster dev` (Dagster's own command) starts its daemon with ``python -m dagster._daemon``, through
    ``open_ipc_subprocess``: the launcher sees that call and rewrites it."""
    started: list[list[str]] = []
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # the webserver is started first; let it "start", then record the daemon's command
    calls = {"n": 0}

    def webserver_then_daemon(cmd, **kwargs):
        calls["n"] += 1
        started.append(list(cmd))
        if calls["n"] == 1:
            return SimpleNamespace(poll=lambda: None, wait=lambda timeout=None: 0, kill=lambda: None,
                                   returncode=None)
        raise KeyboardInterrupt

    monkeypatch.setattr(dagster_dev, "open_ipc_subprocess", webserver_then_daemon)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        dev.run_dev(["-m", "actgeo_assets.definitions", "-p", "1"])
    assert len(started) == 2, started
    assert started[0][1:3] == ["-m", "dagster_webserver"]
    assert started[1][1:4] == ["-m", "actgeo_assets.dev", "daemon"], started[1]
    assert started[1][4] == "run"


def test_the_backfill_loop_reads_the_interval_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster's backfill loop, with the launcher's interval set, iterates every ~2 s (its default would
    iterate once in these 7 s)."""
    from dagster._daemon.backfill import execute_backfill_iteration_loop
    from dagster._daemon.daemon import SpanMarker

    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS)
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 30  # Dagster's own, which the launcher replaces
    monkeypatch.setenv(dev.INTERVAL_ENV, "2")
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = dev.backfill_interval()
    with dg.instance_for_test() as instance:
        context = SimpleNamespace(instance=instance)
        until = time.time() + 7
        iterations = sum(1 for marker in execute_backfill_iteration_loop(
            context, logging.getLogger("test"), threading.Event(), until=until) if marker is SpanMarker.START_SPAN)
    assert 3 <= iterations <= 5, iterations


@pytest.mark.parametrize("raw, message", [("0", "at least 1"), ("fast", "whole number"), ("-3", "at least 1")])
def test_a_bad_interval_names_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str, message: str) -> None:
    monkeypatch.setenv(dev.INTERVAL_ENV, raw)
    with pytest.raises(SystemExit, match=message) as err:
        dev.backfill_interval()
    assert dev.INTERVAL_ENV in str(err.value)


def test_the_default_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dev.INTERVAL_ENV, raising=False)
    assert dev.backfill_interval() == dev.BACKFILL_INTERVAL_SECONDS == 2


def test_repeated_daemon_messages_are_quiet_for_a_minute() -> None:
    """RepeatFilter (installed on the backfill daemon's console logger by the launcher): a message repeated
    word for word within the window is dropped, a changed one passes at once, the same one passes again once
    the window is over, warnings always pass, and at most max_seen messages are remembered."""
    now = [0.0]
    rf = dev.RepeatFilter(window=60, clock=lambda: now[0], max_seen=3)

    def passes(msg: str, level: int = logging.INFO, *args: object) -> bool:
        return rf.filter(logging.LogRecord(dev.BACKFILL_LOGGER, level, __file__, 1, msg, args, None))

    assert passes("Backfill has in progress runs.")
    now[0] = 2.0
    assert not passes("Backfill has in progress runs.")
    assert passes("Asset partitions to request:\n%s", logging.INFO, "edge_tiles[shard-000__shard-001]")
    assert not passes("Asset partitions to request:\n%s", logging.INFO, "edge_tiles[shard-000__shard-001]")
    assert passes("Asset partitions to request:\n%s", logging.INFO, "edge_tiles[shard-001__shard-002]")
    assert passes("Backfill has in progress runs.", logging.WARNING)
    now[0] = 59.9
    assert not passes("Backfill has in progress runs.")
    now[0] = 60.0
    assert passes("Backfill has in progress runs.")  # a minute later the unchanged state shows once more
    for i in range(4):
        assert passes(f"message {i}")
    assert len(rf._passed) == 3 and "message 0" not in rf._passed  # the oldest forgotten first
    assert passes("message 0")


def test_the_launcher_quiets_the_backfill_daemons_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_daemon installs one RepeatFilter on Dagster's backfill daemon logger (the name Dagster gives it),
    before Dagster's daemon CLI starts; installing twice keeps one."""
    from dagster._daemon.daemon import get_default_daemon_logger

    logger = get_default_daemon_logger("BackfillDaemon")
    assert logger.name == dev.BACKFILL_LOGGER
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS)
    seen = {}

    def fake_main() -> None:
        seen["filters"] = [f for f in logger.filters if isinstance(f, dev.RepeatFilter)]
        seen["argv"] = list(sys.argv)

    import dagster._daemon.cli as daemon_cli

    monkeypatch.setattr(daemon_cli, "main", fake_main)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    dev.run_daemon(["run", "-w", "workspace.yaml"])
    assert len(seen["filters"]) == 1 and seen["argv"] == ["dagster-daemon", "run", "-w", "workspace.yaml"]
    assert dev.quiet_repeats() is seen["filters"][0] and len(logger.filters) == 1
