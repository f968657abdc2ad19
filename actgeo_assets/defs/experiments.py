"""Experiments in the UI: the comparison across them (asset ``experiment_comparison``, job ``comparison_job``)
and adding one from the launchpad (job ``add_experiment_job``).

Each experiment's own pipeline is built from the pipeline's declaration under its key prefix
(definitions.py, defs/pipeline.py); the profile's own run is the unprefixed assets, named by its profile in
the comparison.
"""


import dagster as dg
from pydantic import Field

from actgeo_assets.defs.metadata import disk_metadata, png_md, served_url, table_md
from actgeo_assets.defs.pipeline import asset_key
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.constants import GROUP
from actgeo_assets.lib.stages.cards import CARDS
from actgeo_assets.lib.stages.graph import MERGE

COMPARISON = "experiment_comparison"
COMPARISON_JOB = "comparison_job"
#: The stages whose outputs the comparison reads, in every experiment.
COMPARED_STAGES = (MERGE.name, CARDS.name)


class ComparisonConfig(dg.Config):
    experiments: list[str] = Field(
        default_factory=list,
        description="experiments to compare (the profile's own run by its profile's name, e.g. demo); empty: "
                    "every one whose components are materialized")
    common_n: int = Field(default=5000, description="activations per model for the normalizations compared "
                                                    "at a common N (l2, center_l2, rmsnorm)")


def comparison_deps(experiments: list[str]) -> list[dg.AssetKey]:
    """The assets the comparison reads: the merge's and the cards' of the profile's run and each experiment."""
    return [asset_key(s, e) for e in (None, *experiments) for s in COMPARED_STAGES]


def comparison_asset(experiments: list[str]) -> dg.AssetsDefinition:
    """``experiment_comparison`` over the profile's run and ``experiments``: summaries with their intervals,
    curves overlaid, the normalizations at a common N, cards matched across experiments
    (``lib/stages/compare.py``); report at ``{data_dir}/comparison/report.html``."""
    deps = comparison_deps(experiments)
    condition = dg.AutomationCondition.eager().replace(  # compare what exists; do not wait for every one
        "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(*deps)))

    # in the profile run's group: a deployment without experiments shows one group, expanded in the lineage
    @dg.asset(name=COMPARISON, deps=deps, group_name=GROUP, kinds={"html", "pandas"},
              automation_condition=condition,
              description="Experiments side by side: summaries with their intervals, percolation curves and "
                          "N-scaling overlaid, l2 / center_l2 / rmsnorm at a common N per model, and each card's "
                          "best match in every other experiment (shared activations, or character spans across "
                          "models).")
    def experiment_comparison(context: dg.AssetExecutionContext, config: ComparisonConfig,
                              actgeo: ActgeoResource) -> dg.MaterializeResult:
        from actgeo_assets.lib.stages.compare import compare_experiments, experiment_runs

        runs = experiment_runs(actgeo.context, experiments, config.experiments)
        out = actgeo.context().data_dir / "comparison"
        result = compare_experiments(runs, out, common_n=config.common_n, log=context.log.info)
        context.log.info(f"compared {[r.name for r in runs]}: {result.report}")
        best = sorted(result.matches, key=lambda m: -float(m.get("overlap") or 0))[:10]
        return dg.MaterializeResult(metadata={
            "report_url": dg.MetadataValue.url(served_url(result.report, out.parent)),
            "report": dg.MetadataValue.path(str(result.report)),
            "experiments": dg.MetadataValue.json([r.name for r in runs]),
            "skipped": dg.MetadataValue.json(result.skipped),
            "summaries": dg.MetadataValue.md(_rows_md(result.summary_rows)),
            "best_matches": dg.MetadataValue.md(_rows_md(best)),
            **{f"figure_{k}": dg.MetadataValue.md(png_md(p.read_bytes(), k)) for k, p in result.figures.items()},
            **disk_metadata(out),
        })

    return experiment_comparison


def _rows_md(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = [c for c in rows[0] if not isinstance(rows[0][c], dict | list)][:12]
    return table_md(cols, [[r.get(c) for c in cols] for r in rows])


def comparison_job():  # noqa: ANN201 - an unresolved asset job
    return dg.define_asset_job(COMPARISON_JOB, selection=dg.AssetSelection.assets(COMPARISON),
                               description="Compare experiments (asset experiment_comparison).")


class NewExperiment(dg.Config):
    name: str = Field(description="the experiment's name: lowercase letters, digits and _, e.g. demo_layer_12")


@dg.op(description="Record the resource config's settings (the launchpad's `actgeo` fields) as a new experiment "
                   "of the data directory; then Reload definitions (Deployment > Code locations) shows its assets.")
def add_experiment(context: dg.OpExecutionContext, config: NewExperiment, actgeo: ActgeoResource) -> None:
    from actgeo_assets.lib.config.experiments import write_experiment

    run = actgeo.context()
    exp = write_experiment(run.data_dir, config.name, run.settings)
    context.log.info(f"experiment {exp.name}: {exp.file} holds {exp.values}; its files will be in "
                     f"{run.data_dir / exp.name}. Reload definitions to materialize it.")


@dg.job(description="Add an experiment from the launchpad: set its settings in the `actgeo` resource config and "
                    "its name in the op config; then reload definitions.")
def add_experiment_job() -> None:
    add_experiment()
