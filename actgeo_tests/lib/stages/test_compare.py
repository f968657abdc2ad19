"""lib/stages/compare.py end to end on two finished tiny runs (the same capture at thresholds 0.6 and 0.8) and
on a copy of one of them: rows matching is chosen, a card matches itself exactly in a copy, the normalizations
read the right raw activations, every section is on the page, and broken experiments are left out with a
reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from actgeo_assets.lib.stages.compare import ComparisonResult, ExperimentRun, compare_experiments
from actgeo_assets.lib.store.layout import RunLayout, load_json, save_json
from actgeo_tests.support.tiny_run import FinishedRun

SECTIONS = ("summaries", "percolation", "n-scaling", "normalizations", "matches", "skipped")
COMMON_N = 150


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory) -> dict[str, FinishedRun | ExperimentRun]:
    """``base`` (threshold 0.6), ``high`` (threshold 0.8, the same capture) and ``copy``: base's run folder
    copied into another data directory, as an experiment of its own."""
    base, high = tiny_runs(), tiny_runs(threshold=0.8, subcard_threshold=0.9)
    data = tmp_path_factory.mktemp("experiments")
    shutil.copytree(base.root, data / "copy")
    return {"base": base, "high": high,
            "copy": ExperimentRun("copy", base.settings, RunLayout(data, "copy"))}


@pytest.fixture(scope="module")
def result(runs, tmp_path_factory) -> ComparisonResult:
    exps = [ExperimentRun("base", runs["base"].settings, runs["base"].layout),
            ExperimentRun("high", runs["high"].settings, runs["high"].layout), runs["copy"]]
    return compare_experiments(exps, tmp_path_factory.mktemp("cmp") / "comparison", common_n=COMMON_N,
                               log=lambda _: None)


def test_files_and_sections(result: ComparisonResult, runs) -> None:
    page = result.report.read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert result.skipped == {} and result.notes == {}
    doc = json.loads(result.json.read_text())
    assert doc["experiments"] == ["base", "high", "copy"]
    inputs = doc["inputs"]["experiments"]
    assert inputs["copy"] == inputs["base"] and inputs["base"]["labels_sha256"] != inputs["high"]["labels_sha256"]
    assert inputs["base"]["labels_sha256"] == runs["base"].record["labels_sha256"]
    assert sorted(result.figures) == ["n_scaling", "normalizations", "percolation"]
    for key, path in result.figures.items():
        assert path.read_bytes().startswith(b"\x89PNG") and doc["figures"][key] == path.name
        assert path.parent == result.out_dir
    assert len(doc["pairs"]) == 6 and len(result.matches) == sum(len(p["rows"]) for p in doc["pairs"])


def test_summaries_are_the_records(result: ComparisonResult, runs) -> None:
    rows = {r["experiment"]: r for r in result.summary_rows}
    for name in ("base", "high"):
        rec = runs[name].record
        assert rows[name]["n"] == rec["n"] and rows[name]["n_components"] == rec["summary"]["n_components"]
        assert rows[name]["giant_fraction"] == rec["summary"]["largest_fraction"]
        assert rows[name]["threshold"] == runs[name].settings.threshold
        q = {x["key"]: x for x in rec["uncertainty"]["quantities"]}
        assert rows[name]["giant_fraction_low"] == q["largest_fraction"]["low"]
        assert rows[name]["t_c"] == rec["transition"]["t_c"]


def test_copy_matches_itself(result: ComparisonResult, runs) -> None:
    """Every card of base has the same component of its copy as its best match: overlap 1, Jaccard 1, by rows."""
    pair = next(p for p in result.pairs if (p["a"], p["b"]) == ("base", "copy"))
    assert pair["method"] == "rows"
    cards = json.loads(runs["base"].layout.cards.read_text())["cards"]
    assert [r["card_rank"] for r in pair["rows"]] == [c["rank"] for c in cards]
    for r in pair["rows"]:
        assert r["b_rank"] == r["card_rank"] and r["overlap"] == 1.0 and r["jaccard"] == 1.0
        assert r["not_covered"] == 0 and r["specific_b_rank"] == r["card_rank"]
        for href, layout in ((r["a_href"], runs["base"].layout), (r["b_href"], runs["copy"].layout)):
            path, _, anchor = href.partition("#")
            assert not Path(path).is_absolute() and anchor == f"card-{r['card_rank']}"
            assert (result.out_dir / path).resolve() == layout.explorer.resolve()


def test_threshold_pair_by_rows_against_labels(result: ComparisonResult, runs) -> None:
    """base (0.6) -> high (0.8): the same activations, matched by rows; single linkage nests, so each card's best
    component at 0.8 lies inside it: the count of shared members equals the largest intersection of labels."""
    pair = next(p for p in result.pairs if (p["a"], p["b"]) == ("base", "high"))
    assert pair["method"] == "rows" and "same tokenization" in pair["reason"]
    la, lb = np.load(runs["base"].layout.labels), np.load(runs["high"].layout.labels)
    for r in pair["rows"]:
        inside = lb[la == r["card_rank"] - 1]
        counts = np.bincount(inside)
        assert r["shared"] == counts.max() and r["b_rank"] - 1 == int(np.argmax(counts))
        assert r["jaccard"] == pytest.approx(counts.max() / (len(inside) + (lb == r["b_rank"] - 1).sum() - counts.max()))
    page = result.report.read_text()
    assert 'id="matches-base-high"' in page and 'data-method="rows"' in page


def test_normalizations_read_the_first_activations(result: ComparisonResult, runs) -> None:
    """One group (one model and layer) at both thresholds; plain L2's numbers equal a dense float64 Gram of the
    first kept raw activations, L2-normalized by hand."""
    assert len(result.normalizations) == 1
    group = result.normalizations[0]
    assert group["experiments"] == ["base", "high", "copy"] and group["thresholds"] == [0.6, 0.8]
    s, layout = runs["base"].settings, runs["base"].layout
    raw = np.concatenate([np.load(layout.raw(k))[np.load(layout.kept(k))] for k in s.shard_keys])[:COMMON_N]
    x = raw.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gram = x @ x.T
    for t in (0.6, 0.8):
        rec = next(r for r in group["rows"] if r["normalization"] == "l2" and r["threshold"] == t)
        adj = gram >= t
        np.fill_diagonal(adj, False)
        k, lab = connected_components(csr_matrix(adj), directed=False)
        assert rec["n"] == COMMON_N and rec["n_components"] == k
        assert rec["giant_fraction"] == pytest.approx(np.bincount(lab).max() / COMMON_N)
    assert {r["normalization"] for r in group["rows"]} == {"l2", "center_l2", "rmsnorm"}


def test_broken_experiments_are_left_out(runs, tmp_path) -> None:
    """No summary: left out with the reason; stale cards: summarized but not matched; one usable experiment: the
    page still renders and says so."""
    data = tmp_path / "data"
    shutil.copytree(runs["base"].root, data / "nosummary")
    (data / "nosummary" / "components" / "summary.json").unlink()
    shutil.copytree(runs["base"].root, data / "stale")
    cards = load_json(data / "stale" / "cards" / "cards.json")
    save_json(data / "stale" / "cards" / "cards.json", {**cards, "labels_sha256": "0" * 64})
    s = runs["base"].settings
    got = compare_experiments([ExperimentRun("nosummary", s, RunLayout(data, "nosummary")),
                               ExperimentRun("stale", s, RunLayout(data, "stale"))], data / "comparison",
                              common_n=50, log=lambda _: None)
    assert set(got.skipped) == {"nosummary"} and "summary.json" in got.skipped["nosummary"]
    assert "stale" in got.notes and "stale" in got.notes["stale"][0] and got.pairs == []
    page = got.report.read_text()
    assert 'id="too-few"' in page and "nosummary" in page
    assert all(f'<section id="{sid}">' in page for sid in SECTIONS)
    with pytest.raises(ValueError, match="distinct"):
        compare_experiments([runs["copy"], runs["copy"]], Path(tmp_path / "x"))
