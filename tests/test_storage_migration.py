"""Migration of a store written before issue 16 (tests/testdata/legacy_v4.db, written by that release's own
writer: tests/testdata/make_legacy_store.py; legacy_v7.db, written by main just before issue 16 merged, with
Trifle tallies) to chunks and trace runs: online, resumable, nothing lost.

- Step by step on a real file: after every background step (a head pass, a step of the trace-index copy)
  every read answers exactly what the old layout held.
- A live server killed with SIGKILL in the middle of the migration, and in the middle of compacting
  acknowledged points, restarts with every point and span present exactly once.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from lanes import Lanes
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from otelite.collector.store import tracing as st
from otelite.collector.store.compactor import Compactor, legacy_indexes
from otelite.collector.store.db import connect_reader, connect_writer, prepare_database
from otelite.collector.store.metrics import SeriesSelection, select_series
from otelite.collector.store.points import PointCache, ReadTransaction, point_rows
from otelite.collector.store.span_counts import CountBackfill, legacy_service_index
from otelite.collector.store.spans import RunBackfill, legacy_trace_index

LEGACY = Path(__file__).parent / "testdata" / "legacy_v4.db"
# (file, its schema version, metric points, spans)
RELEASES = [(LEGACY, 4, 840, 240), (Path(__file__).parent / "testdata" / "legacy_v7.db", 7, 1000, 240)]
POINT_SQL = ("SELECT project_id, series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars "
             "FROM metric_points")
SPAN_SQL = "SELECT * FROM spans ORDER BY id"
SPARKLINE_BUCKETS = (10 * 10**9, 60 * 10**9)  # whole seconds only; whole minutes too


def legacy_copy(tmp_path: Path, name: str = "legacy.db", source: Path = LEGACY) -> Path:
    path = tmp_path / name
    shutil.copy(source, path)
    return path


TALLY_SQL = ("SELECT p.series_id, p.time_ns, p.id, p.flags & 2 != 0 FROM metric_points AS p JOIN metric_series AS s "
             "ON s.id = p.series_id WHERE s.type = 'tally' ORDER BY p.series_id, p.time_ns, p.id")


def old_answers(path: Path, version: int = 4) -> dict:
    """What the old layout holds, read with plain SQL before anything is migrated."""
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (version,)
    out = {
        "points": conn.execute(POINT_SQL + " ORDER BY series_id, time_ns, id").fetchall(),
        "spans": conn.execute(SPAN_SQL).fetchall(),
        "traces": {t: [r[0] for r in conn.execute("SELECT id FROM spans WHERE trace_id = ? ORDER BY id", (t,))]
                   for (t,) in conn.execute("SELECT DISTINCT trace_id FROM spans")},
        "bounds": {t: (lo, hi) for t, lo, hi in conn.execute(
            "SELECT trace_id, min(start_ns), max(end_ns) FROM spans GROUP BY trace_id")},
        "state": conn.execute("SELECT * FROM metric_series_state ORDER BY series_id").fetchall(),
        "series": [r[0] for r in conn.execute("SELECT id FROM metric_series")],
        # A tally's write order is its row id, whether an assert its TALLY_SET flag (records.py).
        "tally": [tuple(r) for r in conn.execute(TALLY_SQL)],
    }
    # The sparkline and the service picker over the spans' time range with a partial second at its start.
    lo, hi = conn.execute("SELECT min(start_ns) + 1, max(start_ns) FROM spans").fetchone()
    out["window"] = (lo, hi)
    rows = conn.execute("SELECT start_ns, service_name FROM spans WHERE project_id = 1 AND start_ns BETWEEN ? AND ?",
                        (lo, hi)).fetchall()
    out["counts"] = {bucket: sorted((b * bucket, name, n) for (b, name), n in
                                    Counter((t // bucket, name) for t, name in rows).items())
                     for bucket in SPARKLINE_BUCKETS}
    out["services"] = sorted({name for _, name in rows if name})
    conn.close()
    return out


def tally_order(conn) -> list[tuple]:
    """(series, time, write order, sets) of every tally reading, as the engine's tally reads them."""
    out = []
    for (name,) in conn.execute("SELECT DISTINCT name FROM metric_series WHERE type = 'tally'").fetchall():
        series = select_series(conn, SeriesSelection(1, name, "tally"))
        p = PointCache(0).points(conn, series, 0, 1 << 62)
        out += zip(p.series_id.tolist(), p.time.tolist(), p.seq.tolist(), p.sets.tolist())
    return sorted(out)


def new_answers(path: Path, series: list[int], traces: list[bytes], window: tuple[int, int] | None = None) -> dict:
    conn = connect_reader(str(path))
    with ReadTransaction(conn):
        if window is not None:  # the sparkline and the service picker (old_answers)
            counts = {b: st.span_counts(conn, st.Selection(1, *window), b) for b in SPARKLINE_BUCKETS}
            services = st.service_names(conn, 1, *window)
        out = {
            "points": point_rows(conn, series),
            "spans": conn.execute(SPAN_SQL).fetchall(),
            "traces": {t: [r.id for r in st.find_spans(conn, st.Selection(1, trace_id=t), st.SpanOrder("timestamp", False),
                                                       1000)[0]] for t in traces},
            "bounds": st.trace_bounds(conn, 1, traces),
            "state": conn.execute("SELECT * FROM metric_series_state ORDER BY series_id").fetchall(),
            "tally": tally_order(conn),
        }
    conn.close()
    out["traces"] = {t: sorted(ids) for t, ids in out["traces"].items()}
    if window is not None:
        out["counts"], out["services"] = counts, services
    return out


@pytest.mark.parametrize("source, version, n_points, n_spans", RELEASES, ids=["v4", "v7"])
def test_migration_step_by_step_answers_like_the_old_layout(tmp_path, source, version, n_points, n_spans):
    path = legacy_copy(tmp_path, source=source)
    before = old_answers(path, version)
    assert len(before["points"]) == n_points and len(before["spans"]) == n_spans
    assert bool(before["tally"]) == (version >= 7)
    prepare_database(str(path))  # the schema migrations: quick, the data moves in background steps
    conn = connect_writer(str(path))
    assert set(legacy_indexes(conn)) == {"metric_points_by_series_time", "metric_points_by_time"}
    assert legacy_trace_index(conn)
    compactor = Compactor(head_max_age=60, head_max_points=100_000, pass_rows=100)
    compactor.start(conn)  # everything already in the head is old: it all moves
    backfill = RunBackfill(step_rows=50)
    backfill.start(conn)
    counting = CountBackfill(step_rows=50)
    counting.start(conn)
    assert legacy_service_index(conn) and counting.active
    expected = {k: before[k] for k in ("points", "spans", "traces", "bounds", "state", "tally", "counts", "services")}
    # The schema migrations of releases in between may rewrite the series state on purpose (0005 backfills
    # Flux distributions' running totals); the background steps must leave it as they found it.
    expected["state"] = conn.execute("SELECT * FROM metric_series_state ORDER BY series_id").fetchall()
    steps = 0
    while True:
        if backfill.active:
            did = backfill.step(conn)
        elif counting.active:
            did = counting.step(conn)
        else:
            did = compactor.step(conn, time.time_ns())
        if not did:
            break
        steps += 1
        assert new_answers(path, before["series"], list(before["traces"]), before["window"]) == expected, \
            f"after step {steps}"
    # Points in passes of 100, 240 index entries in steps of 50, 240 span rowids in steps of 50, merges.
    assert steps >= n_points // 100 + 10
    assert legacy_indexes(conn) == [] and not legacy_trace_index(conn) and not legacy_service_index(conn)
    assert conn.execute("SELECT count(*) FROM metric_points").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM background_migrations").fetchone() == (0,)
    conn.close()
    # The trace-by-id plan of the finished store no longer has the per-span index to use.
    conn = connect_reader(str(path))
    q = st.compile_span_list(st.Selection(1, trace_id=b"\x01" * 16), st.SpanOrder(), 10)
    plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q.text, q.params))
    assert "span_trace_runs" in plan and "spans_by_trace" not in plan, plan
    conn.close()


@pytest.mark.parametrize("source, version", [(r[0], r[1]) for r in RELEASES], ids=["v4", "v7"])
def test_migration_keys_the_value_rollup_by_hour_and_the_pickers_answer_as_before(tmp_path, source, version):
    """Migration 0010: new rollup rows go to a table keyed hour first; the old rows stay where they are
    (nothing copied: instant at any size), read beside the new ones until retention has emptied them."""
    path = legacy_copy(tmp_path, source=source)
    conn = sqlite3.connect(path)
    columns = "project_id, attribute_type, key, value, hour, count"
    before = sorted(conn.execute(f"SELECT {columns} FROM span_attribute_values").fetchall())
    conn.close()
    assert len(before) > 20
    totals: dict[tuple, Counter] = {}
    for project, kind, key, value, _hour, count in before:
        totals.setdefault((project, kind, key), Counter())[value] += count
    prepare_database(str(path))
    conn = connect_reader(str(path))
    assert sorted(conn.execute(f"SELECT {columns} FROM {st.LEGACY_ROLLUP}").fetchall()) == before
    assert conn.execute("SELECT count(*) FROM span_attribute_values").fetchone() == (0,)
    pk = [r[2] for r in conn.execute("PRAGMA index_xinfo('sqlite_autoindex_span_attribute_values_1')") if r[5]]
    assert pk == ["project_id", "attribute_type", "hour", "key", "value"]

    def pickers_answer(totals: dict[tuple, Counter]) -> None:
        for (project, kind, key), counts in totals.items():
            expected = [v for v, _ in sorted(counts.items(), key=lambda vc: (-vc[1], vc[0]))][:50]
            assert st.attribute_values(conn, project, kind, key, None, 50, 0) == expected, key

    pickers_answer(totals)
    services = sorted({v for p, k, key, v, _h, _n in before if (p, k, key) == (1, "resource", "service.name") and v})
    assert services and st.service_names(conn, 1, 0, 1 << 62) == services
    conn.close()

    # Spans written after the migration into hours the old table has: the two tables' counts add up.
    project, kind, key = next(k for k in totals if k[1] == "span")
    value, hour = next((v, h) for p, t, k, v, h, _n in before if (p, t, k) == (project, kind, key))
    writer = connect_writer(str(path))
    with writer:
        writer.execute(f"INSERT INTO span_attribute_values ({columns}) VALUES (?, ?, ?, ?, ?, ?)",
                       (project, kind, key, value, hour, 1000))
    writer.close()
    totals[(project, kind, key)][value] += 1000
    conn = connect_reader(str(path))
    pickers_answer(totals)
    assert st.attribute_values(conn, project, kind, key, None, 1, 0) == [value]
    # One key's rows: hour by hour through the new table's primary key, by key in the old one; no scan.
    rows = st._value_rows(conn, project, kind, key, None)
    plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + rows.text, rows.params))
    assert "SEARCH v USING PRIMARY KEY (project_id=? AND attribute_type=? AND hour=? AND key=?)" in plan, plan
    assert f"SEARCH {st.LEGACY_ROLLUP} USING PRIMARY KEY (project_id=? AND attribute_type=? AND key=?)" in plan
    conn.close()


def test_retention_empties_the_legacy_value_rollup(tmp_path):
    """The migrated store's old rollup rows expire with their hours, as the current table's do; the empty
    table stays (a reader may have looked at the schema just before)."""
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.store.store import Store
    from otelite.exporters.sqlite.config import SqliteExporterConfig
    path = legacy_copy(tmp_path)
    cfg = SqliteExporterConfig(path=str(path))
    cfg.retention.traces, cfg.retention.metrics, cfg.retention.check_interval = 3600.0, 0, 0.05
    store = Store(cfg, BatchProcessorConfig())
    store.start()  # migrates; the fixture's spans are far older than an hour
    try:
        conn = connect_reader(str(path))
        deadline = time.monotonic() + 30
        while conn.execute(f"SELECT count(*) FROM {st.LEGACY_ROLLUP}").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert conn.execute(f"SELECT count(*) FROM {st.LEGACY_ROLLUP}").fetchone() == (0,)
        assert st.legacy_rollup(conn) and st.attribute_values(conn, 1, "resource", "service.name", None, 10, 0) == []
        conn.close()
    finally:
        store.close()


# --- kill -9 -------------------------------------------------------------------------------------------------

def _config(step_rows: int, head_max_age: str = "1m") -> dict:
    return {"exporters": {"sqlite": {"retention": {"traces": 0, "metrics": 0},
                                     "compaction": {"step_rows": step_rows, "head_max_age": head_max_age}}}}


def _amplify(path: Path, copies: int) -> None:
    """More of the same old-layout rows (times and ids shifted), so that the migration takes many steps."""
    conn = sqlite3.connect(path)
    cols = "project_id, series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars"
    span_cols = [r[1] for r in conn.execute("PRAGMA table_info(spans)") if r[1] != "id"]
    for k in range(1, copies):
        conn.execute(f"INSERT INTO metric_points ({cols}) SELECT {cols.replace('time_ns', f'time_ns + {k} * 600000000000')} "
                     "FROM metric_points WHERE id <= 840")
        shifted = ["CAST(zeroblob(0) || randomblob(16) AS BLOB)" if c == "trace_id" else c for c in span_cols]
        conn.execute(f"INSERT INTO spans ({', '.join(span_cols)}) SELECT {', '.join(shifted)} FROM spans WHERE id <= 240")
    conn.commit()
    conn.close()


def _progress(path: Path) -> tuple[int, int, bool]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        head = conn.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        chunks = conn.execute("SELECT count(*) FROM metric_chunks").fetchone()[0]
        task = conn.execute("SELECT count(*) FROM background_migrations").fetchone()[0] > 0
        return head, chunks, task
    except sqlite3.OperationalError:  # not migrated yet: no chunks table
        return -1, 0, True
    finally:
        conn.close()


def _wait_migrated(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(path)
        try:
            done = not legacy_indexes(conn) and not legacy_trace_index(conn) and not legacy_service_index(conn) and \
                conn.execute("SELECT count(*) FROM background_migrations").fetchone() == (0,)
        except sqlite3.OperationalError:
            done = False
        conn.close()
        if done:
            return
        time.sleep(0.1)
    raise AssertionError("the migration did not finish")


def test_kill_9_during_the_migration_loses_and_duplicates_nothing(tmp_path, make_server):
    path = legacy_copy(tmp_path)
    _amplify(path, 60)  # 50,400 points and 14,400 spans in the old layout
    before = old_answers(path)
    srv = make_server(config=_config(step_rows=500), db=path, start=False)
    srv.start()
    # Kill it once the migration is under way: some points in chunks, some still in the head.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        head, chunks, _ = _progress(path)
        if head > 0 and chunks > 0:
            break
        time.sleep(0.005)
    srv.kill()
    head, chunks, task = _progress(path)
    assert head > 0 and chunks > 0, "the kill came too late to interrupt the migration"
    restarted = make_server(config=_config(step_rows=20_000), db=path)
    _wait_migrated(path)
    # Every point and span; the trace look-ups of the fixture's 40 traces and 200 of the copies.
    sample = sorted(before["traces"])[:240]
    after = new_answers(path, before["series"], sample, before["window"])
    assert after["counts"] == before["counts"] and after["services"] == before["services"]
    assert after["points"] == before["points"]
    assert after["spans"] == before["spans"]
    assert after["traces"] == {t: before["traces"][t] for t in sample}
    assert after["bounds"] == {t: before["bounds"][t] for t in sample}
    # The migrated store takes new points in the new layout, next to the old ones.
    _send_metrics(restarted, 1)
    assert restarted.point_rows() == sorted(before["points"] + _sent_rows(restarted, 1), key=lambda r: (r[1], r[3]))
    restarted.stop()


def _points_request(request_no: int, n: int = 50) -> bytes:
    t0 = 1_800_000_000 * 10**9
    points = [metrics_pb2.NumberDataPoint(time_unix_nano=t0 + request_no * 10**6 + i, as_int=request_no)
              for i in range(n)]
    metric = metrics_pb2.Metric(name="compaction.gauge", gauge=metrics_pb2.Gauge(data_points=points))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])]).SerializeToString()


def _send_metrics(srv, request_no: int) -> None:
    r = httpx.post(srv.http_url + "/v1/metrics", content=_points_request(request_no),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


def _sent_rows(srv, request_no: int) -> list[tuple]:
    [(sid,)] = srv.query("SELECT id FROM metric_series WHERE name = 'compaction.gauge'")
    t0 = 1_800_000_000 * 10**9
    return [(1, sid, 0, t0 + request_no * 10**6 + i, request_no, None, None, None, None, 0, None, None)
            for i in range(50)]


def test_kill_9_during_compaction_keeps_every_acknowledged_point_once(tmp_path, make_server):
    path = tmp_path / "fresh.db"
    srv = make_server(config=_config(step_rows=200, head_max_age="50ms"), db=path)
    lanes = Lanes(srv.http_url + "/v1/metrics", _points_request).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # compaction running: chunks written, head not empty
        head, chunks, _ = _progress(path)
        if chunks >= 3 and head > 0:
            break
        time.sleep(0.01)
    srv.kill()
    lanes.stop()
    acked = lanes.acked
    assert chunks >= 3, "compaction never got going"
    restarted = make_server(config=_config(step_rows=200), db=path)
    per_request = Counter((r[3] - 1_800_000_000 * 10**9) // 10**6 for r in restarted.point_rows())
    assert acked and {n: per_request[n] for n in acked} == {n: 50 for n in acked}
    assert set(per_request.values()) == {50}  # unacknowledged requests: whole or absent
    restarted.stop()
