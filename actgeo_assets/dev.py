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

    python -m actgeo_assets.dev -m actgeo_assets.definitions -h 127.0.0.1 -p 3000   # = dagster dev ...
    python -m actgeo_assets.dev daemon run ...                                      # = dagster-daemon run ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

#: Seconds between the backfill daemon's iterations under `make ui` (Dagster's default: 30). An idle
#: iteration is one query of the instance's backfill table.
BACKFILL_INTERVAL_SECONDS = 2
INTERVAL_ENV = "ACTGEO_BACKFILL_INTERVAL_SECONDS"
#: What `dagster dev` runs as its daemon process, and what this module runs instead.
DAGSTER_DAEMON_MODULE = "dagster._daemon"
DAEMON_ARGS = ["-m", "actgeo_assets.dev", "daemon"]


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
