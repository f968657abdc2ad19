"""lookup: a faiss index of the run's normalized rows, for `actgeo lookup` (which component a new text's
tokens join)."""

import dagster as dg

from actgeo_assets.defs.metadata import disk_metadata, fmt
from actgeo_assets.defs.pipeline import asset_args
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.lookup import build_lookup_index


@dg.asset(**asset_args("lookup"), kinds={"faiss"})
def lookup(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
    built = build_lookup_index(actgeo.settings(), actgeo.layout())
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
