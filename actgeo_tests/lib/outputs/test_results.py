"""``lib.results.open_run`` on a finished run built by the project's runner (tiny Gemma 2, 2 shards, 600 rows):
every answer compared with an independent reference read straight from the run's files, the float64 brute
force, or the SQL table read back through SQLAlchemy; the README's example executed on it."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from actgeo_assets.lib.outputs.results import RunNotFinished, open_run
from actgeo_assets.lib.outputs.sql import read_components, read_subcomponents
from actgeo_assets.lib.store.layout import IntegrityError
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.paths import README
from actgeo_tests.support.tiny_run import FinishedRun, drop_rows


@pytest.fixture(scope="session")
def built(tiny_runs: Callable[..., FinishedRun]) -> FinishedRun:
    return tiny_runs()


def _shards(root: Path) -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in (root / "raw").glob("shard-*.json"))


def _unit_rows(root: Path) -> np.ndarray:
    return np.concatenate([np.load(root / "normalized" / f"{s}.npy") for s in _shards(root)])


def test_open_by_folder_or_data_dir_and_run_name(built: FinishedRun) -> None:
    run = open_run(built.root)
    again = open_run(built.data_dir, built.root.name)
    settings = built.settings
    assert run.root == again.root == built.root
    assert run.run_id == again.run_id == settings.run_id()
    assert run.settings.run_key() == settings.run_key() and run.settings.run_id() == settings.run_id()
    assert run.settings.subcard_threshold == settings.subcard_threshold
    assert set(settings.sweep) <= set(run.settings.sweep)
    assert run.summary == json.loads((built.root / "components" / "summary.json").read_text())
    assert run.shards == _shards(built.root) == settings.shard_keys
    labels = np.load(built.root / "components" / "labels.npy")
    s = run.summary["summary"]
    assert run.n == len(labels) == 600 and s["n_components"] == labels.max() + 1
    assert s["largest"] == np.bincount(labels)[0]
    assert run.summary_text().splitlines()[1].split()[-1] == f"{len(labels):,}"


def test_labels_at_equal_float64_brute_force(built: FinishedRun) -> None:
    run = open_run(built.root)
    x = _unit_rows(built.root)
    np.testing.assert_array_equal(run.labels, np.load(built.root / "components" / "labels.npy"))
    np.testing.assert_array_equal(run.labels_at(0.6), run.labels)
    for t in (0.5, 0.8, 0.4):  # exact thresholds of the forest, the lowest one included
        np.testing.assert_array_equal(run.labels_at(t), brute_force_labels(x, t), err_msg=f"t={t}")
    # between exact thresholds the cut is within error_bound (3.8e-6 at d=64) of the float64 rule
    ref = brute_force_labels(x, 0.63)
    assert 1 < ref.max() + 1 < len(ref), "0.63 should give a non-trivial partition"
    np.testing.assert_array_equal(run.labels_at(0.63), ref)


def test_labels_at_refuses_thresholds_outside_the_forest(built: FinishedRun) -> None:
    run = open_run(built.root)
    with pytest.raises(ValueError, match=r"threshold 0\.39 is outside .*\[0\.4, 1\.0\].*forest\.npz.*min_threshold"):
        run.labels_at(0.39)
    with pytest.raises(ValueError, match=r"threshold 1\.2 is outside .*\[0\.4, 1\.0\]"):
        run.labels_at(1.2)
    with pytest.raises(ValueError, match="not a number"):
        run.labels_at(float("nan"))


def test_components_equal_the_sql_table(built: FinishedRun) -> None:
    run = open_run(built.root)
    df = run.components
    engine = sa.create_engine(built.db_url)
    try:
        with engine.connect() as conn:
            table = sa.Table("actgeo_components", sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table).where(table.c.run_id == run.run_id).order_by(table.c.rank)).mappings().all()
            sub = sa.Table("actgeo_subcomponents", sa.MetaData(), autoload_with=conn)
            n_sub = len(conn.execute(sa.select(sub.c.rank).where(sub.c.run_id == run.run_id)).all())
    finally:
        engine.dispose()
    assert list(df.columns) == [c.name for c in table.columns]
    assert len(rows) == len(df) >= 2 and df["rank"].tolist() == [r["rank"] for r in rows]
    json_cols = {"source_mix", "top_tokens", "contexts", "readout", "next_tokens", "model_next"}
    for (_, got), want in zip(df.iterrows(), rows, strict=True):
        for col in df.columns:
            expect = want[col] if col not in json_cols or want[col] is None else json.loads(want[col])
            value = got[col]
            if isinstance(expect, float):
                assert value == pytest.approx(expect, rel=1e-12), (got["rank"], col)
            else:
                assert value == expect, (got["rank"], col)
    assert len(run.subcomponents) == n_sub >= 1
    assert list(run.subcomponents.columns) == [c.name for c in sub.columns]
    # and frame for frame, as the project's SQL reader decodes the table
    pd.testing.assert_frame_equal(df, read_components(built.db_url, run.run_id))
    pd.testing.assert_frame_equal(run.subcomponents, read_subcomponents(built.db_url, run.run_id))


def test_card_has_its_token_contexts(built: FinishedRun) -> None:
    run = open_run(built.root)
    cards = json.loads((built.root / "cards" / "cards.json").read_text())["cards"]
    docs = pd.concat([pd.read_parquet(built.root / "raw" / f"{s}.docs.parquet") for s in run.shards])
    text = dict(zip(docs["doc_id"], docs["text"], strict=True))
    for want in cards:
        card = run.card(want["rank"])
        assert card.size == want["size"] == int((run.labels == card.label_id).sum())
        assert 1 <= len(card.contexts) <= 3
        for ctx in card.contexts:
            assert run.labels[ctx.row] == card.label_id
            assert text[ctx.doc_id][ctx.char_start:ctx.char_end] == ctx.token == run.tokens.loc[ctx.row, "token"]
    with pytest.raises(ValueError, match=r"no card of rank 99 .*carded ranks: 2, 3"):
        run.card(99)


def test_tokens_and_activations_align_with_the_shard_files(built: FinishedRun) -> None:
    run = open_run(built.root)
    tokens = run.tokens
    assert tokens.index.tolist() == list(range(run.n)) == tokens["row"].tolist()
    for col in ("token", "doc_id", "source", "pile_analogue", "position", "shard"):
        assert col in tokens.columns
    start = 0
    for s in run.shards:
        raw = np.load(built.root / "raw" / f"{s}.npy")
        kept = np.load(built.root / "normalized" / f"{s}.kept.npy")
        table = pd.read_parquet(built.root / "raw" / f"{s}.tokens.parquet")[kept].reset_index(drop=True)
        docs = pd.read_parquet(built.root / "raw" / f"{s}.docs.parquet").set_index("doc_id")
        mine = run.tokens[run.tokens["shard"] == s].reset_index(drop=True)
        assert len(mine) == len(table) == run.sizes[s] and mine["row"].iloc[0] == start == run.offsets[s]
        for col in ("doc_id", "position", "token_id", "token", "char_start", "char_end", "source"):
            assert mine[col].tolist() == table[col].tolist(), (s, col)
        assert mine["shard_row"].tolist() == np.flatnonzero(kept).tolist()
        assert mine["pile_analogue"].tolist() == docs.loc[table["doc_id"], "pile_analogue"].tolist()
        unit = run.activations(s)
        assert unit.dtype == np.float32 and isinstance(unit, np.memmap)
        assert np.array_equal(unit, np.load(built.root / "normalized" / f"{s}.npy"))
        assert np.array_equal(run.activations(s, normalized=False), raw[kept])
        start += len(table)
    assert start == run.n
    with pytest.raises(ValueError, match=r"no shard 'shard-9' .*shard-000, shard-001"):
        run.activations("shard-9")


def test_not_a_finished_run_names_the_missing_file(built: FinishedRun, tmp_path: Path) -> None:
    with pytest.raises(RunNotFinished, match="no run folder"):
        open_run(tmp_path / "nowhere")
    with pytest.raises(RunNotFinished, match=rf"is a data directory.*open_run\(.*'{built.root.name}'\)"):
        open_run(built.data_dir)
    copy = tmp_path / "data" / built.root.name
    shutil.copytree(built.root, copy)
    (copy / "components" / "forest.npz").unlink()
    with pytest.raises(RunNotFinished, match=r"not a finished actgeo run: .*components/forest\.npz is missing"):
        open_run(copy)
    (copy / "components" / "summary.json").unlink()
    with pytest.raises(RunNotFinished, match=r"components/summary\.json is missing .*actgeo run"):
        open_run(copy)
    shutil.rmtree(copy)
    shutil.copytree(built.root, copy)
    (copy / "normalized" / "shard-001.npy").unlink()
    with pytest.raises(RunNotFinished, match=r"normalized/shard-001\.npy is missing"):
        open_run(copy)
    shutil.rmtree(copy)
    shutil.copytree(built.root, copy)
    labels = copy / "components" / "labels.npy"
    data = bytearray(labels.read_bytes())
    data[-1] ^= 0xFF
    labels.write_bytes(bytes(data))
    run = open_run(copy)
    with pytest.raises(IntegrityError, match=r"labels\.npy is corrupted"):
        _ = run.labels
    cards = copy / "cards" / "cards.json"
    cards.write_text(json.dumps({**json.loads(cards.read_text()), "run_id": "0123456789ab"}))
    with pytest.raises(RunNotFinished, match=r"cards\.json is of run 0123456789ab"):
        open_run(copy)


def test_readme_example_runs_on_a_finished_run(built: FinishedRun) -> None:
    """The README's example (at most ten lines), with ``data/demo`` pointing at this run's folder."""
    text = README.read_text()
    section = text[text.index("## Use a run from Python"):]
    section = section[: section.index("\n## ", 5)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) <= 10
    scope: dict[str, object] = {}
    code = blocks[0].replace('"data/demo"', repr(str(built.root)))
    code = code.replace('open_run("data", "demo")', f"open_run({str(built.data_dir)!r}, {built.root.name!r})")
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    run = scope["run"]
    np.testing.assert_array_equal(scope["labels"], brute_force_labels(_unit_rows(built.root), 0.8))
    assert np.array_equal(scope["x"], np.load(built.root / "normalized" / f"{run.shards[0]}.npy"))


def test_rows_dropped_by_normalization_stay_aligned(built: FinishedRun, tmp_path: Path) -> None:
    copy = tmp_path / "data" / "demo"
    drop_rows(built.root, copy, "shard-000", [3, 10])
    run = open_run(copy)
    assert run.n == 598 and run.sizes["shard-000"] == 298 and run.offsets["shard-001"] == 298
    raw = np.load(copy / "raw" / "shard-000.npy")
    table = pd.read_parquet(copy / "raw" / "shard-000.tokens.parquet")
    keep = np.setdiff1d(np.arange(len(raw)), [3, 10])
    tok = run.tokens
    assert tok.index.tolist() == list(range(598)) and tok.loc[:297, "shard_row"].tolist() == keep.tolist()
    assert tok.loc[:297, "token"].tolist() == table["token"].to_numpy()[keep].tolist()
    assert np.array_equal(run.activations("shard-000", normalized=False), raw[keep])
    assert len(run.activations("shard-000")) == 298
    assert tok.loc[298:, "shard_row"].tolist() == list(range(300))
    with pytest.raises(RunNotFinished, match=r"forest\.npz spans 600 rows, the run has 598"):
        run.labels_at(0.6)
