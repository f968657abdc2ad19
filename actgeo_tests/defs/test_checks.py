"""Asset checks on `normalized`: a near-complete geometry (one massive dimension, plain L2) is flagged with a
WARN, and the unit-norm check passes on what was stored; centering clears the warning."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.definitions import pipeline_assets
from actgeo_assets.defs.partitions import SHARDS
from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.capture.documents import Document
from actgeo_assets.lib.capture.residual import CaptureResult
from actgeo_assets.lib.config.constants import TOKEN_COLUMNS
from actgeo_assets.lib.store.shards import write_raw_shard


def _massive_dim_shard(resource: ActgeoResource, n: int = 400, d: int = 64) -> None:
    """A raw shard like Gemma 3's layer 9: noise plus one dimension that dwarfs the rest."""
    settings, layout = resource.settings(), resource.layout()
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(n, d))
    acts[:, 3] += 40.0
    text = "word " * n
    tokens = pd.DataFrame({"row": np.arange(n), "doc_id": 0, "position": np.arange(1, n + 1),
                           "token_id": 7, "token": " word", "char_start": np.arange(n) * 5,
                           "char_end": np.arange(n) * 5 + 4, "source": "synthetic"})[list(TOKEN_COLUMNS)]
    write_raw_shard(layout, "shard-000", CaptureResult(acts=acts.astype(np.float16), tokens=tokens, stats={}),
                    [Document(0, text, "synthetic")], settings.capture_key())


def _check(instance: dg.DagsterInstance, name: str):
    key = dg.AssetCheckKey(dg.AssetKey("normalized"), name)
    return instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0].event.asset_check_evaluation


@pytest.mark.parametrize("normalization, near", [("l2", True), ("center_l2", False)])
def test_near_complete_geometry_warns(tmp_path: Path, normalization: str, near: bool) -> None:
    resource = ActgeoResource(data_dir=str(tmp_path), model="synthetic", corpus="synthetic", n_shards=1,
                              budget=400, normalization=normalization, threshold=0.7)
    _massive_dim_shard(resource)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(SHARDS, ["shard-000"])
    dg.materialize(pipeline_assets(), selection=["activation_mean"], instance=instance, resources={"actgeo": resource})
    result = dg.materialize(pipeline_assets(), selection=["normalized"], partition_key="shard-000", instance=instance,
                            resources={"actgeo": resource})
    assert result.success
    geometry = _check(instance, "graph_not_near_complete")
    assert geometry.passed is (not near)
    assert geometry.severity == dg.AssetCheckSeverity.WARN
    median = geometry.metadata["median_pairwise_cosine"].value
    assert (median >= 0.7) is near
    if near:
        assert "near-complete" in geometry.description
    norms = _check(instance, "unit_norms")
    assert norms.passed and norms.metadata["max_norm_error"].value <= 1e-5
