"""A small filesystem for disk-full tests: a tmpfs of a few MiB mounted on a test's folder, unmounted after.

Mounting needs root (``CAP_SYS_ADMIN``) and a ``mount`` binary; where either is missing the context manager
raises :class:`NoSmallDisk` with the reason, and the tests skip with it (never a fake full disk).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


class NoSmallDisk(RuntimeError):
    """A tmpfs cannot be mounted here; the message says why."""


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``mount -o size=...``) on ``where`` (created), yield it, unmount it in a
    ``finally`` (lazily if a file is still open)."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        raise NoSmallDisk("no mount/umount binary")
    if os.geteuid() != 0:
        raise NoSmallDisk("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise NoSmallDisk(f"mount -t tmpfs refused: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def leave_free(mount: Path, free: int) -> Path:
    """Fill ``mount`` with a ballast file so that about ``free`` bytes stay free (to the page); returns the
    ballast, whose removal frees the space again."""
    ballast = mount / "ballast"
    have = shutil.disk_usage(mount).free
    if have < free:
        raise ValueError(f"{mount} has {have} bytes free, fewer than the {free} asked to leave")
    with open(ballast, "wb") as fh:
        fh.write(b"\0" * (have - free))
    return ballast
