"""The peak resident memory of this process over a block of code (:class:`peak_rss`), as a stage records it.

On Linux the kernel keeps the process' high-water mark of resident memory (``VmHWM`` in ``/proc/self/status``)
and resets it to the current RSS when ``5`` is written to ``/proc/self/clear_refs`` (Linux 4.0 and later; a
process may write its own file, root or not). :class:`peak_rss` resets it on entry and reads it on exit, so the
peak is that of the block (method ``"vmhwm"``). Where the file cannot be written (another OS, an older kernel, a
sandbox), it falls back to ``getrusage``'s ``ru_maxrss``: the peak of the whole process since it started
(method ``"ru_maxrss"``, an upper bound on the block's peak). The kernel derives ``ru_maxrss`` from the same
mark, so a reset lowers it too: :func:`process_peak_bytes` adds back every mark this module cleared, and is the
process' peak either way.

Resident memory (RSS) counts anonymous memory (the heap: arrays, the model's weights) and file-backed pages
mapped into the process (memory-mapped shards, the model file, libraries). File-backed clean pages can be
reclaimed by the kernel, but they count in RSS, which is what ``top``, a container's memory limit and the OOM
killer see; hence the split at exit (``RssAnon`` and ``RssFile`` of ``/proc/self/status``).

Blocks may nest (one thread): an inner block's reset would hide the outer block's peak so far, so each reset
first passes the high-water mark it clears to the blocks around it.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
GIB = 1024**3


@dataclass(frozen=True)
class MemoryPeak:
    """The peak resident memory over a block.

    - ``bytes``: the peak RSS in bytes; with ``method == "vmhwm"`` the block's own peak, with
      ``"ru_maxrss"`` the process' peak since it started (>= the block's);
    - ``method``: ``"vmhwm"`` (``/proc/self/status`` after a reset through ``/proc/self/clear_refs``) or
      ``"ru_maxrss"`` (``getrusage``; no reset possible);
    - ``start_bytes``, ``end_bytes``: RSS on entry and on exit (None where ``/proc`` is missing);
    - ``anon_bytes``, ``file_bytes``: anonymous and file-backed resident memory on exit (``RssAnon`` and
      ``RssFile``; None where the kernel does not report them);
    - ``seconds``: the block's wall time.
    """

    bytes: int
    method: str
    start_bytes: int | None = None
    end_bytes: int | None = None
    anon_bytes: int | None = None
    file_bytes: int | None = None
    seconds: float = 0.0

    @property
    def gib(self) -> float:
        """The peak in GiB (2**30 bytes)."""
        return self.bytes / GIB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field plus ``"gib"`` (rounded to 3 places) and ``"text"`` (:meth:`describe`)."""
        return {**asdict(self), "gib": round(self.gib, 3), "text": self.describe()}

    def describe(self) -> str:
        """One line, e.g. ``"peak RSS 2.31 GiB (block; at exit 1.02 GiB anonymous + 0.20 GiB file-backed)"``."""
        scope = "block" if self.method == "vmhwm" else "process peak since start: ru_maxrss"
        text = f"peak RSS {format_gib(self.bytes)} ({scope}"
        if self.anon_bytes is not None and self.file_bytes is not None:
            text += f"; at exit {format_gib(self.anon_bytes)} anonymous + {format_gib(self.file_bytes)} file-backed"
        return text + ")"


def format_gib(n_bytes: int | float | None, digits: int = 2) -> str:
    """``n_bytes`` as GiB text, e.g. ``format_gib(3 * 2**29) == "1.50 GiB"``; ``"?"`` for None."""
    if n_bytes is None:
        return "?"
    return f"{n_bytes / GIB:.{digits}f} GiB"


def status_bytes() -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` and ``RssShmem`` of ``/proc/self/status`` in bytes (the
    ones the kernel reports; empty where there is no ``/proc``)."""
    out: dict[str, int] = {}
    try:
        text = _STATUS.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            parts = value.split()
            if parts and parts[-1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


#: The largest high-water mark :func:`reset_peak` cleared (bytes): the process' peak before the last reset.
_CLEARED = 0


def reset_peak() -> bool:
    """Reset this process' ``VmHWM`` to its current RSS (write ``5`` to ``/proc/self/clear_refs``); False where
    that is not possible (no such file, not writable, a kernel before 4.0 whose ``VmHWM`` does not move)."""
    global _CLEARED
    _CLEARED = max(_CLEARED, status_bytes().get("VmHWM", 0))
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
    except OSError:
        return False
    now = status_bytes()
    # a kernel that accepts the write but does not reset would leave VmHWM above VmRSS (+ slack for a fault)
    return "VmHWM" in now and now["VmHWM"] <= now.get("VmRSS", 0) + 4 * 1024 * 1024


def process_peak_bytes() -> int:
    """The process' peak RSS since it started: ``getrusage``'s ``ru_maxrss`` (KiB on Linux, bytes on macOS), or
    the largest mark :func:`reset_peak` cleared where that is higher (a reset lowers ``ru_maxrss`` too)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(int(peak) if sys.platform == "darwin" else int(peak) * 1024, _CLEARED)


#: The open blocks, innermost last: a reset passes the high-water mark it clears to each of them.
_OPEN: list[peak_rss] = []


class peak_rss:  # noqa: N801 (used like a function: ``with peak_rss() as m: ...``)
    """Context manager measuring this process' peak resident memory over its block; ``.peak`` (a
    :class:`MemoryPeak`) is set on exit, also when the block raises::

        with peak_rss() as mem:
            step()
        metadata["peak_rss_gib"] = round(mem.peak.gib, 3)

    ``use_proc=False`` forces the ``ru_maxrss`` fallback (tests)."""

    def __init__(self, use_proc: bool = True) -> None:
        self.use_proc = use_proc
        self.peak: MemoryPeak | None = None
        self._seen = 0  # high-water marks cleared by blocks inside this one
        self._resets = False
        self._start: dict[str, int] = {}
        self._t0 = 0.0

    def __enter__(self) -> peak_rss:
        before = status_bytes()
        if self.use_proc and os.path.exists(_CLEAR_REFS):
            for outer in _OPEN:  # the reset below would hide their peak so far
                outer._seen = max(outer._seen, before.get("VmHWM", 0))
            self._resets = reset_peak()
        self._start = status_bytes() if self._resets else before
        _OPEN.append(self)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        seconds = time.perf_counter() - self._t0
        end = status_bytes()
        if self in _OPEN:
            _OPEN.remove(self)
        if self._resets and "VmHWM" in end:
            peak, method = max(end["VmHWM"], self._seen), "vmhwm"
            for outer in _OPEN:
                outer._seen = max(outer._seen, peak)
        else:
            peak, method = process_peak_bytes(), "ru_maxrss"
        self.peak = MemoryPeak(bytes=int(peak), method=method, start_bytes=self._start.get("VmRSS"),
                               end_bytes=end.get("VmRSS"), anon_bytes=end.get("RssAnon"),
                               file_bytes=end.get("RssFile"), seconds=round(seconds, 3))
