"""The single writer: a bounded queue in front of one thread that group-commits batches (store.md).

Receivers call `submit(batch)` and wait on the returned future; it completes only after the transaction
that holds the batch has committed, so an acknowledgement is a promise that survives `kill -9`.
When the queue is full `submit` raises `StoreFull` at once: the receiver answers 503/UNAVAILABLE with
Retry-After and the client retries; memory never grows with the offered load.

Every other write (projects, keys, later metric groups and Flux events) is a function submitted with
`submit_write(fn)` (the Datasette habit: `execute_write_fn`): it runs here, on this thread, inside the
same group commit as the ingest batches, so the process opens no second writing connection.

sqlite3 releases the GIL while SQLite steps, so parsing in the event loop overlaps with commits here.

Between commits the same thread does the store's background work, one short transaction at a time
(issue 16): the compactor merges metric chunks and moves points from the head into chunks (compactor.py;
the commit itself packs most points into chunks, appender.py), the trace-index runs move from their
head into the runs table (spans.py), a migrated database's trace index is copied into runs (spans.py)
and its spans are counted by service (span_counts.py), and retention deletes expired rows. The hourly
metric rollups are built on a thread of their own (rollups.py) and only stored here.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import operator
import sqlite3
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from otelite.collector.osthread import NamedThread
from otelite.collector.store import export_log
from otelite.collector.store.appender import PointAppender
from otelite.collector.store.bulk import BulkInsert
from otelite.collector.store.checkpoint import SAFETY_PAGES, Checkpointer
from otelite.collector.store.compactor import CLOSE_AFTER_NS, TARGET_POINTS, Compactor, expire_metrics, last_head_id
from otelite.collector.store.db import connect_writer, database_bytes
from otelite.collector.store.events import delete_events_before
from otelite.collector.store.rollups import RollupBuilder
from otelite.collector.store.records import (LABEL_COLUMNS, RESOURCE_COLUMNS, SCOPE_COLUMNS,
                                     SERIES_COLUMNS, SeriesLeftOut, SlicedBatch, WriteBatch,
                                     series_labels)
from otelite.collector.store.series_cache import SeriesCache, stored_series
from otelite.collector.store.series_state import LAST_SEEN_LAG_NS, SeriesStateUpdater
from otelite.collector.store.span_counts import CountBackfill, count_spans, expire_counts
from otelite.collector.store.spans import RunBackfill, RunMerge, expire_runs, insert_spans
from otelite.collector.store.tracing import LEGACY_ROLLUP, legacy_rollup

if TYPE_CHECKING:
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.telemetry import Telemetry
    from otelite.exporters.sqlite.config import SqliteExporterConfig

log = logging.getLogger("otelite.store")

_KNOWN_IDS_MAX = 1_000_000  # cap on the caches of ids known to exist (resources, scopes, series)
STUCK_AFTER_S = 10.0  # /healthz reports 503 when work has waited this long without a commit
# Write functions waiting for the writer. They are small management writes, bounded on their own so that
# ingest filling its queue never refuses them (and they never take room from ingest).
MAX_PENDING_WRITES = 1024
_WRITES_PER_COMMIT = 64  # keeps one group's transaction short whatever is queued
_BACKGROUND_PAUSE_S = 5.0  # background work waits this long after a step raised (no spinning on a bug)


class StoreFull(Exception):
    """The queue cannot take this batch now; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int, reason: str = "the store's queue is full") -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class StoreUnavailable(Exception):
    """The batch could not be committed (e.g. disk full); nothing of it was stored. Retryable."""


class SeriesNotStored(StoreUnavailable):
    """A batch left out the rows of series the store does not have (records.SeriesLeftOut): nothing of it
    was stored. Its sender walks the request again with every row (pipeline/ingest.py); to anyone else it
    is a StoreUnavailable."""


def _insert(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_SQL_RESOURCE = _insert("resources", RESOURCE_COLUMNS, "INSERT OR IGNORE")
_SQL_SCOPE = _insert("scopes", SCOPE_COLUMNS, "INSERT OR IGNORE")
_SQL_SERIES = _insert("metric_series", SERIES_COLUMNS, "INSERT OR IGNORE")
_SQL_LABEL = _insert("metric_series_labels", LABEL_COLUMNS, "INSERT OR IGNORE")
_SQL_SERIES_SEEN = "UPDATE metric_series SET last_seen_ns = ?1 WHERE id = ?2 AND last_seen_ns < ?1"
_INSERT_ATTR_KEYS = BulkInsert("INSERT INTO span_attribute_keys (project_id, attribute_type, key, hour, count)", 5,
                               " ON CONFLICT DO UPDATE SET count = count + excluded.count")
_rollup_order = operator.itemgetter(0, 1, 4, 2, 3)  # span_attribute_values' primary key, from insert order
_INSERT_ATTR_VALUES = BulkInsert(
    "INSERT INTO span_attribute_values (project_id, attribute_type, key, value, hour, count)", 6,
    " ON CONFLICT DO UPDATE SET count = count + excluded.count")


@dataclass(slots=True)
class _Entry:
    batch: WriteBatch | SlicedBatch
    size: int
    future: concurrent.futures.Future
    export: "export_log.ExportRecord | None" = None  # appended to the export log in the same commit


@dataclass(slots=True)
class _WriteFn:
    fn: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future
    started: bool = False  # the future is running: it can no longer be cancelled
    ok: bool = False
    outcome: Any = None  # fn's result, or the exception it raised


class _TransactionLost(Exception):
    """A write function ended the writer's transaction (it must never COMMIT, ROLLBACK or BEGIN)."""


class Writer:
    """Owns the write connection. `start()` opens it; `close()` drains the queue, commits and stops."""

    def __init__(self, path: str, config: "SqliteExporterConfig", batching: "BatchProcessorConfig",
                 telemetry: "Telemetry | None" = None, *, retention: bool = True) -> None:
        self.path = path
        self._config = config
        self._batching = batching
        self._telemetry = telemetry
        self._cond = threading.Condition()
        self._pending: deque[_Entry] = deque()
        self._writes: deque[_WriteFn] = deque()
        self._queued = 0  # admitted and not yet committed, in the sizer's unit
        self._pressed_since = False  # `pressed` at some moment since `pressed_since_asked`
        self._closing = False
        self._refusing: str | None = None  # set by the memory limiter
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._known_resources: set[int] = set()
        self._known_scopes: set[int] = set()
        self._known_series: set[int] = set()
        self._series_state = SeriesStateUpdater()  # metric_series_state, see _update_state
        # series id → the last_seen_ns this writer stored in metric_series (see _write: it lags by up to
        # LAST_SEEN_LAG_NS; metric_series_state.time_ns has the exact newest time).
        self._stored_seen: dict[int, int] = {}
        self._pending_seen: dict[int, int] = {}  # series id → last_seen_ns the commit being written stored
        self._head_hi = 0  # the largest arrival number (head rowid) given to a point (appender.py)
        self._commit_head_hi = 0  # the largest head rowid the commit being written inserted (0: none)
        self._commit_runs = 0  # trace-index runs the commit being written put into their head
        self._appender = PointAppender(config.compaction.direct_min_points)
        self._series_info = SeriesCache(_KNOWN_IDS_MAX)  # what the points' series are (series_cache.py)
        self._checkpointer: Checkpointer | None = None  # WAL checkpoints off the commit path (checkpoint.py)
        self.rollups: RollupBuilder | None = None  # hourly metric rollups, built off this thread (rollups.py)
        c = config.compaction
        self.compactor = Compactor(c.head_max_age, c.head_max_points, c.step_rows)
        self._run_backfill = RunBackfill(c.step_rows)
        self._count_backfill = CountBackfill(c.step_rows)
        self.run_merge = RunMerge(c.step_rows, c.trace_head_runs)  # the trace-index head into the runs table (spans.py)
        self._last_progress = time.monotonic()
        # The server's writer deletes expired rows; a short-lived one (the CLI's) leaves that to it.
        self._next_retention = time.monotonic() if retention else float("inf")
        self._serves = retention
        self._retention_more = False
        self._background_resume = 0.0  # background steps wait until then after one raised
        self.committed_items = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        c = self._config
        self._conn = connect_writer(self.path, synchronous=c.synchronous, cache_mib=c.cache_mib,
                                    busy_timeout=c.busy_timeout, autocheckpoint_pages=SAFETY_PAGES)
        self._checkpointer = Checkpointer(self.path, c.synchronous)
        self._checkpointer.start()
        if self._serves:  # (a short-lived writer, the CLI's, leaves background work to the server)
            self.rollups = RollupBuilder(self.path, self.submit_write, CLOSE_AFTER_NS, TARGET_POINTS,
                                         busy=self.pressed)
            self.rollups.start()
        self.compactor.start(self._conn)
        self._appender.start(self._conn)
        self._head_hi = last_head_id(self._conn)
        self._run_backfill.start(self._conn)
        self._count_backfill.start(self._conn)
        self.run_merge.start(self._conn)
        self._thread = NamedThread(target=self._run, name="otelite-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking batches, commit everything queued, close the connection."""
        if self.rollups is not None:  # (it waits on its writes: stopped while this thread still runs)
            self.rollups.close()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._conn is not None and (self._thread is None or not self._thread.is_alive()):
            self._conn.close()  # the last connection to close checkpoints the rest of the WAL
            self._conn = None

    # -- admission ----------------------------------------------------------------------------------
    def submit(self, batch: WriteBatch | SlicedBatch, export: "export_log.ExportRecord | None" = None
               ) -> concurrent.futures.Future:
        """Queue `batch`; the future resolves after its commit. Raises StoreFull when it cannot fit.
        `export`: the batch's OTLP request, appended to the export log (export_log.py) in the transaction
        that stores the batch, so forwarders queue exactly what was acknowledged."""
        size = batch.items if self._config.sending_queue.sizer == "items" else 1
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise StoreFull(1, "the collector is shutting down")
            if self._refusing:
                raise StoreFull(1, self._refusing)
            # A batch larger than the whole queue is admitted alone, or it could never be stored.
            if self._queued and self._queued + size > self._config.sending_queue.queue_size:
                raise StoreFull(self._retry_after())
            if not self._queued:
                # Work waits from now: the time the writer spent idle, or on background steps with
                # nothing queued, is not time this work has waited (an idle minute then a request whose
                # first part takes a second read as a stuck writer, and /healthz said 503).
                self._last_progress = time.monotonic()
            self._queued += size
            self._pressed_since |= 2 * self._queued > self._config.sending_queue.queue_size
            self._pending.append(_Entry(batch, size, fut, export))
            self._cond.notify()
        if self._telemetry:
            self._telemetry.queue_size.set(self._queued)
        return fut

    def submit_write(self, fn: Callable[[sqlite3.Connection], Any]) -> concurrent.futures.Future:
        """Queue `fn(conn)` to run on the writer thread inside the next group commit; the future resolves
        after that commit with fn's result, or with the exception fn raised (its work rolled back).

        Contract for `fn`: it uses only `conn` (no COMMIT, ROLLBACK or BEGIN: the writer owns the
        transaction), has no effect outside the database, and may run more than once (a transaction the
        database was too busy to commit is rolled back and run again). A read-check-write inside one fn
        is atomic: the writer holds SQLite's write lock (BEGIN IMMEDIATE) from before fn until the commit.
        A future cancelled before fn started means fn never runs. Raises StoreFull when
        MAX_PENDING_WRITES are waiting or the writer is closing.
        """
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise StoreFull(1, "the collector is shutting down")
            if len(self._writes) >= MAX_PENDING_WRITES:
                raise StoreFull(1, "too many writes are waiting for the store")
            self._writes.append(_WriteFn(fn, fut))
            self._cond.notify()
        return fut

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def check_admission(self) -> None:
        """Raise StoreFull now if no batch could be admitted at the moment (queue full, refusing, closing).

        Receivers call it before reading and normalizing a request: under overload, parsing requests only
        to refuse them kept the event loop busy and starved this writer of the GIL, so commits (and
        acknowledgements) almost stopped. Advisory: `submit` still decides.
        """
        if self._closing:
            raise StoreFull(1, "the collector is shutting down")
        if self._refusing:
            raise StoreFull(1, self._refusing)
        if self._queued >= self._config.sending_queue.queue_size:
            raise StoreFull(self._retry_after())

    def refuse(self, reason: str | None) -> None:
        """Memory limiter hook: refuse new batches with `reason` (None: accept again)."""
        self._refusing = reason

    def pressed(self) -> bool:
        """Whether ingest presses now: more than half the queue is taken (derived work waits)."""
        return 2 * self._queued > self._config.sending_queue.queue_size

    def pressed_since_asked(self) -> bool:
        """Whether ingest has pressed (`pressed`) at some moment since the last call (malloc.py trims then)."""
        with self._cond:
            pressed, self._pressed_since = self._pressed_since, self.pressed()
        return pressed

    @property
    def queued(self) -> int:
        return self._queued

    def is_stuck(self) -> bool:
        """True when queued work has waited STUCK_AFTER_S with nothing committed or written since it
        arrived (`_last_progress` is set when work enters an empty queue and at each part and commit),
        or when the writer thread died (health check)."""
        dead = self._thread is not None and not self._thread.is_alive() and not self._closing
        return dead or (self._queued > 0 and time.monotonic() - self._last_progress > STUCK_AFTER_S)

    def _retry_after(self) -> int:
        return 5 if self.is_stuck() else 1

    # -- the writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        max_items = self._batching.send_batch_max_size or max(self._batching.send_batch_size, 1) * 4
        while True:
            with self._cond:
                while not self._pending and not self._writes and not self._closing:
                    if self._retention_due() or self._maintenance_due():
                        break
                    self._cond.wait(min(3600.0, max(0.05, self._next_retention - time.monotonic()),
                                        max(0.05, self.compactor.next_due_in())))
                if self._closing and not self._pending and not self._writes:
                    break
                # A waiting write function is not held back for batch.timeout: it commits now.
                if self._pending and not self._writes and self._batching.timeout > 0:
                    self._wait_for_more()
                taken: list[_Entry] = []
                n = 0
                while self._pending and (not taken or n + self._pending[0].batch.items <= max_items):
                    entry = self._pending.popleft()
                    taken.append(entry)
                    n += entry.batch.items
                writes = [self._writes.popleft() for _ in range(min(len(self._writes), _WRITES_PER_COMMIT))]
            if taken or writes:
                self._commit(taken, writes)
            try:
                if self._retention_due():
                    self._retention_chunk()
                elif self._maintenance_due():
                    self._maintenance_step()
            except Exception:  # noqa: BLE001 - derived work: its failure must not end ingest's thread
                log.exception("a background step (retention, compaction, backfill) failed; ingest goes on, "
                              "and it is tried again in %.0f s", _BACKGROUND_PAUSE_S)
                self._rollback(self._conn)
                self._background_resume = time.monotonic() + _BACKGROUND_PAUSE_S

    def _maintenance_due(self) -> bool:
        return time.monotonic() >= self._background_resume and (
            self._run_backfill.active or self._count_backfill.active or self.run_merge.due()
            or self.compactor.due())

    def _maintenance_step(self) -> None:
        """One step of background work between commits (module docstring); each is its own transaction."""
        conn = self._conn
        assert conn is not None
        if self._run_backfill.active:
            self._run_backfill.step(conn)
        elif self._count_backfill.active:
            self._count_backfill.step(conn)
        elif self.run_merge.due():  # a pass takes a few steps (head ÷ step_rows); the compactor waits
            self.run_merge.step(conn)
        elif self.compactor.due():
            self.compactor.step(conn)
            self._appender.moved(self.compactor.moved_to)

    def _wait_for_more(self) -> None:
        """processors.batch: wait up to `timeout` for send_batch_size items (the cond's lock is held)."""
        deadline = time.monotonic() + self._batching.timeout
        while sum(e.batch.items for e in self._pending) < self._batching.send_batch_size and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _commit(self, entries: list[_Entry], writes: list[_WriteFn]) -> None:
        """One group commit: the merged ingest batches, then each write function in its own SAVEPOINT.

        Why savepoints inside the group rather than a transaction per function between batches: a function
        that raises is rolled back to its savepoint alone (the batches and the other functions in the group
        still commit), while a burst of small writes (metric-group edits, Flux events) costs one commit, not
        one each, and waits for no extra turn of the writer behind queued ingest.
        """
        conn = self._conn
        assert conn is not None
        whole = [e.batch for e in entries if isinstance(e.batch, WriteBatch)]
        merged = _merge(whole) if whole else None
        # A request walked in parts (records.SlicedBatch): its parts are written one after the other in
        # this same transaction, each unpickled only when its turn comes, so its rows are never all in
        # memory at once and it is committed, or refused, as a whole.
        sliced = [e.batch for e in entries if isinstance(e.batch, SlicedBatch)]
        exports = [e.export for e in entries if e.export is not None]
        attempt = 0
        while True:
            # A write whose caller gave up (cancelled) before it started is dropped, not run.
            writes = [w for w in writes if w.started or not w.future.cancelled()]
            if not entries and not writes:
                return
            started = time.perf_counter()
            self._pending_seen, self._commit_head_hi, self._commit_runs = {}, 0, 0
            spans = points = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                new_ids: tuple[list[int], ...] = ([], [], [])
                parts = itertools.chain([merged] if merged is not None else [], *(s.batches() for s in sliced))
                for batch in parts:
                    new_ids = tuple(known + ids for known, ids in zip(new_ids, self._write(conn, batch)))
                    spans, points = spans + len(batch.spans), points + len(batch.points)
                    del batch  # a part's rows are freed before the next part is unpickled
                    # A large request's transaction can outlast STUCK_AFTER_S on a slow machine: each part
                    # written is progress, so /healthz does not call the writer stuck (and a liveness
                    # probe does not restart the collector in the middle of it, again and again).
                    self._last_progress = time.monotonic()
                if exports:
                    export_log.append(conn, exports, time.time_ns())
                for w in writes:
                    self._run_write(conn, w)
                conn.execute("COMMIT")
                break
            except sqlite3.OperationalError as e:
                self._rollback(conn)
                if _is_busy(e):
                    # Another process holds the lock: keep the batch and retry; clients are still
                    # waiting and nothing may be lost. The queue fills meanwhile and admission says 503.
                    attempt += 1
                    log.warning("database busy, retrying commit (attempt %d)", attempt)
                    time.sleep(min(0.05 * attempt, 1.0))
                    continue
                self._fail_or_split(entries, writes, e)
                return
            except Exception as e:  # noqa: BLE001 - any failure must settle the waiting clients
                self._rollback(conn)
                self._fail_or_split(entries, writes, e)
                return
        elapsed = time.perf_counter() - started
        if points:
            self.compactor.note_commit(conn, self._commit_head_hi)
        self.run_merge.added(self._commit_runs)
        if self._pending_seen:
            if len(self._stored_seen) > _KNOWN_IDS_MAX:
                self._stored_seen.clear()
            self._stored_seen.update(self._pending_seen)
        for ids, known in zip(new_ids, (self._known_resources, self._known_scopes, self._known_series)):
            if len(known) > _KNOWN_IDS_MAX:
                known.clear()
            known.update(ids)
        with self._cond:
            self._queued -= sum(e.size for e in entries)
            self._last_progress = time.monotonic()
        for e in entries:
            _settle(e.future, None)
        for w in writes:
            if w.started:
                _settle_write(w.future, w.outcome if w.ok else None, None if w.ok else w.outcome)
        t = self._telemetry
        if t:
            t.commit_seconds.observe(elapsed)
            t.queue_size.set(self._queued)
        self.committed_items += spans + points
        if t and (spans or points):
            t.rows.labels("spans").inc(spans)
            t.rows.labels("metric_points").inc(points)

    @staticmethod
    def _run_write(conn: sqlite3.Connection, w: _WriteFn) -> None:
        """Run one write function inside the open transaction, in its own savepoint."""
        if not w.started:
            if not w.future.set_running_or_notify_cancel():
                return  # cancelled just now: never runs
            w.started = True
        conn.execute("SAVEPOINT write_fn")
        try:
            w.outcome, w.ok = w.fn(conn), True
        except Exception as e:  # noqa: BLE001 - fn's own failure, reported to its caller alone
            w.outcome, w.ok = e, False
            if conn.in_transaction:
                conn.execute("ROLLBACK TO write_fn")
        if not conn.in_transaction:
            # The group's other work is gone (or was committed early): fail the whole group, so that no
            # caller is told its data is stored on the strength of a transaction fn ended.
            raise _TransactionLost("a write function ended the writer's transaction")
        conn.execute("RELEASE write_fn")

    def _write(self, conn: sqlite3.Connection, b: WriteBatch) -> tuple[list[int], list[int], list[int]]:
        # What this commit wrote to last_seen_ns so far (_pending_seen and _commit_head_hi gather over the
        # batches of one commit, see _commit), over what earlier commits wrote. A series an earlier part of
        # this commit stored is in it: it is not new again (its row keeps that part's first_seen_ns).
        pending_seen = self._pending_seen
        new_resources = [i for i in b.resources if i not in self._known_resources]
        new_scopes = [i for i in b.scopes if i not in self._known_scopes]
        # Nearly every series of a commit is known: one superset test in C (0.3 ms for 8,000 series) before
        # a Python step per series (1-2 ms).
        new_series = [] if self._known_series.issuperset(b.series) else [
            i for i in b.series if i not in self._known_series and i not in pending_seen]
        if new_resources:
            conn.executemany(_SQL_RESOURCE, [b.resources[i] for i in new_resources])
        if new_scopes:
            conn.executemany(_SQL_SCOPE, [b.scopes[i] for i in new_scopes])
        if b.spans:
            # Grouped by trace, with one trace-index run per trace into the runs' head (spans.py).
            self._commit_runs += insert_spans(conn, b.spans)
            count_spans(conn, b.spans)  # per service and 10 s / minute, for the sparkline (span_counts.py)
        if b.span_attribute_keys:
            _INSERT_ATTR_KEYS.run(conn, [k + (n,) for k, n in b.span_attribute_keys.items()])
        if b.span_attribute_values:
            # In the table's key order (project, type, hour, key, value; migration 0010): each upsert
            # lands next to the previous one, in pages the last one just read.
            _INSERT_ATTR_VALUES.run(conn, sorted((k + (n,) for k, n in b.span_attribute_values.items()),
                                                 key=_rollup_order))
        if new_series:
            rows = [b.series[i] for i in new_series]
            conn.executemany(_SQL_SERIES, rows)
            # row[8] is the resource id; the batch carries every resource its series use.
            conn.executemany(_SQL_LABEL, [lab for r in rows for lab in series_labels(r, b.resources[r[8]][2])])
            pending_seen.update((r[0], r[12]) for r in rows)
        if b.points:
            # Straight into chunks or into the head (appender.py). Arrival numbers continue past every one
            # ever used, also when the compactor has emptied the head (they order equal times and are a
            # tally's write order); a commit that rolls back leaves a gap, which is harmless.
            series = self._series_info.update(b.series)
            left_out = b.series_left_out
            if left_out is not None:
                # Only series stored before may go without their rows: points of any other would be kept
                # under no metric. The walker sees to it (walker.py); this makes sure of it.
                if not self._known_series.issuperset(left_out.ids):
                    unknown = set(left_out.ids).difference(self._known_series, pending_seen)
                    absent = unknown.difference(stored_series(conn, unknown))
                    if absent:
                        raise SeriesNotStored(f"{len(absent)} series left out of a batch are not stored")
                self._series_info.refresh(conn, left_out)
            first = self._head_hi + 1
            self._head_hi, head_hi = self._appender.append(conn, b.points, series, first, b.bucket_counts,
                                                           lambda ids: self._series_info.fetch(conn, ids))
            self._commit_head_hi = max(self._commit_head_hi, head_hi)
            newest, behind = self._update_state(conn, b, series)
            # metric_series.last_seen_ns: the newest point time is exactly max(last_seen_ns, state time_ns),
            # and the state row already moved in this commit; so last_seen_ns is written only where the
            # state does not carry the newest time (`behind`: a delta series whose newest point had no
            # value), and otherwise once it lags by more than LAST_SEEN_LAG_NS, which keeps its index
            # (live series for the scrape) close. It was one UPDATE per series per commit before.
            stored_seen = self._stored_seen
            seen = [(t, sid) for sid, t in newest.items()
                    if sid in behind or t > (pending_seen[sid] if sid in pending_seen
                                             else stored_seen.get(sid, -LAST_SEEN_LAG_NS - 1)) + LAST_SEEN_LAG_NS]
            if seen:
                conn.executemany(_SQL_SERIES_SEEN, seen)
                pending_seen.update((sid, t) for t, sid in seen)
        return new_resources, new_scopes, new_series

    def _update_state(self, conn: sqlite3.Connection, b: WriteBatch, series: dict
                      ) -> tuple[dict[int, int], set[int]]:
        """prometheus.md: keep each series' latest state (delta sums and histograms as exact running totals)
        current in the same transaction as its points, so a scrape reads one row per live series.
        Returns each series' newest point time in the batch and the series whose state time is older."""
        return self._series_state.update(conn, b, series)

    def _fail_or_split(self, entries: list[_Entry], writes: list[_WriteFn], error: Exception) -> None:
        """A group commit failed: when it held more than one request, commit each on its own, so that data
        SQLite refuses fails its own request only. Otherwise every request grouped with it would be told
        503 and, retried, be grouped with it again (one client could keep the others' data out); a store
        that cannot write at all (disk full) fails each of them just the same."""
        if len(entries) < 2:
            self._fail(entries, writes, error)
            return
        log.warning("commit of %d requests failed (%s); committing each on its own", len(entries), error)
        for entry in entries:
            self._commit([entry], [])
        if writes:
            self._commit([], writes)

    def _fail(self, entries: list[_Entry], writes: list[_WriteFn], error: Exception) -> None:
        log.error("commit failed, %d requests and %d writes not stored: %s", len(entries), len(writes), error)
        with self._cond:
            self._queued -= sum(e.size for e in entries)
        for e in entries:
            _settle(e.future, error if isinstance(error, SeriesNotStored)
                    else StoreUnavailable("the store could not commit the data"))
        for w in writes:
            _settle_write(w.future, None, StoreUnavailable("the store could not commit the write"))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # -- retention (store.md: small chunks, never stalling ingest) ----------------------------------
    def _retention_due(self) -> bool:
        now = time.monotonic()
        return now >= self._background_resume and (self._retention_more or now >= self._next_retention)

    def _retention_chunk(self) -> None:
        r = self._config.retention
        conn = self._conn
        assert conn is not None
        now_ns = time.time_ns()
        deleted = 0
        more_traces = more_points = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            if r.traces > 0:
                cutoff = now_ns - int(r.traces * 1e9)
                for (project_id,) in conn.execute("SELECT id FROM projects").fetchall():
                    deleted += conn.execute(
                        "DELETE FROM spans WHERE id IN (SELECT id FROM spans WHERE project_id = ? "
                        "AND start_ns < ? LIMIT ?)", (project_id, cutoff, r.chunk_rows)).rowcount
                    more_traces |= expire_counts(conn, project_id, cutoff, r.chunk_rows)
                hour = cutoff // 3_600_000_000_000
                legacy = (LEGACY_ROLLUP,) if legacy_rollup(conn) else ()
                for table in ("span_attribute_keys", "span_attribute_values") + legacy:
                    conn.execute(f"DELETE FROM {table} WHERE hour < ?", (hour,))
                more_traces |= expire_runs(conn, r.chunk_rows)  # trace-index runs of deleted spans
            if r.metrics > 0:
                cutoff = now_ns - int(r.metrics * 1e9)
                more_points = expire_metrics(conn, cutoff, r.chunk_rows)
                # Flux events live as long as the metrics sent beside them (flux.md; events.py).
                for (project_id,) in conn.execute("SELECT id FROM projects").fetchall():
                    deleted += delete_events_before(conn, project_id, cutoff, r.chunk_rows)
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback(conn)
            log.warning("retention pass failed, will retry: %s", e)
            deleted, more_traces, more_points = 0, False, False
        # More than a chunk's worth left: come back right after the next ingest commit.
        self._retention_more = deleted >= r.chunk_rows or more_traces or more_points
        self._next_retention = time.monotonic() + r.check_interval
        if self._telemetry:
            self._telemetry.database_bytes.set(database_bytes(self.path))


def _settle(future: concurrent.futures.Future, error: Exception | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _settle_write(future: concurrent.futures.Future, result: Any, error: Exception | None) -> None:
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by its caller before it started: nobody is waiting


def _is_busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(e) or "busy" in str(e)


def _add_counts(into: dict, counts: dict) -> None:
    """into += counts, key by key. Rollup keys of high-cardinality attributes are mostly new to `into`:
    they are copied by dict.update (in C), and only keys both hold are summed in Python (Counter.update
    loops in Python over every key: 18% of the writer thread's time on spans, py-spy)."""
    both = into.keys() & counts.keys()
    summed = {k: into[k] + counts[k] for k in both}
    dict.update(into, counts)  # not Counter.update, which adds key by key in Python
    dict.update(into, summed)


def _merge(batches: list[WriteBatch]) -> WriteBatch:
    """One group commit writes the union of its requests (fewer statements, merged rollup counts)."""
    if len(batches) == 1:
        return batches[0]
    out = WriteBatch(span_attribute_keys=Counter(), span_attribute_values=Counter())
    for b in batches:
        out.resources.update(b.resources)
        out.scopes.update(b.scopes)
        out.spans.extend(b.spans)
        _add_counts(out.span_attribute_keys, b.span_attribute_keys)
        _add_counts(out.span_attribute_values, b.span_attribute_values)
        if b.bucket_counts:
            at = len(out.points)
            out.bucket_counts.update({at + i: c for i, c in b.bucket_counts.items()})
        out.points.extend(b.points)
    for b in reversed(batches):  # the first batch's row of a series wins (dict.update in C, not a loop)
        out.series.update(b.series)
    left_out = [b.series_left_out for b in batches if b.series_left_out is not None]
    if left_out:
        out.series_left_out = SeriesLeftOut.join(left_out)
    return out
