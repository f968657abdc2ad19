"""``lib.export.export_dataset`` and ``actgeo export``: the Parquet files of a finished run (tiny Gemma 2, 2
shards, 600 rows) loaded with the ``datasets`` library hold exactly the shard files' activations, tokens and
provenance; the README's three lines run on them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from actgeo_assets.cli import main
from actgeo_assets.lib.outputs.export import export_dataset
from actgeo_tests.support.paths import README
from actgeo_tests.support.tiny_run import FinishedRun, drop_rows


@pytest.fixture(scope="session")
def built(tiny_runs: Callable[..., FinishedRun]) -> FinishedRun:
    return tiny_runs()


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The datasets library's cache in this test's folder, offline."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return tmp_path / "hf-cache"


def _reference(root: Path) -> dict[str, object]:
    """What the export must hold, read straight from the run's shard files (kept rows, shard order)."""
    shards = sorted(p.name.removesuffix(".json") for p in (root / "raw").glob("shard-*.json"))
    unit, raw, tables = [], [], []
    for s in shards:
        kept = np.load(root / "normalized" / f"{s}.kept.npy")
        unit.append(np.load(root / "normalized" / f"{s}.npy"))
        raw.append(np.load(root / "raw" / f"{s}.npy")[kept])
        tok = pd.read_parquet(root / "raw" / f"{s}.tokens.parquet")[kept]
        docs = pd.read_parquet(root / "raw" / f"{s}.docs.parquet")
        tables.append(tok.merge(docs[["doc_id", "pile_analogue"]], on="doc_id", how="left").assign(shard=s))
    return {"shards": shards, "unit": np.concatenate(unit), "raw": np.concatenate(raw),
            "tokens": pd.concat(tables, ignore_index=True), "labels": np.load(root / "components" / "labels.npy")}


def test_load_dataset_gives_the_shard_files(built: FinishedRun, tmp_path: Path, hf_cache: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "dataset"
    files = export_dataset(built.root, out)
    ref = _reference(built.root)
    assert [f.name for f in files] == [f"{s}.parquet" for s in ref["shards"]]
    ds = load_dataset("parquet", data_files=str(out / "*.parquet"), split="train").with_format("numpy")
    unit, raw = ds["activation_normalized"][:], ds["activation_raw"][:]
    assert unit.dtype == raw.dtype == np.float32 and unit.shape == (600, 64)
    assert np.array_equal(unit, ref["unit"]) and np.array_equal(raw, ref["raw"])
    tokens = ref["tokens"]
    for col in ("token", "token_id", "position", "doc_id", "source", "char_start", "char_end", "shard"):
        assert ds[col][:].tolist() == tokens[col].tolist(), col
    assert ds["pile_analogue"][:].tolist() == tokens["pile_analogue"].tolist()
    assert ds["row"][:].tolist() == list(range(600))
    assert np.array_equal(ds["component"][:], ref["labels"])
    meta = json.loads(pq.read_schema(files[1]).metadata[b"actgeo"])
    assert meta["shard"] == ref["shards"][1] and meta["run_id"] == built.settings.run_id()
    # load_dataset on the folder (no other files in it) gives the same rows
    whole = load_dataset("parquet", data_dir=str(out), split="train")
    assert whole.num_rows == 600


def test_batches_stream_and_give_the_same_files(built: FinishedRun, tmp_path: Path) -> None:
    one = export_dataset(built.root, tmp_path / "one")
    small = export_dataset(built.root, tmp_path / "small", activations=["raw"], batch_rows=7)
    for a, b in zip(one, small, strict=True):
        meta = pq.ParquetFile(b).metadata
        rows = meta.num_rows
        assert meta.num_row_groups == -(-rows // 7) and max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) == 7
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert "activation_normalized" not in tb.column_names
        assert tb.equals(ta.drop_columns(["activation_normalized"]).replace_schema_metadata(tb.schema.metadata))


def test_out_folder_rules(built: FinishedRun, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    files = export_dataset(built.root, out)
    earlier = out / "shard-old.parquet"  # a file of an earlier export of other shards: removed
    earlier.write_bytes(files[0].read_bytes())
    export_dataset(built.root, out, activations=["normalized"])
    assert sorted(p.name for p in out.iterdir()) == [f.name for f in files]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files no actgeo export wrote \(notes\.txt\)"):
        export_dataset(built.root, out)
    with pytest.raises(ValueError, match="activations must be one or more of normalized, raw"):
        export_dataset(built.root, tmp_path / "x", activations=["unit"])


def _set_args(built: FinishedRun, **changes: object) -> list[str]:
    values = {**built.overrides, **changes}
    return [*(a for k, v in values.items()
              for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")),
            "--experiment", "demo"]  # the profile's own run (where the fixture built it), not an experiment


def test_cli_exports_the_run_of_the_current_settings(built: FinishedRun, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["export", "--data-dir", str(built.data_dir), "--out", str(out), "--activations", "raw"]
    assert main([*argv, *_set_args(built)]) == 0
    printed = capsys.readouterr().out
    assert built.settings.run_id() in printed and "600 rows in 2 files" in printed
    table = pd.concat([pd.read_parquet(f) for f in sorted(out.glob("*.parquet"))], ignore_index=True)
    assert np.array_equal(np.stack(table["activation_raw"].to_numpy()), _reference(built.root)["raw"])
    assert main([*argv, *_set_args(built, threshold=0.7)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"holds run \w{12} .*not the run of the current settings .*threshold=0\.7", err), err


def test_readme_datasets_lines(built: FinishedRun, tmp_path: Path, hf_cache: Path) -> None:
    """The README's three lines on an export of this run (``data/demo/dataset`` pointing at it)."""
    text = README.read_text()
    section = text[text.index("## Use a run from Python"):]
    block = re.findall(r"```python\n(.*?)```", section[: section.index("\n## ", 5)], re.S)[1]
    assert len(block.strip().splitlines()) == 3
    export_dataset(built.root, tmp_path / "dataset")
    scope: dict[str, object] = {}
    exec(compile(block.replace("data/demo/dataset", str(tmp_path / "dataset")), "README.md", "exec"), scope)  # noqa: S102
    ref = _reference(built.root)
    assert np.array_equal(scope["x"], ref["unit"]) and scope["tokens"].tolist() == ref["tokens"]["token"].tolist()


def test_rows_dropped_by_normalization(built: FinishedRun, tmp_path: Path, hf_cache: Path) -> None:
    from datasets import load_dataset

    copy = tmp_path / "data" / "demo"
    drop_rows(built.root, copy, "shard-001", [0, 7, 299])
    export_dataset(copy, tmp_path / "dataset", batch_rows=50)
    ref = _reference(copy)
    ds = load_dataset("parquet", data_files=str(tmp_path / "dataset" / "*.parquet"), split="train").with_format("numpy")
    assert ds.num_rows == 597 and len(ref["raw"]) == 597
    assert np.array_equal(ds["activation_raw"][:], ref["raw"]) and np.array_equal(ds["activation_normalized"][:], ref["unit"])
    assert ds["token"][:].tolist() == ref["tokens"]["token"].tolist()
    assert ds["shard_row"][:].tolist() == list(range(300)) + list(range(1, 7)) + list(range(8, 299))
    assert np.array_equal(ds["component"][:], ref["labels"])
