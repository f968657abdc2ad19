"""edge_tiles (per shard pair i <= j) -> components (all tiles merged)."""

from pathlib import Path

import dagster as dg
import numpy as np

from actgeo_assets.defs.k8s import GPU_STEP_TAGS
from actgeo_assets.defs.metadata import png_md, summary_md, table_md
from actgeo_assets.defs.partitions import pair_partitions
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib import pipeline

GROUP = "actgeo"


@dg.asset(
    partitions_def=pair_partitions,
    # A tile reads exactly its two shards; Dagster has no built-in pair mapping, so lineage is drawn to
    # all `normalized` partitions and the tile's own shards are named in its partition key.
    deps=[dg.AssetDep("normalized", partition_mapping=dg.AllPartitionMapping())],
    group_name=GROUP,
    kinds={"pytorch"},
    pool="actgeo_gpu",
    op_tags=GPU_STEP_TAGS,
    code_version="tile-forest-1",
    description="Maximum spanning forest of the edges with cosine >= min_threshold between two shards "
    "(tiled GEMM, never the similarity matrix or the edge list): at most n_a + n_b - 1 edges.",
)
def edge_tiles(context: dg.AssetExecutionContext, actgeo: ActgeoResource) -> dg.MaterializeResult:
    settings = actgeo.settings()
    facts = pipeline.compute_tile(settings, actgeo.layout(), context.partition_key)
    rate = facts["pairs_compared"] / max(facts["seconds"], 1e-9)
    context.log.info(f"{facts['pair']}: {facts['forest_edges']} forest edges from {facts['pairs_compared']:,} "
                     f"pairs in {facts['seconds']:.2f}s ({rate / 1e6:.1f} Mpairs/s)")
    return dg.MaterializeResult(metadata={
        "forest_edges": facts["forest_edges"],
        "pairs_compared": facts["pairs_compared"],
        "seconds": facts["seconds"],
        "min_threshold": settings.min_threshold,
        "path": dg.MetadataValue.path(facts["path"]),
    }, data_version=dg.DataVersion(facts["sha256"]))


@dg.asset(
    deps=[dg.AssetDep("edge_tiles", partition_mapping=dg.AllPartitionMapping())],
    group_name=GROUP,
    kinds={"numpy", "scipy"},
    code_version="kruskal-1",
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec("sizes_sum_to_n", asset="components"),
        dg.AssetCheckSpec("float64_spot_check", asset="components",
                          description="sampled pairs: float64 cosine >= t implies same component"),
    ],
    description="Kruskal merge of all tile forests = the exact single-linkage hierarchy; canonical labels "
    "at the threshold, the study's summary, a threshold sweep and Figure 1.",
)
def components(context: dg.AssetExecutionContext, actgeo: ActgeoResource):
    settings, layout = actgeo.settings(), actgeo.layout()
    facts = pipeline.merge_components(settings, layout)
    s, sweep = facts["summary"], facts["sweep"]
    context.log.info(f"{s['n_components']} components, largest {s['largest']}, top sizes {s['top_sizes']}")
    figs = {k: Path(p).read_bytes() for k, p in facts["figure_paths"].items()}
    yield dg.MaterializeResult(metadata={
        "run": facts["description"],
        "run_id": facts["run_id"],
        "n": facts["n"],
        "n_components": s["n_components"],
        "largest": s["largest"],
        "largest_fraction": float(s["largest_fraction"]),
        "non_singleton": s["non_singleton"],
        "singletons": s["singletons"],
        "summary": dg.MetadataValue.md(summary_md(s, facts["description"])),
        "sweep": dg.MetadataValue.md(table_md(list(sweep.columns), sweep.itertuples(index=False))),
        "figure_size_spectrum": dg.MetadataValue.md(png_md(figs["size_spectrum"], "component size spectrum")),
        "figure_percolation": dg.MetadataValue.md(png_md(figs["percolation"], "percolation curve")),
        "figures": dg.MetadataValue.path(str(layout.components_dir)),
    }, data_version=dg.DataVersion(facts["labels_sha256"]))
    labels = np.load(layout.components_dir / "labels.npy")
    total = int(np.bincount(labels).sum())
    yield dg.AssetCheckResult(check_name="sizes_sum_to_n", passed=total == facts["n"],
                              metadata={"sum_of_sizes": total, "n": facts["n"]})
    spot = pipeline.spot_check_edges(settings, layout, labels)
    yield dg.AssetCheckResult(check_name="float64_spot_check", passed=spot["violations"] == 0,
                              metadata={k: v for k, v in spot.items()})
