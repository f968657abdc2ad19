"""`actgeo du` (what a run's folder holds on disk, per stage, and the caches beside it) and `actgeo remove`
(a run's folder and its SQL rows, in one command). Registered in ``cli.SUBCOMMANDS``.

    actgeo du [--profile P] [--data-dir D] [--all] [--json]
    actgeo remove --profile P [--data-dir D] [--yes]

`actgeo remove` asks before it removes anything when run from a terminal, and refuses without ``--yes``
otherwise (a script must say so); it takes the data directory's writer lock, so it never removes a run that
an `actgeo run` or a materialization is writing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

#: Where the docs say what removing a run leaves in the Dagster instance.
DAGSTER_NOTE = ("the Dagster instance keeps its run history and these assets' materialization events (the "
                "partition keys shard-000, ... are shared by every run folder); docs/USING.md#disk-use-and-removing-a-run")


def format_usage(report: dict[str, Any]) -> str:
    """``lib.store.disk.data_dir_usage``'s JSON as the table `actgeo du` prints: per run folder, each stage
    with files (bytes on disk), its total; then the shared caches, the other files, and what is free."""
    from actgeo_assets.lib.store.disk import CACHES, human_bytes

    def row(name: str, usage: dict[str, int], note: str = "") -> str:
        return f"  {name:<28} {usage['files']:>7,} files {human_bytes(usage['bytes']):>11}{note}"

    data_dir = Path(report["data_dir"])
    lines: list[str] = []
    if not report["runs"]:
        lines.append(f"{data_dir}: no run folder")
    for profile, stages in report["runs"].items():
        lines.append(f"run folder {data_dir / profile}")
        lines += [row(stage, usage) for stage, usage in stages.items() if stage != "total" and usage["files"]]
        lines.append(row("total", stages["total"]))
    lines.append(f"shared by every run in {data_dir}")
    lines += [row(name, usage, f"  ({CACHES[name]})") for name, usage in report["caches"].items()]
    lines.append(row("other files", report["other"], "  (the SQLite database, the lock)"))
    lines.append(f"{human_bytes(report['free'])} ({report['free']:,} bytes) free on {report['mount']}")
    return "\n".join(lines)


def _cmd_du(args: argparse.Namespace) -> int:
    """Disk use of the run folder of the current settings (``--all``: every run folder in the data dir)."""
    from actgeo_assets.cli import run_from_args
    from actgeo_assets.lib.store.disk import data_dir_usage

    ctx = run_from_args(args)
    report = data_dir_usage(ctx.data_dir, None if args.all else [ctx.layout.root.name])
    print(json.dumps(report, indent=2) if args.json else format_usage(report))
    return 0


def add_du_parser(sub: Any) -> None:
    from actgeo_assets.cli import add_settings_arguments

    p = sub.add_parser("du", help="disk use of a run folder, per stage, and of the caches beside it",
                       description="Bytes on disk of each stage's files in the run folder of the settings "
                                   "(data_dir/profile), its total, the shared model and corpus caches, and the "
                                   "space free on that filesystem.")
    add_settings_arguments(p)
    p.add_argument("--all", action="store_true", help="every run folder in the data directory")
    p.add_argument("--json", action="store_true", help="print lib.store.disk.data_dir_usage's JSON")
    p.set_defaults(func=_cmd_du)


def folder_run_ids(root: Path) -> set[str]:
    """The run ids the run folder's files name (``components/summary.json``, ``cards/cards.json``)."""
    from actgeo_assets.lib.config.keys import run_id_of
    from actgeo_assets.lib.store.layout import load_json

    ids: set[str] = set()
    for path in (root / "components" / "summary.json", root / "cards" / "cards.json"):
        try:
            doc = load_json(path)
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("run_key"), dict):
            ids.add(run_id_of(doc["run_key"]))
    return ids


def _confirm(question: str, yes: bool) -> bool:
    """``yes``, else the answer of a terminal user; without a terminal, a ``ValueError`` asking for --yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ValueError("refusing to remove without --yes when not run from a terminal")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _cmd_remove(args: argparse.Namespace) -> int:
    """Remove the run folder of the settings (``data_dir/profile``) and every SQL row of its run ids."""
    from actgeo_assets.lib.config.secrets import mask_url
    from actgeo_assets.lib.outputs.sql import delete_run
    from actgeo_assets.lib.store.disk import folder_usage, human_bytes
    from actgeo_assets.lib.store.lock import data_dir_lock

    ctx = run_from_args_checked(args)
    root, data_dir, experiment = ctx.layout.root, ctx.data_dir, ctx.experiment
    if root.parent != data_dir or root.name != (experiment or ctx.settings.profile) or root.name[:1] in ("", "_", "."):
        raise ValueError(f"{root} is not a run folder of {data_dir}")
    if root.is_symlink():
        raise ValueError(f"{root} is a symbolic link: remove it, or the folder it points to, by hand")
    others = {rid for folder in data_dir.iterdir() if folder.is_dir() and folder != root
              for rid in folder_run_ids(folder)}
    run_ids = sorted((folder_run_ids(root) | {ctx.settings.run_id()}) - others)
    shared = sorted((folder_run_ids(root) | {ctx.settings.run_id()}) & others)
    url = ctx.database_url
    usage = folder_usage(root)
    what = (f"{root} ({usage.files:,} files, {human_bytes(usage.bytes)})" if root.exists() else f"{root} (absent)")
    print(f"actgeo remove: {what}"
          + (f", experiment file {ctx.layout.root.parent / 'experiments' / (experiment + '.yaml')} and its Dagster "
             "partitions" if experiment else "")
          + f" and the SQL rows of run{'s' if len(run_ids) > 1 else ''} {', '.join(run_ids) or '(none)'} in "
            f"{mask_url(url)}" + (f" (kept: run {', '.join(shared)}, another folder holds it too)" if shared else ""))
    if not _confirm("remove them?", args.yes):
        print("actgeo remove: nothing removed")
        return 1
    with data_dir_lock(ctx.layout.lock, command="actgeo remove"):  # not while a run writes here
        deleted = {rid: delete_run(url, rid) for rid in run_ids}
        if root.exists():
            shutil.rmtree(root)
        partitions = remove_experiment(data_dir, experiment) if experiment else None
    for rid, tables in deleted.items():
        counts = ", ".join(f"{n:,} from {table}" for table, n in tables.items())
        print(f"  run {rid}: deleted SQL rows: {counts}")
    print(f"  removed {what}")
    if experiment:
        print(f"  removed experiment {experiment}: its settings file; {partitions}")
    else:
        print(f"  kept: {DAGSTER_NOTE}")
    return 0


def remove_experiment(data_dir: Path, experiment: str) -> str:
    """Remove ``experiment``'s settings file and, in the Dagster instance at ``$DAGSTER_HOME`` (if set), its
    dynamic partitions and its assets' records; returns what was removed there, in words."""
    import os

    from actgeo_assets.lib.config.experiments import experiment_file

    experiment_file(data_dir, experiment).unlink(missing_ok=True)
    if not os.environ.get("DAGSTER_HOME"):
        return "no Dagster instance ($DAGSTER_HOME unset): no partitions to remove"
    import dagster as dg

    from actgeo_assets.defs.partitions import SHARD_PAIRS, SHARDS, partitions_name
    from actgeo_assets.defs.pipeline import STAGES, asset_key

    instance = dg.DagsterInstance.get()
    removed = 0
    for kind in (SHARDS, SHARD_PAIRS):
        name = partitions_name(kind, experiment)
        for key in instance.get_dynamic_partitions(name):
            instance.delete_dynamic_partition(name, key)
            removed += 1
    instance.wipe_assets([asset_key(s.name, experiment) for s in STAGES])
    return (f"{removed} Dagster partitions ({partitions_name(SHARDS, experiment)}, "
            f"{partitions_name(SHARD_PAIRS, experiment)}) and its assets' materializations in $DAGSTER_HOME "
            "(Reload definitions in the UI)")


def run_from_args_checked(args: argparse.Namespace) -> Any:
    """``cli.run_from_args``, requiring ``--profile`` (removing the default run by accident is too easy)."""
    from actgeo_assets.cli import run_from_args

    if not args.profile and not args.experiment:
        raise ValueError("say which run folder to remove: --profile P (e.g. --profile demo) or --experiment NAME")
    return run_from_args(args)


def add_remove_parser(sub: Any) -> None:
    from actgeo_assets.cli import add_settings_arguments

    p = sub.add_parser("remove", help="remove a run: its folder (data_dir/profile) and its SQL rows",
                       description="Remove the run folder of the settings (data_dir/profile: every stage's "
                                   "files) and every SQL row of its run (each actgeo table, by run_id). Asks "
                                   "first on a terminal; elsewhere it needs --yes. The shared caches "
                                   "(_models, _corpus) and other run folders stay.")
    add_settings_arguments(p)
    p.add_argument("--yes", action="store_true", help="remove without asking")
    p.set_defaults(func=_cmd_remove)
