"""The store on real SQLite files: migrations, the writer's commit/ack contract, backpressure, retention."""

import sqlite3
from pathlib import Path
import time

import pytest
import sqlite_utils

from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.exporters.sqlite.config import RetentionConfig, SendingQueueConfig, SqliteExporterConfig
from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.store.migrations import SchemaTooNewError, migrate, schema_version
from otelite.collector.store.store import Store
from otelite.collector.store.writer import StoreFull
from conftest import trace_request


def _store(tmp_path, **sqlite_overrides) -> Store:
    cfg = SqliteExporterConfig(path=str(tmp_path / "s.db"))
    for k, v in sqlite_overrides.items():
        setattr(cfg, k, v)
    return Store(cfg, BatchProcessorConfig())


def test_none_parameters_are_bound_as_null_by_the_registered_adapter(tmp_path):
    # db.py registers an adapter for None (binding it through sqlite3's protocol lookup cost ~0.9 µs a
    # parameter): it must hand SQLite the same NULL, in execute and executemany alike.
    from otelite.collector.store import db
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    conn = db.connect_writer(str(tmp_path / "n.db"))
    conn.execute("CREATE TABLE t (a, b INTEGER, c TEXT NOT NULL DEFAULT 'd')")
    conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", (None, None))
    conn.executemany("INSERT INTO t (a, b) VALUES (?, ?)", [(None, 1), (2.5, None)])
    assert conn.execute("SELECT typeof(a), typeof(b), c FROM t ORDER BY rowid").fetchall() == [
        ("null", "null", "d"), ("null", "integer", "d"), ("real", "null", "d")]
    assert conn.execute("SELECT count(*) FROM t WHERE a IS ?", (None,)).fetchone() == (2,)
    conn.close()


def test_the_writer_zeroes_deleted_rows_on_the_pages_it_writes_without_rewriting_freed_pages(tmp_path):
    # db.py: secure_delete FAST, not the ON that Debian's build defaults to (every freed page written
    # out again as zeros: seconds of the writer's time to drop a large index).
    from otelite.collector.store import db
    path = str(tmp_path / "d.db")
    conn = db.connect_writer(path)
    assert conn.execute("PRAGMA secure_delete").fetchone() == (2,)  # 2: FAST
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("keep-%d" % i,) for i in range(20)] + [("deleted-marker",)])
    conn.execute("DELETE FROM t WHERE v = 'deleted-marker'")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = Path(path).read_bytes()
    assert b"keep-19" in data and b"deleted-marker" not in data


def test_bytes_parameters_are_bound_as_the_same_blob_by_the_registered_adapter(tmp_path):
    # db.py registers `bytes.__bytes__` for bytes (span ids went through the protocol lookup too): the
    # adapter must give back the very object, and SQLite must store the same BLOB as without it; a
    # subclass of bytes, not looked up under `bytes`, still binds as a BLOB.
    from otelite.collector.store import db
    adapter = sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)]
    value = bytes(range(16))
    assert adapter(value) is value

    class Id(bytes):
        pass

    conn = db.connect_writer(str(tmp_path / "b.db"))
    conn.execute("CREATE TABLE t (a BLOB, b)")
    conn.execute("INSERT INTO t VALUES (?, ?)", (value, b""))
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(b"\x00\xff", Id(b"\x01")), (bytearray(b"x"), None)])
    assert conn.execute("SELECT typeof(a), hex(a), typeof(b), hex(b) FROM t ORDER BY rowid").fetchall() == [
        ("blob", value.hex().upper(), "blob", ""), ("blob", "00FF", "blob", "01"), ("blob", "78", "null", "")]
    assert conn.execute("SELECT count(*) FROM t WHERE a = ?", (value,)).fetchone() == (1,)
    conn.close()


def test_passing_through_holds_the_page_cache_small_and_sets_it_back_inside_a_read_transaction(tmp_path):
    # db.passing_through: a reader's payload reads go through a small page cache; the reader's own size
    # comes back after (also when the body raises), and the read transaction's snapshot is kept.
    from otelite.collector.store import db
    path = str(tmp_path / "p.db")
    writer = db.connect_writer(path)
    writer.execute("CREATE TABLE t (payload BLOB)")
    writer.executemany("INSERT INTO t VALUES (?)", [(bytes(200_000),) for _ in range(40)])  # 8 MB of BLOBs
    reader = db.connect_reader(path)
    assert reader.execute("PRAGMA cache_size").fetchone() == (-32 * 1024,)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (40,)
    writer.execute("INSERT INTO t VALUES (x'00')")  # after the snapshot: not seen inside it
    with db.passing_through(reader):
        assert reader.execute("PRAGMA cache_size").fetchone() == (-db.PASSING_CACHE_KIB,)
        sizes = [len(p) for (p,) in reader.execute("SELECT payload FROM t")]
    assert sizes == [200_000] * 40 and reader.in_transaction
    assert reader.execute("PRAGMA cache_size").fetchone() == (-32 * 1024,)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (40,)
    with pytest.raises(ZeroDivisionError):
        with db.passing_through(reader):
            1 / 0
    assert reader.execute("PRAGMA cache_size").fetchone() == (-32 * 1024,)
    reader.execute("COMMIT")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (41,)
    reader.close()
    writer.close()


def test_migrations_create_schema_and_rerun_is_noop(tmp_path):
    db = sqlite_utils.Database(tmp_path / "m.db")
    assert migrate(db) == schema_version()
    tables = set(db.table_names())
    assert {"projects", "spans", "metric_series", "metric_points", "metric_chunks", "span_trace_runs",
            "span_attribute_keys", "span_service_10s", "span_service_1m"} <= tables
    # Issue 16: a new store has no per-span trace or service index and no index on the point head.
    assert {i.name for i in db["spans"].indexes} == {"spans_by_time", "spans_roots_by_time", "spans_roots_by_service"}
    assert db["metric_points"].indexes == []
    assert migrate(db) == schema_version()
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    assert [r["key"] for r in db["projects"].rows] == ["default"]


def test_newer_schema_is_refused(tmp_path):
    db = sqlite_utils.Database(tmp_path / "n.db")
    migrate(db)
    db.execute("PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNewError, match="newer than this otelite understands"):
        migrate(db)


def test_future_resolves_only_after_commit(tmp_path):
    store = _store(tmp_path)
    store.start()
    try:
        fut = store.writer.submit(traces_to_batch(trace_request(100), 1))
        fut.result(timeout=10)
        # A separate connection sees the rows as soon as the future is resolved: they are committed.
        conn = sqlite3.connect(store.path)
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 100
        conn.close()
    finally:
        store.close()


def test_full_queue_refuses_and_acknowledged_data_is_kept(tmp_path):
    store = _store(tmp_path, busy_timeout=0.05, sending_queue=SendingQueueConfig(queue_size=250))
    store.start()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a real lock: the writer cannot commit until it is released
    try:
        futures, refused = [], 0
        for seed in range(10):
            try:
                batch = traces_to_batch(trace_request(100, seed), 1)
                futures.append(store.writer.submit(batch))
            except StoreFull as e:
                refused += 1
                assert e.retry_after >= 1
        assert len(futures) == 2 and refused == 8  # 100 + 100 fit in 250; the third does not
        assert not any(f.done() for f in futures)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for f in futures:
        f.result(timeout=10)
    store.close()
    assert sqlite3.connect(store.path).execute("SELECT count(*) FROM spans").fetchone()[0] == 200


def test_retention_deletes_old_rows_in_chunks(tmp_path):
    store = _store(tmp_path, retention=RetentionConfig(chunk_rows=40))
    old = time.time_ns() - 30 * 86400 * 10**9
    store.start()
    try:
        store.writer.submit(traces_to_batch(trace_request(100, 1, start_ns=old), 1)).result(10)
        store.writer.submit(traces_to_batch(trace_request(10, 2), 1)).result(10)
    finally:
        store.close()
    # Reopen: retention runs at start and, having deleted a full chunk, keeps going chunk by chunk.
    store = _store(tmp_path, retention=RetentionConfig(chunk_rows=40))
    store.start()
    deadline = time.monotonic() + 10
    conn = sqlite3.connect(store.path)
    while conn.execute("SELECT count(*) FROM spans").fetchone()[0] != 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    store.close()
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 10
    assert conn.execute("SELECT min(start_ns) FROM spans").fetchone()[0] > old
    # The span counts by service (span_counts.py) of the expired slots and minutes go with their spans.
    for table in ("span_service_10s", "span_service_1m"):
        assert conn.execute(f"SELECT sum(count) FROM {table}").fetchone()[0] == 10, table
