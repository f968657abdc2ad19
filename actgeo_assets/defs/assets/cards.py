"""component_cards: cards for ranks 2..20, the HTML report, and the SQL table of component metadata."""

import dagster as dg

from actgeo_assets.defs.metadata import card_md, disk_metadata, served_url, table_value
from actgeo_assets.defs.partitions import peak_metadata
from actgeo_assets.defs.pipeline import asset_args, asset_key
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.stages.cards import audit_cards, build_run_cards
from actgeo_assets.lib.store.memory import peak_rss


def component_cards_asset(experiment: str | None = None) -> dg.AssetsDefinition:
    """The asset ``component_cards`` of ``experiment`` (None: the profile's run)."""
    @dg.asset(
        **asset_args("component_cards", experiment=experiment),
        kinds={"html", "sql"},
        check_specs=[
            dg.AssetCheckSpec("cards_cover_ranks", asset=asset_key("component_cards", experiment), blocking=True,
                              description="one card for every configured rank (card_ranks) that the run has, in order"),
            dg.AssetCheckSpec("consistent_with_components", asset=asset_key("component_cards", experiment), blocking=True,
                              description="card sizes equal the summary's top sizes of the same run"),
            dg.AssetCheckSpec("sql_rows_match_cards", asset=asset_key("component_cards", experiment), blocking=True,
                              description="the SQL tables' rows of this run are the cards' and sub-component cards' (rank, size) pairs"),
        ],
    )
    def component_cards(context: dg.AssetExecutionContext, actgeo: ActgeoResource):
        run = actgeo.context(experiment)
        settings, layout = run.settings, run.layout
        with peak_rss() as mem:
            result = build_run_cards(settings, layout, run.database_url)
        cards, report = result.cards, str(result.report)
        context.log.info(f"{len(cards)} cards, report {report}, {result.sql_rows} SQL rows")
        rows = [(c.rank, c.size, c.n_documents, c.provisional_label,
                 ", ".join(f"{t!r}" for t, _ in c.top_tokens[:3])) for c in cards]
        yield dg.MaterializeResult(metadata={
            # one click from the asset page: the report over http from `make ui`'s report server
            "report_url": dg.MetadataValue.url(served_url(result.report, layout.root.parent)),
            "report": dg.MetadataValue.path(report),
            **({"explorer_url": dg.MetadataValue.url(served_url(result.explorer, layout.root.parent))}
               if result.explorer else {}),
            "run_id": result.run_id,
            "n_cards": len(cards),
            "cards": table_value(["rank", "size", "documents", "label", "top tokens"], rows),
            # each card's contexts, the member token in bold (short enough for the page to show them inline)
            **{f"card_{c.rank:02d}": dg.MetadataValue.md(card_md(c)) for c in cards},
            "sql_rows": result.sql_rows,
            "database": dg.MetadataValue.text(_redact(run.database_url)),
            # how much of the partition is "same token string", and the duplicate documents dropped
            "token_baseline": dg.MetadataValue.json({k: v for k, v in (result.baseline or {}).items() if k != "mixed"}),
            "corpus_duplicates": dg.MetadataValue.json(result.duplicates or {}),
            **disk_metadata(layout.cards_dir, run_root=layout.root),  # the run folder's total, once it is complete
            **peak_metadata(mem.peak),
        }, data_version=dg.DataVersion(result.report_sha256))
        for check in audit_cards(settings, run.database_url, result):
            yield dg.AssetCheckResult(check_name=check.name, passed=check.passed, metadata=check.metadata)
    return component_cards


component_cards = component_cards_asset()


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)

#: Stage name -> the builder of its asset in an experiment (definitions.py builds every experiment's).
BUILDERS = {"component_cards": component_cards_asset}
