"""raw_activations -> activation_mean -> normalized (per dataset shard)."""

import dagster as dg

from actgeo_assets.defs.cores import step_settings
from actgeo_assets.defs.metadata import disk_metadata, table_md
from actgeo_assets.defs.partitions import materialize_each
from actgeo_assets.defs.pipeline import asset_args, asset_key
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.activations import (
    capture_shard,
    compute_mean,
    invalidate_normalized,
    normalize_shard,
)

#: A unit row's largest allowed |norm - 1| (float64), the blocking check `unit_norms`.
NORM_TOLERANCE = 1e-5


def raw_activations_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``raw_activations`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(**asset_args("raw_activations", experiment=experiment), kinds={"pytorch", "numpy"})
    def raw_activations(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
        run = actgeo.context(experiment)
        settings, layout = step_settings(context, run.settings), run.layout

        def capture(shard: str) -> tuple[dict, str | None]:
            context.log.info(f"capturing {shard}: {settings.describe()} ({settings.torch_threads} torch threads)")
            captured = capture_shard(settings, layout, shard)
            context.log.info(f"{shard}: {captured.rows} activations, stats {captured.stats}")
            return {
                "rows": captured.rows,
                "dim": captured.dim,
                "path": dg.MetadataValue.path(str(captured.path)),
                "sha256": captured.sha256,
                "sources": dg.MetadataValue.md(table_md(["source", "tokens"], sorted(captured.sources.items()))),
                "capture_stats": dg.MetadataValue.json({k: v for k, v in captured.stats.items() if _plain(v)}),
                **disk_metadata(layout.raw(shard), layout.raw_meta(shard), layout.tokens(shard), layout.docs(shard)),
            }, captured.sha256 or str(captured.rows)

        return materialize_each(context, capture)
    return raw_activations


raw_activations = raw_activations_asset()


def activation_mean_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``activation_mean`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(**asset_args("activation_mean", experiment=experiment), kinds={"numpy"})
    def activation_mean(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
        run = actgeo.context(experiment)
        mean = compute_mean(run.settings, layout := run.layout)
        context.log.info(f"mean over all shards: dim {mean.dim}, |mean| {mean.norm:.3f}")
        return dg.MaterializeResult(metadata={"dim": mean.dim, "mean_norm": mean.norm,
                                              "path": dg.MetadataValue.path(str(mean.path)),
                                              **disk_metadata(layout.mean, layout.mean_meta)},
                                    data_version=dg.DataVersion(mean.sha256))
    return activation_mean


activation_mean = activation_mean_asset()


def normalized_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``normalized`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(
        **asset_args("normalized", experiment=experiment),
        kinds={"numpy"},
        check_specs=[dg.AssetCheckSpec("graph_not_near_complete", asset=asset_key("normalized", experiment),
                                       description="sampled median pairwise cosine stays below the threshold"),
                     dg.AssetCheckSpec("unit_norms", asset=asset_key("normalized", experiment), blocking=True,
                                       description="every stored row has L2 norm 1 within 1e-5 (float64)")],
    )
    def normalized(context: dg.AssetExecutionContext, actgeo: ActgeoResource):
        run = actgeo.context(experiment)
        settings, layout = run.settings, run.layout
        units: dict = {}

        def normalize(shard: str) -> tuple[dict, str | None]:
            unit = units[shard] = normalize_shard(settings, layout, shard)
            if unit.max_norm_error > NORM_TOLERANCE:  # blocking: the shard stays stale, so no tile joins it
                invalidate_normalized(layout, shard)  # and a rerun recomputes it
            context.log.info(f"{shard}: {unit.rows} unit rows ({unit.normalization}); report {unit.report}")
            return {
                "rows": unit.rows,
                "normalization": unit.normalization,
                "excluded": int(unit.report.get("n_excluded", 0)),  # rows dropped: not finite or zero norm
                "excluded_by_reason": dg.MetadataValue.json(unit.report.get("excluded", {})),
                "normalize_report": dg.MetadataValue.json(unit.report),
                "diagnostics": dg.MetadataValue.json(unit.diagnostics),
                "path": dg.MetadataValue.path(str(unit.path)),
                **disk_metadata(layout.normalized(shard), layout.normalized_meta(shard), layout.kept(shard),
                                layout.shard_forest(shard)),
            }, unit.sha256

        yield materialize_each(context, normalize)
        # One result per check and run: over every shard of the run (one, except in a backfill's single run).
        several = len(units) > 1
        bad = [s for s, u in units.items() if u.max_norm_error > NORM_TOLERANCE]
        yield dg.AssetCheckResult(check_name="unit_norms", passed=not bad, metadata={
            "max_norm_error": max(u.max_norm_error for u in units.values()),
            "rows": sum(u.rows for u in units.values()),
            **({"shards": len(units), "failed_shards": ", ".join(bad) or "none"} if several else {})})
        diags = {s: u.diagnostics for s, u in units.items()}
        medians = [m for d in diags.values() if (m := (d.get("pairwise") or {}).get("median")) is not None]
        near = [s for s, d in diags.items() if d.get("near_complete", False)]
        yield dg.AssetCheckResult(
            check_name="graph_not_near_complete",
            passed=not near,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"median_pairwise_cosine": float(max(medians)) if medians else float("nan"),
                      "edge_density": float(max(d.get("edge_density") or 0.0 for d in diags.values())),
                      "predicted_edges": int(sum(d.get("predicted_edges") or 0 for d in diags.values())),
                      "threshold": settings.threshold,
                      **({"shards": len(units), "near_complete_shards": ", ".join(near) or "none"} if several else {})},
            description="; ".join(f"{s}: {diags[s].get('warning')}" if several else str(diags[s].get("warning"))
                                  for s in near) or None,
        )
    return normalized


normalized = normalized_asset()


def _plain(v: object) -> bool:
    return isinstance(v, int | float | str | bool | list | dict) or v is None

#: Stage name -> the builder of its asset in an experiment (definitions.py builds every experiment's).
BUILDERS = {"raw_activations": raw_activations_asset, "activation_mean": activation_mean_asset, "normalized": normalized_asset}
