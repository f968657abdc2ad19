"""SQL table of component metadata: idempotent writes on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from actgeo_assets.lib.cards import Card, Context
from actgeo_assets.lib.settings import RunSettings, run_id_of
from actgeo_assets.lib.sqlstore import read_components, read_runs, write_results
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


def test_sqlite_idempotent(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'actgeo.db'}"
    assert read_runs(url).empty and read_components(url, "nope").empty
    _roundtrip(url)


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
