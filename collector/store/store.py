"""The store as the rest of otelite sees it: one file, one writer, read connections on demand."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from otelite.collector.store.db import connect_reader, prepare_database
from otelite.collector.store.points import PointCache
from otelite.collector.store.writer import Writer

if TYPE_CHECKING:
    from otelite.collector.config import BatchProcessorConfig, SqliteExporterConfig
    from otelite.collector.telemetry import Telemetry


T = TypeVar("T")


class Store:
    def __init__(self, config: "SqliteExporterConfig", batching: "BatchProcessorConfig",
                 telemetry: "Telemetry | None" = None) -> None:
        self.path = config.path
        # Migrate (or refuse a newer file) before anything listens, so a bad file stops the start.
        self.schema_version = prepare_database(self.path)
        self.writer = Writer(self.path, config, batching, telemetry)
        # One point cache for every dialect that queries metrics (collector/query), bounded by config.
        self.point_cache = PointCache(max(config.query_cache_mib, 0) * 2**20)
        self._local = threading.local()

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        """Drain the queue, commit, close the write connection."""
        self.writer.close()

    def admin_connection(self) -> sqlite3.Connection:
        """A plain read-write connection for rare management writes (projects, keys) outside the writer."""
        return sqlite3.connect(self.path, timeout=10)

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
