"""The ``actgeo`` command: ``run`` (materialize a run), ``components`` (the graph engine on your own .npy),
``lookup`` (alias ``which``: the component a text's tokens join), ``export`` (a run as Parquet for ``datasets``), ``layers``
(geometry across layers and normalizations), ``du`` and ``remove`` (a run's disk use; removing a run: ``cli_disk.py``).

    actgeo components ACTS.npy --threshold 0.7 [--normalize none|l2|center_l2]
                      [--sweep 0.5,0.6,0.7,0.8,0.9] [--min-threshold 0.5] --out labels.npy

Subcommands register themselves in :data:`SUBCOMMANDS` (a function that adds a subparser and sets
``func``), so adding one (e.g. ``demo``) is one function and one list entry. Errors print one line on
stderr naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actgeo_assets.cli_disk import add_du_parser, add_remove_parser


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return values


def _unit_rows(x: np.ndarray, mode: str) -> np.ndarray:
    """Unit rows of ``x`` (float32) by ``lib.normalize.normalize_rows``, or ``x`` as given for ``none``
    (the engine checks it). Labels must cover every row, so a row that cannot be normalized (zero or not
    finite) is an error here, not an exclusion."""
    from actgeo_assets.lib.capture.normalize import normalize_rows

    if mode == "none":
        return x
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty 2-D array, got shape {tuple(x.shape)}")
    res = normalize_rows(x, mode)
    bad = res.report["first_excluded_rows"]
    if bad["non_finite"]:
        raise ValueError(f"activations have non-finite values in rows {', '.join(map(str, bad['non_finite'][:5]))}")
    if bad["zero_norm"]:
        raise ValueError(f"cannot normalize zero rows {', '.join(map(str, bad['zero_norm'][:5]))}")
    return res.unit


def _load_acts(path: Path) -> np.ndarray:
    """The .npy at ``path``, memory-mapped; ValueError naming the file when it is not a .npy of real numbers
    (a text file, pickled objects, complex, boolean or string values)."""
    if not path.is_file():
        raise ValueError(f"activations file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head != b"\x93NUMPY":
        raise ValueError(f"{path} is not a .npy file (it does not start with NumPy's header, but with {head!r}); "
                         "save the activations with numpy.save")
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        if "pickled" in str(exc) or "object" in str(exc):
            raise ValueError(f"{path} holds Python objects (pickled data), which actgeo never loads; save a "
                             "float16/32/64 array") from None
        raise ValueError(f"cannot read {path} as .npy: {exc}") from None
    if raw.dtype.kind not in "fiu":
        kinds = {"c": "complex", "b": "boolean", "U": "string", "S": "bytes", "V": "structured", "M": "datetime",
                 "m": "timedelta"}
        raise ValueError(f"{path} holds {kinds.get(raw.dtype.kind, 'non-numeric')} values ({raw.dtype}); "
                         "activations must be real numbers (float16, float32 or float64)")
    return raw


def _cmd_components(args: argparse.Namespace) -> int:
    from actgeo_assets.lib.graph import (
        component_summary,
        cosine_components,
        single_linkage_forest,
    )
    from actgeo_assets.lib.outputs.report import format_summary
    from actgeo_assets.lib.store.layout import save_npy

    path = Path(args.acts)
    raw = _load_acts(path)
    x = _unit_rows(raw, args.normalize)
    t = args.threshold
    sweep = args.sweep or []
    table = None
    if sweep or args.min_threshold is not None:
        min_t = args.min_threshold if args.min_threshold is not None else min([t, *sweep])
        forest = single_linkage_forest(
            x,
            min_t,
            exact_at=sorted({t, *[s for s in sweep if s >= min_t]}),
            device=args.device,
            tile_size=args.tile_size,
            progress=args.progress,
        )
        labels = forest.labels_at(t)
        if sweep:
            table = forest.sweep(sweep)
    else:
        labels = cosine_components(x, t, device=args.device, tile_size=args.tile_size, progress=args.progress)
    save_npy(args.out, labels)
    summary = component_summary(labels, top=20)
    print(
        format_summary(
            summary,
            f"components of {path.name} at cosine >= {t} (normalize={args.normalize}, "
            f"{x.shape[0]:,} x {x.shape[1]}, {np.dtype(x.dtype).name})",
        )
    )
    if table is not None:
        print("\nthreshold sweep (exact at every listed threshold)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nlabels written to {args.out}")
    return 0


def add_components_parser(sub: Any) -> None:
    p = sub.add_parser(
        "components",
        help="connected components of the cosine-threshold graph of a .npy of activations",
        description="Link rows whose cosine (float64 dot of the unit rows) is >= threshold; report components.",
    )
    p.add_argument("acts", help="float16/32/64 .npy [N, d] (memory-mapped)")
    p.add_argument("--threshold", type=float, default=0.7, help="edge iff cosine >= threshold (default 0.7)")
    p.add_argument("--normalize", choices=["none", "l2", "center_l2"], default="none")
    p.add_argument("--sweep", type=_floats, default=None, help="comma-separated thresholds, e.g. 0.5,0.6,0.7")
    p.add_argument("--min-threshold", type=float, default=None, help="lowest threshold of the hierarchy")
    p.add_argument("--out", required=True, help="where to write the int64 labels .npy")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--progress", action="store_true", help="show a progress bar over sub-tiles")
    p.set_defaults(func=_cmd_components)


def add_settings_arguments(parser: Any,
                           set_help: str = "override a setting, e.g. --set budget=100000 --set normalization=l2",
                           ) -> None:
    """The arguments that name a run's settings and files, shared by every subcommand that works on a run:
    ``--profile``, ``--data-dir``, ``--config``, ``--set`` (see :func:`run_from_args`)."""
    parser.add_argument("--profile", default=None,
                        help="demo (default, offline CPU), full (the study) or scale (1,000,000 activations on a CPU)")
    parser.add_argument("--data-dir", default=None,
                        help="root folder of run files (default: data in the project root)")
    parser.add_argument("--config", default="", help="YAML/JSON file of settings (default: $ACTGEO_CONFIG)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=set_help)
    parser.add_argument("--experiment", default=None, metavar="NAME",
                        help="the experiment (data_dir/experiments/NAME.yaml, files in data_dir/NAME); default: "
                             "the profile's own run, or, when --set changes what the run computes, the "
                             "experiment named by those settings (e.g. demo_layer_12). The profile's name "
                             "(--experiment demo) runs the settings as the profile's own run, in its folder")


def _given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The run's values given on the command line (``--profile``, ``--data-dir``, ``--set``), validated. A
    relative ``--data-dir`` is taken from the working directory."""
    data_dir = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None
    return {"profile": args.profile, "data_dir": data_dir, **parse_set_overrides(args.set)}


def experiment_of(args: argparse.Namespace, create: bool = False) -> str | None:
    """The experiment the arguments name: ``--experiment NAME``; else, when ``--set`` changes what the run
    computes (``lib.config.experiments.differences`` from the profile with the settings file), the experiment
    named by those settings (``derived_name``); else None (the profile's own run, ``data_dir/profile``), as
    for ``--experiment <the profile's name>``.
    ``create``: record a new experiment's settings file (what `actgeo run` does)."""
    from actgeo_assets.lib.config.experiments import (
        derived_name,
        differences,
        experiment_file,
        write_experiment,
    )
    from actgeo_assets.lib.store.run import resolve_run

    given = _given_values(args)
    base = resolve_run(args.config or None, given, source="command line")
    name = getattr(args, "experiment", None)
    if name == base.settings.profile:  # said explicitly: these settings as the profile's own run
        return None
    if not name:
        plain = resolve_run(args.config or None, {"profile": given["profile"], "data_dir": given["data_dir"]},
                            source="command line")
        if not differences(base.settings, plain.settings):
            return None
        name = derived_name(base.settings)
    if create and not experiment_file(base.data_dir, name).is_file():
        write_experiment(base.data_dir, name, base.settings)
    return name


def run_from_args(args: argparse.Namespace) -> Any:
    """The run (``lib.store.run.RunContext``: settings, layout, database URL) of
    :func:`add_settings_arguments`' values over the settings file (``--config``, else ``$ACTGEO_CONFIG``),
    resolved by the library as the Dagster resource resolves it (``SettingsError`` names the bad value and
    where it came from); the experiment's (:func:`experiment_of`) when they name one."""
    from actgeo_assets.lib.store.run import resolve_run

    return resolve_run(args.config or None, _given_values(args), source="command line",
                       experiment=experiment_of(args))


def resource_from_args(args: argparse.Namespace) -> Any:
    """The ``ActgeoResource`` of :func:`add_settings_arguments`' values (validated; ``SettingsError`` names the
    bad value and where it came from), for the subcommands that materialize through Dagster."""
    from actgeo_assets.defs.resources import ActgeoResource

    resource = ActgeoResource(config_file=args.config, **_given_values(args))
    resource.settings()
    return resource


def add_run_arguments(parser: Any) -> None:
    """Arguments of `actgeo run`."""
    add_settings_arguments(parser)
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: sqlite in data dir)")
    parser.add_argument("--force", action="store_true", help="recompute partitions that are current")


def parse_set_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as validated resource fields (``lib.settings.parse_assignments``: typed by
    the setting, checked like every other source). A ``SettingsError`` (a ValueError) names the item, the
    setting and the bad value, e.g. ``bad --set 'threshold=true': threshold must be a number, got True``."""
    from actgeo_assets.lib.config.sources import parse_assignments

    return parse_assignments(items)


def _cmd_run(args: argparse.Namespace) -> int:
    """Build the resource from the arguments, materialize everything, print the summary."""
    # dagster is imported only for this subcommand
    import os

    from actgeo_assets.lib.config.secrets import mask_url
    from actgeo_assets.lib.config.sources import DATABASE_URL_ENV
    from actgeo_assets.lib.outputs.report import format_summary
    from actgeo_assets.lib.store.lock import data_dir_lock
    from actgeo_assets.runner import materialize_run, open_instance

    try:
        parse_set_overrides(args.set)  # a bad --set is reported before the database URL is touched
        if args.database_url:  # through the environment, so the URL never enters the run's stored config
            os.environ[DATABASE_URL_ENV] = args.database_url
        resource = resource_from_args(args)
        experiment = experiment_of(args, create=True)
        ctx = resource.context(experiment)
    except (ValueError, TypeError) as exc:
        print(f"actgeo: {exc}", file=sys.stderr)
        return 2
    instance = open_instance(warn=lambda message: print(message, file=sys.stderr))
    # one writer per data directory: a second `actgeo run` (or a materialization from the UI) exits at once,
    # naming this one (DataDirBusy, a ValueError: exit 2)
    with data_dir_lock(ctx.layout.lock):
        record = materialize_run(resource, instance, force=args.force, experiment=experiment)
    print()
    print(format_summary(record["summary"], f"run: {record['description']}"))
    print()
    print(f"report:    {record['report']}")
    print(f"database:  {mask_url(record['database_url'])}  (table actgeo_components, run_id {record['run_id']})")
    print(f"figures:   {ctx.layout.components_dir}")
    if experiment:
        print(f"experiment {experiment}: settings in {ctx.data_dir / 'experiments' / (experiment + '.yaml')}; "
              f"in the UI its assets are {experiment}/... (Reload definitions if `make ui` was running)")
    print(f"wall time: {record['times']['total']:.1f} s")
    return 0


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="materialize every asset of a run (profile demo or full) in lineage, recorded in $DAGSTER_HOME",
        description="Capture, normalize, join, merge and card one run; skips partitions that are current.",
    )
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)


def _cmd_export(args: argparse.Namespace) -> int:
    """Export the run of the current settings (as `actgeo run` resolves them) with ``lib.export``."""
    from actgeo_assets.lib.outputs.export import ACTIVATION_COLUMNS, export_dataset
    from actgeo_assets.lib.outputs.results import open_run

    ctx = run_from_args(args)
    settings, layout = ctx.settings, ctx.layout
    run = open_run(layout.root)
    if run.run_id != settings.run_id():
        raise ValueError(f"{layout.root} holds run {run.run_id} ({run.description}), not the run of the current "
                         f"settings ({settings.run_id()}: {settings.describe()}); run `actgeo run` with them first")
    kinds = [k.strip() for k in args.activations.split(",") if k.strip()]
    out = Path(args.out).expanduser() if args.out else layout.root / "dataset"
    files = export_dataset(run, out, activations=kinds)
    print(f"exported run {run.run_id} ({run.description})")
    print(f"  {run.n:,} rows in {len(files)} files under {out}: {', '.join(ACTIVATION_COLUMNS[k] for k in kinds)}, "
          "token, token_id, position, doc_id, source, pile_analogue, ...")
    print(f'  load: datasets.load_dataset("parquet", data_files="{out}/*.parquet", split="train")')
    return 0


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write the finished run's activations, tokens and provenance as Parquet for the datasets library",
        description="One Parquet file per shard (activation columns as fixed-size float32 lists) that "
                    "datasets.load_dataset('parquet', ...) loads; the run is the one of the current settings.",
    )
    add_settings_arguments(p, "a setting the run was made with, as given to `actgeo run`")
    p.add_argument("--out", default=None, help="folder of the Parquet files (default: {data_dir}/{profile}/dataset)")
    p.add_argument("--activations", default="normalized,raw",
                   help="normalized, raw or both, comma-separated (default: normalized,raw)")
    p.set_defaults(func=_cmd_export)


def _cmd_lookup(args: argparse.Namespace) -> int:
    """Which component each token of a text joins, in the finished run of the current settings; a last line
    on stderr says where the time went (start-up, imports, settings, then ``lib.stages.lookup.PHASES``)."""
    import json
    import os
    import time

    t_enter = time.perf_counter()
    try:  # seconds since this process started (Linux: /proc/self/stat's starttime, in clock ticks since boot)
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        started = t_enter - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        started = None  # elsewhere: the time before this function is not counted
    from actgeo_assets.lib.stages.lookup import (
        BUILD_HINT,
        answer_json,
        format_lookup,
        format_timings,
        index_problem,
        lookup_text,
    )

    t_imported = time.perf_counter()
    ctx = run_from_args(args)
    settings, layout = ctx.settings, ctx.layout
    if args.k < 0:
        raise ValueError(f"--k must be >= 0, got {args.k}")
    if not args.text.strip():
        raise ValueError("the text is empty: give some text to place, e.g. actgeo lookup \"my hon. Friend\"")
    problem = index_problem(settings, layout)  # also: ValueError when the run has no finished components
    if problem and not args.build_index:
        raise ValueError(f"no current lookup index: {problem}; build it with {BUILD_HINT}")
    if problem:
        print(f"actgeo lookup: building the lookup index ({problem})", file=sys.stderr)
    t_settings = time.perf_counter()
    result = lookup_text(settings, layout, args.text, k=args.k, build=args.build_index)
    t_answered = time.perf_counter()
    if args.json:
        for answer in result.tokens:
            print(json.dumps(answer_json(result, answer), ensure_ascii=False))
    else:
        print(format_lookup(result))
    sys.stdout.flush()
    end = time.perf_counter()
    parts = {"start-up": t_enter - started if started is not None else None, "imports": t_imported - t_enter,
             "settings": t_settings - t_imported,
             **{("index build" if k == "index" and result.built else k): v for k, v in result.timings.items()},
             "output": end - t_answered, "other": (t_answered - t_settings) - sum(result.timings.values())}
    print(f"actgeo lookup: {format_timings(parts, end - (started if started is not None else t_enter))}",
          file=sys.stderr)
    return 0


def add_lookup_parser(sub: Any) -> None:
    p = sub.add_parser(
        "lookup", aliases=["which"],
        help="which component of the finished run each token of a text joins (exact, float64)",
        description="Capture TEXT with the run's model, layer and normalization; per token, the component it "
                    "joins at the run's threshold, 'a new singleton', or the components it bridges, with its "
                    "nearest members' contexts. The run is the one of the current settings (as `actgeo run`).",
    )
    p.add_argument("text", help="the text to place, e.g. \"my hon. Friend\"")
    p.add_argument("--json", action="store_true", help="one JSON object per token, one per line")
    p.add_argument("--k", type=int, default=3, help="nearest members shown per token (default 3)")
    p.add_argument("--no-build-index", dest="build_index", action="store_false",
                   help="fail instead of building the lookup index when it is missing or stale")
    p.add_argument("--build-index", dest="build_index", action="store_true",
                   help="build the lookup index when it is missing or stale (the default)")
    add_settings_arguments(p, "a setting the run was made with, as given to `actgeo run`")
    p.set_defaults(func=_cmd_lookup, build_index=True)


def _cmd_layers(args: argparse.Namespace) -> int:
    """Run the layer comparison (asset ``layers``, job ``layers_job``) for the current settings and print its
    table."""
    import pandas as pd

    from actgeo_assets.lib.store.lock import data_dir_lock
    from actgeo_assets.runner import materialize_layers, open_instance

    resource = resource_from_args(args)
    experiment = experiment_of(args)
    ctx = resource.context(experiment)
    settings, layout = ctx.settings, ctx.layout
    instance = open_instance(warn=lambda message: print(message, file=sys.stderr))
    with data_dir_lock(layout.lock):
        out = materialize_layers(resource, instance, force=args.force, experiment=experiment)
    table = pd.read_csv(out["files"]["geometry.csv"])
    at = table[(table["threshold"] - settings.threshold).abs() < 1e-9]
    norms = list(dict.fromkeys(at["normalization"]))
    by = at.set_index(["layer", "normalization"])
    print(f"\nlayers x normalizations at cosine {settings.threshold:g} ({int(at['n'].iloc[0]):,} tokens): mean "
          "pairwise cosine / giant fraction / components")
    print(f"{'layer':>5}" + "".join(f"  {m:>24}" for m in norms))
    for layer in sorted(at["layer"].unique()):
        cells = [by.loc[(layer, m)] for m in norms]
        print(f"{int(layer):>5}" + "".join(f"  {c['mean_cosine']:>8.3f} {c['giant_fraction']:>6.3f} "
                                          f"{int(c['n_components']):>8,}" for c in cells))
    print(f"\ntable:  {out['files']['geometry.csv']}")
    print(f"figure: {out['files']['giant_fraction.png']}")
    print(f"report: {layout.report if out['cards'] else 'the next `actgeo run` adds the section to ' + str(layout.report)}")
    return 0


def add_layers_parser(sub: Any) -> None:
    p = sub.add_parser(
        "layers",
        help="compare the geometry of several layers (compare_layers) and normalizations on one capture",
        description="Capture compare_layers over the corpus' first compare_budget tokens in one forward pass; "
                    "per layer, normalization (l2, center_l2, rmsnorm) and threshold: mean pairwise cosine, "
                    "giant fraction, exact component counts; where the reference layer's top components land. "
                    "Runs the Dagster job layers_job; the report gains a section.",
    )
    add_settings_arguments(p, "a setting, e.g. --set compare_layers=3,6,9 --set compare_budget=2000")
    p.add_argument("--force", action="store_true",
                   help="compute the comparison again even when layers/ already holds it for these settings")
    p.set_defaults(func=_cmd_layers)


def _cmd_experiments(args: argparse.Namespace) -> int:
    """List the experiments of the data directory: name, settings that differ from the profile, state."""
    from actgeo_assets.lib.config.experiments import list_experiments
    from actgeo_assets.lib.store.disk import folder_usage, human_bytes

    ctx = run_from_args(args)
    experiments = list_experiments(ctx.data_dir)
    if not experiments:
        print(f"{ctx.data_dir}: no experiment (`actgeo run --set KEY=VALUE` or --experiment NAME creates one)")
    for exp in experiments:
        root = ctx.data_dir / exp.name
        done = (root / "components" / "summary.json").is_file()
        size = human_bytes(folder_usage(root).bytes) if root.exists() else "no files"
        print(f"{exp.name:<32} {'materialized' if done else 'not yet run':<13} {size:>10}  "
              + " ".join(f"{k}={v}" for k, v in exp.values.items()))
    return 0


def add_experiments_parser(sub: Any) -> None:
    p = sub.add_parser("experiments", help="list the experiments of the data directory",
                       description="Each experiment (data_dir/experiments/NAME.yaml): its settings, whether it "
                                   "is materialized and its disk use.")
    add_settings_arguments(p)
    p.set_defaults(func=_cmd_experiments)


def _cmd_compare(args: argparse.Namespace) -> int:
    """Compare experiments (and the profile's own run, by its profile's name): lib.stages.compare."""
    from actgeo_assets.lib.config.experiments import list_experiments
    from actgeo_assets.lib.stages.compare import compare_experiments, experiment_runs
    from actgeo_assets.lib.store.run import resolve_run

    base = run_from_args(args)

    def resolve(experiment: str | None) -> Any:
        return base if experiment is None else resolve_run(
            args.config or None, {"data_dir": str(base.data_dir)}, source="command line", experiment=experiment)

    runs = experiment_runs(resolve, [e.name for e in list_experiments(base.data_dir)], args.names)
    result = compare_experiments(runs, base.data_dir / "comparison", common_n=args.common_n,
                                 log=lambda m: print(m, file=sys.stderr))
    for name, why in result.skipped.items():
        print(f"left out {name}: {why}")
    print(f"compared {', '.join(r.name for r in runs)}: {len(result.matches)} card matches")
    print(f"report: {result.report}")
    return 0


def add_compare_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="compare experiments side by side (the report data_dir/comparison/)",
                       description="Summaries with their intervals, percolation curves and N-scaling overlaid, "
                                   "l2 / center_l2 / rmsnorm at a common N per model, and each card's best match "
                                   "in every other experiment. The asset experiment_comparison does the same.")
    p.add_argument("names", nargs="*", help="experiments (the profile's own run by its name, e.g. demo); "
                                            "default: all")
    p.add_argument("--common-n", type=int, default=5000, help="activations per model for the normalizations")
    add_settings_arguments(p)
    p.set_defaults(func=_cmd_compare)


SUBCOMMANDS: list[Callable[[Any], None]] = [add_components_parser, add_run_parser, add_export_parser, add_lookup_parser,
                                                add_layers_parser, add_du_parser, add_remove_parser,
                                                add_experiments_parser, add_compare_parser]
"""Each adds one subparser (``sub.add_parser(...)``) and sets ``func(args) -> int``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actgeo", description="Activation geometry of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        print(f"actgeo {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
