"""glibc's allocator for a server whose threads each buffer request bodies (issue 16).

Under overload the collector's RSS kept growing (~2 MB/s, docs/benchmarks.md) although every buffer it
holds is bounded: glibc gives each thread that allocates an arena of its own (up to 8 per core), and the
holes freed in one arena are not reused by the others nor returned. Two arenas lowered the overload
benchmark's peak RSS on an empty store (docs/benchmarks.md, "what bounds ingest on an empty store").
Python's small objects are not affected: they come from its own pools.

Not the mmap threshold: fixing it at 128 KiB (so that freed bodies are unmapped) lowered RSS a little
more, but then every NumPy array of the query engine above that size is a fresh mapping, faulted in page
by page on each query: a warm 24 h histogram_quantile took 410-470 ms instead of 210-300.

Call `tune()` at the start of the server, before it starts threads. An explicit MALLOC_ARENA_MAX in the
environment is left as it is; without glibc (musl, macOS) nothing happens.

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

ARENA_MAX = 2
TRIM_INTERVAL_S = 2.0
_M_ARENA_MAX = -8  # malloc.h


def _glibc_function(name: str):
    """A function of the C library, or None (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """True when glibc took the setting (or the environment had set it)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    mallopt = _glibc_function("mallopt")
    return mallopt is not None and mallopt(_M_ARENA_MAX, ARENA_MAX) == 1


class Trimmer:
    """Calls malloc_trim(0) every `interval_s`, when `when()` says so, on a daemon thread until closed
    (module docstring)."""

    def __init__(self, malloc_trim, interval_s: float, when: Callable[[], bool]) -> None:
        self._malloc_trim = malloc_trim
        self._when = when
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otelite-malloc-trim", daemon=True)
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
