"""WAL checkpoints off the acknowledgement path (issue 16).

By default SQLite checkpoints inside the COMMIT that takes the WAL past 1000 pages: that commit copies
the changed pages back into the database file, at their places all over it, and waits for the file's
fsync, and every request of its group commit waits with it. On a 10M-span store a third of the writer
thread's time was in COMMIT (py-spy, docs/benchmarks.md). Here the writer's connection checkpoints only
as a safety net (`SAFETY_PAGES`: the WAL cannot grow without bound if this thread falls behind), and a
thread of its own, with its own connection, runs a PASSIVE checkpoint every `INTERVAL_S`: PASSIVE takes no
lock a writer or reader waits on (it copies what no reader still needs; WAL mode lets commits go on
meanwhile), and the next commit after a complete one starts the WAL over from its beginning.

Durability is unchanged: a commit is acknowledged once it is in the WAL, as before (store.md); the
checkpoint only moves committed pages into the main file, with the writer's `synchronous` setting.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from otelite.collector.osthread import NamedThread

log = logging.getLogger("otelite.store")

INTERVAL_S = 0.5  # between passive checkpoints
SAFETY_PAGES = 16384  # the writer's own autocheckpoint threshold (64 MiB of 4 KiB pages)


class Checkpointer:
    def __init__(self, path: str, synchronous: str = "NORMAL", interval_s: float = INTERVAL_S) -> None:
        self.path = path
        self.synchronous = "FULL" if synchronous.upper() == "FULL" else "NORMAL"
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed passes (tests, telemetry)

    def start(self) -> None:
        self._thread = NamedThread(target=self._run, name="otelite-checkpointer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=1.0)
        try:
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            while not self._stop.wait(self.interval_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as e:  # busy with another checkpoint, a locked file: the next pass retries
                    log.debug("passive checkpoint skipped: %s", e)
        finally:
            conn.close()
