"""Staleness is owned by the stage that writes: a field added to one stage's record is compared with no edit
to the planner, damaged files and old records name why they are stale, and upstream staleness propagates."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from actgeo_assets.lib.stages.activations import CAPTURE, MEAN, NORMALIZE
from actgeo_assets.lib.stages.cards import CARDS
from actgeo_assets.lib.stages.graph import MERGE, TILES, TileRecord
from actgeo_assets.lib.stages.layers import LAYERS
from actgeo_assets.lib.stages.plan import plan
from actgeo_assets.lib.stages.record import Inputs, expected_inputs, input_field
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json

#: The stages of a run, lineage order (the Dagster declaration orders them the same way; this test needs no Dagster).
PIPELINE = [CAPTURE, MEAN, NORMALIZE, TILES, MERGE, LAYERS, CARDS]


@dataclass(frozen=True)
class TileRecordWithProbe(TileRecord):
    """The tiles' record with one more input field (what a developer adds when a tile comes to depend on a
    setting)."""

    contexts_probe: int | None = input_field(lambda i: i.settings.contexts_per_card, default=None)


def _copy(run, tmp_path: Path) -> RunLayout:
    shutil.copytree(run.data_dir, tmp_path / "data")
    return RunLayout(tmp_path / "data", run.settings.profile)


def test_a_finished_run_is_current(tiny_runs) -> None:
    run = tiny_runs()
    planned = plan(run.settings, run.layout, PIPELINE, database_url=run.db_url)
    stale = {name: planned.reason(name) for name in planned.order if not planned.is_current(name)}
    assert stale == {"layers": f"{run.layout.layers_file('layers.json')} is missing"}


def test_a_field_added_to_a_record_makes_staleness_follow(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs()
    layout = _copy(run, tmp_path)
    probe = dataclasses.replace(TILES, record=TileRecordWithProbe)
    stages = [probe if s is TILES else s for s in PIPELINE]
    planned = plan(run.settings, layout, stages, database_url=run.db_url)
    assert planned.stale["edge_tiles"] == run.settings.pair_keys
    assert "records contexts_probe='<absent>', now 3" in planned.why["edge_tiles"][run.settings.pair_keys[0]]
    assert planned.stale["components"] == [None] and planned.stale["component_cards"] == [None]  # downstream
    assert planned.is_current("normalized")
    # the stage writes its record's input fields (expected_inputs): once written, the tiles are current again
    for pair in run.settings.pair_keys:
        meta = load_json(layout.tile_meta(pair))
        upstream = {"normalized": {s: load_json(layout.normalized_meta(s))["sha256"] for s in run.settings.shard_keys}}
        save_json(layout.tile_meta(pair), {**meta, **expected_inputs(
            TileRecordWithProbe, Inputs(run.settings, layout, pair, upstream))})
    planned = plan(run.settings, layout, stages, database_url=run.db_url)
    assert planned.first_stage(among=["edge_tiles", "components", "component_cards"]) is None
    # and a change of the setting the new field reads makes exactly those tiles stale
    other = run.settings.replace(contexts_per_card=4)
    planned = plan(other, layout, stages, database_url=run.db_url)
    assert planned.stale["edge_tiles"] == run.settings.pair_keys and planned.is_current("normalized")
    assert plan(other, layout, PIPELINE, database_url=run.db_url).is_current("edge_tiles")  # without the field


def test_damaged_output_and_changed_settings_name_why(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs()
    layout = _copy(run, tmp_path)
    shard = run.settings.shard_keys[1]
    with open(layout.normalized(shard), "r+b") as fh:  # flip one byte of the unit rows
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 1]))
    planned = plan(run.settings, layout, PIPELINE, database_url=run.db_url)
    assert planned.stale["normalized"] == [shard]
    assert any(str(layout.normalized(shard)) in p and f"normalized[{shard}] is recomputed" in p
               for p in planned.problems), planned.problems
    # the tiles with that shard and everything after them, not the other shard's own tile
    assert sorted(planned.stale["edge_tiles"]) == [p for p in run.settings.pair_keys if shard in p]
    # a changed threshold leaves the shards current and reruns the tiles (their exact thresholds moved)
    planned = plan(run.settings.replace(threshold=0.65), run.layout, PIPELINE, database_url=run.db_url)
    assert planned.first_stage() == ("edge_tiles", run.settings.pair_keys)
    assert "exact_at" in planned.reason("edge_tiles")
    # another database: only the cards (their SQL rows go there)
    planned = plan(run.settings, run.layout, PIPELINE, database_url="sqlite:////elsewhere.sqlite")
    assert planned.first_stage(among=[s.name for s in PIPELINE if s is not LAYERS]) == ("component_cards", [None])


def test_a_run_written_before_the_records_loads_and_recomputes_only_what_they_lack(tiny_runs, tmp_path: Path) -> None:
    """A data directory written before the cards had a record (cards.json without its input fields) and before
    the lookup moved to lookup/: every stage with its fields is current, the cards are recomputed once, and the
    reason names what the old record lacks."""
    run = tiny_runs()
    layout = _copy(run, tmp_path)
    old = {k: v for k, v in load_json(layout.cards).items()
           if k not in ("labels_sha256", "card_settings", "mean_sha256", "layers_sha256", "database",
                        "report_sha256", "explorer_sha256")}
    save_json(layout.cards, old)
    planned = plan(run.settings, layout, PIPELINE, database_url=run.db_url)
    assert planned.first_stage(among=[s.name for s in PIPELINE if s is not LAYERS]) == ("component_cards", [None])
    assert "records labels_sha256='<absent>'" in planned.reason("component_cards")
    assert not planned.problems  # nothing damaged: an older record, not a broken file


def test_a_changed_code_version_makes_the_stage_stale(tiny_runs, tmp_path: Path) -> None:
    run = tiny_runs()
    layout = _copy(run, tmp_path)
    assert load_json(layout.summary)["code_version"] == MERGE.version  # written with the inputs
    bumped = dataclasses.replace(MERGE, version=MERGE.version + "-next")
    stages = [bumped if s is MERGE else s for s in PIPELINE]
    planned = plan(run.settings, layout, stages, database_url=run.db_url)
    assert planned.stale["components"] == [None]
    assert f"records code_version={MERGE.version!r}, now {bumped.version!r}" in planned.why["components"][None]
    # a sidecar written before records held code_version counts as written by unrecorded_version
    meta = load_json(layout.summary)
    del meta["code_version"]
    save_json(layout.summary, meta)
    same = dataclasses.replace(MERGE, unrecorded_version=None)  # none stated: the current version
    assert plan(run.settings, layout, [same if s is MERGE else s for s in PIPELINE],
                database_url=run.db_url).is_current("components")
    old = dataclasses.replace(MERGE, unrecorded_version="kruskal-0")
    planned = plan(run.settings, layout, [old if s is MERGE else s for s in PIPELINE], database_url=run.db_url)
    assert "records code_version='kruskal-0'" in planned.why["components"][None]
