"""The store as the rest of otelite sees it: one file, one writer, read connections on demand.

Reads: `read(query, ...)` runs on a worker thread's own read connection. Writes: ingest batches through
`writer.submit` (collector/pipeline's sqlite exporter); every other write through `write(fn)` /
`write_sync(fn)`, which run `fn(conn)` on the writer's thread inside its group commit. No other
connection of the process writes (Datasette's `execute_write_fn` habit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from otelite.collector.store.db import connect_reader, prepare_database
from otelite.collector.store.export_log import ExportLog
from otelite.collector.store.points import PointCache
from otelite.collector.store.writer import StoreUnavailable, Writer

if TYPE_CHECKING:
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.telemetry import Telemetry
    from otelite.exporters.sqlite.config import SqliteExporterConfig


T = TypeVar("T")


class StoreLocked(StoreUnavailable):
    """`write_sync` gave up waiting for the database's write lock; the function did not run."""


class Store:
    def __init__(self, config: "SqliteExporterConfig", batching: "BatchProcessorConfig",
                 telemetry: "Telemetry | None" = None, *, retention: bool = True) -> None:
        """`retention=False` for a short-lived store (the CLI's): expired rows are the server's to delete."""
        self.path = config.path
        # Migrate (or refuse a newer file) before anything listens, so a bad file stops the start.
        self.schema_version = prepare_database(self.path)
        self.writer = Writer(self.path, config, batching, telemetry, retention=retention)
        # One point cache for every dialect that queries metrics (collector/query), bounded by config.
        self.point_cache = PointCache(max(config.query_cache_mib, 0) * 2**20)
        # The forwarding exporters' durable queue: which signals the writer appends (export_log.py).
        self.export_log = ExportLog()
        self._local = threading.local()

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        """Drain the queue, commit, close the write connection."""
        self.writer.close()

    # -- writes -------------------------------------------------------------------------------------
    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the writer's thread inside its next group commit and return its result once
        committed; an exception fn raises is raised here, with fn's work (and only fn's) rolled back.
        See Writer.submit_write for what fn may do. Raises StoreFull when too many writes are waiting,
        StoreUnavailable when the commit failed.

        Once submitted the write completes even if the awaiting task is cancelled (like an ingest batch).
        """
        future = self.writer.submit_write(fn)
        return await asyncio.shield(asyncio.wrap_future(future))

    def write_sync(self, fn: Callable[[sqlite3.Connection], T], timeout: float | None = None) -> T:
        """`write` for code without an event loop (the CLI). With `timeout`, gives up with StoreLocked if
        fn has not started by then (another process holds the write lock): fn then never runs."""
        if self.writer.on_writer_thread():
            raise RuntimeError("write_sync called on the writer's own thread would wait for itself")
        future = self.writer.submit_write(fn)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise StoreLocked(f"the database stayed locked by another process for {timeout:g} s; "
                                  "nothing was written") from None
            return future.result()  # already running inside a transaction: it finishes promptly

    # -- reads --------------------------------------------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        """A new read connection (WAL: readers never block the writer). The caller closes it."""
        return connect_reader(self.path)

    async def read(self, query: Callable[..., T], *args: Any) -> T:
        """Run `query(conn, *args)` on a worker thread's own read connection, off the event loop."""
        return await asyncio.to_thread(self._read_in_thread, query, *args)

    def _read_in_thread(self, query: Callable[..., T], *args: Any) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.reader()
        return query(conn, *args)
