"""The store as the rest of otelite sees it: one file, one writer, read connections on demand.

Reads: `read(query, ...)` runs on a query worker's own read connection, within the read's time budget
(collector/store/budget.py). Writes: ingest batches through
`writer.submit` (collector/pipeline's sqlite exporter); every other write through `write(fn)` /
`write_sync(fn)`, which run `fn(conn)` on the writer's thread inside its group commit. No other
connection of the process writes (Datasette's `execute_write_fn` habit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from otelite.collector.store import budget
from otelite.collector.store.budget import QueriesBusy, QueryTimeout
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


# Reads allowed to wait for a query worker, per worker; beyond that a read is refused at once (503).
WAITING_PER_WORKER = 8
# Query workers run at this nice value: when the CPU is short, the kernel runs the event loop (health,
# OTLP acknowledgements) and the writer first, and hands them the GIL sooner when a reader releases it.
QUERY_NICE = 10


def _lower_priority() -> None:
    """Initializer of each query worker: lower this thread's scheduling priority (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), QUERY_NICE)
    except (AttributeError, OSError):
        pass  # a platform without per-thread priorities: reads still have their budget


class Store:
    def __init__(self, config: "SqliteExporterConfig", batching: "BatchProcessorConfig",
                 telemetry: "Telemetry | None" = None, *, retention: bool = True,
                 query_timeout: float | None = None, query_workers: int = 4) -> None:
        """`retention=False` for a short-lived store (the CLI's): expired rows are the server's to delete.
        `query_timeout` (seconds; None: unlimited) and `query_workers`: api.query_timeout / query_workers."""
        self.path = config.path
        # Migrate (or refuse a newer file) before anything listens, so a bad file stops the start.
        self.schema_version = prepare_database(self.path)
        self.writer = Writer(self.path, config, batching, telemetry, retention=retention)
        # One point cache for every dialect that queries metrics (collector/query), bounded by config.
        self.point_cache = PointCache(max(config.query_cache_mib, 0) * 2**20)
        # The forwarding exporters' durable queue: which signals the writer appends (export_log.py).
        self.export_log = ExportLog()
        self._local = threading.local()
        # Reads run on their own bounded pool, never asyncio's default executor: however many slow
        # queries are in flight, health, OTLP acknowledgements and everything else that uses a thread
        # never queue behind them.
        self.query_timeout = query_timeout
        self.query_workers = query_workers
        self._read_pool = concurrent.futures.ThreadPoolExecutor(query_workers, thread_name_prefix="otelite-read",
                                                                initializer=_lower_priority)
        self._max_reads = query_workers * (1 + WAITING_PER_WORKER)
        self._reads = 0  # submitted and not finished (running or waiting)
        self._reads_lock = threading.Lock()

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        """Drain the queue, commit, close the write connection; stop the query workers."""
        self._read_pool.shutdown(wait=False, cancel_futures=True)
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
        """Run `query(conn, *args)` on a query worker's own read connection, off the event loop, within
        the read budget (`query_timeout`, counted from this call: waiting for a worker counts). Over
        budget → QueryTimeout (the statement interrupted, the connection rolled back and reusable);
        too many reads already waiting → QueriesBusy at once. Both are 503s in api/errors.py."""
        started = time.monotonic()
        at = started + self.query_timeout if self.query_timeout is not None else None
        with self._reads_lock:
            if self._reads >= self._max_reads:
                raise QueriesBusy(self._reads - self.query_workers)
            self._reads += 1
        try:
            work = self._read_pool.submit(self._read_in_thread, at, query, *args)
        except BaseException:
            self._read_done(None)
            raise
        work.add_done_callback(self._read_done)
        future = asyncio.wrap_future(work)
        if at is not None:
            await asyncio.wait({future}, timeout=max(at - time.monotonic(), 0))
            if not future.done() and work.cancel():
                raise QueryTimeout(self.query_timeout, waited=True)  # never started: nothing to stop
        # Running: the deadline stops it (the progress handler, budget.check) and it answers promptly.
        return await future

    def _read_done(self, _work: object) -> None:
        with self._reads_lock:
            self._reads -= 1

    def _read_in_thread(self, at: float | None, query: Callable[..., T], *args: Any) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.reader()
        if at is not None and time.monotonic() >= at:
            raise QueryTimeout(self.query_timeout, waited=True)
        timed_out = False
        try:
            with budget.deadline(at, self.query_timeout):
                return query(conn, *args)
        except sqlite3.OperationalError as e:
            if not (budget.is_interrupt(e) and at is not None and time.monotonic() >= at):
                raise
            timed_out = True
        except QueryTimeout:
            timed_out = True
        finally:
            # Return the connection clean: no transaction a query function left open (ReadTransaction
            # interrupted before its ROLLBACK), so the next read gets a fresh snapshot.
            if conn.in_transaction:
                conn.rollback()
        # Raised outside the except blocks: the failed query's frames, and any cursor still stepping
        # in them, are released first, so no statement keeps an old snapshot open on this connection.
        assert timed_out
        raise QueryTimeout(self.query_timeout)
