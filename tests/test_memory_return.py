"""Memory goes back: free arena pages are given back to the kernel (ds_trim and the
kernel batches' own trims, include/arena/alloc.h) and the arena's resident memory falls.

Residency is asked of the kernel: mincore on the arena's range in this process (a page
the kernel frees is unmapped from every process that maps the arena) and the Rss of
the arena's mapping in /proc/self/smaps. Exact page counts throughout."""

from __future__ import annotations

import ctypes
import errno
import os
from array import array
from collections.abc import Iterator

import pytest

from pipeline._coreerror import CoreError
from pipeline.ds import Arena

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loads BPF programs: needs root")

PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)


def resident(base: int, first_page: int, npages: int) -> int:
    """Pages of the arena range [first_page, first_page + npages) this process has memory for."""
    vec = (ctypes.c_ubyte * npages)()
    addr = ctypes.c_void_p(base + first_page * PAGE)
    if _libc.mincore(addr, ctypes.c_size_t(npages * PAGE), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(v & 1 for v in vec)


def arena_rss_kb(base: int) -> int:
    """Rss of the arena's mapping (the one that starts at base) in /proc/self/smaps."""
    start = f"{base:x}-"
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:
                inside = line.startswith(start)
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError("no arena mapping in /proc/self/smaps")


@pytest.fixture
def arena() -> Iterator[Arena]:
    a = Arena(pages=65536)
    yield a
    a.close()


def _space(a: Arena) -> tuple[int, int, int]:
    info = a.info()
    return int(info["base"]), int(info["space_first_page"]), int(info["space_pages"])


N = 300_000


def test_resident_memory_falls_after_delete_heavy(arena: Arena) -> None:
    base, first, n = _space(arena)
    h = arena.create("hash", capacity=1 << 16)
    keys = array("Q", range(1, N + 1))
    assert h.insert_many(keys).ok == N
    full = arena.heap_stats()
    r_full, rss_full = resident(base, first, n), arena_rss_kb(base)
    # what the heap holds is what this process touched (it did every insert)
    assert full["pages_returned"] == 0 and full["pages_populated"] == full["pages_hwm"]

    assert h.delete_many(keys).ok == N
    assert arena.synchronize()
    freed = arena.heap_stats()
    assert freed["free_pages"] > full["pages_hwm"] * 9 // 10
    # freeing alone gives nothing back: the pages wait on the free stack
    assert resident(base, first, n) == r_full and freed["pages_returned"] == 0

    t = arena.trim()
    st = arena.heap_stats()
    r_trim, rss_trim = resident(base, first, n), arena_rss_kb(base)
    assert t["given"] == st["pages_returned"] > 0 and t["quarantined"] == 0
    assert st["free_pages"] == st["trim_keep"] == t["free_pages"]
    # one page of every 64 taken stays as the record listing the other 63
    taken = freed["free_pages"] - st["trim_keep"]
    assert st["record_pages"] == -(-taken // 64) and t["given"] == taken - st["record_pages"]
    assert st["pages_populated"] == st["pages_hwm"] - t["given"]
    # the kernel's view: exactly the pages given back are gone from this process
    assert r_full - r_trim == t["given"]
    assert rss_full - rss_trim == t["given"] * PAGE // 1024

    # the same load again is served from the pages given back, not from new ones
    assert h.insert_many(keys).ok == N
    again = arena.heap_stats()
    assert again["pages_retaken"] == again["pages_returned"] == t["given"]
    assert again["pages_hwm"] == full["pages_hwm"] and again["pages_lost"] == 0
    assert again["record_pages"] == 0
    assert resident(base, first, n) - r_trim >= t["given"]
    v, kv = h.verify(), h.verify(kernel=True)
    assert (v.result, v.count, v.keysum, v.valsum) == (0, N, N * (N + 1) // 2, N * (N + 1) // 2)
    assert (kv.result, kv.count, kv.keysum) == (0, N, N * (N + 1) // 2)


def test_kernel_batches_trim_on_their_own(arena: Arena) -> None:
    """A delete-heavy kernel phase with no trim call: each kernel batch gives pages back
    at its end while the free stack is above the high watermark."""
    arena.set_trim(16, 64)
    h = arena.create("hash", capacity=1 << 14)
    res = h.run_kernel(200_000, insert=1, key_lo=1, key_span=200_000, seq=True)
    assert res.succeeded[0] == 200_000
    before = arena.heap_stats()
    assert before["pages_returned"] == 0
    res = h.run_kernel(200_000, delete=1, key_lo=1, key_span=200_000, seq=True)
    assert res.succeeded[1] == 200_000
    after = arena.heap_stats()
    assert after["pages_returned"] > 0 and after["trims"] > 0
    # the rest: a trim that respects the hysteresis stops at keep, below it does nothing
    arena.synchronize()
    t = arena.trim(force=False)
    st = arena.heap_stats()
    assert st["free_pages"] <= 64
    assert arena.trim(force=False)["given"] == 0
    assert st["pages_returned"] == after["pages_returned"] + t["given"]
    kv = h.verify(kernel=True)
    assert (kv.result, kv.count) == (0, 0)


def test_trim_keeps_the_hysteresis(arena: Arena) -> None:
    h = arena.create("hash", capacity=1024)
    keys = array("Q", range(1, 20_001))
    h.insert_many(keys)
    h.delete_many(keys)
    assert arena.synchronize()
    free = arena.heap_stats()["free_pages"]
    assert free > 100
    arena.set_trim(10, free)  # at the high watermark: nothing goes
    assert arena.trim(force=False)["given"] == 0
    assert arena.heap_stats()["pages_returned"] == 0
    t = arena.trim(max_pages=50)  # a budget caps what one trim takes
    assert t["given"] == 50 - 1 and arena.heap_stats()["free_pages"] == free - 50


def test_bad_watermarks(arena: Arena) -> None:
    with pytest.raises(CoreError) as e:
        arena.set_trim(5, 4)
    assert e.value.errno == errno.EINVAL and "keep <= high" in str(e.value)
    with pytest.raises(CoreError):
        arena.set_trim(0, (1 << 20) + 1)
    st = arena.heap_stats()
    assert (st["trim_keep"], st["trim_high"]) == (256, 1024)


def test_heap_stats_has_the_memory_counters(arena: Arena) -> None:
    st = arena.heap_stats()
    for key in ("pages_populated", "pages_hwm", "free_pages", "pages_returned", "pages_retaken",
                "pages_quarantined", "record_pages", "trims", "trim_waits", "overruns"):
        assert key in st and st[key] >= 0, key
