"""Peak memory of the `components + component_cards` step's readers of rows, before and after they stopped
mapping shards into the process: side by side, each case in its own process, medians of ``--repeats``.

The merge (its cosine histogram's sample, :func:`~actgeo_assets.lib.stages.graph.pair_cosines`) and the cards
(each card's members, the logit lens's 128 random control groups per card,
:func:`~actgeo_assets.lib.analysis.readout.component_lens`) read rows of the run at random. Read through a
memory map, each row pulls up to ~256 KiB of the file (readahead, large page-cache folios) into the process'
resident memory, where it stays until the map goes: at the scale profile's shape (20 shards of 50,000 x 640
float32) a whole run's file, 2.4 GiB, per reader. ``row_getter`` now reads whole read-only maps with ``preadv``
(:class:`~actgeo_assets.lib.store.rows.NpyRows`).

Cases (``--patterns``), each over synthetic float32 shards of the given shape written once under ``--data``:

- ``lens``: :func:`component_lens` as the cards stage calls it (19 cards of the scale run's sizes,
  ``--card-sizes``; 19 sizes of 1,024 are the most a lens control reads; a random
  unembedding of ``--vocab`` tokens and an identity final norm stand in for the model, which does not change
  what is read), raw rows through the pipeline's kept-rows view;
- ``histogram``: :func:`pair_cosines` (200,000 random pairs) over the normalized rows;
- ``members``: each card's mean and cosines to it (``chunked_mean``, ``cosines_to_direction``), and the mean
  of a giant of 95% of the rows (sequential chunks of 65,536).

Readers (``--readers``): ``mapped`` (the code before: the memory maps indexed directly, a copy of the old
``row_getter`` below) and ``preadv`` (``row_getter`` now). Peak: the child's VmHWM over the case
(:class:`~actgeo_assets.lib.store.memory.peak_rss`), as growth over its RSS before the case and in total.

Usage::

    python benchmarks/merge_memory.py                      # 20 x 50,000 x 640 (2.4 GB of shards), 3 repeats
    python benchmarks/merge_memory.py --shards 20 --rows 10000 --dim 2304 --out benchmarks/results/x.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Sizes of the 19 cards (ranks 2..20) of the scale run (docs/PROFILES.md, its top-20 sizes): a lens control
#: group has the card's size (at most 1,024 activations), 128 groups a card.
SCALE_CARD_SIZES = (309, 87, 38, 33, 30, 29, 28, 26, 24, 24, 24, 23, 23, 22, 21, 19, 16, 16, 16)


def write_shards(folder: Path, shards: int, rows: int, dim: int) -> list[Path]:
    """``shards`` float32 ``[rows, dim]`` .npy files of standard normal rows (kept if already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for s in range(shards):
        path = folder / f"shard-{s:03d}-{rows}x{dim}.npy"
        if not path.exists():
            tmp = path.with_suffix(".tmp.npy")
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
            for lo in range(0, rows, 8192):
                hi = min(lo + 8192, rows)
                arr[lo:hi] = rng.standard_normal((hi - lo, dim), dtype=np.float32)
            arr.flush()
            del arr
            tmp.rename(path)
        paths.append(path)
    return paths


def mapped_getter(shards: list[tuple[int, np.ndarray]]):  # noqa: ANN201
    """The ``row_getter`` before this change: each shard's memory map indexed directly (``arr[idx]``)."""
    offsets = np.array([o for o, _ in shards], dtype=np.int64)
    ends = offsets + np.array([len(a) for _, a in shards], dtype=np.int64)
    d = shards[0][1].shape[1]

    def get(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(offsets, idx, side="right") - 1
        if np.any((which < 0) | (idx >= ends[np.clip(which, 0, None)])):
            raise IndexError("rows: global indices outside every shard")
        out = np.empty((idx.size, d), dtype=shards[0][1].dtype)
        for s in np.unique(which):
            sel = which == s
            off, arr = shards[s]
            out[sel] = arr[idx[sel] - off]
        return out

    return get


def kept_view(acts: np.ndarray, unmap: bool) -> Any:
    """The pipeline's kept-raw-rows view (``lib.stages.common._KeptRawRows``) with every row kept; with
    ``unmap=False`` the view before this change: the memory map indexed directly (all rows kept)."""
    from actgeo_assets.lib.stages.common import _KeptRawRows

    return _KeptRawRows(acts, np.ones(len(acts), dtype=bool)) if unmap else acts


def child(args: argparse.Namespace) -> None:
    """One case in this process: print its time and peak as JSON."""
    from actgeo_assets.lib.store.memory import peak_rss
    from actgeo_assets.lib.store.rows import chunked_mean, cosines_to_direction, row_getter

    paths = sorted(Path(args.data).glob(f"shard-*-{args.rows}x{args.dim}.npy"))[: args.shards]
    maps = [np.load(p, mmap_mode="r") for p in paths]
    offsets = np.cumsum([0] + [len(m) for m in maps])[:-1].tolist()
    n = int(sum(len(m) for m in maps))
    mapped = args.reader == "mapped"
    make = mapped_getter if mapped else row_getter
    rng = np.random.default_rng(1)
    sizes = [int(s) for s in args.card_sizes.split(",")]
    cards = [np.sort(rng.choice(n, size=min(s, n // 2), replace=False)) for s in sizes]
    result: dict[str, Any] = {}
    if args.pattern == "lens":
        import torch

        from actgeo_assets.lib.analysis.readout import Readout, component_lens

        torch.set_num_threads(2)
        raw_get = make([(o, kept_view(m, unmap=not mapped)) for o, m in zip(offsets, maps, strict=True)])
        unembed = torch.from_numpy(np.random.default_rng(2).standard_normal((args.vocab, args.dim), dtype=np.float32))
        readout = Readout(final_norm=lambda x: x, unembed=unembed, center=np.zeros(args.dim), tokenizer=None,
                          vocabulary=frozenset(range(args.vocab)), n_rows=n)
        with peak_rss() as mem:
            shown = [component_lens(readout, raw_get, members)[1]["shown"] for members in cards]
        result["shown"] = shown
        result["rows_read"] = int(sum(min(m.size, 1024) * 128 + m.size for m in cards))
    elif args.pattern == "histogram":
        from actgeo_assets.lib.stages.graph import pair_cosines

        get = make(list(zip(offsets, maps, strict=True)))
        with peak_rss() as mem:
            cos = pair_cosines(get, n)
        result["checksum"] = float(np.sum(cos))
        result["rows_read"] = 2 * len(cos)
    elif args.pattern == "members":
        get = make(list(zip(offsets, maps, strict=True)))
        giant = np.sort(rng.choice(n, size=int(0.95 * n), replace=False))
        with peak_rss() as mem:
            sums = [float(cosines_to_direction(get, m, chunked_mean(get, m)).sum()) for m in cards]
            sums.append(float(chunked_mean(get, giant).sum()))
        result["checksum"] = sums
        result["rows_read"] = int(sum(2 * m.size for m in cards) + giant.size)
    else:
        raise SystemExit(f"unknown pattern {args.pattern}")
    p = mem.peak
    assert p is not None
    result.update(seconds=p.seconds, peak_gib=p.gib, growth_gib=(p.bytes - (p.start_bytes or 0)) / 2**30,
                  end_anon_gib=(p.anon_bytes or 0) / 2**30, end_file_gib=(p.file_bytes or 0) / 2**30,
                  method=p.method)
    print(json.dumps(result))


#: The sub-steps of the merge (lib/stages/graph.py) and the cards (lib/stages/cards.py, lib/analysis/cards.py)
#: measured by ``--stage``: (module, function, label). A function called several times keeps its largest peak.
SUB_STEPS = (
    ("actgeo_assets.lib.stages.graph", "_global_tile", "merge: read the tiles"),
    ("actgeo_assets.lib.stages.graph", "merge_forests", "merge: Kruskal (whole run, then per jackknife replicate)"),
    ("actgeo_assets.lib.stages.graph", "locate_transition", "merge: sweep's transition"),
    ("actgeo_assets.lib.stages.graph", "pair_cosine_sample", "merge: cosine histogram's sample"),
    ("actgeo_assets.lib.stages.graph", "n_scaling", "merge: N-scaling"),
    ("actgeo_assets.lib.stages.graph", "shard_jackknife", "merge: shard jackknife"),
    ("actgeo_assets.lib.stages.graph", "cosine_histogram_png", "merge: figures (histogram)"),
    ("actgeo_assets.lib.stages.cards", "load_components", "cards: load labels"),
    ("actgeo_assets.lib.stages.cards", "run_tokens", "cards: token tables + documents"),
    ("actgeo_assets.lib.stages.cards", "_readout", "cards: load the model"),
    ("actgeo_assets.lib.stages.cards", "readout_rows", "cards: rows to predict"),
    ("actgeo_assets.lib.analysis.cards", "component_lens", "cards: logit lens + control groups"),
    ("actgeo_assets.lib.analysis.cards", "chunked_mean", "cards: members' mean"),
    ("actgeo_assets.lib.stages.cards", "build_cards", "cards: build_cards (all of a card)"),
    ("actgeo_assets.lib.stages.cards", "giant_subcards", "cards: sub-cards"),
    ("actgeo_assets.lib.stages.cards", "token_baseline", "cards: token baseline"),
    ("actgeo_assets.lib.stages.cards", "artefact_summary", "cards: artefact summary"),
    ("actgeo_assets.lib.stages.cards", "source_breakdown", "cards: source breakdown"),
    ("actgeo_assets.lib.stages.cards", "_provenance", "cards: sample and study"),
    ("actgeo_assets.lib.stages.cards", "write_explorer", "cards: explorer page"),
    ("actgeo_assets.lib.stages.cards", "write_report", "cards: report page"),
    ("actgeo_assets.lib.stages.cards", "write_results", "cards: SQL rows"),
    ("actgeo_assets.lib.stages.cards", "members_table", "cards: members table"),
)


def stage_child(args: argparse.Namespace) -> None:
    """The merge and the cards of the finished run in ``args.stage`` (a copy: both rewrite their files), each
    sub-step of :data:`SUB_STEPS` inside its own :class:`peak_rss`; print JSON."""
    import importlib
    import types

    from actgeo_assets.lib.config.sources import resolve_settings
    from actgeo_assets.lib.store.layout import RunLayout
    from actgeo_assets.lib.store.memory import peak_rss

    found: dict[str, dict[str, Any]] = {}

    def wrap(module: Any, name: str, label: str) -> None:
        inner = getattr(module, name)

        def timed(*a: Any, **k: Any) -> Any:
            with peak_rss() as mem:
                out = inner(*a, **k)
            p = mem.peak
            rec = found.setdefault(label, {"peak_gib": 0.0, "growth_gib": 0.0, "seconds": 0.0, "calls": 0})
            rec["peak_gib"] = max(rec["peak_gib"], p.gib)
            rec["growth_gib"] = max(rec["growth_gib"], (p.bytes - (p.start_bytes or 0)) / 2**30)
            rec["seconds"] += p.seconds
            rec["calls"] += 1
            rec["file_gib_after"] = (p.file_bytes or 0) / 2**30
            return out

        setattr(module, name, timed)

    for mod, name, label in SUB_STEPS:
        wrap(importlib.import_module(mod), name, label)
    cards_stage = importlib.import_module("actgeo_assets.lib.stages.cards")
    make_predictor = cards_stage._predictor

    def predictor(*a: Any, **k: Any) -> Any:  # the model's own predictions: a closure, wrapped when made
        holder = types.SimpleNamespace(predict=make_predictor(*a, **k))
        wrap(holder, "predict", "cards: next-token predictions (forward passes)")
        return holder.predict

    cards_stage._predictor = predictor
    from actgeo_assets.lib.stages.cards import build_run_cards
    from actgeo_assets.lib.stages.graph import merge_components

    made = Path(args.stage) / "benchmark_run.json"  # a run of --build-run: its settings
    values = json.loads(made.read_text()) if made.exists() else {"profile": args.profile}
    settings = resolve_settings([("benchmark", values)])
    layout = RunLayout(Path(args.stage), settings.profile)
    steps: dict[str, Any] = {}
    with peak_rss() as merge:
        merge_components(settings, layout)
    with peak_rss() as cards:
        build_run_cards(settings, layout, f"sqlite:///{Path(args.stage) / 'actgeo.sqlite'}", readout=not args.no_model)
    for name, mem in (("components (merge)", merge), ("component_cards", cards)):
        p = mem.peak
        assert p is not None
        steps[name] = {"peak_gib": p.gib, "growth_gib": (p.bytes - (p.start_bytes or 0)) / 2**30,
                       "seconds": p.seconds, "anon_gib_after": (p.anon_bytes or 0) / 2**30,
                       "file_gib_after": (p.file_bytes or 0) / 2**30}
    print(json.dumps({"n": int(json.loads(layout.summary.read_text())["n"]), "profile": settings.profile,
                      "dim": int(np.load(layout.mean).shape[0]) if layout.mean.exists() else None,
                      "model": not args.no_model, "steps": steps, "sub_steps": found}))


#: The synthetic run of ``--build-run``: the scale profile (prune_at 0.7, card ranks 2-20, center_l2) at the
#: requested shape.
def run_values(shards: int, rows: int) -> dict[str, Any]:
    return {"profile": "scale", "n_shards": shards, "budget": shards * rows}


def build_run(data_dir: Path, shards: int, rows: int, dim: int, seed: int = 0) -> None:
    """A finished run up to the tiles, without the model and without computing a cosine: the scale profile's
    settings at ``shards x rows``; raw shards of synthetic float32 rows (standard normal plus a shared offset,
    ``dim`` wide) whose token tables and documents are the builtin corpus' own words (one word a token, ids
    < 262,144, the demo model's vocabulary); the mean and the normalized shards by the library's stages; then
    a designed single-linkage forest written as the shard forests and the tiles the merge reads (a giant of
    95% of the rows, the scale run's top sizes 309, 87, 38, ..., N / 200 components of 2-10 and the rest
    singletons, every component linked to the giant below 0.7). The merge and the cards then run as they
    would on a captured run (``--stage``)."""
    import re
    import types
    import zlib
    from unittest import mock

    import pandas as pd

    import actgeo_assets.lib.stages.graph as graph_stage
    from actgeo_assets.lib.config.sources import resolve_settings
    from actgeo_assets.lib.graph import ForestEdges, tile_forest
    from actgeo_assets.lib.stages.activations import RawRecord, compute_mean, normalize_shard, shard_plan
    from actgeo_assets.lib.stages.graph import TileRecord, exact_thresholds
    from actgeo_assets.lib.stages.record import Inputs, expected_inputs
    from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json, sha256_file
    from actgeo_assets.lib.store.shards import write_raw_shard

    settings = resolve_settings([("benchmark", run_values(shards, rows))])
    layout = RunLayout(data_dir, settings.profile)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("_corpus", "_models"):  # the corpus and the model of this checkout
        if not (data_dir / name).exists() and (ROOT / "data" / name).exists():
            (data_dir / name).symlink_to(ROOT / "data" / name)
    rng = np.random.default_rng(seed)
    offset = rng.standard_normal(dim).astype(np.float32) * 2
    word = re.compile(r"\S+")
    for shard in settings.shard_keys:
        if layout.raw_meta(shard).exists():
            continue
        docs, budget = shard_plan(settings, layout, shard)
        cols: dict[str, list[Any]] = {k: [] for k in ("doc_id", "position", "token_id", "token", "char_start",
                                                        "char_end", "source")}
        for doc in docs:
            for pos, m in enumerate(word.finditer(doc.text)):
                if pos + 1 >= settings.context_len or len(cols["doc_id"]) >= budget:
                    break
                for k, v in zip(cols, (doc.doc_id, pos + 1, zlib.crc32(m.group().encode()) % 262_144, m.group(),
                                       m.start(), m.end(), doc.source), strict=True):
                    cols[k].append(v)
            if len(cols["doc_id"]) >= budget:
                break
        tokens = pd.DataFrame({"row": np.arange(len(cols["doc_id"]), dtype=np.int64), **cols})
        acts = rng.standard_normal((len(tokens), dim), dtype=np.float32) + offset
        recorded = expected_inputs(RawRecord, Inputs(settings, layout, shard, {}))
        result = types.SimpleNamespace(acts=acts, tokens=tokens, stats={"model": settings.model,
                                                                       "layer": settings.layer})
        write_raw_shard(layout, shard, result, docs, recorded.pop("capture"), extra=recorded)
    if not layout.mean_meta.exists():
        compute_mean(settings, layout)
    sizes = {s: int(load_json(layout.raw_meta(s))["shape"][0]) for s in settings.shard_keys}
    offsets = dict(zip(settings.shard_keys, np.cumsum([0, *sizes.values()])[:-1].tolist(), strict=True))
    n = int(sum(sizes.values()))
    # the designed forest: each component a random chain (weights in [0.7, 1)), linked to the giant in [0.5, 0.7)
    perm = rng.permutation(n)
    cuts = [int(0.95 * n)]
    for size in (309, 87, 38, 33, 30, 29, 28, 26, 24, 24, 24, 23, 23, 22, 21, 19, 16, 16, 16,
                 *rng.integers(2, 11, n // 200)):  # 5,000 small components at N = 1,000,000
        if cuts[-1] + int(size) > n:
            break
        cuts.append(cuts[-1] + int(size))
    src, dst, weight = [], [], []
    for k, (lo, hi) in enumerate(zip([0, *cuts[:-1]], cuts, strict=True)):
        members = perm[lo:hi]
        src.append(members[:-1])
        dst.append(members[1:])
        weight.append(rng.uniform(0.7, 0.99, members.size - 1))
        if k:  # below the threshold to the giant
            src.append(members[:1])
            dst.append(perm[rng.integers(0, cuts[0], 1)])
            weight.append(rng.uniform(0.5, 0.69, 1))
    src, dst, weight = np.concatenate(src), np.concatenate(dst), np.concatenate(weight)
    src, dst = np.minimum(src, dst), np.maximum(src, dst)
    starts = np.array(list(offsets.values()), dtype=np.int64)
    shard_of = lambda g: np.searchsorted(starts, g, side="right") - 1  # noqa: E731
    sa, sb = shard_of(src), shard_of(dst)
    probe = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    meta = tile_forest(probe[:2], probe[2:], offset_a=0, offset_b=2, min_threshold=settings.min_threshold,
                       exact_at=exact_thresholds(settings), device="cpu", prune_at=settings.prune_at)
    kw = {"min_threshold": meta.min_threshold, "exact_at": meta.exact_at, "exact_up_to": meta.exact_up_to,
          "error_bound": meta.error_bound}
    keys = list(settings.shard_keys)

    def fake_shard_forest(settings_: Any, layout_: Any, shard: str, unit: np.ndarray) -> dict[str, Any]:
        i = keys.index(shard)
        sel = (sa == i) & (sb == i)
        edges = ForestEdges(src[sel] - offsets[shard], dst[sel] - offsets[shard], weight[sel], **kw)
        edges.save(layout_.shard_forest(shard))
        return {"prune_at": settings_.prune_at, "shard_forest_sha256": sha256_file(layout_.shard_forest(shard)),
                "shard_components": -1}

    with mock.patch.object(graph_stage, "write_shard_forest", fake_shard_forest):
        for shard in settings.shard_keys:
            if not layout.normalized_meta(shard).exists():
                normalize_shard(settings, layout, shard)
    for pair in settings.pair_keys:
        a, b = graph_stage.split_pair_key(pair)
        i, j = keys.index(a), keys.index(b)
        if a == b:
            sel = np.zeros(len(src), dtype=bool)
        else:
            sel = ((sa == i) & (sb == j)) | ((sa == j) & (sb == i))
        # tile-local ids: a's rows, then b's
        ls, ld = (np.where(shard_of(g) == i, g - offsets[a], g - offsets[b] + sizes[a]) for g in (src[sel], dst[sel]))
        edges = ForestEdges(np.minimum(ls, ld), np.maximum(ls, ld), weight[sel], **kw)
        path = layout.tile(pair)
        path.parent.mkdir(parents=True, exist_ok=True)
        edges.save(path)
        upstream = {"normalized": {s: load_json(layout.normalized_meta(s))["sha256"] for s in (a, b)}}
        save_json(layout.tile_meta(pair), {**expected_inputs(TileRecord, Inputs(settings, layout, pair, upstream)),
                                           "edge_counts": {}, "pairs_total": None, "pairs_computed": None,
                                           "sha256": sha256_file(path)})
    save_json(data_dir / "benchmark_run.json", run_values(shards, rows))


def machine() -> str:
    """CPU model, cores and threads (lscpu), kernel and Python."""
    info: dict[str, str] = {}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (f"{info.get('Model name', platform.processor() or '?')}, {info.get('CPU(s)', os.cpu_count())} CPUs "
            f"({info.get('Thread(s) per core', '?')} thread(s) per core), Linux {platform.release()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--card-sizes", default=",".join(map(str, SCALE_CARD_SIZES)))
    ap.add_argument("--patterns", default="lens,histogram,members")
    ap.add_argument("--readers", default="mapped,preadv")
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "actgeo-merge-memory"))
    ap.add_argument("--out", default=None, help="append a markdown table here")
    ap.add_argument("--stage", default=None, help="a COPY of a finished run's data_dir: measure its merge and "
                                                  "cards sub-step by sub-step (rewrites their files)")
    ap.add_argument("--profile", default="demo", help="the run's profile (with --stage)")
    ap.add_argument("--no-model", action="store_true", help="with --stage: cards without the model's readouts")
    ap.add_argument("--build-run", default=None, help="build a synthetic scale-profile run of --shards x --rows x "
                                                      "--dim in this data_dir (then measure it with --stage)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--pattern", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        stage_child(args) if args.stage else child(args)
        return
    if args.build_run:
        t0 = time.perf_counter()
        build_run(Path(args.build_run), args.shards, args.rows, args.dim)
        print(f"built {args.build_run} in {time.perf_counter() - t0:.0f} s")
        return
    if args.stage:
        cmd = [sys.executable, __file__, "--child", "--stage", args.stage, "--profile", args.profile,
               *(["--no-model"] if args.no_model else [])]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        lines = [f"\n### Merge and cards of a finished run ({res['profile']}, N = {res['n']:,}, d = {res['dim']}, "
                 f"{'with' if res['model'] else 'without'} the model), sub-step by sub-step, "
                 f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n", f"Machine: {machine()}; one run.\n",
                 "| step | peak RSS, GiB | growth over its start, GiB | seconds | calls |", "|---|---:|---:|---:|---:|"]
        for name, r in res["steps"].items():
            lines.append(f"| **{name}** | {r['peak_gib']:.3f} | {r['growth_gib']:.3f} | {r['seconds']:.1f} | 1 |")
        for name, r in res["sub_steps"].items():
            lines.append(f"| {name} | {r['peak_gib']:.3f} | {r['growth_gib']:.3f} | {r['seconds']:.1f} | {r['calls']} |")
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(text)
        return
    t0 = time.perf_counter()
    paths = write_shards(Path(args.data), args.shards, args.rows, args.dim)
    size_gib = sum(p.stat().st_size for p in paths) / 2**30
    print(f"shards: {args.shards} x {args.rows:,} x {args.dim} float32 = {size_gib:.2f} GiB in {args.data} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows: list[dict[str, Any]] = []
    for pattern in args.patterns.split(","):
        got: dict[str, list[dict[str, Any]]] = {}
        for _ in range(args.repeats):
            for reader in args.readers.split(","):  # alternated, so load changes hit both alike
                cmd = [sys.executable, __file__, "--child", "--reader", reader, "--pattern", pattern,
                       "--shards", str(args.shards), "--rows", str(args.rows), "--dim", str(args.dim),
                       "--vocab", str(args.vocab), "--card-sizes", args.card_sizes, "--data", args.data]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
                got.setdefault(reader, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        same = len({json.dumps({k: v for k, v in r.items() if k in ("shown", "checksum")}) for rs in got.values()
                    for r in rs}) == 1
        for reader, runs in got.items():
            row = {"pattern": pattern, "reader": reader, "same_result": same, "rows_read": runs[0]["rows_read"],
                   **{k: statistics.median(r[k] for r in runs) for k in ("seconds", "growth_gib", "peak_gib",
                                                                        "end_file_gib")},
                   "seconds_all": [round(r["seconds"], 2) for r in runs]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = [f"\n### {args.shards} shards x {args.rows:,} x d = {args.dim} float32 ({size_gib:.2f} GiB), "
             f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n",
             f"Machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}. Medians of {args.repeats} "
             "runs, each case in its own process, readers alternated.\n",
             "| case | reader | rows read | seconds (each run) | RSS growth, GiB | peak RSS, GiB | file-backed at end, GiB "
             "| same result |", "|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        table.append(f"| {r['pattern']} | {r['reader']} | {r['rows_read']:,} | {r['seconds']:.2f} "
                     f"({', '.join(f'{s:.2f}' for s in r['seconds_all'])}) | {r['growth_gib']:.3f} | "
                     f"{r['peak_gib']:.3f} | {r['end_file_gib']:.3f} | {'yes' if r['same_result'] else 'NO'} |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
