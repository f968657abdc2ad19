"""layers: the layer comparison (job ``layers``, `actgeo layers`), outside what `actgeo run` plans."""

import dagster as dg

from actgeo_assets.defs.cores import step_settings
from actgeo_assets.defs.metadata import disk_metadata, png_md, table_value
from actgeo_assets.defs.pipeline import asset_args, stage
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.layers import compare_layers


def layers_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``layers`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(**asset_args("layers", experiment=experiment), kinds={"pytorch", "pandas"})
    def layers(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
        run = actgeo.context(experiment)
        settings, layout = step_settings(context, run.settings), run.layout
        result = compare_layers(settings, layout)
        cmp = result.comparison
        at = cmp.at(settings.threshold)
        context.log.info(f"layers: {cmp.n} tokens, layers {list(result.layers)}, comparison in {result.seconds:.1f}s")
        land = cmp.landing[cmp.landing["normalization"] == settings.normalization]
        return dg.MaterializeResult(metadata={
            "n": cmp.n,
            "layers": dg.MetadataValue.json(list(result.layers)),
            "reference_layer": cmp.reference_layer,
            f"at_{settings.threshold:g}": table_value(
                ["layer", "normalization", "mean cos", "giant", "components"],
                [(int(r.layer), r.normalization, round(float(r.mean_cosine), 4), round(float(r.giant_fraction), 4),
                  int(r.n_components)) for r in at.itertuples(index=False)]),
            "landing": table_value(
                ["rank", "size", "layer", "lands in", "share", "spread", "giant"],
                [(int(r.rank), int(r.size), int(r.layer), int(r.dest_rank), round(float(r.frac_in_dest), 4),
                  int(r.n_dest_components), bool(r.dest_is_giant)) for r in land.itertuples(index=False)]),
            "figure": dg.MetadataValue.md(png_md(result.files["giant_fraction.png"].read_bytes(), "giant fraction")),
            "table": dg.MetadataValue.path(str(result.files["geometry.csv"])),
            "capture": dg.MetadataValue.json(result.capture),
            "seconds": round(result.seconds, 2),
            **disk_metadata(layout.layers_dir),
        }, data_version=dg.DataVersion(stage("layers").spec.output({"files_sha256": result.sha256}) or ""))
    return layers


layers = layers_asset()

#: Stage name -> the builder of its asset in an experiment (definitions.py builds every experiment's).
BUILDERS = {"layers": layers_asset}
