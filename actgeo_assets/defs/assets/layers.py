"""layer_geometry: the layer sweep (job ``layer_sweep``, `actgeo layers`), outside the demo's stage jobs."""

import dagster as dg

from actgeo_assets.defs.cores import step_settings
from actgeo_assets.defs.k8s import GPU_STEP_TAGS
from actgeo_assets.defs.metadata import png_md, table_value
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.constants import GPU_POOL, GROUP
from actgeo_assets.lib.stages.layers import LAYERS_VERSION, compare_layers


@dg.asset(
    # the pipeline's group: with a second group the UI's lineage opens with every group collapsed, hiding the
    # pipeline; the sweep is in no stage job, so `make demo` and the sensors never run it
    group_name=GROUP,
    kinds={"pytorch", "pandas"},
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    code_version=LAYERS_VERSION,
    description="Several layers (compare_layers) of the corpus' first compare_budget tokens, captured in one "
    "forward pass (stopped after the deepest), compared under l2, center_l2 and rmsnorm: mean pairwise cosine, "
    "giant fraction and exact component counts per layer and threshold, and where the reference layer's top "
    "components land in the others. Table, figure and the report's section under {profile}/layers/.",
)
def layer_geometry(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
    settings, layout = step_settings(context, actgeo.settings()), actgeo.layout()
    result = compare_layers(settings, layout)
    cmp = result.comparison
    at = cmp.at(settings.threshold)
    context.log.info(f"layer_geometry: {cmp.n} tokens, layers {list(result.layers)}, comparison in "
                     f"{result.seconds:.1f}s")
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
    }, data_version=dg.DataVersion(result.sha256["geometry.csv"]))
