"""Ingest benchmark: acknowledged spans/s and data points/s of a live `otelite serve`, against the raw
SQLite ceiling measured in the same run. How to run and what was measured: docs/benchmarks.md.

    python bench/ingest.py [--duration 15] [--concurrency 8] [--processes 2] [--quick]

What it does, in order:
1. Builds realistic OTLP requests once (1000 spans: 20 services, ~10 attributes, traces of 10 spans;
   1000 points: counters, gauges and histograms over many series with 3 labels). Each send refreshes the
   trace/span ids (every request carries new random ids) and moves the timestamps to "now" (a trace
   starts up to a minute before it is sent), by patching the pre-serialized bytes at known offsets, so
   the load generator stays cheap.
2. Raw ceiling: normalizes the same requests once with collector.normalize.otlp and times plain
   `executemany` of those rows (ids/timestamps refreshed per copy, like the load) into a fresh database
   made by prepare_database, on a connection from connect_writer, 1000 rows per transaction.
3. For each scenario, a fresh `otelite serve` (temp database, free ports) loaded by `--processes` load
   generator processes, each keeping `--concurrency` requests in flight (HTTP/1.1 keep-alive over
   asyncio streams, or grpc.aio with pre-serialized bytes). Only 200/OK acknowledgements count. A 503 or
   UNAVAILABLE is counted and the same request is sent again after the pause the server asks for
   (Retry-After / RetryInfo, +-50%), as OTLP exporters do. The server's RSS is sampled from
   /proc/<pid>/status. Afterwards the rows in the database are checked: at least every acknowledged
   item, at most those plus the requests still unanswered when the run stopped.
4. Overload: more requests in flight than the queue holds, with the default queue and with a small one.

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import http.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/ingest.py` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from bench.common import free_port, kv  # noqa: E402

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest, ExportTraceServiceResponse)
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402
from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

ITEMS_PER_REQUEST = 1000
TRACE_PATH = "/v1/traces"
METRIC_PATH = "/v1/metrics"
GRPC_TRACE = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GRPC_METRIC = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
RETRY_SLEEP_S = None  # pause after a 503/UNAVAILABLE: None = the server's Retry-After / RetryInfo, +-50% jitter

# Targets from the issue (2-core machine); printed next to the results.
TARGET_SPANS, STRETCH_SPANS = 30_000, 50_000
TARGET_POINTS, STRETCH_POINTS = 100_000, 200_000
TARGET_RATIO, TARGET_RSS_MB = 0.5, 300


# ===================================================================================================
# Request templates
# ===================================================================================================

@dataclass
class IdPatch:
    """Every occurrence of `n` distinct ids of `width` bytes: byte indexes `idx` (flattened), and for
    each occurrence the id it belongs to (`group`). Rendering writes n fresh random ids there."""
    width: int
    n: int
    idx: np.ndarray
    group: np.ndarray


@dataclass
class Template:
    signal: str  # "traces" | "metrics"
    items: int
    data: bytes
    id_patches: list[IdPatch] = field(default_factory=list)
    base_ns: int = 0  # the time `data`'s timestamps were made for (metrics: point i's is base_ns + i)
    time_idx: np.ndarray | None = None  # flattened byte indexes of the 8-byte *time_unix_nano fields
    time_val: np.ndarray | None = None  # their values in `data` (uint64)


def render(t: Template, rng: random.Random) -> bytes:
    """The template's bytes with fresh ids (traces) and timestamps moved to now."""
    buf = np.frombuffer(t.data, np.uint8).copy()
    for p in t.id_patches:
        fresh = np.frombuffer(rng.randbytes(p.n * p.width), np.uint8).reshape(p.n, p.width)
        buf[p.idx] = fresh[p.group].ravel()
    if t.time_idx is not None:
        shifted = (t.time_val + np.uint64(time.time_ns() - t.base_ns)).astype("<u8")
        buf[t.time_idx] = shifted.view(np.uint8)
    return buf.tobytes()



def _time_patch(data: bytes, times: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(time_idx, time_val) of a Template: every fixed64 field of `data` holding one of `times`, which
    are the values the builder wrote, each as often as it wrote it."""
    expected: dict[int, int] = {}
    for t in times:
        expected[t] = expected.get(t, 0) + 1
    positions, values = [], []
    for t, n in expected.items():
        found = _occurrences(data, int(t).to_bytes(8, "little"))
        if len(found) != n:
            raise RuntimeError(f"timestamp {t} found {len(found)} times, expected {n}")
        positions += found
        values += [t] * n
    pos = np.asarray(positions, np.int64)
    return (pos[:, None] + np.arange(8, dtype=np.int64)).ravel(), np.asarray(values, np.uint64)


def _occurrences(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def _id_patch(data: bytes, ids: list[bytes], expected: list[int]) -> IdPatch:
    width = len(ids[0])
    positions, groups = [], []
    for g, (value, n) in enumerate(zip(ids, expected)):
        found = _occurrences(data, value)
        if len(found) != n:  # a random id colliding with other bytes: practically impossible, but checked
            raise RuntimeError(f"id {value.hex()} found {len(found)} times, expected {n}")
        positions += found
        groups += [g] * n
    pos = np.asarray(positions, np.int64)
    idx = (pos[:, None] + np.arange(width, dtype=np.int64)).ravel()
    return IdPatch(width, len(ids), idx, np.asarray(groups, np.int64))


SERVICES = ["frontend", "checkout", "cart", "payment", "shipping", "email", "currency", "recommendation",
            "ad", "product-catalog", "quote", "accounting", "fraud-detection", "inventory", "search",
            "auth", "user-profile", "notification", "pricing", "reviews"]
ROUTES = ["/api/v1/products/{id}", "/api/v1/cart", "/api/v1/checkout", "/api/v1/orders/{id}",
          "/api/v1/users/{id}", "/api/v1/recommendations", "/api/v1/currency/convert", "/api/v1/ads",
          "/api/v1/shipping/quote", "/healthz"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
TABLES = ["orders", "order_items", "products", "users", "carts", "payments", "inventory", "reviews"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
          "python-requests/2.32.3", "okhttp/4.12.0", "Go-http-client/1.1"]


def _resource(service: str, instance: str, rng: random.Random) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[
        kv("service.name", service), kv("service.namespace", "shop"), kv("service.version", "2.14.3"),
        kv("service.instance.id", instance), kv("deployment.environment.name", "production"),
        kv("host.name", f"node-{rng.randrange(12):02d}.eu-west-1.compute.internal"), kv("host.arch", "amd64"),
        kv("os.type", "linux"), kv("process.pid", rng.randrange(1, 65536)),
        kv("telemetry.sdk.name", "opentelemetry"), kv("telemetry.sdk.language", "python"),
        kv("telemetry.sdk.version", "1.27.0"), kv("k8s.namespace.name", "shop"),
        kv("k8s.pod.name", f"{instance}-7d9f8b6c5-x2k4p"),
    ])


def _span_shape(k: int, rng: random.Random) -> tuple[str, int, list]:
    """Name, kind and ~10 attributes of the k-th span of a trace (server, db, messaging, internal)."""
    role = k % 4
    tid = kv("thread.id", rng.randrange(1, 64))
    if role == 0:
        route, method = rng.choice(ROUTES), rng.choice(METHODS)
        status = 500 if rng.random() < 0.03 else rng.choice([200, 200, 200, 201, 204, 404])
        return f"{method} {route}", trace_pb2.Span.SPAN_KIND_SERVER, [
            kv("http.request.method", method), kv("http.route", route),
            kv("http.response.status_code", status),
            kv("url.path", route.replace("{id}", str(rng.randrange(10_000)))),
            kv("url.scheme", "https"), kv("server.address", "shop.example.com"), kv("server.port", 443),
            kv("user_agent.original", rng.choice(AGENTS)),
            kv("client.address", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"),
            kv("network.protocol.version", "1.1"), tid]
    if role == 1:
        table = rng.choice(TABLES)
        return f"SELECT shop.{table}", trace_pb2.Span.SPAN_KIND_CLIENT, [
            kv("db.system.name", "postgresql"), kv("db.namespace", "shop"),
            kv("db.operation.name", "SELECT"), kv("db.collection.name", table),
            kv("db.query.text", f"SELECT id, status, total, created_at FROM {table} WHERE customer_id = $1 "
                                 f"AND created_at > $2 ORDER BY created_at DESC LIMIT 50"),
            kv("server.address", "postgres.shop.svc.cluster.local"), kv("server.port", 5432),
            kv("db.response.returned_rows", rng.randrange(50)),
            kv("code.function.name", f"repository.{table}.find_recent"), tid]
    if role == 2:
        topic = rng.choice(["orders", "payments", "emails", "inventory-updates"])
        return f"publish {topic}", trace_pb2.Span.SPAN_KIND_PRODUCER, [
            kv("messaging.system", "kafka"), kv("messaging.operation.type", "publish"),
            kv("messaging.destination.name", topic),
            kv("messaging.kafka.message.key", f"order-{rng.randrange(100_000)}"),
            kv("messaging.destination.partition.id", str(rng.randrange(12))),
            kv("messaging.message.body.size", rng.randrange(200, 4000)),
            kv("server.address", "kafka-0.kafka.shop.svc"), kv("server.port", 9092),
            kv("messaging.client.id", "shop-producer-1"), tid]
    return rng.choice(["process_order", "compute_quote", "render_page", "apply_discounts"]), \
        trace_pb2.Span.SPAN_KIND_INTERNAL, [
            kv("code.function.name", "shop.orders.process"), kv("code.file.path", "/app/shop/orders.py"),
            kv("code.line.number", rng.randrange(20, 900)), kv("app.order.items", rng.randrange(1, 12)),
            kv("app.order.total", round(rng.uniform(5, 900), 2)), kv("app.currency", "EUR"),
            kv("app.customer.tier", rng.choice(["free", "plus", "business"])),
            kv("app.feature.new_checkout", rng.random() < 0.5),
            kv("app.region", rng.choice(["eu-west-1", "eu-central-1", "us-east-1"])), tid]


# A trace of the load starts up to this long before it is sent (every send moves its times to now), so a
# span's start time lands at a random place in the last minute of each time index, as in a live sidecar.
SPAN_START_SPREAD_NS = 60_000_000_000


def build_trace_template(variant: int, now_ns: int) -> Template:
    """1000 spans: 100 traces of 10 spans spread over 20 services (one ResourceSpans per service)."""
    rng = random.Random(1000 + variant)
    per_service: dict[str, list] = {s: [] for s in SERVICES}
    trace_ids, span_ids, trace_sizes, span_refs, times = [], [], [], [], []
    for t in range(ITEMS_PER_REQUEST // 10):
        trace_id = rng.randbytes(16)
        trace_ids.append(trace_id)
        trace_sizes.append(10)
        ids = [rng.randbytes(8) for _ in range(10)]
        refs = [1] * 10
        start0 = now_ns - rng.randrange(SPAN_START_SPREAD_NS)
        for k in range(10):
            parent = ids[(k - 1) // 2] if k else b""
            if k:
                refs[(k - 1) // 2] += 1
            name, kind, attrs = _span_shape(k, rng)
            start = start0 + k * 1_000_000 + rng.randrange(1_000_000)
            end = start + rng.randrange(200_000, 50_000_000)
            span = trace_pb2.Span(trace_id=trace_id, span_id=ids[k], parent_span_id=parent, name=name,
                                  kind=kind, start_time_unix_nano=start, end_time_unix_nano=end,
                                  attributes=attrs, flags=0x101)
            times += [start, end]
            if rng.random() < 0.03:
                span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
                span.status.message = "upstream request failed"
                times.append(start + 100_000)
                span.events.append(trace_pb2.Span.Event(
                    name="exception", time_unix_nano=start + 100_000, attributes=[
                        kv("exception.type", "TimeoutError"),
                        kv("exception.message", "timed out after 5.0s waiting for upstream"),
                        kv("exception.stacktrace", "Traceback (most recent call last):\n"
                            '  File "/app/shop/orders.py", line 212, in process\n'
                            "    resp = client.post(url, json=body, timeout=5.0)\n"
                            "TimeoutError: timed out after 5.0s waiting for upstream\n")]))
            per_service[SERVICES[(t * 7 + k) % len(SERVICES)]].append(span)
        span_ids += ids
        span_refs += refs
    request = ExportTraceServiceRequest()
    for service, spans in per_service.items():
        rs = request.resource_spans.add(resource=_resource(service, f"{service}-{variant}", rng),
                                        schema_url="https://opentelemetry.io/schemas/1.26.0")
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.auto", "0.48b0"
        ss.spans.extend(spans)
    data = request.SerializeToString()
    time_idx, time_val = _time_patch(data, times)
    return Template("traces", ITEMS_PER_REQUEST, data, [_id_patch(data, trace_ids, trace_sizes),
                                                        _id_patch(data, span_ids, span_refs)],
                    base_ns=now_ns, time_idx=time_idx, time_val=time_val)


_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


def build_metric_template(variant: int, now_ns: int) -> Template:
    """1000 points: 10 services x (30 counters, 30 histograms, 20 gauges, 20 double sums), 3 labels each.
    Each variant is another set of service instances, so variants are distinct series."""
    rng = random.Random(2000 + variant)
    base = now_ns
    start = now_ns - 3_600_000_000_000
    i = 0  # point index: its time_unix_nano is base + i (distinct, so it can be found and moved)

    def stamp(dp) -> None:
        nonlocal i
        dp.start_time_unix_nano, dp.time_unix_nano = start, base + i
        i += 1

    request = ExportMetricsServiceRequest()
    http_series = [(m, r, s) for m in ("GET", "POST", "PUT") for r in ROUTES for s in (200,)]
    for service in SERVICES[:10]:
        rm = request.resource_metrics.add(resource=_resource(service, f"{service}-{variant}", rng),
                                          schema_url="https://opentelemetry.io/schemas/1.26.0")
        sm = rm.scope_metrics.add()
        sm.scope.name, sm.scope.version = "opentelemetry.instrumentation.auto", "0.48b0"
        counter = sm.metrics.add(name="http.server.request.count", unit="{request}",
                                 description="Number of HTTP requests served.")
        counter.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        counter.sum.is_monotonic = True
        hist = sm.metrics.add(name="http.server.request.duration", unit="s",
                              description="Duration of HTTP server requests.")
        hist.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        for method, route, status in http_series:  # 30 series each
            labels = [kv("http.request.method", method), kv("http.route", route),
                      kv("http.response.status_code", status)]
            dp = counter.sum.data_points.add(attributes=labels, as_int=rng.randrange(1, 10_000_000))
            stamp(dp)
            counts = [rng.randrange(1000) for _ in range(len(_BOUNDS) + 1)]
            h = hist.histogram.data_points.add(attributes=labels, count=sum(counts), bucket_counts=counts,
                                               explicit_bounds=_BOUNDS, sum=sum(counts) * 0.07,
                                               min=0.001, max=9.5)
            stamp(h)
        gauge = sm.metrics.add(name="app.queue.depth", unit="{message}", description="Messages waiting.")
        jobs = sm.metrics.add(name="app.jobs.duration.total", unit="s", description="Time spent in jobs.")
        jobs.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        jobs.sum.is_monotonic = True
        for q in range(20):
            labels = [kv("queue.name", f"queue-{q % 5}"), kv("messaging.system", "kafka"),
                      kv("cloud.region", ("eu-west-1", "us-east-1", "eu-central-1", "ap-south-1")[q // 5])]
            stamp(gauge.gauge.data_points.add(attributes=labels, as_double=rng.uniform(0, 5000)))
            labels = [kv("job.name", f"job-{q % 10}"), kv("job.outcome", ("ok", "failed")[q // 10]),
                      kv("worker.pool", "default")]
            stamp(jobs.sum.data_points.add(attributes=labels, as_double=rng.uniform(0, 1e6)))
    assert i == ITEMS_PER_REQUEST, i
    data = request.SerializeToString()
    time_idx, time_val = _time_patch(data, [base + i for i in range(ITEMS_PER_REQUEST)])
    return Template("metrics", ITEMS_PER_REQUEST, data, base_ns=base, time_idx=time_idx, time_val=time_val)


# ===================================================================================================
# Raw ceiling: the same rows by plain executemany
# ===================================================================================================

def _fresh_span_rows(rows: list[tuple], rng: random.Random, shift: int = 0) -> list[tuple]:
    """The normalized span rows with new trace and span ids and their times `shift` ns later (what each
    send does to the request)."""
    traces: dict[bytes, bytes] = {}
    spans: dict[bytes, bytes] = {}
    out = []
    for r in rows:
        tid = traces.get(r[1]) or traces.setdefault(r[1], rng.randbytes(16))
        sid = spans.get(r[2]) or spans.setdefault(r[2], rng.randbytes(8))
        parent = r[3]
        if parent is not None:
            parent = spans.get(parent) or spans.setdefault(parent, rng.randbytes(8))
        out.append((r[0], tid, sid, parent) + r[4:8] + (r[8] + shift, r[9] + shift) + r[10:])
    return out


def _fresh_point_rows(rows: list[tuple], shift: int) -> list[tuple]:
    return [r[:3] + (r[3] + shift,) + r[4:] for r in rows]


def raw_ceiling(signal_name: str, templates: list[Template], db_path: Path, seconds: float) -> dict:
    """Rows/s of plain executemany (1000 rows per transaction) of the normalized rows, timed from BEGIN to
    COMMIT; preparing each copy's fresh ids is not timed."""
    from otelite.collector.normalize.otlp import metrics_to_batch, traces_to_batch
    from otelite.collector.store.db import connect_writer, prepare_database
    from otelite.collector.store.records import (series_labels, POINT_COLUMNS, RESOURCE_COLUMNS, SCOPE_COLUMNS, SERIES_COLUMNS,
                                         SPAN_COLUMNS, LABEL_COLUMNS)

    def insert(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
        return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    prepare_database(str(db_path))
    conn = connect_writer(str(db_path))  # the writer's pragmas: WAL, synchronous=NORMAL, its default cache
    batches = []
    for t in templates:
        if signal_name == "traces":
            batches.append(traces_to_batch(ExportTraceServiceRequest.FromString(t.data), 1))
        else:
            batches.append(metrics_to_batch(ExportMetricsServiceRequest.FromString(t.data), 1))
    # Resources, scopes and series exist before the timed part (the steady state of a running collector).
    conn.execute("BEGIN")
    for b in batches:
        conn.executemany(insert("resources", RESOURCE_COLUMNS, "INSERT OR IGNORE"), list(b.resources.values()))
        conn.executemany(insert("scopes", SCOPE_COLUMNS, "INSERT OR IGNORE"), list(b.scopes.values()))
        conn.executemany(insert("metric_series", SERIES_COLUMNS, "INSERT OR IGNORE"),
                         list(b.series.values()))
        conn.executemany(insert("metric_series_labels", LABEL_COLUMNS, "INSERT OR IGNORE"),
                         [lab for r in b.series.values() for lab in series_labels(r, b.resources[r[8]][2])])
    conn.execute("COMMIT")
    sql = insert("spans", SPAN_COLUMNS) if signal_name == "traces" else insert("metric_points", POINT_COLUMNS)
    rng = random.Random(7)
    timed, rows_done, n = 0.0, 0, 0
    deadline = time.monotonic() + seconds * 4 + 10  # wall-clock guard (preparing copies is not timed)
    while timed < seconds and time.monotonic() < deadline:
        b = batches[n % len(batches)]
        if signal_name == "traces":
            rows = _fresh_span_rows(b.spans, rng, time.time_ns() - templates[n % len(templates)].base_ns)
        else:
            rows = _fresh_point_rows(b.points, (n + 1) * 10_000_000)
        n += 1
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        timed += time.perf_counter() - t0
        rows_done += len(rows)
    conn.close()
    return {"rows": rows_done, "seconds": timed, "rate": rows_done / timed if timed else 0.0}


# ===================================================================================================
# Load generator (runs in its own processes)
# ===================================================================================================

@dataclass
class WorkerSpec:
    protocol: str  # "http" | "grpc"
    signal: str
    host: str
    http_port: int
    grpc_port: int
    concurrency: int  # requests in flight
    start_at: float  # time.time() at which sending starts
    warmup: float
    duration: float
    drain: float  # after the window, how long in-flight requests may still finish before being abandoned
    retry_sleep: float | None
    seed: int


class _HttpLane:
    """One keep-alive HTTP/1.1 connection with one request in flight (asyncio streams, no client lib)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes, float]:
        """(status, body, Retry-After seconds or 0)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(head)
            self.writer.write(body)
            await self.writer.drain()
            headers = await self.reader.readuntil(b"\r\n\r\n")
            status = int(headers[9:12])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", headers)
            payload = await self.reader.readexactly(int(m.group(1))) if m else b""
            if re.search(rb"(?i)\r\nconnection:\s*close", headers):
                self.close()
            m = re.search(rb"(?i)\r\nretry-after:\s*(\d+)", headers)
            return status, payload, float(m.group(1)) if m else 0.0
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _rejected_in(signal_name: str, body: bytes) -> int:
    if not body:
        return 0
    if signal_name == "traces":
        return ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans
    return ExportMetricsServiceResponse.FromString(body).partial_success.rejected_data_points


def _grpc_retry_delay(error) -> float:
    """The RetryInfo delay the server put in the trailers (what OTLP exporters honour), 0 if none."""
    from google.rpc import error_details_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "google.rpc.retryinfo-bin":
            d = error_details_pb2.RetryInfo.FromString(value).retry_delay
            return d.seconds + d.nanos / 1e9
    return 0.0


def worker_main(index: int, templates: dict[str, list[Template]], tasks, out) -> None:
    """A load generator process: runs the WorkerSpecs it is given, one at a time, until it gets None."""
    out.put(("ready", index, None))
    while True:
        spec = tasks.get()
        if spec is None:
            return
        try:
            out.put(("result", index, asyncio.run(_run_load(spec, templates[spec.signal]))))
        except BaseException as e:  # noqa: BLE001 - report, never hang the parent
            out.put(("error", index, f"{type(e).__name__}: {e}"))


async def _run_load(spec: WorkerSpec, templates: list[Template]) -> dict:
    rng = random.Random(spec.seed)
    channels, calls = [], []
    if spec.protocol == "grpc":
        import grpc

        opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        # A few channels (HTTP/2 connections), as several exporters would open.
        channels = [grpc.aio.insecure_channel(f"{spec.host}:{spec.grpc_port}", options=opts + [
            ("grpc.channel_id", k)]) for k in range(max(1, min(4, spec.concurrency // 8)))]
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 20)
        path = GRPC_TRACE if spec.signal == "traces" else GRPC_METRIC
        # No serializers: the pre-serialized bytes go out as they are, the response comes back as bytes.
        calls = [ch.unary_unary(path) for ch in channels]
    url_path = TRACE_PATH if spec.signal == "traces" else METRIC_PATH
    heads = [(f"POST {url_path} HTTP/1.1\r\nHost: {spec.host}:{spec.http_port}\r\n"
              f"Content-Type: application/x-protobuf\r\nContent-Length: {len(t.data)}\r\n\r\n").encode()
             for t in templates]
    t_measure = spec.start_at + spec.warmup
    t_end = t_measure + spec.duration
    stats = {"acked_items": 0, "acked_requests": 0, "refused": 0, "errors": 0, "rejected": 0,
             "total_acked_items": 0, "maybe_stored_items": 0, "latencies": [], "error_samples": []}
    cpu_at: dict[str, Any] = {}

    async def lane(k: int) -> None:
        http = _HttpLane(spec.host, spec.http_port) if spec.protocol == "http" else None
        call = calls[k % len(calls)] if calls else None
        i = k
        while time.time() < t_end:
            t_idx = i % len(templates)
            i += 1
            items = templates[t_idx].items
            payload = render(templates[t_idx], rng)
            while True:
                t0 = time.time()
                try:
                    if http is not None:
                        status, body, retry_after = await http.post(heads[t_idx], payload)
                        ok, busy = status == 200, status == 503
                        detail = f"HTTP {status}: {body[:200]!r}"
                    else:
                        try:
                            body = await call(payload, timeout=300)
                            ok, busy, detail, retry_after = True, False, "", 0.0
                        except grpc.aio.AioRpcError as e:  # noqa: F821 - imported above when protocol is grpc
                            ok, busy, body = False, e.code() == grpc.StatusCode.UNAVAILABLE, b""  # noqa: F821
                            detail = f"gRPC {e.code().name}: {e.details()}"
                            retry_after = _grpc_retry_delay(e)
                except asyncio.CancelledError:
                    # Abandoned after the drain time: the server may still commit it.
                    stats["maybe_stored_items"] += items
                    raise
                except (OSError, asyncio.IncompleteReadError) as e:
                    ok, busy, body, detail = False, False, b"", f"{type(e).__name__}: {e}"
                t1 = time.time()
                in_window = t_measure <= t1 <= t_end
                if ok:
                    rejected = _rejected_in(spec.signal, body)
                    stats["total_acked_items"] += items - rejected
                    if in_window:
                        stats["acked_items"] += items - rejected
                        stats["acked_requests"] += 1
                        stats["rejected"] += rejected
                        stats["latencies"].append(t1 - t0)
                    break
                if busy:
                    if in_window:
                        stats["refused"] += 1
                    if time.time() >= t_end:
                        break  # refused, so not stored; the window is over
                    pause = spec.retry_sleep if spec.retry_sleep is not None else (retry_after or 1.0)
                    await asyncio.sleep(pause * (0.5 + rng.random()))
                    continue
                # Anything else (connection lost, 4xx/5xx): counted; the server may or may not have it.
                stats["errors"] += 1
                stats["maybe_stored_items"] += items
                if len(stats["error_samples"]) < 3:
                    stats["error_samples"].append(detail)
                await asyncio.sleep(0.2)
                break
        if http is not None:
            http.close()

    async def cpu_marks() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.time()))
        cpu_at["measure"] = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, t_end - time.time()))
        cpu_at["end"] = resource.getrusage(resource.RUSAGE_SELF)

    await asyncio.sleep(max(0.0, spec.start_at - time.time()))
    marker = asyncio.create_task(cpu_marks())
    lanes = [asyncio.create_task(lane(k)) for k in range(spec.concurrency)]
    _, pending = await asyncio.wait(lanes, timeout=max(0.1, t_end + spec.drain - time.time()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in lanes:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    await marker
    for ch in channels:
        await ch.close()
    a, b = cpu_at["measure"], cpu_at["end"]
    stats["cpu_seconds"] = (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)
    stats["abandoned_requests"] = len(pending)
    return stats


# ===================================================================================================
# The server under test
# ===================================================================================================


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM in KiB from /proc/<pid>/status ({} once the process is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _family(pid: int) -> list[int]:
    """`pid` and its child processes (otelite's decode workers): RSS and CPU are the whole server's."""
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return pids


def _family_status(pid: int, key: str) -> int:
    return sum(_proc_status(p).get(key, 0) for p in _family(pid))


def _stat_cpu(path: str) -> tuple[str, float] | None:
    """(name, CPU-seconds) from a /proc stat file of a process or thread; None once it is gone."""
    try:
        with open(path) as f:
            stat = f.read()
        name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1].split()
        return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _proc_cpu_seconds(pid: int) -> float:
    got = _stat_cpu(f"/proc/{pid}/stat")
    return got[1] if got else 0.0


def _named_thread_cpu_seconds(pid: int, name: str) -> float | None:
    """CPU-seconds of the threads of `pid` the OS knows as `name` (collector/osthread.py names the writer
    "otelite-writer"); None when it has none (a checkout from before the names, via --server-root)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found = [cpu for comm, cpu in filter(None, (_stat_cpu(f"/proc/{pid}/task/{t}/stat") for t in tasks))
             if comm == name]
    return sum(found) if found else None


def _fmt_us(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _machine_busy_seconds() -> float:
    """CPU-seconds all CPUs spent busy since boot (/proc/stat), to tell what else ran meanwhile."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Server:
    """`otelite serve` on a fresh database and free loopback ports, with an RSS sampler."""

    def __init__(self, workdir: Path, name: str, config: Path | None = None, db: Path | None = None,
                 server_root: Path | None = None) -> None:
        self.db = db if db is not None else workdir / f"{name}.db"
        self.server_root = server_root  # another checkout's otelite (--server-root), else this one
        self.log_path = workdir / f"{name}.log"
        self.config = config
        self.http_port, self.grpc_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.rss_samples: list[tuple[float, int]] = []  # (time.time(), VmRSS KiB)
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-m", "otelite.collector.cli", "--log-level", "WARNING", "serve", "--db", str(self.db),
                "--grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--http-endpoint", f"127.0.0.1:{self.http_port}"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        env = None
        if self.server_root is not None:
            env = {**os.environ, "PYTHONPATH": str(_importable_as_otelite(self.server_root, self.log_path.parent))}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.server_root or ROOT,
                                         env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelite exited with {self.proc.returncode}:\n{self.log()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
                c.request("GET", "/healthz")
                healthy = c.getresponse().status == 200
                c.close()
                if healthy:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"otelite did not become healthy:\n{self.log()}")
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.05):
            rss = _family_status(self.proc.pid, "VmRSS")
            if rss:
                self.rss_samples.append((time.time(), rss))

    def hwm_kib(self) -> int:
        return _family_status(self.proc.pid, "VmHWM")  # sum of peaks: an upper bound of the peak sum

    def cpu_seconds(self) -> float:
        return sum(_proc_cpu_seconds(p) for p in _family(self.proc.pid))

    def writer_cpu_seconds(self) -> float | None:
        return _named_thread_cpu_seconds(self.proc.pid, "otelite-writer")

    def stop(self, wait: float = 5.0) -> int:
        """SIGTERM (the server drains its queue), SIGKILL after `wait` s: draining is not what is measured,
        and acknowledged data is committed either way."""
        self._stop_sampling.set()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count(self, table: str) -> int:
        """Rows of `table`; for metric_points also the points in chunks (issue 16's layout), if any."""
        if not self.db.exists():
            return 0
        conn = sqlite3.connect(self.db)
        try:
            n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if table == "metric_points" and conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'metric_chunks'").fetchone():
                n += conn.execute("SELECT ifnull(sum(n), 0) FROM metric_chunks").fetchone()[0]
            return n
        finally:
            conn.close()


def _importable_as_otelite(root: Path, workdir: Path) -> Path:
    """A directory holding an `otelite` link to the checkout `root`, for PYTHONPATH: a server of another
    commit (--server-root) runs from its own source with this venv's packages."""
    path = workdir / "server-root"
    path.mkdir(exist_ok=True)
    link = path / "otelite"
    if not link.exists():
        link.symlink_to(root.resolve())
    return path


# ===================================================================================================
# Scenarios
# ===================================================================================================

@dataclass
class Scenario:
    name: str
    signal: str
    protocols: list[str]  # one per load generator process
    concurrency: int  # requests in flight per process
    duration: float
    queue_size: int = 0  # 0: the server's configured sending_queue.queue_size; else a config setting this


class LoadGenerators:
    """`n` processes started once (spawn: grpc must not be forked) that run one scenario at a time."""

    def __init__(self, n: int, templates: dict[str, list[Template]]) -> None:
        ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(n)]
        self.procs = [ctx.Process(target=worker_main, args=(k, templates, self.tasks[k], self.out), daemon=True)
                      for k in range(n)]
        for p in self.procs:
            p.start()
        for _ in self.procs:
            kind, k, payload = self.out.get(timeout=180)
            if kind != "ready":
                raise RuntimeError(f"load generator {k} failed to start: {payload}")

    def run(self, specs: list[WorkerSpec], timeout: float) -> tuple[list[dict], list[str]]:
        for q, spec in zip(self.tasks, specs):
            q.put(spec)
        results, errors = [], []
        while len(results) + len(errors) < len(specs):
            kind, k, payload = self.out.get(timeout=timeout)
            (results if kind == "result" else errors).append(payload if kind == "result" else f"load {k}: {payload}")
        return results, errors

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def run_scenario(sc: Scenario, load: LoadGenerators, workdir: Path, warmup: float, drain: float,
                 retry_sleep: float, config: Path | None, db: Path | None = None,
                 server_root: Path | None = None) -> dict:
    if sc.queue_size:
        config = workdir / f"queue-{sc.queue_size}.yaml"
        config.write_text(f"exporters:\n  sqlite:\n    sending_queue:\n      queue_size: {sc.queue_size}\n")
    server = Server(workdir, re.sub(r"[^\w.-]+", "-", sc.name), config, db, server_root)
    table = "spans" if sc.signal == "traces" else "metric_points"
    stored_before = server.count(table)  # a prefilled database (--prefill-db) already holds rows
    server.start()
    try:
        start_at = time.time() + 0.5  # time for the generators to connect
        specs = [WorkerSpec(proto, sc.signal, "127.0.0.1", server.http_port, server.grpc_port, sc.concurrency,
                            start_at, warmup, sc.duration, drain, retry_sleep, seed=random.randrange(1 << 30))
                 for proto in sc.protocols]
        measure_at, end_at = start_at + warmup, start_at + warmup + sc.duration
        done: dict[str, Any] = {}

        def mark_window() -> None:  # server and machine CPU over exactly the measured window
            time.sleep(max(0.0, measure_at - time.time()))
            done["cpu0"], done["busy0"], done["t0"] = server.cpu_seconds(), _machine_busy_seconds(), time.time()
            done["writer0"] = server.writer_cpu_seconds()
            time.sleep(max(0.0, end_at - time.time()))
            done["cpu1"], done["busy1"], done["t1"] = server.cpu_seconds(), _machine_busy_seconds(), time.time()
            done["writer1"] = server.writer_cpu_seconds()

        marker = threading.Thread(target=mark_window, daemon=True)
        marker.start()
        results, errors = load.run(specs, timeout=warmup + sc.duration + drain + 120)
        marker.join()
        hwm = server.hwm_kib()
    finally:
        rc = server.stop()
    stored = server.count(table) - stored_before
    lat = sorted(x for r in results for x in r["latencies"])
    acked = sum(r["acked_items"] for r in results)
    window = done["t1"] - done["t0"]
    server_cpu = (done["cpu1"] - done["cpu0"]) / window
    load_cpu = sum(r["cpu_seconds"] for r in results) / sc.duration
    in_window = [kib for t, kib in server.rss_samples if measure_at <= t <= end_at]
    return {
        "scenario": sc.name, "signal": sc.signal, "protocols": sc.protocols,
        "in_flight": sc.concurrency * len(specs), "duration": sc.duration, "acked_items": acked,
        "rate": acked / sc.duration, "acked_requests": sum(r["acked_requests"] for r in results),
        "refused": sum(r["refused"] for r in results), "errors": sum(r["errors"] for r in results),
        "rejected": sum(r["rejected"] for r in results),
        "error_samples": [s for r in results for s in r["error_samples"]] + errors,
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
        "server_cpu": server_cpu, "load_cpu": load_cpu,
        # CPU per acknowledged item: unlike items/s, barely moved by what else the machine runs meanwhile
        # (the writer thread's alone: what a change to the write path changes, docs/benchmarks.md).
        "server_cpu_us_per_item": server_cpu * window / acked * 1e6 if acked else None,
        "writer_cpu_us_per_item": ((done["writer1"] - done["writer0"]) / acked * 1e6
                                   if acked and done["writer0"] is not None and done["writer1"] is not None else None),
        "other_cpu": max(0.0, (done["busy1"] - done["busy0"]) / window - server_cpu - load_cpu),
        "peak_rss_mb": max([hwm] + [kib for _, kib in server.rss_samples]) / 1024,
        "window_rss_first_half_mb": max(in_window[:len(in_window) // 2] or [0]) / 1024,
        "window_rss_second_half_mb": max(in_window[len(in_window) // 2:] or [0]) / 1024,
        "stored_rows": stored, "total_acked_items": sum(r["total_acked_items"] for r in results),
        "maybe_stored_items": sum(r["maybe_stored_items"] for r in results),
        "abandoned_requests": sum(r["abandoned_requests"] for r in results), "server_exit": rc,
    }


def machine_info() -> dict:
    import google.protobuf
    from google.protobuf.internal import api_implementation

    cpu = "unknown"
    mem_gib = 0.0
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_gib, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "protobuf": f"{google.protobuf.__version__} ({api_implementation.Type()})",
            "kernel": platform.release(), "load_avg_1m": os.getloadavg()[0]}


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _verify(r: dict) -> str:
    """Acknowledged means committed: the rows stored are at least the acknowledged items, and at most
    those plus what was still in flight when the run stopped (or failed without an answer)."""
    lo, hi = r["total_acked_items"], r["total_acked_items"] + r["maybe_stored_items"]
    return "ok" if lo <= r["stored_rows"] <= hi else "MISMATCH"


def print_table(results: list[dict]) -> None:
    print(f"{'scenario':<22} {'in flight':>9} {'items/s':>9} {'raw rows/s':>10} {'ratio':>5} {'503s':>6} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'load CPU':>8} {'other CPU':>9} {'peak RSS MB':>11}")
    for r in results:
        print(f"{r['scenario']:<22} {r['in_flight']:>9} {_fmt_rate(r['rate']):>9} {_fmt_rate(r['raw_rate']):>10} "
              f"{r['ratio']:>5.2f} {r['refused']:>6} {r['p50_ms'] or 0:>7.0f} {r['p99_ms'] or 0:>7.0f} "
              f"{r['server_cpu']:>10.2f} {r['load_cpu']:>8.2f} {r['other_cpu']:>9.2f} {r['peak_rss_mb']:>11.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario (default 15)")
    ap.add_argument("--concurrency", type=int, default=8, help="requests in flight per load process (default 8)")
    ap.add_argument("--processes", type=int, default=2, help="load generator processes (default 2)")
    ap.add_argument("--overload-concurrency", type=int, default=0,
                    help="in flight per process when overloaded (default: enough to exceed the queue)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default 1)")
    ap.add_argument("--retry-sleep", type=float, default=RETRY_SLEEP_S,
                    help="seconds to wait after a 503/UNAVAILABLE, +-50%% (default: what the server's "
                         "Retry-After / RetryInfo asks, as OTLP exporters do)")
    ap.add_argument("--templates", type=int, default=8, help="distinct pre-built requests per signal (default 8)")
    ap.add_argument("--only", default="", help="comma-separated scenario names (e.g. traces/http,metrics/grpc)")
    ap.add_argument("--config", default=None, help="otelite config file for the servers (default: built-in)")
    ap.add_argument("--overload-queue", type=int, default=20_000,
                    help="also overload a server whose sending_queue.queue_size is this (0: skip; default 20000)")
    ap.add_argument("--dir", default=None, help="directory for the temporary databases (default: system temp)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the databases and server logs")
    ap.add_argument("--quick", action="store_true", help="short run (under 40 s): 3 s per scenario, fewer scenarios")
    ap.add_argument("--prefill-db", type=Path, default=None,
                    help="run every server on this database, filled beforehand by bench/prefill.py (issue 16's "
                         "scale benchmark); it grows by what the run sends")
    ap.add_argument("--server-root", type=Path, default=None,
                    help="run the servers from this otelite checkout (e.g. an older commit, for ratios measured "
                         "back to back); the load generators and checks stay this checkout's")
    args = ap.parse_args(argv)
    drain = 3.0
    if args.quick:
        args.duration, args.warmup, args.templates, drain = min(args.duration, 3.0), 0.5, min(args.templates, 4), 1.0
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)

    wall0 = time.monotonic()
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, Linux {info['kernel']}; "
          f"Python {info['python']}, SQLite {info['sqlite']}, protobuf {info['protobuf']}; "
          f"load average {info['load_avg_1m']:.2f}", flush=True)
    config = Path(args.config).resolve() if args.config else None
    workdir = Path(tempfile.mkdtemp(prefix="otelite-bench-", dir=args.dir))
    load = None
    results: list[dict] = []
    raw: dict[str, dict] = {}
    try:
        now = time.time_ns()
        t0 = time.monotonic()
        templates = {"traces": [build_trace_template(v, now) for v in range(args.templates)],
                     "metrics": [build_metric_template(v, now) for v in range(args.templates)]}
        print(f"built {args.templates} trace and {args.templates} metric requests of {ITEMS_PER_REQUEST} items "
              f"({len(templates['traces'][0].data) // 1024} KiB and {len(templates['metrics'][0].data) // 1024} "
              f"KiB of protobuf) in {time.monotonic() - t0:.1f} s", flush=True)
        load = LoadGenerators(args.processes, templates)

        raw_s = max(1.5, args.duration / 3)
        for sig in ("traces", "metrics"):
            raw[sig] = raw_ceiling(sig, templates[sig], workdir / f"raw-{sig}.db", raw_s)
            print(f"raw ceiling {sig}: {_fmt_rate(raw[sig]['rate'])} rows/s ({raw[sig]['rows']} rows in "
                  f"{raw[sig]['seconds']:.2f} s of BEGIN..COMMIT)", flush=True)

        # Overload: more requests in flight than the queue holds (default queue_size 200,000 items).
        over_c = args.overload_concurrency or max(args.concurrency * 4,
                                                  200_000 // ITEMS_PER_REQUEST // args.processes + 32)
        over_d = min(args.duration, 8.0)
        q = args.overload_queue
        mixed = ["http" if k % 2 == 0 else "grpc" for k in range(args.processes)]
        n = args.processes
        scenarios = [
            Scenario("traces/http", "traces", ["http"] * n, args.concurrency, args.duration),
            Scenario("traces/grpc", "traces", ["grpc"] * n, args.concurrency, args.duration),
            Scenario("metrics/http", "metrics", ["http"] * n, args.concurrency, args.duration),
            Scenario("metrics/grpc", "metrics", ["grpc"] * n, args.concurrency, args.duration),
            Scenario("traces/overload", "traces", mixed, over_c, over_d),
            Scenario("metrics/overload", "metrics", mixed, over_c, over_d),
        ]
        if q:
            scenarios += [Scenario(f"traces/overload q={q // 1000}k", "traces", mixed, over_c, over_d, q),
                          Scenario(f"metrics/overload q={q // 1000}k", "metrics", mixed, over_c, over_d, q)]
        if args.only:
            wanted = set(args.only.split(","))
            scenarios = [s for s in scenarios if s.name in wanted or s.name.split(" ")[0] in wanted]
        elif args.quick:
            # 3 s cannot reach the steady state of a 200,000-item queue: overload only the small queue.
            scenarios = [s for s in scenarios if "overload" not in s.name or (q and s.queue_size and
                                                                               s.signal == "traces")]
        spans_sent_until = None  # when the last scenario that sent spans into the --prefill-db file ended
        for sc in scenarios:
            if args.prefill_db is not None and sc.signal == "traces" and spans_sent_until is not None:
                # Spans land at random places in the last minute of the span indexes, which an empty store
                # holds nothing of; on the shared prefilled file, a scenario run right after another
                # would start with that minute full of the other's spans and write more pages a span
                # (docs/benchmarks.md, 2026-12-04 13:45). Both stores start with that minute empty.
                pause = spans_sent_until + SPAN_START_SPREAD_NS / 1e9 - time.monotonic()
                if pause > 0:
                    print(f"waiting {pause:.0f} s: the last scenario's spans leave the minute this one "
                          f"writes into", flush=True)
                    time.sleep(pause)
            print(f"running {sc.name}: {len(sc.protocols)} processes x {sc.concurrency} in flight "
                  f"({'+'.join(sorted(set(sc.protocols)))}), {sc.duration:g} s ...", flush=True)
            r = run_scenario(sc, load, workdir, args.warmup, drain, args.retry_sleep, config, args.prefill_db,
                             args.server_root)
            if sc.signal == "traces":
                spans_sent_until = time.monotonic()
            r["raw_rate"] = raw[sc.signal]["rate"]
            r["ratio"] = r["rate"] / r["raw_rate"] if r["raw_rate"] else 0.0
            results.append(r)
            print(f"  {_fmt_rate(r['rate'])} {'spans' if sc.signal == 'traces' else 'points'}/s acknowledged, "
                  f"503s {r['refused']}, errors {r['errors']}, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(window halves {r['window_rss_first_half_mb']:.0f}/{r['window_rss_second_half_mb']:.0f}); "
                  f"CPU server {r['server_cpu']:.2f} load {r['load_cpu']:.2f} other {r['other_cpu']:.2f}; "
                  f"CPU µs an item: server {_fmt_us(r['server_cpu_us_per_item'])}, "
                  f"writer thread {_fmt_us(r['writer_cpu_us_per_item'])}; "
                  f"rows {r['stored_rows']} vs acknowledged {r['total_acked_items']} "
                  f"(+{r['maybe_stored_items']} unanswered): {_verify(r)}", flush=True)
            for s in r["error_samples"][:3]:
                print(f"  error: {s}", flush=True)
    finally:
        if load is not None:
            load.close()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(results)
    print()
    by = {r["scenario"]: r for r in results}

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    for sig, target, stretch, unit in (("traces", TARGET_SPANS, STRETCH_SPANS, "spans/s"),
                                       ("metrics", TARGET_POINTS, STRETCH_POINTS, "points/s")):
        rows = [by[k] for k in (f"{sig}/http", f"{sig}/grpc") if k in by]
        if rows:
            worst = min(r["rate"] for r in rows)
            print(f"{sig}: >= {target:,} {unit} on both transports: {verdict(worst >= target)} "
                  f"(lowest {_fmt_rate(worst)}; stretch {stretch:,}: {verdict(worst >= stretch)}); "
                  f"ratio to raw >= {TARGET_RATIO}: {verdict(min(r['ratio'] for r in rows) >= TARGET_RATIO)} "
                  f"(lowest {min(r['ratio'] for r in rows):.2f})")
    default_label = "configured queue" if args.config else "default queue"
    for label, over in ((default_label, [r for r in results if r["scenario"].endswith("/overload")]),
                        (f"queue_size {args.overload_queue}", [r for r in results if "overload q=" in r["scenario"]])):
        if over:
            peak = max(r["peak_rss_mb"] for r in over)
            print(f"RSS under {TARGET_RSS_MB} MB while overloaded ({label}): {verdict(peak < TARGET_RSS_MB)} "
                  f"(peak {peak:.0f} MB; 503s {sum(r['refused'] for r in over)})")
    busy = [r["scenario"] for r in results if r["other_cpu"] > 0.2]
    if busy:
        print(f"WARNING: other processes used CPU during {', '.join(busy)}: those figures are low")
    bad = [r["scenario"] for r in results if _verify(r) != "ok" or r["errors"]]
    if bad:
        print(f"WARNING: errors or acknowledged/stored mismatch in {', '.join(bad)}")
    print(f"total wall time {time.monotonic() - wall0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "raw": raw, "results": results,
                                               "args": vars(args)}, indent=2, default=str))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
