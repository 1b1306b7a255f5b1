"""Acknowledgement = durability, and backpressure instead of loss (otlp.md, store.md).

Acceptance:
- Durability: acknowledged batches survive `kill -9` of the server and a restart, counted exactly.
- Backpressure: with a tiny queue and a slowed writer, excess requests get 503 + Retry-After (gRPC
  UNAVAILABLE) and every acknowledged item is stored.

Every request carries ids unique to it (request number in the first 4 bytes of each span id, or in the
point's timestamp), so the stored rows can be attributed to requests exactly: each request is stored
all-or-nothing, once.
"""

from __future__ import annotations

import itertools
import sqlite3
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

PROTOBUF = "application/x-protobuf"
# Recent timestamps: retention (7d spans, 30d points) must not delete the test data on restart.
T0 = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000


def _resource(service: str) -> Resource:
    return Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])


def traces_for(request_no: int, n_spans: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """`n_spans` spans whose span ids are (request_no + 1, i + 1) as two big-endian uint32."""
    spans = [trace_pb2.Span(
        trace_id=struct.pack(">QQ", request_no + 1, 7), span_id=struct.pack(">II", request_no + 1, i + 1),
        name="work", kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=T0 + i,
        end_time_unix_nano=T0 + i + 1000,
        attributes=[KeyValue(key="request", value=AnyValue(int_value=request_no))],
    ) for i in range(n_spans)]
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=_resource("durability"), scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


def metrics_for(request_no: int, n_points: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """A gauge with `n_points` points at T0 + request_no * 1e6 + i (so the request is recoverable)."""
    points = [metrics_pb2.NumberDataPoint(time_unix_nano=T0 + request_no * 1_000_000 + i, as_int=i)
              for i in range(n_points)]
    metric = metrics_pb2.Metric(name="durability.gauge", gauge=metrics_pb2.Gauge(data_points=points))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=_resource("durability"), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])])


def spans_per_request(server) -> Counter:
    """request number → stored spans, read from the span ids."""
    rows = server.query("SELECT span_id FROM spans")
    return Counter(struct.unpack(">II", sid)[0] - 1 for (sid,) in rows)


def points_per_request(server) -> Counter:
    return Counter((r[3] - T0) // 1_000_000 for r in server.point_rows())


# --- durability -----------------------------------------------------------------------------------------

SPANS = 40
POINTS = 20


def test_acknowledged_batches_survive_kill_9(make_server):
    srv = make_server()
    numbers = itertools.count()
    acked_traces: set[int] = set()
    acked_metrics: set[int] = set()
    lock = threading.Lock()
    dead = threading.Event()
    failures_after_kill = Counter()

    def http_traces() -> None:
        with httpx.Client(base_url=srv.http_url, timeout=5) as client:
            while not dead.is_set():
                n = next(numbers)
                try:
                    r = client.post("/v1/traces", content=traces_for(n, SPANS).SerializeToString(),
                                    headers={"Content-Type": PROTOBUF})
                except httpx.HTTPError:
                    failures_after_kill["http"] += dead.is_set() or not srv.alive()
                    continue
                if r.status_code == 200:
                    with lock:
                        acked_traces.add(n)

    def http_metrics() -> None:
        with httpx.Client(base_url=srv.http_url, timeout=5) as client:
            while not dead.is_set():
                n = next(numbers)
                try:
                    r = client.post("/v1/metrics", content=metrics_for(n, POINTS).SerializeToString(),
                                    headers={"Content-Type": PROTOBUF})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked_metrics.add(n)

    def grpc_traces() -> None:
        with grpc.insecure_channel(srv.grpc_endpoint) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            while not dead.is_set():
                n = next(numbers)
                try:
                    stub.Export(traces_for(n, SPANS), timeout=5)
                except grpc.RpcError:
                    failures_after_kill["grpc"] += dead.is_set() or not srv.alive()
                    continue
                with lock:
                    acked_traces.add(n)

    workers = [threading.Thread(target=f, daemon=True)
               for f in (http_traces, http_traces, http_traces, grpc_traces, grpc_traces, grpc_traces,
                         http_metrics)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 15
    while (len(acked_traces) < 60 or not acked_metrics) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked_traces) >= 60 and acked_metrics, "the server acknowledged too little to test anything"
    srv.kill()  # SIGKILL while the workers keep sending: some requests are in flight right now
    time.sleep(0.3)  # let every worker see the dead server at least once
    dead.set()
    for w in workers:
        w.join(10)
    assert not any(w.is_alive() for w in workers)
    assert sum(failures_after_kill.values()) >= 1  # the kill cut off sends that were under way
    with lock:
        acked_t, acked_m = set(acked_traces), set(acked_metrics)

    restarted = make_server(db=srv.db)
    stored_t = spans_per_request(restarted)
    stored_m = points_per_request(restarted)
    # Every acknowledged request is there, exactly once and whole.
    assert {n: stored_t[n] for n in acked_t} == {n: SPANS for n in acked_t}
    assert {n: stored_m[n] for n in acked_m} == {n: POINTS for n in acked_m}
    # Requests that were committed but whose answer the kill cut off may be there too, but never in part.
    assert set(stored_t.values()) == {SPANS} and set(stored_m.values()) == {POINTS}
    assert sum(stored_t.values()) >= SPANS * len(acked_t)
    assert not set(stored_t) & set(stored_m)
    # The restarted server is healthy and takes new data on the same file.
    r = httpx.post(f"{restarted.http_url}/v1/traces", content=traces_for(10**6, 3).SerializeToString(),
                   headers={"Content-Type": PROTOBUF}, timeout=10)
    assert r.status_code == 200
    assert spans_per_request(restarted)[10**6] == 3


# --- backpressure ---------------------------------------------------------------------------------------

QUEUE_ITEMS = 2000
BATCH = 500  # spans per request: the queue admits exactly QUEUE_ITEMS // BATCH of them while stuck
N_HTTP, N_GRPC = 10, 6


def _hold_write_lock(db) -> sqlite3.Connection:
    """Slow the writer for real: another connection takes SQLite's write lock and keeps it."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_backpressure_refuses_with_retry_after_and_stores_every_ack(make_server):
    srv = make_server({"exporters": {"sqlite": {"busy_timeout": "0.2s",
                                                "sending_queue": {"queue_size": QUEUE_ITEMS, "sizer": "items"}}}})
    bodies = {n: traces_for(n, BATCH) for n in range(N_HTTP + N_GRPC)}
    results: dict[int, tuple] = {}
    done = threading.Semaphore(0)

    def send_http(n: int) -> None:
        try:
            r = httpx.post(f"{srv.http_url}/v1/traces", content=bodies[n].SerializeToString(),
                           headers={"Content-Type": PROTOBUF}, timeout=20)
            results[n] = ("http", r.status_code, r.headers.get("retry-after"), r.headers.get("content-type"),
                          r.content)
        finally:
            done.release()

    def send_grpc(n: int) -> None:
        try:
            with grpc.insecure_channel(srv.grpc_endpoint) as channel:
                try:
                    trace_service_pb2_grpc.TraceServiceStub(channel).Export(bodies[n], timeout=20)
                    results[n] = ("grpc", grpc.StatusCode.OK, None)
                except grpc.RpcError as e:
                    results[n] = ("grpc", e.code(), dict(e.trailing_metadata() or ()), e.details())
        finally:
            done.release()

    locker = _hold_write_lock(srv.db)
    try:
        with ThreadPoolExecutor(N_HTTP + N_GRPC) as pool:
            futures = [pool.submit(send_http, n) for n in range(N_HTTP)]
            futures += [pool.submit(send_grpc, n) for n in range(N_HTTP, N_HTTP + N_GRPC)]
            admitted = QUEUE_ITEMS // BATCH
            # All refusals come back at once; the admitted requests wait for a commit that cannot happen.
            for _ in range(N_HTTP + N_GRPC - admitted):
                assert done.acquire(timeout=10), f"only {len(results)} answers while the writer is stuck"
            time.sleep(0.3)
            assert len(results) == N_HTTP + N_GRPC - admitted  # the admitted ones are still waiting
            health = srv.health()
            assert health["status"] == "ok"  # stuck for < 10 s: not yet unhealthy
            assert health["queue_items"] == QUEUE_ITEMS  # memory bounded by the queue
            locker.execute("ROLLBACK")  # the writer can commit again
            wait(futures, timeout=15)
    finally:
        locker.close()
    assert len(results) == N_HTTP + N_GRPC

    acked, refused = set(), set()
    for n, res in results.items():
        if res[0] == "http":
            _, code, retry_after, content_type, body = res
            if code == 200:
                acked.add(n)
                continue
            assert code == 503, body
            assert retry_after is not None and int(retry_after) >= 1
            assert content_type == PROTOBUF
            status = status_pb2.Status.FromString(body)
            assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
            assert status.message == "the store's queue is full"
            refused.add(n)
        else:
            if res[1] == grpc.StatusCode.OK:
                acked.add(n)
                continue
            _, code, trailers, details = res
            assert code == grpc.StatusCode.UNAVAILABLE, details
            assert details == "the store's queue is full"
            info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
            assert info.retry_delay.seconds >= 1
            status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
            assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
            detail = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(detail) and detail == info
            refused.add(n)
    assert len(acked) == QUEUE_ITEMS // BATCH
    assert any(n < N_HTTP for n in refused) and any(n >= N_HTTP for n in refused)

    # Every acknowledged request is stored whole; refused requests stored nothing.
    assert spans_per_request(srv) == Counter({n: BATCH for n in acked})
    # The queue is empty again and new requests are accepted at once.
    r = httpx.post(f"{srv.http_url}/v1/traces", content=traces_for(999, 10).SerializeToString(),
                   headers={"Content-Type": PROTOBUF}, timeout=10)
    assert r.status_code == 200
    assert srv.health()["queue_items"] == 0
    assert "database busy, retrying commit" in srv.log()


@pytest.mark.parametrize("sizer,queue_size", [("requests", 2)])
def test_backpressure_requests_sizer(make_server, sizer, queue_size):
    """sizer: requests counts requests, not items: two tiny requests fill a queue of 2."""
    srv = make_server({"exporters": {"sqlite": {"busy_timeout": "0.2s",
                                                "sending_queue": {"queue_size": queue_size, "sizer": sizer}}}})
    locker = _hold_write_lock(srv.db)
    try:
        with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=srv.http_url, timeout=20) as client:
            def post(n):
                return client.post("/v1/traces", content=traces_for(n, 1).SerializeToString(),
                                   headers={"Content-Type": PROTOBUF})
            waiting = [pool.submit(post, n) for n in range(queue_size)]
            deadline = time.monotonic() + 10
            while srv.health(client=client)["queue_items"] < queue_size and time.monotonic() < deadline:
                time.sleep(0.02)
            extra = post(queue_size)
            assert extra.status_code == 503 and int(extra.headers["retry-after"]) >= 1
            locker.execute("ROLLBACK")
            assert [f.result(15).status_code for f in waiting] == [200] * queue_size
    finally:
        locker.close()
    assert spans_per_request(srv) == Counter({n: 1 for n in range(queue_size)})
