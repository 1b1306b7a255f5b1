"""Span counts by service and time (collector/store/span_counts.py) on real SQLite files written by the real
writer: the sparkline and the service picker read them in place of a per-span index, and must answer
exactly what a count over the spans answers, for any window to the nanosecond."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store import tracing as st
from otelite.collector.store.db import connect_reader
from otelite.collector.store.span_counts import NS, SPANS, expire_counts, window_parts
from otelite.collector.store.store import Store
from otelite.exporters.sqlite.config import SqliteExporterConfig

T0 = 1_767_225_600 * NS  # a whole hour
SERVICES = ("api", "db", "Queue", "")  # "": a resource without service.name
BUCKETS_S = (1, 5, 10, 60, 120, 300, 3600)  # steps of the sparkline's ladder (api/posthog/tracing_query.py)


def _request(rng: random.Random, seed: int, n: int, service: str, starts: list[int]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if service:
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = (seed * 10_000 + i // 3 + 1).to_bytes(16, "big")
        sp.span_id = (seed * 10_000 + i + 1).to_bytes(8, "big")
        sp.name = "op"
        sp.start_time_unix_nano = starts[i]
        sp.end_time_unix_nano = starts[i] + 1000
        sp.status.code = rng.choice((0, 0, 2))
    return req


def _starts(rng: random.Random, n: int) -> list[int]:
    """Start times over three hours, many in a few busy seconds and on the edges of 10-second slots."""
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.3:
            out.append(T0 + rng.randrange(3 * 360) * 10 * NS + rng.choice((0, 0, -1)))  # a slot's first or last ns
        elif kind < 0.5:
            out.append(T0 + 3599 * NS + rng.randrange(3 * NS))  # around the first hour's end
        else:
            out.append(T0 + rng.randrange(3 * 3600 * NS))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A store written by the writer: 60 requests in 2 projects, submitted together so commits group them."""
    path = str(tmp_path_factory.mktemp("counts") / "c.db")
    store = Store(SqliteExporterConfig(path=path), BatchProcessorConfig())
    store.start()
    rng = random.Random(3)
    futures = []
    for seed in range(60):
        n = rng.randrange(1, 200)
        req = _request(rng, seed, n, SERVICES[seed % len(SERVICES)], _starts(rng, n))
        futures.append(store.writer.submit(traces_to_batch(req, 1 if seed % 5 else 2)))
    for f in futures:
        f.result(timeout=30)
    store.close()
    return path


def _brute(conn, project: int, lo: int, hi: int, bucket_ns: int, services=(), status=()) -> list[tuple]:
    rows = conn.execute("SELECT start_ns, service_name, status_code FROM spans WHERE project_id = ? AND start_ns "
                        "BETWEEN ? AND ?", (project, lo, hi)).fetchall()
    counts = Counter((t // bucket_ns * bucket_ns, name) for t, name, code in rows
                     if (not services or name in services) and (not status or code in status))
    return sorted((t, name, n) for (t, name), n in counts.items())


def _windows(rng: random.Random, starts: list[int]) -> list[tuple[int, int]]:
    out = [(T0, T0 + 3 * 3600 * NS), (T0 + 1, T0 + 3 * 3600 * NS - 1), (T0 + 3599 * NS, T0 + 3600 * NS),
           (T0 + 3599 * NS + 1, T0 + 3600 * NS), (T0 + 3600 * NS, T0 + 3600 * NS),  # one nanosecond
           (T0 + 3599 * NS + 5, T0 + 3599 * NS + 7 * 10**8)]  # inside one second
    for _ in range(40):
        lo = T0 + rng.randrange(-60 * NS, 3 * 3600 * NS)
        out.append((lo, lo + rng.choice((rng.randrange(3 * NS), rng.randrange(600 * NS), rng.randrange(7200 * NS)))))
    for _ in range(40):  # ends a few ns from a second's edge
        lo = T0 + rng.randrange(-60, 3 * 3600) * NS + rng.randrange(-2, 3)
        out.append((lo, lo + rng.choice((rng.randrange(3), rng.randrange(600), rng.randrange(7200))) * NS
                    + rng.randrange(-2, 3)))
    edges = sorted(t for t in starts if t % (10 * NS) in (0, 10 * NS - 1))
    for _ in range(60):  # ends next to spans on a slot's edge: one nanosecond decides whether they count
        lo, hi = sorted(rng.sample(edges, 2))
        out.append((lo + rng.randrange(-1, 2), hi + rng.randrange(-1, 2)))
    return out


def test_the_counts_are_the_spans_grouped_by_10_seconds_and_minute(written):
    conn = sqlite3.connect(written)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] > 3000
    for table, width in (("span_service_10s", 10), ("span_service_1m", 60)):
        spans = conn.execute("SELECT project_id, start_ns / ?, service_name, count(*) FROM spans GROUP BY 1, 2, 3 "
                             "ORDER BY 1, 2, 3", (width * NS,)).fetchall()
        assert conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall() == spans, table
    conn.close()


def test_sparkline_counts_equal_a_count_over_the_spans_for_any_window(written):
    conn = connect_reader(written)
    rng = random.Random(5)
    checked = 0
    for lo, hi in _windows(rng, [t for (t,) in conn.execute("SELECT start_ns FROM spans")]):
        for bucket_s in BUCKETS_S:
            if hi // (bucket_s * NS) - lo // (bucket_s * NS) > 2000:
                continue  # longer than the API allows
            for project in (1, 2):
                services = rng.choice(((), ("db",), ("api", "")))
                sel = st.Selection(project, lo, hi, services=services)
                got = st.span_counts(conn, sel, bucket_s * NS)
                assert got == _brute(conn, project, lo, hi, bucket_s * NS, services), (lo, hi, bucket_s, services)
                checked += bool(got)
    assert checked > 500
    conn.close()


def test_filtered_sparklines_count_the_spans_in_one_pass(written):
    conn = connect_reader(written)
    lo, hi = T0 + 1, T0 + 3 * 3600 * NS
    for services in ((), ("api",)):
        sel = st.Selection(1, lo, hi, services=services, status_codes=(2,))
        got = st.span_counts(conn, sel, 300 * NS)
        assert got and got == _brute(conn, 1, lo, hi, 300 * NS, services, (2,))
    # The filtered form reads the window once, through the time index (no correlated count per service).
    sel = st.Selection(1, lo, hi, status_codes=(2,))
    assert st.span_counts(conn, sel, 60 * NS) == _brute(conn, 1, lo, hi, 60 * NS, (), (2,))
    conn.close()


def test_a_sparkline_of_one_trace_starts_from_the_trace_runs(written):
    conn = connect_reader(written)
    trace_id, = conn.execute("SELECT trace_id FROM spans WHERE project_id = 1 GROUP BY trace_id "
                             "ORDER BY count(*) DESC LIMIT 1").fetchone()
    lo, hi = T0, T0 + 3 * 3600 * NS
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    got = st.span_counts(conn, st.Selection(1, lo, hi, trace_id=trace_id), 60 * NS)
    conn.set_trace_callback(None)
    rows = conn.execute("SELECT start_ns / ? * ?, service_name, count(*) FROM spans WHERE project_id = 1 "
                        "AND trace_id = ? AND start_ns BETWEEN ? AND ? GROUP BY 1, 2 ORDER BY 1, 2",
                        (60 * NS, 60 * NS, trace_id, lo, hi)).fetchall()
    assert got == rows and sum(n for _, _, n in got) > 1
    [counting] = [q for q in statements if "GROUP BY 1, 2" in q]
    plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + counting))
    assert "span_trace_runs" in plan and "spans_by_time" not in plan, plan
    conn.close()


def test_the_service_picker_is_exact_to_the_nanosecond(written):
    conn = connect_reader(written)
    rng = random.Random(8)
    for lo, hi in _windows(rng, [t for (t,) in conn.execute("SELECT start_ns FROM spans")]):
        for project in (1, 2):
            names = {r[0] for r in conn.execute("SELECT service_name FROM spans WHERE project_id = ? AND start_ns "
                                                "BETWEEN ? AND ? AND service_name <> ''", (project, lo, hi))}
            assert st.service_names(conn, project, lo, hi) == sorted(names), (lo, hi)
            assert st.service_names(conn, project, lo, hi, "U") == sorted(n for n in names if "u" in n.lower())
    assert st.service_names(conn, 1, T0, T0 + 4 * 3600 * NS, limit=1) == ["Queue"]  # byte order, as SQLite's
    assert st.service_names(conn, 3, T0, T0 + 4 * 3600 * NS) == []  # a project with no spans sees none
    conn.close()


M, S10 = T0 // (60 * NS), T0 // (10 * NS)  # T0's minute and 10-second slot


@pytest.mark.parametrize("start, end, expected", [
    # Whole minutes, the whole 10-second slots around them, the spans of what is left at the ends.
    (T0 + 1, T0 + 185 * NS, [(60, M + 1, M + 3), (10, S10 + 1, S10 + 6), (SPANS, T0 + 1, T0 + 10 * NS - 1),
                             (SPANS, T0 + 180 * NS, T0 + 185 * NS)]),
    # Aligned: [T0, T0 + 120 s - 1] is two whole minutes.
    (T0, T0 + 120 * NS - 1, [(60, M, M + 2)]),
    # Less than a slot: spans only.
    (T0 + 5, T0 + 9, [(SPANS, T0 + 5, T0 + 9)]),
    (T0, T0 + 10 * NS - 1, [(10, S10, S10 + 1)]),
    (T0 + 1, T0, []),  # an empty window
])
def test_window_parts(start, end, expected):
    assert window_parts(start, end, (60, 10)) == expected
    # Without a level: its slots are counted from the finer level, or from the spans.
    assert window_parts(start, end, ()) == ([(SPANS, start, end)] if start <= end else [])
    parts = window_parts(start, end, (10,))
    assert all(w in (10, SPANS) for w, _, _ in parts)
    covered = sum(hi - lo + 1 if w == SPANS else (hi - lo) * w * NS for w, lo, hi in parts)
    assert covered == max(end - start + 1, 0)  # the parts cover the window exactly once


def test_retention_deletes_the_counts_of_expired_seconds_in_bounded_steps(tmp_path, written):
    path = str(tmp_path / "r.db")
    src = sqlite3.connect(written)
    src.backup(dst := sqlite3.connect(path))
    src.close()
    cutoff = T0 + 3600 * NS + NS // 2
    dst.execute("DELETE FROM spans WHERE start_ns < ?", (cutoff,))
    steps = 0
    while expire_counts(dst, 1, cutoff, 100):
        steps += 1
    assert steps > 3  # a step deletes at most 100 rows of each table
    for table, width in (("span_service_10s", 10), ("span_service_1m", 60)):
        first = dst.execute(f"SELECT min(slot) FROM {table} WHERE project_id = 1").fetchone()[0]
        assert first == cutoff // (width * NS), table
        assert dst.execute(f"SELECT count(*) FROM {table} WHERE project_id = 2 AND slot < ?",
                           (first,)).fetchone()[0] > 0  # another project's rows: its own retention pass
    dst.commit()
    # From the first whole slot after the cutoff on, the answers are exact again.
    lo = -(-cutoff // (10 * NS)) * 10 * NS
    assert st.span_counts(dst, st.Selection(1, lo, T0 + 3 * 3600 * NS), 60 * NS) == \
        _brute(dst, 1, lo, T0 + 3 * 3600 * NS, 60 * NS)
    dst.close()
