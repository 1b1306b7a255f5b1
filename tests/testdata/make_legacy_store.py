"""Writes tests/testdata/legacy_v4.db: a store written by the otelite release before issue 16 (schema
version 4: every metric point a row of `metric_points` with its two indexes, the per-span `spans_by_trace`
index), for tests/test_storage_migration.py. legacy_v7.db is the same data written by main just before
issue 16 merged it (commit a160454, schema version 7), plus Trifle tally rows (tracks and asserts, whose
write order is their rowid): that release has the tally type. Run from such a checkout the same way, or with
PYTHONPATH pointing at a directory whose `otelite` links to it.

Run it with that release's code, from a checkout of commit 2607e1c (the commit issue 16 branched from):

    git worktree add --detach /tmp/otelite-v4 2607e1c
    cd /tmp/otelite-v4 && python3 -m venv .venv && .venv/bin/pip install -e '.[test]'
    .venv/bin/python <this checkout>/tests/testdata/make_legacy_store.py <this checkout>/tests/testdata/legacy_v4.db

It goes through that release's own Store and writer (group commits, series state, last_seen, the span
attribute rollup), fed by OTLP requests walked by its normalizer and by Flux-style distribution and set
rows, so the file holds exactly what the release wrote. Timestamps are fixed (January 2026); the test runs
the store with retention off. Deterministic apart from ids the SDK would choose (none: ids are fixed).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otelite.collector.normalize.otlp import fingerprint, metrics_to_batch, traces_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store.records import WriteBatch
from otelite.collector.store.store import Store
from otelite.exporters.sqlite.config import SqliteExporterConfig

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def kvs(attrs: dict) -> list:
    out = []
    for k, v in attrs.items():
        a = common_pb2.AnyValue()
        if isinstance(v, bool):
            a.bool_value = v
        elif isinstance(v, int):
            a.int_value = v
        elif isinstance(v, float):
            a.double_value = v
        else:
            a.string_value = v
        out.append(common_pb2.KeyValue(key=k, value=a))
    return out


def trace_requests(rng: random.Random) -> list[ExportTraceServiceRequest]:
    """40 traces of 6 spans over 3 services; a trace's spans are spread over several requests."""
    requests = [ExportTraceServiceRequest() for _ in range(4)]
    scopes = []
    for k, req in enumerate(requests):
        per_service = []
        for service in ("web", "db", "queue"):
            rs = req.resource_spans.add()
            rs.resource.attributes.extend(kvs({"service.name": service, "host": f"h{k % 2}"}))
            per_service.append(rs.scope_spans.add(scope=common_pb2.InstrumentationScope(name="legacy", version="1")))
        scopes.append(per_service)
    for trace in range(40):
        tid = (trace + 1).to_bytes(16, "big")
        start = T0 + trace * 7 * S
        for j in range(6):
            sid = ((trace + 1) * 16 + j).to_bytes(8, "big")
            req = rng.randrange(4) if j else trace % 4  # the spans of one trace arrive in several requests
            span = scopes[req][j % 3].spans.add(
                trace_id=tid, span_id=sid, name=f"op{j}", kind=1 + j % 5,
                start_time_unix_nano=start + j * 10**7, end_time_unix_nano=start + j * 10**7 + 5 * 10**6 * (j + 1))
            if j:
                span.parent_span_id = ((trace + 1) * 16).to_bytes(8, "big")
            span.attributes.extend(kvs({"http.route": f"/r{trace % 5}", "n": j, "ok": j % 2 == 0, "ratio": j / 3}))
            if trace % 7 == 0 and j == 1:
                span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
                span.status.message = "boom"
                span.events.add(name="exception", time_unix_nano=start + 1,
                                attributes=kvs({"exception.type": "ValueError"}))
    return requests


def metric_request(step: int, rng: random.Random) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(kvs({"service.name": "legacy", "region": "eu"}))
    sm = rm.scope_metrics.add(scope=common_pb2.InstrumentationScope(name="meter"))
    t = T0 + step * 15 * S
    gauge = sm.metrics.add(name="legacy.load", unit="1")
    for i in range(5):
        dp = gauge.gauge.data_points.add(time_unix_nano=t, attributes=kvs({"cpu": i}))
        if step % 11 == 3 and i == 0:
            dp.flags = 1  # no recorded value
        elif i == 1:
            dp.as_int = step * 1000 + i
        elif i == 2 and step % 5 == 0:
            dp.as_double = float("nan")
        else:
            dp.as_double = rng.random() * 10
    counter = sm.metrics.add(name="legacy.requests", unit="{request}")
    counter.sum.aggregation_temporality = CUMULATIVE
    counter.sum.is_monotonic = True
    for route in ("/a", "/b", "/c"):
        dp = counter.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, as_int=step * 7 + len(route),
                                         attributes=kvs({"route": route}))
        if step % 4 == 0:
            ex = dp.exemplars.add(time_unix_nano=t - 1, as_int=1, trace_id=(7).to_bytes(16, "big"),
                                  span_id=(9).to_bytes(8, "big"))
            ex.filtered_attributes.extend(kvs({"user": "u1"}))
    delta = sm.metrics.add(name="legacy.bytes")
    delta.sum.aggregation_temporality = DELTA
    for route in ("/a", "/b"):
        delta.sum.data_points.add(start_time_unix_nano=t - 15 * S, time_unix_nano=t, as_double=rng.random() * 100,
                                  attributes=kvs({"route": route}))
    hist = sm.metrics.add(name="legacy.latency", unit="s")
    hist.histogram.aggregation_temporality = CUMULATIVE if step % 2 == 0 else CUMULATIVE
    for route in ("/a", "/b"):
        counts = [rng.randrange(10) + step for _ in range(4)]
        hist.histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, count=sum(counts),
                                       sum=sum(counts) * 0.3, min=0.01, max=9.5, explicit_bounds=[0.1, 0.5, 1.0],
                                       bucket_counts=counts, attributes=kvs({"route": route}))
    dhist = sm.metrics.add(name="legacy.delta_latency", unit="s")
    dhist.histogram.aggregation_temporality = DELTA
    counts = [rng.randrange(5) for _ in range(3)]
    bounds = [1.0, 2.0] if step < 20 else [1.0, 3.0]  # the layout changes once
    dhist.histogram.data_points.add(start_time_unix_nano=t - 15 * S, time_unix_nano=t, count=sum(counts),
                                    sum=float(sum(counts)), explicit_bounds=bounds, bucket_counts=counts)
    exp = sm.metrics.add(name="legacy.sizes")
    exp.exponential_histogram.aggregation_temporality = CUMULATIVE
    # (count: zero_count + every bucket, as the data model asks; legacy_v4.db, written before the receivers
    # checked it, holds step + 3 on odd steps too)
    dp = exp.exponential_histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=t,
                                                   count=step + 3 + step % 2,
                                                   sum=step * 2.5, scale=2, zero_count=1, zero_threshold=0.001)
    dp.positive.offset = 3
    dp.positive.bucket_counts.extend([1, step, 1])
    dp.negative.offset = -1
    dp.negative.bucket_counts.extend([1] if step % 2 else [])
    summary = sm.metrics.add(name="legacy.rpc")
    dp = summary.summary.data_points.add(start_time_unix_nano=T0, time_unix_nano=t, count=step + 1, sum=step * 1.5)
    for q in (0.5, 0.9, 0.99):
        dp.quantile_values.add(quantile=q, value=q * step)
    return req


def flux_batch(step: int) -> WriteBatch:
    """Distribution and set rows as the Flux dialect writes them (collector/store/metrics.py)."""
    b = WriteBatch()
    resource = {"service.name": "flux"}
    r_json = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    rid = fingerprint(1, r_json, 0, "")
    b.resources[rid] = (rid, 1, r_json, 0, "", "flux", None, None)
    sid = fingerprint(1, "flux", "", "{}", 0, "")
    b.scopes[sid] = (sid, 1, "flux", "", "{}", 0, "")
    t = T0 + step * 15 * S
    for name, mtype, values in (("legacy.dist", "distribution", [1.5, 2, 2.5 * step]),
                                ("legacy.visitors", "set", [f"user{step % 4}", "42", f"user{step % 3}"])):
        tags = json.dumps({"page": "home"}, separators=(",", ":"))
        series_id = fingerprint(1, name, mtype, rid, sid, tags)
        b.series[series_id] = (series_id, 1, name, mtype, "", "", 0, 0, rid, sid, tags, t, t)
        for k, v in enumerate(values):
            b.points.append((1, series_id, 0, t + k, v, None, None, None, None, 0, None, None))
    return b


def tally_batch(step: int, write_cls, write_rows) -> WriteBatch:
    """Trifle track/assert rows (a release with the tally type): an assert every ninth step."""
    values = {"hits": step % 7 + 1, "depth": step}
    operation = "assert" if step % 9 == 4 else "track"
    return write_rows(1, write_cls("legacy.tally", T0 + step * 15 * S + 3, values, operation, False))


def main(path: str) -> None:
    Path(path).unlink(missing_ok=True)
    cfg = SqliteExporterConfig(path=path)
    store = Store(cfg, BatchProcessorConfig(), retention=False)
    store.start()
    rng = random.Random(16)
    futures = []
    for req in trace_requests(rng):
        futures.append(store.writer.submit(traces_to_batch(req, 1)))
    try:
        from otelite.api.trifle.request import Write
        from otelite.api.trifle.rows import write_rows
    except ImportError:  # the release before issue 16's branch point had no tally type
        Write = write_rows = None
    for step in range(40):
        futures.append(store.writer.submit(metrics_to_batch(metric_request(step, rng), 1)))
        futures.append(store.writer.submit(flux_batch(step)))
        if write_rows is not None:
            futures.append(store.writer.submit(tally_batch(step, Write, write_rows)))
    for f in futures:
        f.result(timeout=30)
    store.close()
    import sqlite3
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    print({t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
           for t in ("spans", "metric_points", "metric_series", "metric_series_state")},
          conn.execute("PRAGMA user_version").fetchone()[0])
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
