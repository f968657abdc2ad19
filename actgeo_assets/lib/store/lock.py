"""One writer per data directory: ``{data_dir}/.actgeo.lock`` (:attr:`RunLayout.lock`), an ``fcntl.flock``.

- ``actgeo run`` holds it exclusively for its whole run (:func:`data_dir_lock`); it writes its holder
  (PID, host, command line with any password hidden, start time) into the lock file.
- Each materialization holds it shared while its stage writes (:func:`holds_writer_lock` on the stages
  of ``lib/stages``, so wherever it runs: the UI, a sensor, a schedule, a cluster step), registered with
  its run folder and the settings' run id in ``.actgeo.lock.d/``: partitions of one run, and the runs of
  different experiments (other folders), may be materialized side by side, but not while ``actgeo run``
  writes, and not next to a materialization of other settings in the same folder (the same files, other
  contents).
- Within one process the lock is re-entrant: the materializations ``actgeo run`` starts in-process run
  under its exclusive hold.

A second writer never waits: :class:`DataDirBusy` (a ``ValueError``; ``actgeo run`` exits 2) names the
holder. The kernel releases a flock when its process dies, so a lock left by a killed run is simply taken
over; if a lingering child of a dead holder still keeps the old lock file open, the file is replaced.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from actgeo_assets.lib.store.layout import current_umask

T = TypeVar("T")


class DataDirBusy(ValueError):
    """Another process writes to the data directory; the message names it."""


@dataclass
class _Held:
    fd: int
    exclusive: bool
    count: int
    registration: tuple[Path, int] | None  # a shared holder's registration file and its locked fd


_HELD: dict[str, _Held] = {}
_GUARD = threading.RLock()


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder_info(command: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Who takes the lock: this process' PID, host, command line (passwords hidden) and start time."""
    from actgeo_assets.lib.config.secrets import mask_passwords

    cmd = command if command is not None else " ".join(os.path.basename(a) if i == 0 else a
                                                       for i, a in enumerate(sys.argv))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": mask_passwords(cmd),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if run_id:
        info["run_id"] = run_id
    return info


def _describe(info: dict[str, Any]) -> str:
    what = f"PID {info.get('pid', '?')}"
    if info.get("host") and info.get("host") != socket.gethostname():
        what += f" on {info['host']}"
    if info.get("command"):
        what += f" ({info['command']!r}"
        what += f", started {info['started']})" if info.get("started") else ")"
    if info.get("run_id"):
        what += f" for settings {info['run_id']}"
    return what


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_local_and_dead(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    return (isinstance(pid, int) and info.get("host", socket.gethostname()) == socket.gethostname()
            and not process_alive(pid))


def _registry(lock: Path) -> Path:
    return lock.with_name(lock.name + ".d")


def _registration_alive(path: Path) -> bool:
    """A registration's holder keeps an exclusive flock on it while it lives (on any host sharing the
    folder): the file can be locked only once its holder is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _shared_holders(lock: Path, mine: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Live registered shared holders (the files of dead ones are removed)."""
    out = []
    folder = _registry(lock)
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if f == mine:
            continue
        if not _registration_alive(f):
            f.unlink(missing_ok=True)
            continue
        info = _read_json(f)
        if info is not None:
            out.append((f, info))
    return out


def _busy(lock: Path, exclusive_info: dict[str, Any] | None, shared: list[dict[str, Any]]) -> DataDirBusy:
    folder = lock.parent
    if exclusive_info and exclusive_info.get("pid"):
        who = _describe(exclusive_info)
    elif shared:
        who = ", ".join(_describe(i) for i in shared[:3]) + (f" and {len(shared) - 3} more" if len(shared) > 3 else "")
        who = f"Dagster materialization{'s' if len(shared) > 1 else ''} {who}"
    else:
        who = "another process (no holder recorded yet)"
    return DataDirBusy(f"data directory {folder} is in use by {who} (lock {lock}): wait for it to finish, "
                       "or use another --data-dir")


def _open_locked(lock: Path, exclusive: bool) -> int:
    """An fd of ``lock`` holding the flock; DataDirBusy naming the holder when it is taken."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            info = _read_json(lock)
            shared = [i for _, i in _shared_holders(lock)]
            if attempt == 0 and info and _is_local_and_dead(info) and not shared:
                # the recorded holder is dead, yet the file is locked: a child it forked still has it open.
                # Take over with a fresh lock file (the child keeps the old, now unlinked, one).
                lock.unlink(missing_ok=True)
                continue
            raise _busy(lock, None if info and _is_local_and_dead(info) else info, shared) from None
        try:  # the file may have been replaced (taken over) between open and flock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise _busy(lock, _read_json(lock), [i for _, i in _shared_holders(lock)])


def _write_info(fd: int, info: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


@contextlib.contextmanager
def data_dir_lock(lock: str | os.PathLike[str], *, shared: bool = False, run_id: str | None = None,
                  command: str | None = None) -> Iterator[None]:
    """Hold the writer lock ``lock`` (``RunLayout.lock``) for the block: exclusively (``actgeo run``) or
    ``shared`` with the materializations of the same ``run_id``. Re-entrant within a process (an
    exclusive hold covers every nested acquisition). Raises :class:`DataDirBusy` naming the holder."""
    path = Path(lock).expanduser().resolve()
    key = str(path)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            if not shared and not held.exclusive:
                raise DataDirBusy(f"data directory {path.parent} is held shared by this process; it cannot "
                                  "also be taken exclusively")
            held.count += 1
        else:
            fd = _open_locked(path, exclusive=not shared)
            registration = None
            try:
                info = holder_info(command, run_id)
                if shared:
                    registration = _register(path, info)
                else:
                    _write_info(fd, info)
            except BaseException:
                os.close(fd)
                raise
            held = _HELD[key] = _Held(fd, not shared, 1, registration)
    try:
        yield
    finally:
        with _GUARD:
            held.count -= 1
            if held.count == 0:
                del _HELD[key]
                if held.registration is not None:
                    held.registration[0].unlink(missing_ok=True)
                    os.close(held.registration[1])
                elif held.exclusive:
                    with contextlib.suppress(OSError):
                        os.ftruncate(held.fd, 0)
                os.close(held.fd)  # releases the flock


def _register(lock: Path, info: dict[str, Any]) -> tuple[Path, int]:
    """Record a shared holder (a file it keeps flocked while it lives, written under a temporary name and
    renamed, so no one sees it unlocked); DataDirBusy when a live one holds other settings (another run
    id)."""
    folder = _registry(lock)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{info['host']}-{info['pid']}-{threading.get_ident()}"
    tmp, mine = folder / f".{name}.tmp", folder / f"{name}.json"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666 & ~current_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _write_info(fd, info)
        os.replace(tmp, mine)
        others = [i for _, i in _shared_holders(lock, mine) if _conflict(i.get("run_id"), info.get("run_id"))]
    except BaseException:
        tmp.unlink(missing_ok=True)
        os.close(fd)
        raise
    if others:
        mine.unlink(missing_ok=True)
        os.close(fd)
        raise _busy(lock, None, others)
    return mine, fd


def _conflict(held: str | None, wanted: str | None) -> bool:
    """Whether two shared holders' keys (``folder/run_id``, or a bare run id) write other contents into the same
    files: the same run folder (none named: the same data directory) with other settings."""
    held_folder, _, held_run = (held or "").rpartition("/")
    folder, _, run = (wanted or "").rpartition("/")
    return held_folder == folder and held_run != run


def current_holder(lock: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The exclusive holder recorded in ``lock`` (None when none is recorded)."""
    info = _read_json(Path(lock))
    return info if info and info.get("pid") else None


def holds_writer_lock(stage: Callable[..., T]) -> Callable[..., T]:
    """Decorator of a stage ``stage(settings, layout, ...)`` that writes under ``layout``: it runs holding
    the data directory's lock shared with the stages of the same settings (:meth:`RunSettings.run_id`), so
    each materialization, wherever it runs (``actgeo run``, the UI, a sensor, a cluster step), is refused
    at once while another writer of other settings, or ``actgeo run`` from another process, holds it."""

    @functools.wraps(stage)
    def wrapper(settings: Any, layout: Any, *args: Any, **kwargs: Any) -> T:
        # keyed by run folder and settings: experiments (other folders) materialize side by side; another
        # configuration in the same folder (the same files, other contents) is refused
        with data_dir_lock(layout.lock, shared=True, run_id=f"{layout.root.name}/{settings.run_id()}"):
            return stage(settings, layout, *args, **kwargs)

    return wrapper
