"""edge_tiles (per shard pair i <= j) -> components (all tiles merged)."""

import dagster as dg
import numpy as np

from actgeo_assets.defs.metadata import (
    INLINE_FIGURE_PX,
    SCALING_SHOWN,
    compact_table,
    disk_metadata,
    fmt,
    image_md,
    png_md,
    run_md,
    served_url,
    summary_md,
    sweep_table,
    table_md,
    uncertainty_md,
)
from actgeo_assets.defs.partitions import materialize_each, peak_metadata
from actgeo_assets.defs.pipeline import asset_args, asset_key
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.graph import (
    compute_tile,
    invalidate_components,
    load_components,
    merge_components,
    spot_check_edges,
)
from actgeo_assets.lib.store.memory import peak_rss


def edge_tiles_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``edge_tiles`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(**asset_args("edge_tiles", experiment=experiment), kinds={"pytorch"})
    def edge_tiles(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
        run = actgeo.context(experiment)
        settings, layout = run.settings, run.layout

        def tile_forest(pair: str) -> tuple[dict, str | None]:
            tile = compute_tile(settings, layout, pair)
            rate = tile.pairs_compared / max(tile.seconds, 1e-9)
            pruned = (f", {1 - tile.pairs_compared / max(tile.pairs_total, 1):.0%} of {tile.pairs_total:,} skipped "
                      f"inside components known at {settings.prune_at}" if settings.prune_at is not None else "")
            context.log.info(f"{tile.pair}: {tile.forest_edges} forest edges from {tile.pairs_compared:,} "
                             f"pairs in {tile.seconds:.2f}s ({rate / 1e6:.1f} Mpairs/s){pruned}")
            return {
                "forest_edges": tile.forest_edges,
                "pairs_compared": tile.pairs_compared,
                "pairs_total": tile.pairs_total,
                **({"prune_at": settings.prune_at} if settings.prune_at is not None else {}),
                "seconds": tile.seconds,
                "min_threshold": settings.min_threshold,
                "path": dg.MetadataValue.path(str(tile.path)),
                **disk_metadata(layout.tile(pair), layout.tile_meta(pair)),
            }, tile.sha256

        return materialize_each(context, tile_forest)
    return edge_tiles


edge_tiles = edge_tiles_asset()


def components_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``components`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(
        **asset_args("components", experiment=experiment),
        kinds={"numpy", "scipy"},
        check_specs=[
            dg.AssetCheckSpec("sizes_sum_to_n", asset=asset_key("components", experiment), blocking=True,
                              description="the component sizes add up to the number of activations N"),
            dg.AssetCheckSpec("float64_spot_check", asset=asset_key("components", experiment), blocking=True,
                              description="sampled pairs: float64 cosine >= t implies same component"),
        ],
    )
    def components(context: dg.AssetExecutionContext, actgeo: ActgeoResource):
        run = actgeo.context(experiment)
        settings, layout = run.settings, run.layout
        with peak_rss() as mem:
            merged = merge_components(settings, layout)
        record, sweep = merged.record, merged.sweep
        s = record.summary
        context.log.info(f"{s['n_components']} components, largest {s['largest']}, top sizes {s['top_sizes']}")
        figs = {k: p.read_bytes() for k, p in merged.figures.items()}
        yield dg.MaterializeResult(metadata={
            "run": dg.MetadataValue.md(run_md(record.description)),
            "run_id": record.run_id,
            "n": record.n,
            "n_components": s["n_components"],
            "largest": s["largest"],
            "largest_fraction": fmt(float(s["largest_fraction"])),
            "non_singleton": s["non_singleton"],
            "singletons": s["singletons"],
            "summary": dg.MetadataValue.md(summary_md(s, record.description)),
            "sweep": sweep_table(sweep),
            "transition": dg.MetadataValue.md(record.transition["words"]),
            "uncertainty": dg.MetadataValue.md(uncertainty_md(record.uncertainty)),
            "study_side_by_side": dg.MetadataValue.md(
                f"{record.study['verdict']}\n\n" + table_md(["", "the study", "this run"], record.study["rows"])),
            "n_scaling": compact_table(merged.scaling, SCALING_SHOWN),
            # inline on the asset page (served by `make ui`'s report server), then embedded (behind "Show Markdown")
            **{f"figure_{k}": dg.MetadataValue.md(image_md(
                served_url(p, layout.root.parent, record.labels_sha256, width=INLINE_FIGURE_PX), k))
               for k, p in merged.figures.items()},
            "figures_png": dg.MetadataValue.md("\n\n".join(png_md(png, k) for k, png in figs.items())),
            "figures": dg.MetadataValue.path(str(layout.components_dir)),
            **peak_metadata(mem.peak),
            **disk_metadata(layout.components_dir),
        }, data_version=dg.DataVersion(record.labels_sha256))
        stored = load_components(settings, layout)
        total = int(np.bincount(stored.labels).sum())
        spot = spot_check_edges(settings, layout, stored)
        if total != record.n or spot.violations:  # blocking: never served; a rerun merges again
            invalidate_components(layout)
        yield dg.AssetCheckResult(check_name="sizes_sum_to_n", passed=total == record.n,
                                  metadata={"sum_of_sizes": total, "n": record.n})
        yield dg.AssetCheckResult(check_name="float64_spot_check", passed=spot.violations == 0,
                                  metadata=spot.as_metadata())
    return components


components = components_asset()

#: Stage name -> the builder of its asset in an experiment (definitions.py builds every experiment's).
BUILDERS = {"edge_tiles": edge_tiles_asset, "components": components_asset}
