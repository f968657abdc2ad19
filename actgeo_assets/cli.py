"""The ``actgeo`` command: the graph engine on your own .npy files.

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


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return values


def normalize_rows(x: np.ndarray, mode: str, chunk_rows: int = 65536) -> np.ndarray:
    """Return unit rows as float32 [N, d]: ``none`` (x as given, checked by the engine), ``l2``, or
    ``center_l2`` (subtract the float64 mean row, then L2). Zero rows raise ``ValueError``."""
    if mode == "none":
        return x
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"activations must be a non-empty 2-D array, got shape {tuple(x.shape)}")
    mean = None
    if mode == "center_l2":
        total = np.zeros(x.shape[1], dtype=np.float64)
        for i in range(0, x.shape[0], chunk_rows):
            total += np.asarray(x[i : i + chunk_rows], dtype=np.float64).sum(axis=0)
        mean = total / x.shape[0]
    elif mode != "l2":
        raise ValueError(f"unknown normalization {mode!r} (none, l2, center_l2)")
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(0, x.shape[0], chunk_rows):
        block = np.asarray(x[i : i + chunk_rows], dtype=np.float64)
        if not np.isfinite(block).all():
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))[:5] + i
            raise ValueError(f"activations have non-finite values in rows {', '.join(map(str, bad))}")
        if mean is not None:
            block -= mean
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        if (norms == 0).any():
            bad = np.flatnonzero(norms[:, 0] == 0)[:5] + i
            raise ValueError(f"cannot normalize zero rows {', '.join(map(str, bad))}")
        out[i : i + len(block)] = block / norms
    return out


def format_summary(summary: dict[str, Any], title: str) -> str:
    """The study's table as plain text."""
    lines = [
        title,
        f"  rows                                   {summary['n']:>12,}",
        f"  components                             {summary['n_components']:>12,}",
        f"  largest component                      {summary['largest']:>12,}  ({summary['largest_fraction']:.1%})",
        f"  non-singleton components besides it    {summary['non_singleton']:>12,}",
        f"  singletons                             {summary['singletons']:>12,}",
        f"  top-{len(summary['top_sizes'])} sizes: {', '.join(str(s) for s in summary['top_sizes'])}",
    ]
    return "\n".join(lines)


def _cmd_components(args: argparse.Namespace) -> int:
    from actgeo_assets.lib.graph import (
        component_summary,
        cosine_components,
        single_linkage_forest,
    )
    from actgeo_assets.lib.layout import save_npy

    path = Path(args.acts)
    if not path.is_file():
        raise ValueError(f"activations file not found: {path}")
    try:
        raw = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path} as .npy: {exc}") from exc
    x = normalize_rows(raw, args.normalize)
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


def add_run_arguments(parser: Any) -> None:
    """Arguments of `actgeo run` (shared by the CLI and ``python -m actgeo_assets.runner``)."""
    parser.add_argument("--profile", default=None, help="demo (default, offline CPU) or full (the study)")
    parser.add_argument("--data-dir", default=None, help="root folder of run files (default: data)")
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (default: sqlite in data dir)")
    parser.add_argument("--config", default="", help="YAML/JSON file of settings (default: $ACTGEO_CONFIG)")
    parser.add_argument("--force", action="store_true", help="recompute partitions that are current")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set budget=100000 --set normalization=l2")


def _cmd_run(args: argparse.Namespace) -> int:
    from actgeo_assets.runner import run_from_args  # imports dagster: only for this subcommand

    return run_from_args(args)


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="materialize every asset of a run (profile demo or full) in lineage, recorded in $DAGSTER_HOME",
        description="Capture, normalize, join, merge and card one run; skips partitions that are current.",
    )
    add_run_arguments(p)
    p.set_defaults(func=_cmd_run)


SUBCOMMANDS: list[Callable[[Any], None]] = [add_components_parser, add_run_parser]
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
