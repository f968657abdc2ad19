"""The `full` profile's code path (layer 12, ten shards, l2, threshold 0.7, <bos> excluded) on a tiny random
Gemma2 with 14 layers and a local corpus instead of Gemma 2 2B and pile-10k."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from actgeo_assets.defs.resources import ActgeoResource
from actgeo_assets.lib.config.profiles import PROFILES
from actgeo_assets.runner import materialize_run
from actgeo_tests.support.oracle import brute_force_labels
from actgeo_tests.support.paths import MINI_CORPUS
from actgeo_tests.support.tiny_model import tiny_gemma2


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("full")
    # the full profile's own settings (not the tiny run's): what this test checks is that they carry over
    resource = ActgeoResource(profile="full", data_dir=str(tmp / "data"), model=tiny_gemma2(tmp, n_layers=14),
                              corpus=str(MINI_CORPUS), budget=2_000, batch_size=8, contexts_per_card=2)
    record = materialize_run(resource, dg.DagsterInstance.ephemeral(), echo=lambda s: None)
    return resource, record


def test_full_profile_settings_carry_over(full_run) -> None:
    resource, record = full_run
    s, full = resource.settings(), PROFILES["full"]
    assert (s.layer, s.n_shards, s.normalization, s.threshold, s.exclude_bos, s.context_len) == (
        full.layer, full.n_shards, full.normalization, full.threshold, full.exclude_bos, full.context_len)
    assert record["run_key"]["layer"] == 12 and record["run_key"]["normalization"] == "l2"
    assert record["n"] == 2_000


def test_full_profile_shards_budget_and_bos(full_run) -> None:
    from actgeo_assets.lib.store.shards import read_raw_shard

    resource, _ = full_run
    settings, layout = resource.settings(), resource.layout()
    shards = [read_raw_shard(layout, k, expect=settings.capture_key()) for k in settings.shard_keys]
    assert len(shards) == 10
    assert [len(r.tokens) for r in shards] == [200] * 10  # 2,000 dealt over ten shards
    tokens = pd.concat([r.tokens for r in shards])
    assert (tokens["token"] != "<bos>").all() and (tokens["position"] > 0).all()
    assert sum(r.meta["stats"]["n_bos_excluded"] for r in shards) > 0
    assert all(r.meta["layer"] == 12 for r in shards)


def test_full_profile_components_exact(full_run) -> None:
    resource, record = full_run
    settings, layout = resource.settings(), resource.layout()
    x = np.concatenate([np.load(layout.normalized(k)) for k in settings.shard_keys])
    np.testing.assert_allclose(np.linalg.norm(x.astype(np.float64), axis=1), 1.0, atol=1e-5)
    labels = np.load(layout.components_dir / "labels.npy")
    np.testing.assert_array_equal(labels, brute_force_labels(x, 0.7))
    assert len(settings.pair_keys) == 55
