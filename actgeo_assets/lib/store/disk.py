"""Disk space: one error for a full filesystem, checks before big writes, and what a run's folder holds.

Every file a run writes goes through :func:`~actgeo_assets.lib.store.layout.atomic_path` (a temporary name
renamed into place). It turns a write that fails because the filesystem is full (``ENOSPC``/``EDQUOT``,
numpy's short write "N requested and M written", Arrow's and faiss' "No space left on device") into one
:class:`DiskFullError` naming the file, the space it needed, what is free and where, and what to do; the
temporary file is removed, so the final name holds either the previous finished file or nothing, and the
stage's sidecar (written last) is absent, so the next run recomputes that partition and keeps every
finished one. Writers that know their size (``save_npy``: the array's ``nbytes``) check first
(:func:`ensure_space`) and fail before writing a byte, with the same message.

:func:`folder_usage` and :func:`run_usage` measure what a run's folder holds, per stage (``actgeo du``, the
assets' metadata).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

#: errno values of a full filesystem or an exhausted quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Messages of libraries that report a full disk without an errno (numpy's ``tofile`` short write, Arrow,
#: faiss, SQLite).
_FULL_TEXT = re.compile(r"\d+ requested and \d+ written|no space left on device|disk quota exceeded|"
                        r"database or disk is full", re.IGNORECASE)


def human_bytes(n: int | float) -> str:
    """``n`` bytes in binary units, e.g. ``2.4 MiB``, ``512 B``, ``5.97 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def existing_ancestor(path: str | os.PathLike[str]) -> Path:
    """``path`` or the nearest folder above it that exists (where a file about to be written will live)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the filesystem that holds ``path`` (or would hold it)."""
    p = existing_ancestor(path).resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (``statvfs`` ``f_bavail``)."""
    return int(shutil.disk_usage(existing_ancestor(path)).free)


class DiskFullError(OSError):
    """A write failed, or would fail, because the filesystem is full. ``errno`` is ``ENOSPC``; ``path``: the
    file being written (its final name); ``needed``: the bytes it needed (the least known when the writer
    could not tell its size: what it had written when the disk filled), ``needed_known``: whether ``needed``
    is the file's full size; ``free``: bytes free on that filesystem; ``mount``: its mount point."""

    def __init__(self, path: str | os.PathLike[str], needed: int, free: int, *, needed_known: bool = True,
                 mount: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.needed, self.free, self.needed_known = int(needed), int(free), needed_known
        self.mount = Path(mount) if mount is not None else mount_point(self.path)
        super().__init__(errno.ENOSPC, self.message(), str(self.path))

    def message(self) -> str:
        free = f"{human_bytes(self.free)} ({self.free:,} bytes) free on {self.mount}"
        if self.needed_known:
            need = f"needs {human_bytes(self.needed)} ({self.needed:,} bytes)"
            todo = f"free at least {human_bytes(max(self.needed - self.free, 0))} there"
        else:
            need = (f"needs more than the {human_bytes(self.needed)} ({self.needed:,} bytes) it had written when "
                    "the filesystem filled")
            todo = f"free space there (more than {human_bytes(self.needed)} in all)"
        return (f"disk full: writing {self.path} {need}, {free}; {todo} or set data_dir to a larger filesystem "
                f"(`actgeo du` shows what each run holds, `actgeo remove --profile P --yes` removes one), then "
                f"rerun: finished partitions are kept and the run resumes at this one")

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self):  # pickles (Dagster's step processes) with its fields, not OSError's arguments
        return (_rebuild, (str(self.path), self.needed, self.free, self.needed_known, str(self.mount)))


def _rebuild(path: str, needed: int, free: int, needed_known: bool, mount: str) -> DiskFullError:
    return DiskFullError(path, needed, free, needed_known=needed_known, mount=mount)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the filesystem is full (errno, or the text of a library that gives none)."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    return isinstance(exc, OSError | RuntimeError) and bool(_FULL_TEXT.search(str(exc)))


def ensure_space(path: str | os.PathLike[str], needed: int) -> None:
    """Raise :class:`DiskFullError` when fewer than ``needed`` bytes are free where ``path`` will be written
    (before writing it: the old file under that name stays until the new one is renamed over it, so the whole
    size must be free)."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFullError(path, needed, free)


def disk_full_error(path: str | os.PathLike[str], written: int, needed: int | None = None) -> DiskFullError:
    """The :class:`DiskFullError` of a write of ``path`` that failed with the disk full after ``written``
    bytes; ``needed``: its full size where the writer knew it."""
    known = needed is not None and needed >= written
    return DiskFullError(path, needed if known else written, free_bytes(path), needed_known=known)


@dataclass(frozen=True)
class Usage:
    """What one folder holds: ``bytes`` (allocated on disk: ``st_blocks * 512``, what a full disk counts),
    ``apparent`` (the files' sizes) and ``files`` (how many)."""

    bytes: int
    apparent: int
    files: int


def folder_usage(path: str | os.PathLike[str]) -> Usage:
    """:class:`Usage` of every regular file under ``path`` (a file counts once however many hard links it
    has inside ``path``; symbolic links are not followed). A missing folder holds nothing."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return _sum_files(files)


#: What each stage writes in a run's folder (``RunLayout``): stage -> paths relative to the run's root
#: (a folder, or a glob of files). Files matched by no stage are reported as ``other``.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "raw_activations": ("raw/*.npy", "raw/*.json", "raw/*.parquet", "raw/next_norm.npz"),
    "activation_mean": ("mean.npy", "mean.json"),
    "normalized": ("normalized",),
    "edge_tiles": ("tiles",),
    "components": ("components",),
    "component_cards": ("cards",),
    "layers": ("layers",),
    "lookup": ("lookup",),
}


def run_usage(root: str | os.PathLike[str]) -> dict[str, Usage]:
    """:class:`Usage` per stage of the run folder ``root`` (keys of :data:`STAGE_FILES`, then ``other`` for
    files no stage claims, e.g. an export's ``dataset/``), each file counted once."""
    root = Path(root)
    claimed: set[Path] = set()
    out: dict[str, Usage] = {}
    for stage, patterns in STAGE_FILES.items():
        files: list[Path] = []
        for pattern in patterns:
            for match in sorted(root.glob(pattern)):
                files += [p for p in ([match] if match.is_file() else sorted(match.rglob("*"))) if p.is_file()]
        files = [f for f in dict.fromkeys(files) if f not in claimed]
        claimed.update(files)
        out[stage] = _sum_files(files)
    rest = [p for p in sorted(root.rglob("*")) if p.is_file() and p not in claimed] if root.is_dir() else []
    out["other"] = _sum_files(rest)
    return out


def _sum_files(files: list[Path]) -> Usage:
    seen: set[tuple[int, int]] = set()
    allocated = apparent = count = 0
    for f in files:
        try:
            st = f.lstat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen or f.is_symlink():
            continue
        seen.add((st.st_dev, st.st_ino))
        allocated, apparent, count = allocated + st.st_blocks * 512, apparent + st.st_size, count + 1
    return Usage(allocated, apparent, count)


#: Folders of a data directory shared by every run in it (``RunLayout.model_cache``, ``corpus_cache``).
CACHES = {"_models": "converted models", "_corpus": "downloaded archives and built corpora"}


def usage_json(usage: Usage) -> dict[str, int]:
    """``{"bytes", "apparent", "files"}``."""
    return {"bytes": usage.bytes, "apparent": usage.apparent, "files": usage.files}


def data_dir_usage(data_dir: str | os.PathLike[str], profiles: list[str] | None = None) -> dict:
    """What a data directory holds, as JSON: ``{"data_dir", "mount", "free", "runs": {profile: {stage:
    usage, ..., "total": usage}}, "caches": {name: usage}, "other": usage}`` (usage: :func:`usage_json`;
    ``runs``: the folders named in ``profiles``, default every folder not starting with ``_`` or ``.``;
    ``other``: the files beside them, e.g. the SQLite database; ``free``: bytes free on its filesystem)."""
    root = Path(data_dir)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] not in "_.") if root.is_dir() else []
    runs = {}
    for profile in (profiles if profiles is not None else folders):
        stages = run_usage(root / profile)
        total = folder_usage(root / profile)
        runs[profile] = {**{k: usage_json(v) for k, v in stages.items()}, "total": usage_json(total)}
    loose = [p for p in root.iterdir() if p.is_file()] if root.is_dir() else []
    return {"data_dir": str(root), "mount": str(mount_point(root)), "free": free_bytes(root), "runs": runs,
            "caches": {name: usage_json(folder_usage(root / name)) for name in CACHES},
            "other": usage_json(_sum_files(loose))}
