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


# --- huge pages for the server's heap (malloc.exec_with_huge_pages) -------------------------------------------

@pytest.mark.parametrize("environ, thp_mode, glibc, expected", [
    ({}, "madvise", (2, 36), malloc.HUGE_PAGES_TUNABLE),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", (2, 35),
     "glibc.malloc.arena_max=2:" + malloc.HUGE_PAGES_TUNABLE),
    ({}, "madvise", (2, 34), None),  # no such tunable before 2.35
    ({}, None, (2, 36), None),  # no THP sysfs file (not Linux, or a kernel without THP)
    ({}, "always", (2, 36), None),  # the heap has huge pages already
    ({}, "never", (2, 36), None),
    ({}, "madvise", None, None),  # not glibc
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36), None),  # the user's choice
    # The re-executed process's environment names the tunable it was given: never a loop.
    ({"GLIBC_TUNABLES": malloc.HUGE_PAGES_TUNABLE, malloc.TUNABLES_BEFORE: ""}, "madvise", (2, 36), None),
])
def test_when_the_server_runs_again_with_huge_pages(environ, thp_mode, glibc, expected):
    assert malloc.huge_pages_tunables(environ, thp_mode, glibc) == expected


@pytest.mark.parametrize("args, command", [
    (["serve", "--db", "x.db"], "serve"),
    (["--log-level", "DEBUG", "serve"], "serve"),
    (["--log-level=DEBUG", "serve"], "serve"),
    (["keys", "create", "--name", "serve"], "keys"),
    (["--log-level", "serve", "keys", "list"], "keys"),  # (serve as the level's value: argparse says so too)
    (["--help"], None),
    ([], None),
])
def test_the_command_a_command_line_names(args, command):
    from otelite.collector.cli import _command
    assert _command(args) == command


def _heap_flags(pid: int) -> list[list[str]]:
    """The VmFlags of each `[heap]` mapping of a process (`hg`: madvise(MADV_HUGEPAGE) was asked for it)."""
    flags, mapping = [], ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                mapping = line.split()[-1]
            elif line.startswith("VmFlags:") and mapping == "[heap]":
                flags.append(line.split()[1:])
    return flags


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.decode().partition("=")[::2] for item in f.read().split(b"\0") if item)


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, from /proc (each of its threads lists the children it started)."""
    children = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children += [int(c) for c in f.read().split()]
        except OSError:  # (a thread that ended meanwhile)
            pass
    return children


_HUGE_PAGES_HERE = malloc.huge_pages_tunables(os.environ, malloc._thp_mode(), malloc._glibc_version()) is not None


@pytest.mark.skipif(not _HUGE_PAGES_HERE, reason="needs glibc 2.35+, THP in madvise mode, no GLIBC_TUNABLES hugetlb")
def test_the_server_heap_asks_for_huge_pages_and_its_workers_do_not(make_server):
    srv = make_server()  # started: it answered /healthz after running its command line again
    pid = srv.proc.pid  # (execve keeps the pid: the one the test started)
    env = _environ(pid)  # as of the execve
    assert malloc.HUGE_PAGES_TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")
    assert any("hg" in flags for flags in _heap_flags(pid)), _heap_flags(pid)
    deadline = time.monotonic() + 30
    while not _children(pid) and time.monotonic() < deadline:  # the decode workers
        time.sleep(0.1)
    children = _children(pid)
    assert children
    for child in children:
        assert "GLIBC_TUNABLES" not in _environ(child) and malloc.TUNABLES_BEFORE not in _environ(child)
        assert not any("hg" in flags for flags in _heap_flags(child))


@pytest.mark.skipif(not _HUGE_PAGES_HERE, reason="needs glibc 2.35+, THP in madvise mode, no GLIBC_TUNABLES hugetlb")
def test_glibc_tunables_naming_hugetlb_keep_the_server_as_it_was_started(make_server, monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    srv = make_server()
    env = _environ(srv.proc.pid)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0" and malloc.TUNABLES_BEFORE not in env
    assert not any("hg" in flags for flags in _heap_flags(srv.proc.pid))
