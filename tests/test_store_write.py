"""`Store.write(fn)` on real SQLite files: every non-ingest write runs on the writer thread inside its group
commit (collector/store/writer.py). The live CLI-beside-a-server cases are at the end."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store import keys
from otelite.collector.store.store import Store, StoreLocked
from otelite.collector.store.writer import MAX_PENDING_WRITES, StoreFull, StoreUnavailable
from otelite.exporters.sqlite.config import SqliteExporterConfig
from conftest import trace_request, write_config


@pytest.fixture
def store(tmp_path):
    s = Store(SqliteExporterConfig(path=str(tmp_path / "w.db"), busy_timeout=0.05), BatchProcessorConfig())
    s.start()
    yield s
    s.close()


def _count(path: str, sql: str, params: tuple = ()) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def _hold_write_lock(path: str) -> sqlite3.Connection:
    """Another process's write transaction, as far as our writer can tell."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_write_returns_fn_result_after_commit_on_the_writer_thread(store):
    def create(conn):
        project = keys.create_project(conn, "acme", timezone="Europe/Paris")
        return project, threading.current_thread().name

    project, thread = asyncio.run(store.write(create))
    assert thread == "otelite-writer"
    assert (project.key, project.timezone) == ("acme", "Europe/Paris")
    # Committed when the result arrives: a separate connection sees it.
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key = 'acme' AND id = ?", (project.id,)) == 1
    assert store.write_sync(lambda conn: threading.current_thread().name) == "otelite-writer"


def test_an_exception_rolls_back_only_its_own_work_in_a_group_with_ingest(store):
    """A failing function, a succeeding one and an ingest batch land in one group commit (the lock held
    by another connection makes them queue together); only the failing function's rows are undone."""
    blocker = _hold_write_lock(store.path)
    try:
        ingest = store.writer.submit(traces_to_batch(trace_request(100), 1))

        def doomed(conn):
            keys.create_project(conn, "doomed")
            raise keys.KeyStoreError("changed my mind")

        def kept(conn):
            keys.create_project(conn, "kept")
            # Inside the same transaction as the batch queued before it: its spans are visible here.
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]

        failing, succeeding = store.writer.submit_write(doomed), store.writer.submit_write(kept)
        time.sleep(0.2)
        assert not any(f.done() for f in (ingest, failing, succeeding))  # all waiting for the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ingest.result(10)
    with pytest.raises(keys.KeyStoreError, match="changed my mind"):
        failing.result(10)
    assert succeeding.result(10) == 100
    assert _count(store.path, "SELECT count(*) FROM spans") == 100
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key = 'kept'") == 1
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key = 'doomed'") == 0


def test_a_batch_sqlite_refuses_fails_alone_not_the_group_it_was_committed_with(store):
    """Requests queued together commit in one transaction; when SQLite refuses one of them (here a span
    time over int64, which the OTLP walk rejects but another path might not), the others are committed
    on their own and acknowledged, and only that one is told the store could not take it."""
    blocker = _hold_write_lock(store.path)
    try:
        before = store.writer.submit(traces_to_batch(trace_request(30, seed=1), 1))
        poisoned = traces_to_batch(trace_request(10, seed=2), 1)
        poisoned.spans[3] = poisoned.spans[3][:8] + (1 << 63,) + poisoned.spans[3][9:]  # start_ns
        refused = store.writer.submit(poisoned)
        after = store.writer.submit(traces_to_batch(trace_request(20, seed=3), 1))
        time.sleep(0.2)
        assert not any(f.done() for f in (before, refused, after))  # all waiting for the lock: one group
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    before.result(10)
    after.result(10)
    with pytest.raises(StoreUnavailable):
        refused.result(10)
    assert _count(store.path, "SELECT count(*) FROM spans") == 30 + 20
    assert store.writer.queued == 0
    # And the writer goes on committing groups.
    store.writer.submit(traces_to_batch(trace_request(5, seed=4), 1)).result(10)
    assert _count(store.path, "SELECT count(*) FROM spans") == 55


def test_a_background_step_that_raises_does_not_end_the_writer(store, monkeypatch, caplog):
    """Compaction, retention and backfills run between commits on the writer's thread; an error of theirs
    other than SQLite's propagated out of its loop and ended the thread: every later request waited for
    a writer that was gone. Now the step is logged, background work pauses, and ingest goes on."""
    calls = []

    def failing_step(conn, now_ns=None):
        calls.append(now_ns)
        raise RuntimeError("a bug in a compaction step")

    monkeypatch.setattr(store.writer.compactor, "due", lambda: True)
    monkeypatch.setattr(store.writer.compactor, "step", failing_step)
    for seed in range(1, 4):
        store.writer.submit(traces_to_batch(trace_request(10, seed=seed), 1)).result(10)
    time.sleep(0.3)
    assert calls  # the step ran and raised
    assert len(calls) <= 2  # paused after raising: not retried in a tight loop
    assert store.writer._thread.is_alive()
    store.writer.submit(traces_to_batch(trace_request(10, seed=9), 1)).result(10)
    assert _count(store.path, "SELECT count(*) FROM spans") == 40
    assert any("background step" in r.getMessage() for r in caplog.records)


def test_a_failing_write_concurrent_with_ingest_leaves_every_batch_committed(store):
    """Under continuous ingest, failing and succeeding writes interleave with batches; every batch commits."""
    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        batches = [asyncio.wrap_future(store.writer.submit(traces_to_batch(trace_request(50, seed), 1)))
                   for seed in range(1, 21)]
        writes = []
        for i in range(20):
            def fn(conn, i=i):
                keys.create_project(conn, f"p{i}")
                if i % 2:
                    raise ValueError(f"odd {i}")
                return i
            writes.append(loop.create_task(store.write(fn)))
        await asyncio.gather(*batches)
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        return (sum(1 for o in outcomes if isinstance(o, ValueError)),
                sum(1 for o in outcomes if isinstance(o, int)))

    assert asyncio.run(run()) == (10, 10)
    assert _count(store.path, "SELECT count(*) FROM spans") == 20 * 50
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key LIKE 'p%'") == 10
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key IN ('p1', 'p3')") == 0


def _cas(conn, expected: int) -> int:
    """Compare-and-set on a version row: the shape of a LaunchDarkly `_version` check."""
    conn.execute("CREATE TABLE IF NOT EXISTS test_cas (id INTEGER PRIMARY KEY, version INTEGER)")
    conn.execute("INSERT OR IGNORE INTO test_cas VALUES (1, 0)")
    (version,) = conn.execute("SELECT version FROM test_cas WHERE id = 1").fetchone()
    if version != expected:
        raise ValueError(f"version is {version}, not {expected}")
    conn.execute("UPDATE test_cas SET version = ? WHERE id = 1", (version + 1,))
    return version + 1


def test_read_check_write_in_one_fn_is_atomic_across_two_writers(tmp_path):
    """Two stores on one file (a server and a CLI, each with its own writer): concurrent compare-and-set
    functions never both succeed on one version, and none is lost."""
    path = str(tmp_path / "cas.db")
    stores = [Store(SqliteExporterConfig(path=path, busy_timeout=0.05), BatchProcessorConfig(), retention=False)
              for _ in range(2)]
    for s in stores:
        s.start()
    won: list[int] = []
    lock = threading.Lock()

    def contend(s: Store) -> None:
        for _ in range(200):
            expected = _count(path, "SELECT version FROM test_cas") if _table_exists(path) else 0
            try:
                v = s.write_sync(lambda conn: _cas(conn, expected), timeout=30)
            except ValueError:
                continue  # lost the race for this version: read again
            with lock:
                won.append(v)

    try:
        threads = [threading.Thread(target=contend, args=(s,)) for s in stores for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert sorted(won) == list(range(1, len(won) + 1))  # each version won exactly once
    assert _count(path, "SELECT version FROM test_cas") == len(won) > 50


def _table_exists(path: str) -> bool:
    return _count(path, "SELECT count(*) FROM sqlite_master WHERE name = 'test_cas'") == 1


def test_write_sync_gives_up_on_a_locked_database_and_the_fn_never_runs(store):
    ran = threading.Event()

    def fn(conn):
        ran.set()
        keys.create_project(conn, "late")

    blocker = _hold_write_lock(store.path)
    try:
        with pytest.raises(StoreLocked, match="nothing was written"):
            store.write_sync(fn, timeout=0.3)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The writer is free again and still serves; the abandoned function was dropped, never run.
    assert store.write_sync(lambda conn: 42, timeout=10) == 42
    assert not ran.is_set()
    assert _count(store.path, "SELECT count(*) FROM projects WHERE key = 'late'") == 0


def test_pending_writes_are_bounded(store):
    blocker = _hold_write_lock(store.path)
    futures = []
    try:
        with pytest.raises(StoreFull, match="too many writes"):
            for _ in range(MAX_PENDING_WRITES * 2):
                futures.append(store.writer.submit_write(lambda conn: None))
        # Up to one group's worth is taken by the writer (waiting for the lock), the rest is the bound.
        assert MAX_PENDING_WRITES <= len(futures) < MAX_PENDING_WRITES + 100
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for f in futures:
        f.result(10)


def test_a_fn_that_ends_the_transaction_fails_the_whole_group(store):
    with pytest.raises(StoreUnavailable):
        store.write_sync(lambda conn: conn.execute("COMMIT"), timeout=10)
    # write_sync from the writer's own thread would wait for itself: refused with an error instead.
    with pytest.raises(RuntimeError, match="own thread"):
        store.write_sync(lambda conn: store.write_sync(lambda c: None), timeout=10)
    assert store.write_sync(lambda conn: "still writing", timeout=10) == "still writing"


# --- the CLI beside a running server ----------------------------------------------------------------------

def test_wal_checkpoints_run_beside_the_writer_not_in_its_commits(store):
    """checkpoint.py: the writer's own commits checkpoint only past SAFETY_PAGES (64 MiB of WAL); a thread
    of its own moves committed pages into the database file meanwhile, so the file grows while the WAL
    holds far less than that, and every committed span is readable from the file alone afterwards."""
    from otelite.collector.store.checkpoint import SAFETY_PAGES
    assert store.writer._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (SAFETY_PAGES,)
    before = Path(store.path).stat().st_size
    futures = [store.writer.submit(traces_to_batch(trace_request(n_spans=200, seed=i), 1)) for i in range(20)]
    for f in futures:
        f.result(timeout=30)
    wal = Path(store.path + "-wal").stat().st_size
    assert wal < SAFETY_PAGES * 4096  # the writer's safety checkpoint was never due
    checkpointer = store.writer._checkpointer
    deadline = time.monotonic() + 10
    # The file grows while a pass copies pages, and the pass is counted when it has returned: wait for both.
    while (Path(store.path).stat().st_size <= before or not checkpointer.checkpoints) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(store.path).stat().st_size > before, "no checkpoint moved the committed pages into the file"
    assert checkpointer.checkpoints > 0
    store.close()
    # Closed cleanly, the WAL is empty or gone: the file alone holds every span.
    assert not Path(store.path + "-wal").exists() or Path(store.path + "-wal").stat().st_size == 0
    assert _count(store.path, "SELECT count(*) FROM spans") == 20 * 200


def test_cli_writes_while_the_server_ingests(server):
    admin = server.admin_key()
    stop = threading.Event()
    statuses: list[int] = []

    def ingest() -> None:
        seed = 1
        with httpx.Client(timeout=20) as client:
            while not stop.is_set():
                r = client.post(f"{server.http_url}/v1/traces", content=trace_request(200, seed).SerializeToString(),
                                headers={"Content-Type": "application/x-protobuf"})
                statuses.append(r.status_code)
                seed += 1

    sender = threading.Thread(target=ingest)
    sender.start()
    try:
        created = []
        for i in range(3):
            assert server.cli("projects", "create", f"team{i}").returncode == 0
            done = server.cli("keys", "create", "--project", f"team{i}", "--scope", "metrics:read")
            assert done.returncode == 0, done.stderr
            created.append(done.stdout.strip().splitlines()[-1])
    finally:
        stop.set()
        sender.join(30)
    assert statuses and set(statuses) == {200}
    # The server's read look-ups see what the CLI's writer committed, at once.
    for i, key in enumerate(created):
        r = httpx.get(f"{server.http_url}/api/projects/team{i}/metrics/has_metrics",
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 200, r.text
    r = httpx.get(f"{server.http_url}/api/projects/team0/metrics/has_metrics",
                  headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.status_code == 404  # the admin key belongs to the default project
    spans = server.query("SELECT count(*) FROM spans")[0][0]
    assert spans == 200 * len(statuses)


def test_cli_on_a_locked_database_says_so_and_writes_nothing(server, tmp_path):
    config = write_config(tmp_path, {"exporters": {"sqlite": {"busy_timeout": "200ms"}}}, "cli.yaml")
    blocker = _hold_write_lock(str(server.db))
    try:
        started = time.monotonic()
        done = server.cli("projects", "create", "blocked", "--config", str(config))
        assert time.monotonic() - started < 15
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == \
        "otelite: the database stayed locked by another process for 0.4 s; nothing was written"
    assert "Traceback" not in done.stderr
    assert server.query("SELECT count(*) FROM projects WHERE key = 'blocked'") == [(0,)]
    assert server.cli("projects", "create", "blocked").returncode == 0  # and works once the lock is gone


def test_pressed_since_asked_remembers_a_queue_over_half_full_until_asked(tmp_path):
    """What the server's malloc trimmer asks (malloc.py): it trims only after ingest pressed, so a
    server that only answers queries keeps the pages its queries reuse."""
    from otelite.exporters.sqlite.config import SendingQueueConfig
    cfg = SqliteExporterConfig(path=str(tmp_path / "p.db"), busy_timeout=0.05,
                               sending_queue=SendingQueueConfig(queue_size=40))
    s = Store(cfg, BatchProcessorConfig())
    s.start()
    try:
        writer = s.writer
        assert writer.pressed_since_asked() is False
        writer.submit(traces_to_batch(trace_request(10, seed=1), 1)).result(timeout=10)
        assert writer.pressed_since_asked() is False  # 10 of 40: not pressed
        blocker = _hold_write_lock(cfg.path)  # commits wait: the queue fills
        futures = [writer.submit(traces_to_batch(trace_request(10, seed=k), 1)) for k in (2, 3, 4)]
        assert writer.pressed() and writer.pressed_since_asked() is True
        blocker.execute("ROLLBACK")
        blocker.close()
        for f in futures:
            f.result(timeout=10)
        assert not writer.pressed()
        assert writer.pressed_since_asked() is True  # still pressed after the last ask, until drained
        assert writer.pressed_since_asked() is False  # and not since
    finally:
        s.close()
