"""File integrity (verify_file: sha256 once per file version), outputs that follow the umask, and the
data directory's writer lock (one writer; the holder named; a dead holder's lock taken over)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import actgeo_assets.lib.store.layout as layout_mod
from actgeo_assets.lib.store.layout import IntegrityError, save_json, save_npy, sha256_file, verify_file
from actgeo_assets.lib.store.lock import DataDirBusy, data_dir_lock
from actgeo_tests.support.paths import REPO as ROOT


def test_verify_file_catches_every_change(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    save_npy(path, np.arange(1000, dtype=np.float32))
    sha = sha256_file(path)
    assert verify_file(path, sha) == path
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[500] ^= 0x01  # one bit, same size, and the modification time set back
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IntegrityError, match=r"x\.npy is corrupted or was changed.*rerun `actgeo run`"):
        verify_file(path, sha)
    path.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(IntegrityError, match=r"x\.npy is corrupted"):
        verify_file(path, sha)
    path.unlink()
    with pytest.raises(IntegrityError, match=r"x\.npy is missing"):
        verify_file(path, sha)
    path.mkdir()  # unreadable as a file
    with pytest.raises(IntegrityError, match=r"x\.npy cannot be read"):
        verify_file(path, sha)
    with pytest.raises(IntegrityError, match=r"x\.npy has no recorded sha256"):
        verify_file(path, None)


def test_each_file_version_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.npy"
    save_npy(path, np.ones((64, 64), dtype=np.float32))
    sha = sha256_file(path)
    calls = []
    real = layout_mod.sha256_file
    monkeypatch.setattr(layout_mod, "sha256_file", lambda p, *a: calls.append(p) or real(p, *a))
    for _ in range(5):
        verify_file(path, sha)
    assert calls == []  # known from the write
    save_npy(path, np.zeros((64, 64), dtype=np.float32))  # a new version (renamed into place)
    with pytest.raises(IntegrityError):
        verify_file(path, sha)
    with pytest.raises(IntegrityError):
        verify_file(path, sha)
    assert len(calls) == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        save_npy(tmp_path / "a.npy", np.zeros(3))
        save_json(tmp_path / "b.json", {"k": 1})
        with data_dir_lock(tmp_path / ".actgeo.lock"):
            pass
    finally:
        os.umask(old)
    for name in ("a.npy", "b.json", ".actgeo.lock"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from actgeo_assets.lib.store.lock import data_dir_lock
shared = sys.argv[2] == "shared"
with data_dir_lock(sys.argv[1], shared=shared, run_id=sys.argv[3], command="holder --db postgresql://u:s3cret@h/db"):
    print("held", flush=True)
    time.sleep(120)
"""


def _holder(lock: Path, mode: str = "exclusive", run_id: str = "r1") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT)), str(lock), mode, run_id],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "data" / ".actgeo.lock"
    proc = _holder(lock)
    try:
        for shared in (False, True):
            with pytest.raises(DataDirBusy) as err, data_dir_lock(lock, shared=shared, run_id="r1"):
                pass
            message = str(err.value)
            assert f"PID {proc.pid}" in message and "holder --db" in message and "started" in message
            assert "s3cret" not in message and str(lock.parent) in message
        info = json.loads(lock.read_text())
        assert info["pid"] == proc.pid and "s3cret" not in info["command"]
    finally:
        _kill(proc)
    # the kernel released the killed holder's flock: its lock (still naming the dead PID) is taken over
    assert json.loads(lock.read_text())["pid"] == proc.pid
    with data_dir_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert lock.read_text() == ""  # the holder is cleared on release


def test_stages_of_other_experiments_write_side_by_side(tmp_path: Path) -> None:
    """A stage holds the lock under its run folder and settings: another experiment (another folder) writes
    beside it, another configuration in the same folder is refused."""
    from types import SimpleNamespace

    from actgeo_assets.lib.store.layout import RunLayout
    from actgeo_assets.lib.store.lock import holds_writer_lock

    data = tmp_path / "data"
    proc = _holder(data / ".actgeo.lock", "shared", "exp_a/r1")  # a stage of experiment exp_a, settings r1
    stage = holds_writer_lock(lambda settings, layout: layout.root.name)
    try:
        assert stage(SimpleNamespace(run_id=lambda: "r2"), RunLayout(data, "exp_b")) == "exp_b"
        assert stage(SimpleNamespace(run_id=lambda: "r1"), RunLayout(data, "exp_a")) == "exp_a"
        with pytest.raises(DataDirBusy, match="for settings exp_a/r1"):
            stage(SimpleNamespace(run_id=lambda: "r2"), RunLayout(data, "exp_a"))
    finally:
        _kill(proc)


def test_materializations_share_the_lock_with_their_own_settings_only(tmp_path: Path) -> None:
    lock = tmp_path / ".actgeo.lock"
    proc = _holder(lock, "shared", "settings-a")
    try:
        with data_dir_lock(lock, shared=True, run_id="settings-a"):  # another partition of the same run
            pass
        with pytest.raises(DataDirBusy, match=r"Dagster materialization PID \d+ .*for settings settings-a"):
            with data_dir_lock(lock, shared=True, run_id="settings-b"):
                pass
        with pytest.raises(DataDirBusy, match="in use by Dagster materialization"):
            with data_dir_lock(lock):  # `actgeo run` waits for no one
                pass
    finally:
        _kill(proc)
    with data_dir_lock(lock, shared=True, run_id="settings-b"):  # the dead holder's registration is dropped
        pass
    assert not list((tmp_path / ".actgeo.lock.d").glob("*.json"))


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    lock = tmp_path / ".actgeo.lock"
    with data_dir_lock(lock), data_dir_lock(lock, shared=True, run_id="x"), data_dir_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    with data_dir_lock(lock, shared=True, run_id="x"), pytest.raises(DataDirBusy, match="held shared"):
        with data_dir_lock(lock):
            pass


def test_a_dead_holders_lock_kept_open_by_a_child_is_taken_over(tmp_path: Path) -> None:
    """A killed holder whose forked child still has the lock file open: the file names a dead PID, so it is
    replaced and taken."""
    lock = tmp_path / ".actgeo.lock"
    child = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                              "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
                              "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)",
                              str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        lock.write_text(json.dumps({"pid": dead.pid, "command": "killed run", "started": "earlier"}))
        time.sleep(0.05)
        with data_dir_lock(lock):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        _kill(child)
