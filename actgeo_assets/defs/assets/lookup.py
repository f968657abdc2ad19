"""lookup: a faiss index of the run's normalized rows, for `actgeo lookup` (which component a new text's
tokens join)."""

import dagster as dg

from actgeo_assets.defs.metadata import disk_metadata, fmt
from actgeo_assets.defs.pipeline import asset_args
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.lookup import build_lookup_index


def lookup_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``lookup`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(**asset_args("lookup", experiment=experiment), kinds={"faiss"})
    def lookup(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
        run = actgeo.context(experiment)
        built = build_lookup_index(run.settings, run.layout)
        context.log.info(f"{built.index_type} of {built.rows:,} x {built.dim} in {built.seconds:.2f}s: {built.path}")
        return dg.MaterializeResult(metadata={
            "rows": built.rows,
            "dim": built.dim,
            "index_type": built.index_type,
            "bytes": built.bytes,
            "build_seconds": fmt(built.seconds),
            "run_id": built.run_id,
            "path": dg.MetadataValue.path(str(built.path)),
            **disk_metadata(built.path.parent),
        }, data_version=dg.DataVersion(built.sha256))
    return lookup


lookup = lookup_asset()

#: Stage name -> the builder of its asset in an experiment (definitions.py builds every experiment's).
BUILDERS = {"lookup": lookup_asset}
