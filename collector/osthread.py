"""Threads whose name the OS knows too (Linux: prctl PR_SET_NAME).

Python before 3.14 keeps `Thread.name` to itself, so `top -H`, `ps -T` and /proc/<pid>/task/*/comm show
every thread of the collector as "python", and an operator cannot tell whether the writer or a query is
the one using the CPU. The collector's own long-lived threads are `NamedThread`s; bench/ingest.py reads
the writer thread's CPU through that name (docs/benchmarks.md)."""

from __future__ import annotations

import ctypes
import threading

_PR_SET_NAME = 15  # linux/prctl.h; the kernel keeps the first 15 bytes
COMM_BYTES = 15


def name_os_thread(name: str) -> bool:
    """Give the calling thread `name` (its first COMM_BYTES bytes) in the OS. False where that is not
    possible (not Linux): the thread runs the same, unnamed."""
    try:
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:COMM_BYTES]), 0, 0, 0) == 0


class NamedThread(threading.Thread):
    """A thread that takes its Python name in the OS before it runs its target. `start` returns once it
    has, so that whoever looks for the thread by that name right after finds it (a test looking in /proc
    as soon as the store had started missed the writer on a busy machine)."""

    def start(self) -> None:
        self._named_in_os = threading.Event()
        super().start()
        self._named_in_os.wait()

    def run(self) -> None:
        try:
            name_os_thread(self.name)
        finally:
            self._named_in_os.set()
        super().run()
