"""glibc's allocator for a server whose threads each buffer request bodies and whose queries build large
arrays (issue 16).

Under overload the collector's RSS kept growing (~2 MB/s, docs/benchmarks.md) although every buffer it
holds is bounded: glibc gives each thread that allocates an arena of its own (up to 8 per core), and the
holes freed in one arena are not reused by the others nor returned. Two arenas lowered the overload
benchmark's peak RSS on an empty store (docs/benchmarks.md, "what bounds ingest on an empty store").
Python's small objects are not affected: they come from its own pools.

The mmap threshold is set where glibc's dynamic one ends at most (32 MiB, trim threshold 64 MiB), from
the start. glibc begins at 128 KiB and raises it to the size of each mapped block that is freed, so the
first query of a process maps every array above 128 KiB afresh, faults it in page by page and unmaps it
again; only later ones reuse heap pages. The query engine's arrays of a day's metric are 0.2-14 MiB. A
live server's first 24 h histogram_quantile on the scale benchmark's store (the cold query issue 16
measures) took 55,000 page faults, and each warm one 2,300-3,300 more; from these thresholds 35,000 and
none (docs/benchmarks.md, 2026-12-02 21:18). What the heap keeps that way is what it would keep after a
few queries anyway, and the trimmer below returns it under ingest pressure: the overload benchmark's peak
RSS was the same (228-263 MB against 230-263). Lower is worse: fixing it at 128 KiB (so that freed bodies
are unmapped) lowered RSS a little more, but then every such array is a fresh mapping on every query: a
warm 24 h histogram_quantile took 410-470 ms instead of 210-300.

No transparent huge pages for the heap. `otelite serve` ran itself again with glibc's
`glibc.malloc.hugetlb=1` tunable from 80dd786 (fewer page faults for a first query on the Intel VM of
2026-12-03: 264-292 ms against 305-316). On the 2-core AMD EPYC VM that runs the acceptance figures now,
with a first query that touches half the memory it did then, it made that query slower: 277 ms mean
against 230 over six alternated pairs, more system time zeroing whole 2 MiB pages (docs/benchmarks.md,
2026-12-04). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1 otelite serve` still gives them, glibc's own way.

Call `tune()` at the start of the server, before it starts threads. What the environment sets
(MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) is left as it is; without glibc (musl,
macOS) nothing happens.

Holes in the middle of an arena are returned only by `malloc_trim` (free() gives back the top of the heap
alone), so the server runs a `Trimmer` every TRIM_INTERVAL_S when ingest has pressed since its last look
(the writer's queue more than half full): under overload, where request bodies of hundreds of KiB come
and go, the overload benchmark's peak RSS fell by 20-35 MB (docs/benchmarks.md, 2026-12-02
"malloc_trim"). A call takes 0.5-5 ms, during which other threads' allocations in the arena it walks
wait: every 0.5 s cost ~4% of ingest throughput, every 2 s nothing measurable. Not regardless of load,
because the pages it returns are the ones the next query would reuse: trimming every 2 s made warm
queries fault them in again (+10 ms for a 24 h histogram_quantile, +17 ms for a rate, live).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Callable

from otelite.collector.osthread import NamedThread

ARENA_MAX = 2
MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc sets beside a raised dynamic threshold
TRIM_INTERVAL_S = 2.0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # malloc.h
_SETTINGS = ((_M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX"),
             (_M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
             (_M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"))


def _glibc_function(name: str):
    """A function of the C library, or None (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """True when glibc took the settings (or the environment had set them)."""
    wanted = [(param, value) for param, value, env in _SETTINGS if env not in os.environ]
    if not wanted:
        return True
    mallopt = _glibc_function("mallopt")
    return mallopt is not None and all([mallopt(param, value) == 1 for param, value in wanted])


class Trimmer:
    """Calls malloc_trim(0) every `interval_s`, when `when()` says so, on a daemon thread until closed
    (module docstring)."""

    def __init__(self, malloc_trim, interval_s: float, when: Callable[[], bool]) -> None:
        self._malloc_trim = malloc_trim
        self._when = when
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = NamedThread(target=self._run, name="otelite-malloc-trim", daemon=True)
        self.trims = 0  # calls made (tests)

    def start(self) -> "Trimmer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._when():
                self._malloc_trim(0)
                self.trims += 1


def trimmer(when: Callable[[], bool], interval_s: float = TRIM_INTERVAL_S) -> Trimmer | None:
    """A Trimmer of glibc's malloc_trim (not started), or None without glibc."""
    malloc_trim = _glibc_function("malloc_trim")
    return None if malloc_trim is None else Trimmer(malloc_trim, interval_s, when)
