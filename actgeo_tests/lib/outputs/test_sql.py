"""SQL table of component metadata: idempotent writes on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from actgeo_assets.lib.analysis.cards import Card
from actgeo_assets.lib.analysis.tokens import Context
from actgeo_assets.lib.config.keys import run_id_of
from actgeo_assets.lib.config.settings import RunSettings
from actgeo_assets.lib.outputs.sql import read_components, read_runs, read_subcomponents, write_results
from actgeo_tests.support.postgres import postgres_available, running_postgres

RUN_KEY = RunSettings().run_key()
SUMMARY = {"n_components": 5, "largest": 90, "largest_fraction": 0.9, "non_singleton": 2, "singletons": 2,
           "top_sizes": [90, 5, 3, 1, 1]}


def make_card(rank: int, size: int, label: str = "'x' in Github code (guess)") -> Card:
    ctx = Context(doc_id=7, source="Github", token="x", left="a <b>\u21b5", right="'\"; y", cosine_to_mean=0.9,
                  row=rank * 10, position=3, char_start=5, char_end=6)
    return Card(rank=rank, label_id=rank - 1, size=size, provisional_label=label, n_documents=2,
                source_mix={"Github": size}, top_tokens=[("x", size)], contexts=[ctx],
                readout=[("é", 1.5)] if rank == 2 else None, threshold=0.7)


def _roundtrip(url: str) -> None:
    cards = [make_card(2, 5), make_card(3, 3)]
    assert write_results(url, RUN_KEY, SUMMARY, cards, description="demo") == 2
    rid = RunSettings().run_id()
    assert run_id_of(RUN_KEY) == rid
    df = read_components(url, rid)
    assert df["rank"].tolist() == [2, 3] and df["size"].tolist() == [5, 3]
    assert df.loc[0, "contexts"][0]["left"] == "a <b>\u21b5" and df.loc[0, "readout"] == [["é", 1.5]]
    assert df.loc[1, "readout"] is None and df.loc[0, "source_mix"] == {"Github": 5}

    # rerun with changed values and one card fewer: replaced, never duplicated
    assert write_results(url, RUN_KEY, {**SUMMARY, "largest": 91}, [make_card(2, 6, "new (guess)")]) == 1
    df = read_components(url, rid)
    assert len(df) == 1 and df.loc[0, "size"] == 6 and df.loc[0, "provisional_label"] == "new (guess)"
    runs = read_runs(url)
    assert runs["run_id"].tolist() == [rid] and runs.loc[0, "largest"] == 91
    assert runs.loc[0, "run_key"] == RUN_KEY and runs.loc[0, "top_sizes"] == [90, 5, 3, 1, 1]

    # another run sits beside it
    other = {**RUN_KEY, "threshold": 0.8}
    write_results(url, other, SUMMARY, cards)
    assert len(read_runs(url)) == 2 and len(read_components(url, run_id_of(other))) == 2
    assert len(read_components(url, rid)) == 1
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM actgeo_components")).scalar_one()
    engine.dispose()
    assert n == 3

    # sub-component cards go to their own table, keyed by (threshold, rank), replaced on rerun
    import dataclasses

    def sub(rank: int, size: int) -> Card:
        return dataclasses.replace(make_card(rank, size), threshold=0.8, subcomponent_of=1, label_id=rank - 1)

    assert write_results(url, RUN_KEY, SUMMARY, [make_card(2, 6), sub(1, 40), sub(2, 9)]) == 3
    subs = read_subcomponents(url, rid)
    assert subs["rank"].tolist() == [1, 2] and subs["size"].tolist() == [40, 9]
    assert subs["threshold"].tolist() == [0.8, 0.8] and subs["parent_rank"].tolist() == [1, 1]
    assert read_components(url, rid)["rank"].tolist() == [2]  # not mixed into the main cards
    assert write_results(url, RUN_KEY, SUMMARY, [make_card(2, 6), sub(1, 41)]) == 2
    assert read_subcomponents(url, rid)["size"].tolist() == [41]
    with pytest.raises(ValueError, match="duplicate"):
        write_results(url, RUN_KEY, SUMMARY, [sub(1, 3), sub(1, 4)])


def test_sqlite_idempotent(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'actgeo.db'}"
    assert read_runs(url).empty and read_components(url, "nope").empty
    _roundtrip(url)


def test_new_columns_and_an_older_table_gains_them(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)  # the tables as an earlier version created them
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE actgeo_runs (run_id VARCHAR(32) PRIMARY KEY, run_key TEXT NOT NULL, "
                             "description TEXT NOT NULL, n_components BIGINT, largest BIGINT, non_singleton BIGINT, "
                             "singletons BIGINT, top_sizes TEXT, created_at DATETIME NOT NULL)"))
        conn.execute(sa.text("CREATE TABLE actgeo_components (run_id VARCHAR(32) NOT NULL REFERENCES actgeo_runs "
                             "(run_id) ON DELETE CASCADE, rank INTEGER NOT NULL, label_id BIGINT NOT NULL, size "
                             "BIGINT NOT NULL, provisional_label TEXT NOT NULL, n_documents BIGINT NOT NULL, "
                             "source_mix TEXT NOT NULL, top_tokens TEXT NOT NULL, contexts TEXT NOT NULL, readout "
                             "TEXT, PRIMARY KEY (run_id, rank))"))
    assert read_components(url, "nope").empty  # reading an older table works
    card = make_card(2, 5)
    card.token_purity, card.n_distinct_tokens = 0.8, 2
    card.next_tokens, card.n_next_unknown = [(".", 4)], 1
    card.model_next, card.model_next_members = [(".", 0.9, 5)], 5
    card.n_inputs, card.n_early, card.recall = 4, 1, {"token": "x", "held": 5, "total": 9}
    card.n_input_documents = 2
    baseline = {"share_one_token": 0.7, "ami": 0.72, "v_measure": 0.94, "mixed": [],
                "baselines": [{"grouping": "token", "coverage": "small", "ami": 0.72, "v_measure": 0.94},
                              {"grouping": "pair", "coverage": "all", "ami": 0.05, "v_measure": 0.42},
                              {"grouping": "token", "coverage": "all", "ami": 0.13, "v_measure": 0.43}]}
    artefacts = {"n": 100, "n_inputs": 97, "rows_sharing_input": 5}
    duplicates = {"n_documents": 10, "n_exact_duplicates": 1}
    for _ in range(2):  # idempotent: the columns are added once
        write_results(url, RUN_KEY, SUMMARY, [card, make_card(3, 3)], baseline=baseline, duplicates=duplicates,
                      artefacts=artefacts)
    with engine.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("actgeo_components")}
    engine.dispose()
    assert {"token_purity", "n_distinct_tokens", "next_tokens", "n_next_unknown", "model_next",
            "model_next_members"} <= cols
    df = read_components(url, run_id_of(RUN_KEY))
    assert df.loc[0, "token_purity"] == 0.8 and df.loc[0, "n_distinct_tokens"] == 2
    assert df.loc[0, "next_tokens"] == [[".", 4]] and df.loc[0, "model_next"] == [[".", 0.9, 5]]
    assert df.loc[0, "n_next_unknown"] == 1 and df.loc[0, "model_next_members"] == 5
    assert df.loc[1, "next_tokens"] is None and df.loc[1, "model_next"] is None
    runs = read_runs(url)
    assert runs.loc[0, "token_baseline"] == baseline and runs.loc[0, "corpus_duplicates"] == duplicates
    assert (runs.loc[0, "share_one_token"], runs.loc[0, "token_ami"], runs.loc[0, "token_v_measure"]) == (0.7, 0.72, 0.94)
    # the whole-partition token-string figures, not the pair's nor the small components'
    assert (runs.loc[0, "token_ami_all"], runs.loc[0, "token_v_measure_all"]) == (0.13, 0.43)
    assert (runs.loc[0, "distinct_inputs"], runs.loc[0, "activations_sharing_input"]) == (97, 5)
    assert runs.loc[0, "artefacts"] == artefacts
    assert (df.loc[0, "n_inputs"], df.loc[0, "n_early"], df.loc[0, "n_input_documents"]) == (4, 1, 2)
    assert (df.loc[0, "recall_token"], df.loc[0, "recall_held"], df.loc[0, "recall_total"]) == ("x", 5, 9)
    assert pd.isna(df.loc[1, "recall_token"]) and pd.isna(df.loc[1, "n_inputs"])


def test_duplicate_ranks_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="duplicate ranks"):
        write_results(f"sqlite:///{tmp_path / 'a.db'}", RUN_KEY, SUMMARY, [make_card(2, 5), make_card(2, 4)])


@pytest.mark.parametrize("url", ["not a url", "nosuchdb://x/y", "postgresql+nosuchdriver://u@h/db"])
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        write_results(url, RUN_KEY, SUMMARY, [])


@pytest.mark.postgres
def test_postgres_idempotent() -> None:
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries not found: `make test` installs Debian's postgresql")
    with running_postgres() as url:
        _roundtrip(url)
