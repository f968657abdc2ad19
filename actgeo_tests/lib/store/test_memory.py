"""``peak_rss``: the peak it reports covers a large allocation inside its block, a block after the allocation was
freed starts from the lower RSS (the high-water mark was reset), nested blocks keep the outer one's peak, and
the fallback reports the process peak. Behaviour, not timing: the sizes leave wide margins."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from actgeo_assets.lib.store.memory import (
    GIB,
    MemoryPeak,
    format_gib,
    peak_rss,
    process_peak_bytes,
    status_bytes,
)
from actgeo_tests.support.paths import REPO

MB = 1_000_000
needs_proc = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux clear_refs")


def _isolated(body: Callable[[], None]) -> None:
    """Run ``body`` (a function of this module) in a fresh interpreter: a long test process' allocator may hand
    a large array pages that are already resident (memory freed by earlier tests), so RSS would not grow."""
    code = f"import actgeo_tests.lib.store.test_memory as t; t.{body.__name__}()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]


def _touch(n_bytes: int) -> np.ndarray:
    a = np.empty(n_bytes // 8)
    a.fill(1.0)  # every page written: resident
    return a


@needs_proc
def test_peak_covers_an_allocation_and_resets_after_it() -> None:
    _isolated(_check_peak_covers_an_allocation_and_resets_after_it)


def _check_peak_covers_an_allocation_and_resets_after_it() -> None:
    with peak_rss() as first:
        a = _touch(300 * MB)
        rss_with = status_bytes()["VmRSS"]
        del a
    assert first.peak is not None and first.peak.method == "vmhwm"
    # the 300 MB array was resident inside the block: the peak is at least that above the start
    assert first.peak.bytes >= first.peak.start_bytes + 290 * MB
    assert first.peak.bytes >= rss_with - 4 * MB  # the kernel syncs its RSS counters in batches
    assert first.peak.end_bytes < first.peak.bytes - 250 * MB  # freed before the end
    with peak_rss() as second:
        b = _touch(20 * MB)
        del b
    # the reset worked: the second block's peak is far below the first's, not the process' high-water mark
    assert second.peak is not None
    assert second.peak.bytes < first.peak.bytes - 200 * MB
    assert second.peak.bytes >= second.peak.start_bytes
    assert process_peak_bytes() >= first.peak.bytes - 4 * MB


@needs_proc
def test_nested_blocks_keep_the_outer_peak() -> None:
    _isolated(_check_nested_blocks_keep_the_outer_peak)


def _check_nested_blocks_keep_the_outer_peak() -> None:
    with peak_rss() as outer:
        a = _touch(200 * MB)
        del a
        with peak_rss() as inner:  # resets the high-water mark: the outer block must still see the 200 MB
            b = _touch(10 * MB)
            del b
    assert inner.peak is not None and outer.peak is not None
    assert inner.peak.bytes < outer.peak.bytes - 150 * MB
    assert outer.peak.bytes >= outer.peak.start_bytes + 190 * MB


@needs_proc
def test_split_and_fields() -> None:
    with peak_rss() as mem:
        pass
    p = mem.peak
    assert p is not None and p.anon_bytes is not None and p.file_bytes is not None
    status = status_bytes()
    # anonymous + file-backed (+ shared memory) is the RSS, as the kernel counts it
    assert abs(p.anon_bytes + p.file_bytes + status.get("RssShmem", 0) - p.end_bytes) <= 8 * MB
    d = p.to_dict()
    assert d["bytes"] == p.bytes and d["method"] == "vmhwm" and d["gib"] == round(p.bytes / GIB, 3)
    assert "anonymous" in d["text"] and "file-backed" in d["text"]


def test_fallback_is_the_process_peak() -> None:
    a = _touch(50 * MB)
    del a
    with peak_rss(use_proc=False) as mem:
        pass
    assert mem.peak is not None and mem.peak.method == "ru_maxrss"
    assert mem.peak.bytes == pytest.approx(process_peak_bytes(), abs=4 * MB)
    assert "ru_maxrss" in mem.peak.describe()


def test_peak_is_set_when_the_block_raises() -> None:
    mem = peak_rss()
    with pytest.raises(RuntimeError), mem:
        raise RuntimeError("boom")
    assert isinstance(mem.peak, MemoryPeak) and mem.peak.bytes > 0


def test_format_gib() -> None:
    assert format_gib(3 * 2**29) == "1.50 GiB"
    assert format_gib(2**30, digits=3) == "1.000 GiB"
    assert format_gib(None) == "?"
    assert MemoryPeak(bytes=2**31, method="vmhwm").gib == 2.0


@needs_proc
def test_process_peak_survives_resets() -> None:
    _isolated(_check_process_peak_survives_resets)


def _check_process_peak_survives_resets() -> None:
    """A reset lowers the kernel's ``ru_maxrss`` too; ``process_peak_bytes`` still reports the process' peak."""
    with peak_rss():
        a = _touch(250 * MB)
        high = status_bytes()["VmHWM"]
        del a
    with peak_rss():
        pass
    # (a reset lowers the kernel's ru_maxrss only where no earlier mark, e.g. the parent's at exec, is larger)
    assert process_peak_bytes() >= high - 4 * MB  # the kernel syncs its RSS counters in batches
