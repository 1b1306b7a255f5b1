"""collector/malloc.py: glibc takes the setting; what the environment sets is left alone; the trimmer
returns the holes of the heap."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import time

import pytest

from otelite.collector import malloc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_setting(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.tune() is True


def test_the_environment_wins(monkeypatch):
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    for name in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert malloc.tune() is True and calls == [(malloc._M_ARENA_MAX, malloc.ARENA_MAX),
                                               (malloc._M_MMAP_THRESHOLD, malloc.MMAP_THRESHOLD),
                                               (malloc._M_TRIM_THRESHOLD, malloc.TRIM_THRESHOLD)]
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert malloc.tune() is True and calls == [(malloc._M_MMAP_THRESHOLD, malloc.MMAP_THRESHOLD)]
    calls.clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert malloc.tune() is True and calls == []


_SECOND_BLOCK_FAULTS = """
import ctypes, resource, sys
from otelite.collector import malloc
if sys.argv[1] == "tuned":
    assert malloc.tune()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 16 * 2**20  # a day's histogram counts (malloc.py)
for attempt in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(block)
print(faults)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_large_block_freed_is_reused_without_faulting_its_pages_in_again():
    """Why the thresholds are set (malloc.py): a process's first query otherwise maps, faults in and unmaps
    each large array, and so does the next one of the same size; tuned, the heap keeps the pages."""
    def second_block_faults(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", _SECOND_BLOCK_FAULTS, mode], capture_output=True, text=True,
                             env=env, check=True)
        return int(out.stdout)

    pages = 16 * 2**20 // 4096
    assert second_block_faults("glibc") > pages // 2  # glibc's own thresholds: faulted in again
    assert second_block_faults("tuned") < pages // 20


def test_without_mallopt_nothing_happens(monkeypatch):
    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.tune() is False


def test_the_trimmer_trims_while_asked_and_until_closed():
    calls, pressed = [], []
    trimmer = malloc.Trimmer(lambda pad: calls.append(pad), interval_s=0.01, when=lambda: bool(pressed)).start()
    time.sleep(0.1)
    assert calls == []  # nothing presses: the pages stay for the next query
    pressed.append(1)
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.close()
    made = len(calls)
    time.sleep(0.05)
    assert made >= 3 and calls == [0] * made and trimmer.trims == made  # nothing after close


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trimming_returns_the_holes_freed_in_the_middle_of_the_heap():
    """Why the server trims: blocks freed below one still in use stay in RSS until malloc_trim."""
    blocks = [bytes(48 * 1024) for _ in range(1200)]  # ~56 MiB of heap blocks (below the mmap threshold)
    for i in range(len(blocks) - 1):  # free all but the last: one hole below a block still in use
        blocks[i] = None
    before = _rss_kib()
    trimmer = malloc.trimmer(lambda: True, interval_s=0.01).start()
    deadline = time.monotonic() + 5
    while trimmer.trims < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.close()
    assert before - _rss_kib() > 32 * 1024, (before, _rss_kib())
    del blocks
