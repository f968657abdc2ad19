"""``NpyRows``: rows of a .npy read with ``preadv`` equal a memory map's for every kind of index, and reading
rows at random across the file (as the cards' lens control does) leaves the process' file-backed resident
memory where it was, where a memory map takes in nearly the whole file."""

from __future__ import annotations

import numpy as np
import pytest

from actgeo_assets.lib.store.rows import NpyRows, SelectedRows, chunked_mean, row_getter, unmapped


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


@pytest.fixture
def shard_files(tmp_path):
    """Three .npy shards of 400, 250 and 300 rows x 9 (float32) and their concatenation."""
    rng = np.random.default_rng(5)
    parts = [rng.standard_normal((n, 9)).astype(np.float32) for n in (400, 250, 300)]
    paths = []
    for k, part in enumerate(parts):
        np.save(tmp_path / f"s{k}.npy", part)
        paths.append(tmp_path / f"s{k}.npy")
    return paths, np.concatenate(parts)


def test_unmapped_reads_whole_read_only_maps_only(shard_files, tmp_path) -> None:
    paths, whole = shard_files
    mapped = np.load(paths[0], mmap_mode="r")
    rows = unmapped(mapped)
    assert isinstance(rows, NpyRows) and rows.shape == mapped.shape and rows.dtype == mapped.dtype
    assert rows.offset == mapped.offset
    np.testing.assert_array_equal(rows[np.arange(400)], whole[:400])
    # left as they are: a view of a map, a writable or copy-on-write map, an in-memory array
    for other in (mapped[10:], np.load(paths[0], mmap_mode="r+"), np.load(paths[0], mmap_mode="c"), whole):
        assert unmapped(other) is other


def test_row_getter_over_maps_equals_the_matrix(shard_files) -> None:
    """Ascending, unsorted, repeated and empty indices over memory-mapped shards (read with preadv) give the
    concatenated matrix's rows, as do the same shards given in memory and mixed with a non-file shard."""
    paths, whole = shard_files
    maps = [(0, np.load(paths[0], mmap_mode="r")), (400, np.load(paths[1], mmap_mode="r")),
            (650, np.load(paths[2], mmap_mode="r"))]
    gets = [row_getter(maps), row_getter([(o, np.asarray(a)) for o, a in maps]),
            row_getter([maps[0], (400, np.asarray(maps[1][1])), maps[2]])]
    rng = np.random.default_rng(6)
    cases = [np.arange(950), np.sort(rng.choice(950, 300, replace=False)), rng.integers(0, 950, 500),
             np.array([949, 0, 400, 399, 650, 649, 5, 5, 5]), np.array([], dtype=np.int64), np.array([401])]
    for idx in cases:
        for get in gets:
            got = get(idx)
            assert got.dtype == np.float32 and got.shape == (idx.size, 9)
            np.testing.assert_array_equal(got, whole[idx])
    with pytest.raises(IndexError):
        gets[0](np.array([950]))


def test_npy_rows_at_an_offset(tmp_path) -> None:
    """A raw file of rows after a 100-byte prefix, read as NpyRows(offset, shape, dtype)."""
    x = np.arange(5 * 4, dtype="<f8").reshape(5, 4)
    (tmp_path / "raw.bin").write_bytes(b"\0" * 100 + x.tobytes())
    rows = NpyRows(tmp_path / "raw.bin", offset=100, shape=(5, 4), dtype="<f8")
    np.testing.assert_array_equal(rows[[4, 0, 2]], x[[4, 0, 2]])
    np.testing.assert_array_equal(rows[1:4], x[1:4])
    np.testing.assert_array_equal(rows[::2], x[::2])
    with pytest.raises(OSError, match="ends before row"):
        NpyRows(tmp_path / "raw.bin", offset=100, shape=(6, 4), dtype="<f8")[[5]]


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_row_getter_keeps_file_pages_out_of_rss(tmp_path) -> None:
    """The same random groups read through row_getter from memory-mapped shards (now with preadv) and through
    the maps themselves: equal means; only the maps' reads grow the process' file-backed RSS."""
    n, d = 16_384, 256
    shards = []
    for k in range(2):
        arr = np.lib.format.open_memmap(tmp_path / f"m{k}.npy", mode="w+", dtype=np.float32, shape=(n, d))
        arr[:] = np.random.default_rng(10 + k).standard_normal((n, d), dtype=np.float32)
        arr.flush()
        del arr
        shards.append((k * n, np.load(tmp_path / f"m{k}.npy", mmap_mode="r")))
    rng = np.random.default_rng(3)
    groups = [np.sort(rng.choice(2 * n, 1024, replace=False)) for _ in range(64)]
    size_kib = 2 * n * d * 4 // 1024

    before = _rss_file_kib()
    get = row_getter(shards)
    by_getter = [chunked_mean(get, g) for g in groups]
    grew_getter = _rss_file_kib() - before

    def mapped_get(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([a[idx[(idx >= o) & (idx < o + n)] - o] for o, a in shards])

    before = _rss_file_kib()
    by_map = [chunked_mean(mapped_get, g) for g in groups]
    grew_map = _rss_file_kib() - before
    np.testing.assert_array_equal(np.array(by_getter), np.array(by_map))
    assert grew_map > size_kib // 2, (grew_map, size_kib)
    assert grew_getter < size_kib // 20, (grew_getter, size_kib)


def test_selected_rows_read_in_one_pass_equal_numpy(shard_files) -> None:
    """Kept subsets of memory-mapped shards (SelectedRows over their preadv readers, as the pipeline's kept raw
    rows are) and a whole shard, read through row_getter: the rows numpy selects from the concatenation."""
    paths, whole = shard_files
    rng = np.random.default_rng(9)
    kept = [np.sort(rng.choice(n, n - 37, replace=False)) for n in (400, 250)]
    parts = [(0, SelectedRows(unmapped(np.load(paths[0], mmap_mode="r")), kept[0])),
             (363, SelectedRows(unmapped(np.load(paths[1], mmap_mode="r")), kept[1])),
             (576, unmapped(np.load(paths[2], mmap_mode="r")))]
    want = np.concatenate([whole[:400][kept[0]], whole[400:650][kept[1]], whole[650:]])
    get = row_getter(parts)
    for idx in (np.arange(876), rng.integers(0, 876, 300), np.array([875, 0, 363, 362, 576, 575])):
        np.testing.assert_array_equal(get(idx), want[idx])
    np.testing.assert_array_equal(parts[0][1][np.array([0, 5])], want[[0, 5]])
    assert len(parts[1][1]) == 213 and parts[1][1].shape == (213, 9)


def test_chunked_mean_equals_float64_chunk_sums_bit_for_bit(npy) -> None:
    """Summing each float32 chunk in float64 (no float64 copy) gives the very sums of converting it first."""
    path, x = npy
    get = row_getter([(0, np.load(path, mmap_mode="r"))])
    members = np.sort(np.random.default_rng(12).choice(1000, 777, replace=False))
    for chunk in (1, 100, 256, 65_536):
        want = sum(x[members[s : s + chunk]].astype(np.float64).sum(axis=0) for s in range(0, 777, chunk)) / 777
        np.testing.assert_array_equal(chunked_mean(get, members, chunk=chunk), want)
