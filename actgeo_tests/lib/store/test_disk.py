"""A full disk (``lib/store/disk.py`` through ``layout.atomic_path``), on a real small filesystem: a tmpfs of
1 MiB (skipped with the reason where it cannot be mounted). Each write that does not fit raises one
``DiskFullError`` naming the file, the bytes it needed and those free (compared with ``shutil.disk_usage``),
leaves no temporary file, and keeps the finished file that was there before. Also the per-stage disk use of a
run folder against ``du``."""

from __future__ import annotations

import errno
import io
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actgeo_assets.lib.store.disk import (
    DiskFullError,
    Usage,
    folder_usage,
    free_bytes,
    human_bytes,
    is_disk_full,
    mount_point,
    run_usage,
)
from actgeo_assets.lib.store.layout import atomic_path, npy_bytes, save_json, save_npy, save_parquet
from actgeo_tests.support.small_disk import NoSmallDisk, small_tmpfs


@pytest.fixture
def disk(tmp_path: Path):
    """A 1 MiB tmpfs."""
    try:
        with small_tmpfs(tmp_path / "mnt", "1m") as mnt:
            yield mnt
    except NoSmallDisk as exc:
        pytest.skip(f"no small filesystem: {exc}")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 512, 1024, 80_896, 5 * 2**20 + 2**19, int(5.97 * 2**30))] == \
        ["0 B", "512 B", "1.0 KiB", "79.0 KiB", "5.5 MiB", "6.0 GiB"]


def test_error_is_an_oserror_naming_file_and_sizes(tmp_path: Path) -> None:
    exc = DiskFullError(tmp_path / "a.npy", 3 * 2**20, 2**20)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    text = str(exc)
    assert str(tmp_path / "a.npy") in text and "3,145,728 bytes" in text and "1,048,576 bytes" in text
    assert "free at least 2.0 MiB" in text and "data_dir" in text
    back = pickle.loads(pickle.dumps(exc))
    assert (back.path, back.needed, back.free, str(back)) == (exc.path, exc.needed, exc.free, text)


def test_is_disk_full() -> None:
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(OSError("2560000 requested and 96224 written"))  # numpy's tofile, no errno
    assert is_disk_full(RuntimeError("write error in x: 28 (No space left on device)"))  # faiss
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("something else"))
    assert not is_disk_full(ValueError("No space left on device"))


def test_save_npy_checks_space_first_and_keeps_the_old_file(disk: Path) -> None:
    old = np.arange(1000, dtype=np.float32)
    save_npy(disk / "a.npy", old)
    free = shutil.disk_usage(disk).free
    big = np.ones((1000, 400), dtype=np.float32)  # 1.6 MB > 1 MiB
    with pytest.raises(DiskFullError) as err:
        save_npy(disk / "a.npy", big)
    exc = err.value
    written = io.BytesIO()
    np.save(written, big)  # what np.save writes: the exact size the check asks for
    assert exc.path == disk / "a.npy" and exc.needed == npy_bytes(big) == written.tell() and exc.needed_known
    assert exc.free == free and exc.mount == disk
    assert f"{written.tell():,} bytes" in str(exc) and f"{free:,} bytes" in str(exc) and str(disk) in str(exc)
    assert _leftovers(disk) == [] and shutil.disk_usage(disk).free == free
    np.testing.assert_array_equal(np.load(disk / "a.npy"), old)


def test_a_write_that_fills_the_disk_midway(disk: Path) -> None:
    """No size given: numpy's short write ("N requested and M written", no errno) becomes the same error."""
    old = np.arange(10, dtype=np.int64)
    save_npy(disk / "b.npy", old)
    free = shutil.disk_usage(disk).free
    with pytest.raises(DiskFullError) as err, atomic_path(disk / "b.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ones((1000, 400), dtype=np.float32))
    exc = err.value
    assert "requested and" in str(exc.__cause__) and not exc.needed_known
    assert 0 < exc.needed <= free and exc.free == free == free_bytes(disk)
    assert "had written when the filesystem filled" in str(exc) and str(disk / "b.npy") in str(exc)
    assert _leftovers(disk) == []
    np.testing.assert_array_equal(np.load(disk / "b.npy"), old)


def test_parquet_and_json_on_a_full_disk(disk: Path) -> None:
    free = shutil.disk_usage(disk).free
    with pytest.raises(DiskFullError) as err:
        save_parquet(disk / "t.parquet", pd.DataFrame({"x": np.random.default_rng(0).random(400_000)}))
    assert err.value.path == disk / "t.parquet" and err.value.errno == errno.ENOSPC
    with pytest.raises(DiskFullError) as err:
        save_json(disk / "t.json", list(range(300_000)))
    assert err.value.needed_known and err.value.needed > free
    assert sorted(os.listdir(disk)) == [] and shutil.disk_usage(disk).free == free


def test_mount_point(disk: Path) -> None:
    assert mount_point(disk / "not" / "yet" / "there.npy") == disk


def test_run_usage_against_du(tmp_path: Path) -> None:
    root = tmp_path / "run"
    save_npy(root / "raw" / "s0.npy", np.ones((300, 64), np.float32))
    save_json(root / "raw" / "s0.json", {"a": 1})
    save_npy(root / "mean.npy", np.zeros(64))
    save_npy(root / "normalized" / "s0.npy", np.ones((300, 64), np.float32))
    os.link(root / "normalized" / "s0.npy", root / "normalized" / "copy.npy")  # one file, two names
    (root / "dataset").mkdir()
    (root / "dataset" / "x.parquet").write_bytes(b"x" * 5000)
    usage = run_usage(root)

    def du(*files: Path, apparent: bool = True) -> int:
        """``du -c`` of the files (it counts a hard-linked file once): the total line, in bytes."""
        out = subprocess.run(["du", "-c", "-b" if apparent else "-B1", *map(str, files)], capture_output=True,
                             text=True, check=True).stdout
        return int(out.splitlines()[-1].split()[0])

    def files(*parts: str) -> list[Path]:
        return sorted(p for part in parts for p in (root / part).rglob("*") if p.is_file()) if parts else []

    assert usage["raw_activations"].apparent == du(*files("raw")) and usage["raw_activations"].files == 2
    assert usage["activation_mean"].apparent == du(root / "mean.npy")
    assert usage["normalized"].apparent == du(*files("normalized")) == (root / "normalized" / "s0.npy").stat().st_size
    assert usage["normalized"].files == 1 and usage["normalized"].bytes == du(*files("normalized"), apparent=False)
    assert usage["other"].apparent == 5000 and usage["edge_tiles"] == usage["lookup"] == Usage(0, 0, 0)
    every = [p for p in root.rglob("*") if p.is_file()]
    assert sum(u.bytes for u in usage.values()) == folder_usage(root).bytes == du(*every, apparent=False)
    assert sum(u.apparent for u in usage.values()) == folder_usage(root).apparent == du(*every)
