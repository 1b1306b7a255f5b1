"""The read budget (issue 10, "Queries never block ingest or health"), on a real store and SQLite file.

Every read through `Store.read` gets `query_timeout`: a statement still running at the deadline is
interrupted by the read connection's progress handler, a Python loop stops at its next `budget.check()`,
the caller gets QueryTimeout, and the connection is rolled back and reused with a fresh snapshot. Reads run
on their own bounded pool: a saturated pool answers QueryTimeout / QueriesBusy instead of queueing
without end. The live side (503 in the dialect's shape, /healthz and OTLP meanwhile) is in
tests/test_hostile_input.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store import budget
from otelite.collector.store.budget import QueriesBusy, QueryTimeout
from otelite.collector.store.store import WAITING_PER_WORKER, Store
from otelite.exporters.sqlite.config import SqliteExporterConfig
from conftest import trace_request

# A statement SQLite runs for minutes: counting to 10^10 in a recursive CTE.
ENDLESS_SQL = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10000000000) " \
              "SELECT count(*) FROM c"


def _store(tmp_path, **kw) -> Store:
    store = Store(SqliteExporterConfig(path=str(tmp_path / "budget.db")), BatchProcessorConfig(), **kw)
    store.start()
    return store


def _endless_sql(conn):
    return conn.execute(ENDLESS_SQL).fetchone()


def _endless_python(conn):
    while True:
        budget.check()


def _count_spans(conn):
    return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def _in_transaction(conn):
    return conn.in_transaction


def _ingest(store: Store, n: int, seed: int) -> None:
    store.writer.submit(traces_to_batch(trace_request(n, seed), 1)).result(timeout=10)


def test_a_statement_over_budget_is_interrupted_and_the_connection_is_reusable(tmp_path):
    store = _store(tmp_path, query_timeout=0.3, query_workers=1)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match=r"longer than its time budget of 0.3 s \(api.query_timeout\)"):
            asyncio.run(store.read(_endless_sql))
        assert time.monotonic() - started < 2.0  # stopped near the deadline, not after minutes
        # The one worker's connection answers the next read, outside any transaction.
        assert asyncio.run(store.read(_in_transaction)) is False
        assert asyncio.run(store.read(_count_spans)) == 0
    finally:
        store.close()


def test_a_python_loop_over_budget_stops_at_its_next_check(tmp_path):
    store = _store(tmp_path, query_timeout=0.2, query_workers=1)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout):
            asyncio.run(store.read(_endless_python))
        assert time.monotonic() - started < 2.0
    finally:
        store.close()


def test_a_read_stopped_inside_a_transaction_leaves_no_snapshot_behind(tmp_path):
    """A read that opened a transaction (a consistent snapshot over several SELECTs) and a cursor it was
    stepping through, then ran out of time: the next read on that connection sees rows committed since."""
    store = _store(tmp_path, query_timeout=0.3, query_workers=1)
    _ingest(store, 3, seed=1)

    def snapshot_then_loop(conn):
        conn.execute("BEGIN")
        rows = conn.execute("SELECT id FROM spans")  # a cursor left mid-way
        next(rows)
        _endless_python(conn)

    try:
        with pytest.raises(QueryTimeout):
            asyncio.run(store.read(snapshot_then_loop))
        _ingest(store, 5, seed=2)
        assert asyncio.run(store.read(_count_spans)) == 8
        assert asyncio.run(store.read(_in_transaction)) is False
    finally:
        store.close()


def test_other_errors_pass_through_unchanged(tmp_path):
    store = _store(tmp_path, query_timeout=5, query_workers=1)

    def broken(conn):
        conn.execute("SELECT no_such_column FROM spans")

    try:
        with pytest.raises(Exception, match="no such column") as caught:
            asyncio.run(store.read(broken))
        assert not isinstance(caught.value, QueryTimeout)
    finally:
        store.close()


def test_a_read_waiting_for_a_busy_worker_gives_up_at_its_deadline(tmp_path):
    """One worker, held by a slow read: the next read waits, and answers QueryTimeout (waited) when its
    own budget is spent, without ever running."""
    store = _store(tmp_path, query_timeout=0.5, query_workers=1)
    ran = threading.Event()

    def holds_the_worker(conn):
        time.sleep(1.2)  # no budget check: the worker stays taken past the next read's deadline
        return "done"

    def never_waited_for(conn):
        ran.set()
        return 1

    async def both():
        slow = asyncio.create_task(store.read(holds_the_worker))
        await asyncio.sleep(0.05)
        with pytest.raises(QueryTimeout) as waited:
            await store.read(never_waited_for)
        assert waited.value.waited and "did not start within" in str(waited.value)
        assert await slow == "done"

    try:
        asyncio.run(both())
        assert not ran.is_set()
    finally:
        store.close()


def test_beyond_the_waiting_bound_reads_are_refused_at_once(tmp_path):
    store = _store(tmp_path, query_timeout=1.5, query_workers=1)
    limit = 1 + WAITING_PER_WORKER

    async def flood():
        reads = [asyncio.create_task(store.read(_endless_sql)) for _ in range(limit)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(QueriesBusy, match="already waiting for a query worker"):
            await store.read(_count_spans)
        assert time.monotonic() - started < 0.5  # refused at once, not after the budget
        for r in reads:
            with pytest.raises(QueryTimeout):
                await r

    try:
        asyncio.run(flood())
        # Once they are done, reads are admitted again.
        assert asyncio.run(store.read(_count_spans)) == 0
    finally:
        store.close()


def test_outside_a_read_there_is_no_deadline(tmp_path):
    store = _store(tmp_path)
    conn = store.reader()
    try:
        budget.check()  # no deadline on this thread: nothing happens
        assert conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) "
                            "SELECT count(*) FROM c").fetchone() == (300000,)
        with budget.deadline(time.monotonic() - 1):
            with pytest.raises(QueryTimeout):
                budget.check()
        budget.check()  # restored
    finally:
        conn.close()
        store.close()


def test_reads_do_not_use_asyncio_default_executor(tmp_path):
    """Slow reads fill their own pool; anything else the event loop hands to a thread still runs."""
    store = _store(tmp_path, query_timeout=1.0, query_workers=2)

    async def scenario():
        slow = [asyncio.create_task(store.read(_endless_sql)) for _ in range(6)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await asyncio.to_thread(lambda: 42) == 42
        other = time.monotonic() - started
        for s in slow:
            with pytest.raises(QueryTimeout):
                await s
        return other

    try:
        assert asyncio.run(scenario()) < 0.5
    finally:
        store.close()
