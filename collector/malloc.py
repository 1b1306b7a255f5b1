"""glibc's allocator tuned for a server that buffers request bodies on several threads (issue 16).

Under overload the collector's RSS kept growing (~2 MB/s, docs/benchmarks.md) although every buffer it
holds is bounded: glibc serves each thread from an arena of its own (up to 8 per core) where freed holes
are kept rather than returned, and after freeing a large mmapped block it raises its mmap threshold, so
that later request bodies and pickles of a few hundred kB come from those arenas too. Two arenas and a
fixed 128 KiB threshold (large blocks mmapped, and unmapped when freed; setting it also turns the dynamic
threshold off, mallopt(3)) took the overload benchmark's peak RSS from 239-309 MB to 210-243 MB. Python's
small objects are not affected: they come from its own pools.

Call `tune()` at the start of a process, before it starts threads. What the environment sets explicitly
(MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) is left as it is; without glibc (musl, macOS) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ARENA_MAX = 2
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # malloc.h
_M_ARENA_MAX = -8


def tune() -> bool:
    """True when glibc took both settings (or the environment had set them)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = mallopt(_M_ARENA_MAX, ARENA_MAX) == 1 and ok
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and ok
    return ok
