"""The cards stage's members table (cards/members.parquet): every activation with its component, document,
source, position and token, checked against labels.npy and the shards' token tables read independently."""

from __future__ import annotations

import numpy as np
import pandas as pd

from actgeo_assets.lib.stages.cards import MEMBER_COLUMNS
from actgeo_assets.lib.store.layout import load_json, sha256_file
from actgeo_tests.support.tiny_run import run_rows


def test_members_table_is_every_activation_with_its_component(tiny_runs) -> None:
    run = tiny_runs()
    members = pd.read_parquet(run.layout.members)
    _, labels, tokens = run_rows(run.settings, run.layout)
    assert tuple(members.columns) == MEMBER_COLUMNS
    assert len(members) == len(labels) == run.record["n"]
    np.testing.assert_array_equal(members["row"], np.arange(len(labels)))
    np.testing.assert_array_equal(members["component"], labels)
    for column in ("doc_id", "source", "position", "token_id", "token"):
        assert members[column].tolist() == tokens[column].tolist(), column
    shards = np.repeat(run.settings.shard_keys, [int(np.load(run.layout.kept(s)).sum()) for s in run.settings.shard_keys])
    assert members["shard"].tolist() == shards.tolist()
    # the sizes it gives are the summary's
    sizes = members["component"].value_counts().sort_values(ascending=False).tolist()
    assert sizes[:len(run.record["summary"]["top_sizes"])] == run.record["summary"]["top_sizes"]
    assert load_json(run.layout.cards)["members_sha256"] == sha256_file(run.layout.members)
    # early: position below the limit; input_key: equal exactly when the token ids from the window's start agree
    limit = run.settings.early_position_limit
    assert members["early"].tolist() == (tokens["position"] < limit).tolist()
    raw = pd.concat([pd.read_parquet(run.layout.tokens(s)) for s in run.settings.shard_keys], ignore_index=True)
    prefix = {}
    for doc, group in raw.sort_values(["doc_id", "position"]).groupby("doc_id", sort=False):
        ids = group["token_id"].tolist()
        for k, pos in enumerate(group["position"].tolist()):
            prefix[(doc, pos)] = tuple(ids[: k + 1])
    inputs = [prefix[(d, p)] for d, p in zip(tokens["doc_id"], tokens["position"], strict=True)]
    same_key = pd.Series(members["input_key"]).duplicated(keep=False).to_numpy()
    same_input = pd.Series(inputs).duplicated(keep=False).to_numpy()
    np.testing.assert_array_equal(same_key, same_input)
    assert members.groupby("input_key").ngroups == len(set(inputs))
