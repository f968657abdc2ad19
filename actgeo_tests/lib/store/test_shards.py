"""Raw shard storage: round trip, completeness, corruption and mismatch errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.residual import CaptureResult
from actgeo_assets.lib.config.constants import TOKEN_COLUMNS
from actgeo_assets.lib.store.layout import RunLayout
from actgeo_assets.lib.store.shards import (
    ShardError,
    read_next_norm,
    read_raw_shard,
    write_next_norm,
    write_raw_shard,
)

CAPTURE = {"model": "tiny", "layer": 1, "corpus": "c", "context_len": 8, "budget": 5}


def _result(n: int = 5, d: int = 4) -> tuple[CaptureResult, list[Document]]:
    rng = np.random.default_rng(0)
    docs = [Document(0, "hello world", "a"), Document(1, "foo bar", "b"), Document(2, "unused", "c")]
    tokens = pd.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": [0, 0, 0, 1, 1][:n],
            "position": [1, 2, 3, 1, 2][:n],
            "token_id": [5, 6, 7, 8, 9][:n],
            "token": ["he", "llo", " world", "foo", " bar"][:n],
            "char_start": [0, 2, 5, 0, 3][:n],
            "char_end": [2, 5, 11, 3, 7][:n],
            "source": ["a", "a", "a", "b", "b"][:n],
        }
    )
    stats = {"model": "tiny", "revision": "r1", "layer": 1, "n_kept": n}
    return CaptureResult(rng.normal(size=(n, d)).astype(np.float16), tokens, stats), docs


@pytest.fixture
def layout(tmp_path) -> RunLayout:
    return RunLayout(tmp_path, "demo")


def test_round_trip(layout) -> None:
    res, docs = _result()
    side = write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    assert layout.raw_meta("shard-000").exists()  # the sidecar, written last, marks a complete shard
    assert side["shape"] == [5, 4] and side["dtype"] == "float32" and side["normalization"] == "none"
    assert side["model"] == "tiny" and side["layer"] == 1 and side["revision"] == "r1"
    assert side["sources"] == {"a": 3, "b": 2} and side["n_docs"] == 2
    shard = read_raw_shard(layout, "shard-000", expect=CAPTURE, verify=True)
    assert isinstance(shard.acts, np.memmap)
    np.testing.assert_array_equal(shard.acts, res.acts)  # float16 in, float32 stored: exact
    assert shard.acts.dtype == np.float32
    assert list(shard.docs.columns) == ["doc_id", "source", "pile_analogue", "work", "text"]
    assert tuple(shard.tokens.columns) == TOKEN_COLUMNS
    pd.testing.assert_frame_equal(shard.tokens, res.tokens, check_dtype=False)
    assert shard.docs["doc_id"].tolist() == [0, 1] and shard.docs["text"].tolist() == [
        "hello world",
        "foo bar",
    ]
    assert not any(p.name.startswith(".") for p in layout.raw("shard-000").parent.iterdir())


def test_missing_sidecar_means_incomplete(layout) -> None:
    res, docs = _result()
    write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    layout.raw_meta("shard-000").unlink()
    with pytest.raises(ShardError, match=r"shard-000\.json"):
        read_raw_shard(layout, "shard-000")


def test_flipped_bytes_are_caught(layout) -> None:
    res, docs = _result()
    write_raw_shard(layout, "shard-001", res, docs, CAPTURE)
    path = layout.raw("shard-001")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # in the array body: only the sha256 can tell
    path.write_bytes(bytes(data))
    read_raw_shard(layout, "shard-001", verify=False)  # the cheap checks pass
    with pytest.raises(ShardError, match=r"shard-001\.npy.*sha256"):
        read_raw_shard(layout, "shard-001")  # the sha256 does not
    data[8:12] = b"\x00\xff\x00\xff"  # in the header
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-001\.npy"):
        read_raw_shard(layout, "shard-001")


def test_truncated_file_and_token_mismatch(layout) -> None:
    res, docs = _result()
    write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    path = layout.raw("shard-000")
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ShardError, match=r"shard-000\.npy"):
        read_raw_shard(layout, "shard-000", mmap=False)
    write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    res.tokens.iloc[:3].to_parquet(layout.tokens("shard-000"))
    with pytest.raises(ShardError, match=r"shard-000\.tokens\.parquet is corrupted or was changed"):
        read_raw_shard(layout, "shard-000")
    with pytest.raises(ShardError, match=r"tokens\.parquet has 3 rows, expected 5"):
        read_raw_shard(layout, "shard-000", verify=False)


def test_mismatched_expect_names_what_differs(layout) -> None:
    res, docs = _result()
    write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    with pytest.raises(
        ShardError, match=r"shard-000\.json.*model: stored 'tiny'.*layer: stored 1, expected 12"
    ):
        read_raw_shard(layout, "shard-000", expect={**CAPTURE, "layer": 12, "model": "google/gemma-2-2b"})


def test_next_norm_round_trip(layout) -> None:
    norm = {"weight": np.arange(4, dtype=np.float32), "eps": 1e-6, "kind": "gemma", "module": "layers.2"}
    write_next_norm(layout, norm)
    back = read_next_norm(layout)
    np.testing.assert_array_equal(back["weight"], norm["weight"])
    assert back["kind"] == "gemma" and back["eps"] == 1e-6 and back["bias"] is None


def test_mean_of_all_shards_opens_one_shard_at_a_time(tmp_path, monkeypatch) -> None:
    """`activation_mean` streams the shards: at most the shard being read and the one before it are open
    (their memory maps and token tables), whatever the number of shards; the mean is the float64 mean of
    every row and the sidecar names every shard's sha256."""
    import json
    import weakref

    from actgeo_assets.lib.config.profiles import PROFILES
    from actgeo_assets.lib.stages import activations as stage

    settings = PROFILES["demo"].replace(n_shards=6)
    layout = RunLayout(tmp_path, settings.profile)
    rng = np.random.default_rng(3)
    parts = []
    for shard in settings.shard_keys:
        res, docs = _result()
        res = CaptureResult(rng.normal(size=(5, 4)).astype(np.float32), res.tokens, res.stats)
        write_raw_shard(layout, shard, res, docs, settings.capture_key())
        parts.append(res.acts)
    alive, most = [0], [0]
    real = stage.read_raw

    def counted(*args, **kwargs):
        raw = real(*args, **kwargs)
        alive[0] += 1
        most[0] = max(most[0], alive[0])
        weakref.finalize(raw.acts, lambda: alive.__setitem__(0, alive[0] - 1))
        return raw

    monkeypatch.setattr(stage, "read_raw", counted)
    mean = stage.compute_mean(settings, layout)
    assert most[0] <= 2 < len(settings.shard_keys)
    np.testing.assert_allclose(np.load(mean.path), np.concatenate(parts).astype(np.float64).mean(axis=0),
                               rtol=0, atol=1e-12)
    side = json.loads(layout.mean_meta.read_text())
    assert sorted(side["raw_sha256"]) == list(settings.shard_keys)


def test_the_work_column_holds_what_documents_name(layout) -> None:
    res, docs = _result()
    docs = [Document(0, "hello world", "a", None, "Hamlet"), docs[1], Document(2, "unused", "c", None, "Comus")]
    write_raw_shard(layout, "shard-000", res, docs, CAPTURE)
    shard = read_raw_shard(layout, "shard-000", expect=CAPTURE, verify=True)
    assert list(shard.docs.columns) == ["doc_id", "source", "pile_analogue", "work", "text"]
    assert shard.docs["work"].iloc[0] == "Hamlet" and pd.isna(shard.docs["work"].iloc[1])  # "unused" is not stored
