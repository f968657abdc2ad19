"""``NpyRows``: rows of a .npy read with ``preadv`` equal a memory map's for every kind of index, and reading
rows at random across the file (as the cards' lens control does) leaves the process' file-backed resident
memory where it was, where a memory map takes in nearly the whole file."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.store.rows import NpyRows, chunked_mean, row_getter


@pytest.fixture
def npy(tmp_path):
    x = np.random.default_rng(0).standard_normal((1000, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy", x


def test_rows_equal_the_array(npy) -> None:
    path, x = npy
    rows = NpyRows(path)
    assert len(rows) == 1000 and rows.shape == (1000, 7) and rows.dtype == np.float32
    for idx in (np.array([5, 3, 3, 999, 0, 1, 2]), np.arange(1000), np.array([], dtype=np.int64), [-1, -1000],
                np.array([[1, 2], [900, 4]])):
        np.testing.assert_array_equal(rows[idx], x[np.asarray(idx, dtype=np.int64)])
    np.testing.assert_array_equal(rows[10:500:7], x[10:500:7])
    np.testing.assert_array_equal(rows[42], x[42])
    with pytest.raises(IndexError):
        rows[np.array([1000])]
    with pytest.raises(IndexError):
        rows[np.ones(1000, dtype=bool)]


def test_other_dtypes_and_a_bad_file(tmp_path) -> None:
    y = np.arange(60, dtype=">f8").reshape(12, 5)
    np.save(tmp_path / "y.npy", y)
    np.testing.assert_array_equal(NpyRows(tmp_path / "y.npy")[[11, 0, 4]], y[[11, 0, 4]])
    np.save(tmp_path / "z.npy", np.zeros(5))
    with pytest.raises(ValueError, match="2-D"):
        NpyRows(tmp_path / "z.npy")


def test_as_shards_of_row_getter(npy) -> None:
    path, x = npy
    get = row_getter([(0, NpyRows(path)), (1000, np.asarray(x[::-1]))])
    members = np.array([3, 500, 999, 1000, 1999])
    want = np.concatenate([x, x[::-1]])[members].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(chunked_mean(get, members), want)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssFile:"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_random_reads_do_not_map_the_file(tmp_path) -> None:
    """32 MiB of rows, 64 groups of 1,024 random rows: the memory map's resident file pages grow by most of the
    file (readahead faults in neighbours), ``NpyRows`` by almost nothing; the means agree."""
    n, d = 32_768, 256
    path = tmp_path / "big.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    arr[:] = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    arr.flush()
    del arr
    rng = np.random.default_rng(2)
    groups = [np.sort(rng.choice(n, 1024, replace=False)) for _ in range(64)]
    size_kib = n * d * 4 // 1024

    before = _rss_file_kib()
    mapped = np.load(path, mmap_mode="r")
    by_map = [mapped[g].astype(np.float64).mean(axis=0) for g in groups]
    grew_map = _rss_file_kib() - before
    del mapped

    before = _rss_file_kib()
    rows = NpyRows(path)
    by_read = [rows[g].astype(np.float64).mean(axis=0) for g in groups]
    grew_read = _rss_file_kib() - before
    np.testing.assert_array_equal(np.array(by_read), np.array(by_map))
    assert grew_map > size_kib // 2, (grew_map, size_kib)
    assert grew_read < size_kib // 20, (grew_read, size_kib)
