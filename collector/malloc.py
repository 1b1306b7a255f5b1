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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENA_MAX = 2
_M_ARENA_MAX = -8  # malloc.h


def tune() -> bool:
    """True when glibc took the setting (or the environment had set it)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
