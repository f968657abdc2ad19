"""`make ui`: Dagster's own `dagster dev` (webserver, daemon, one shared code server), with the daemon's asset
backfill loop looking at its backfills every few seconds instead of every 30.

Why: "Materialize all" in the UI is an asset backfill, and Dagster 1.13's backfill daemon moves a backfill to
its next stage (capture -> mean -> normalization -> tiles -> merge) only on its next iteration, fixed at 30 s
(``dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS``, read by ``dagster._daemon.backfill``; no
instance setting reaches it). Five stages then wait 5 x 15 s on average for nothing. Everything else is
`dagster dev` unchanged: this module swaps only the daemon process's entry point (``python -m
dagster._daemon`` -> ``python -m actgeo_assets.dev daemon``), which sets the interval
(``$ACTGEO_BACKFILL_INTERVAL_SECONDS``, default :data:`BACKFILL_INTERVAL_SECONDS`) and runs Dagster's daemon
CLI. Both hooks are pinned by ``actgeo_tests/defs/test_dev.py``, so a Dagster upgrade that moves them fails a
test instead of silently slowing backfills down again.

At that interval the backfill daemon would print its whole iteration summary (candidate subset, partitions
not requested and why, overall status: dozens of lines at 210 tile partitions) to the terminal every 2 s
while runs are in progress. The daemon process therefore drops a console message that repeats, word for
word, one it printed less than :data:`REPEAT_QUIET_SECONDS` ago (:class:`RepeatFilter`): changes show at
once, an unchanged state once a minute, warnings and errors always. The backfill's own log page in the UI
(Dagster's log storage) keeps every line.

    python -m actgeo_assets.dev -m actgeo_assets.definitions -h 127.0.0.1 -p 3000   # = dagster dev ...
    python -m actgeo_assets.dev daemon run ...                                      # = dagster-daemon run ...
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

#: Seconds between the backfill daemon's iterations under `make ui` (Dagster's default: 30). An idle
#: iteration is one query of the instance's backfill table.
BACKFILL_INTERVAL_SECONDS = 2
INTERVAL_ENV = "ACTGEO_BACKFILL_INTERVAL_SECONDS"
#: What `dagster dev` runs as its daemon process, and what this module runs instead.
DAGSTER_DAEMON_MODULE = "dagster._daemon"
DAEMON_ARGS = ["-m", "actgeo_assets.dev", "daemon"]
#: The backfill daemon's console logger (``dagster._daemon.daemon.get_default_daemon_logger``).
BACKFILL_LOGGER = "dagster.daemon.BackfillDaemon"
#: A console message repeated word for word within this many seconds is dropped.
REPEAT_QUIET_SECONDS = 60.0


class RepeatFilter(logging.Filter):
    """Drops an INFO-or-lower record whose message equals one this filter let through less than ``window``
    seconds ago; other messages, and warnings and errors always, pass. Remembers at most ``max_seen``
    messages (the oldest are forgotten first)."""

    def __init__(self, window: float = REPEAT_QUIET_SECONDS, clock: Callable[[], float] = time.monotonic,
                 max_seen: int = 1024) -> None:
        super().__init__()
        self.window, self.clock, self.max_seen = float(window), clock, int(max_seen)
        self._passed: dict[str, float] = {}  # message -> when it last passed (insertion order = age)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message, now = record.getMessage(), self.clock()
        last = self._passed.get(message)
        if last is not None and now - last < self.window:
            return False
        self._passed.pop(message, None)
        self._passed[message] = now
        while len(self._passed) > self.max_seen:
            del self._passed[next(iter(self._passed))]
        return True


def quiet_repeats(logger_name: str = BACKFILL_LOGGER) -> RepeatFilter:
    """Install one :class:`RepeatFilter` on the named logger (idempotent) and return it."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RepeatFilter):
            return existing
    rf = RepeatFilter()
    logger.addFilter(rf)
    return rf


def backfill_interval() -> int:
    """The configured interval in whole seconds (>= 1); a bad value is an error naming the variable."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return BACKFILL_INTERVAL_SECONDS
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"${INTERVAL_ENV} must be a whole number of seconds, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"${INTERVAL_ENV} must be at least 1 second, got {value}")
    return value


def daemon_command(cmd: Sequence[str]) -> list[str]:
    """``[python, -m, dagster._daemon, *args]`` -> ``[python, -m, actgeo_assets.dev, daemon, *args]``; any other
    command unchanged."""
    cmd = list(cmd)
    if len(cmd) >= 3 and cmd[1:3] == ["-m", DAGSTER_DAEMON_MODULE]:
        return [cmd[0], *DAEMON_ARGS, *cmd[3:]]
    return cmd


def run_daemon(argv: Sequence[str]) -> None:
    """Dagster's daemon CLI (``dagster-daemon``) with the backfill loop's interval set first."""
    import dagster._daemon.controller as controller

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = backfill_interval()
    quiet_repeats()
    from dagster._daemon.cli import main

    sys.argv = ["dagster-daemon", *argv]
    main()


def run_dev(argv: Sequence[str]) -> None:
    """`dagster dev` with :func:`daemon_command` applied to the processes it starts."""
    import dagster._cli.dev as dev

    start = dev.open_ipc_subprocess

    def open_subprocess(cmd: Sequence[str], **kwargs: Any) -> Any:
        return start(daemon_command(cmd), **kwargs)

    dev.open_ipc_subprocess = open_subprocess
    dev.dev_command.main(args=list(argv), prog_name="dagster dev")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["daemon"]:
        run_daemon(argv[1:])
    else:
        run_dev(argv)


if __name__ == "__main__":
    main()
