"""Clear messages for the Dagster CLI on these Definitions.

``dagster asset materialize --select raw_activations`` (no ``--partition``) fails inside Dagster's CLI,
before any asset runs, with ``CheckError: Failure condition: Asset has partitions, but no '--partition'
option was provided`` and a traceback; a partition the instance does not know yet (dynamic partitions are
registered by `actgeo run` or the shard sensor) fails with a message that does not say so. When the
Definitions are loaded by ``dagster asset materialize``, :func:`install` replaces those tracebacks with a
message naming the asset's partitions and the commands to run. Nothing changes for any other command.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def partitioned() -> dict[str, tuple[str, str, str]]:
    """Partitioned asset -> (what it is partitioned by, its dynamic partitions' name, the settings property
    listing its keys), from the pipeline's declaration."""
    from actgeo_assets.defs.pipeline import STAGES, partition_hint
    from actgeo_assets.lib.stages.record import SHARDS

    return {s.name: (str(partition_hint(s.name)), s.partitions_def.name,
                     "shard_keys" if s.spec.partitions == SHARDS else "pair_keys")
            for s in STAGES if s.partitions_def is not None}


def _is_asset_materialize(argv: Sequence[str]) -> bool:
    prog = Path(argv[0]) if argv else Path()
    is_dagster = prog.name == "dagster" or (prog.name == "__main__.py" and prog.parent.name == "dagster")
    return is_dagster and list(argv[1:3]) == ["asset", "materialize"]


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _other_args(args: Sequence[str]) -> list[str]:
    """``args`` without ``--select`` and ``--partition`` and their values (the code location options)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--select", "--partition"):
            skip = True
        elif not arg.startswith(("--select=", "--partition=")):
            out.append(arg)
    return out


def _keys(attr: str) -> list[str]:
    try:
        from actgeo_assets.lib.store.run import resolve_run

        return list(getattr(resolve_run().settings, attr))
    except (ValueError, OSError, TypeError):  # a broken settings file: the message still names the command
        return []


def partition_hint(message: str, argv: Sequence[str]) -> str | None:
    """The message replacing Dagster's error ``message`` for ``argv``, or None to leave it as it is."""
    missing = "no '--partition' option was provided" in message
    unknown = "containing the passed partition key" in message
    if not (missing or unknown):
        return None
    selected = [s.strip() for s in (_option(argv, "--select") or "").split(",") if s.strip()]
    table = partitioned()
    chosen = [a for a in selected if a in table] or [next(iter(table))]
    target = " ".join(_other_args(argv[3:]))
    lines = []
    for asset in chosen:
        what, name, attr = table[asset]
        keys = _keys(attr)
        shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
        lines.append(f"{asset} is partitioned: one partition per {what} (dynamic partitions {name}"
                     f"{': ' + shown if keys else ''}).")
        example = keys[0] if keys else "<key>"
        lines.append(f"  materialize one:  dagster asset materialize {target} --select {asset} --partition {example}")
    if unknown:
        lines.insert(0, f"partition {_option(argv, '--partition')!r} is not registered in this Dagster instance "
                        "($DAGSTER_HOME): `actgeo run` and the shard_sensor register the run's partitions.")
    lines.append("  or everything that is stale, in lineage order:  actgeo run   (what `make demo` runs)")
    return "dagster asset materialize: " + "\n".join(lines)


def install(argv: Sequence[str] | None = None) -> bool:
    """Under ``dagster asset materialize``, print :func:`partition_hint` instead of the traceback of the two
    errors above. Returns whether the hook was installed."""
    argv = list(sys.argv if argv is None else argv)
    if not _is_asset_materialize(argv):
        return False
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        hint = partition_hint(str(exc), argv)
        if hint is None:
            previous(exc_type, exc, tb)
        else:
            print(hint, file=sys.stderr)

    sys.excepthook = hook
    return True
