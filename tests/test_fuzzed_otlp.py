"""Structure-aware fuzzing of the OTLP receivers, then of every read over what they stored (one live server).

Requests are valid protobuf made of the values a careless or hostile SDK can send: uint64 times and counts
up to 2^64 - 1, NaN and infinite doubles, bucket layouts that are not ones (unordered or non-finite bounds,
scales of +-2^31, offsets of +-2^31), empty and NUL-bearing strings, deep AnyValues. They go over OTLP/HTTP
(protobuf, and some with bytes flipped) and gRPC. Every answer must be 200 / OK (with a partial success) or
a 400 / INVALID_ARGUMENT; then every metric stored is queried with each PostHog aggregation, the tracing
reads and pickers run, and the scrape answers: no 5xx, nothing past its time budget. Each bug this found
(a 503 for a whole group commit, 500s of every later query of a metric, a scrape stalled on a 2^31-bit
shift, a 32 GiB allocation, a picker walking a million empty hours, a rollup builder stuck on one hour)
has its own test too; this one keeps the whole surface under the same fire.
"""

from __future__ import annotations

import random
import sqlite3
import time

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from conftest import start_server

SEED = 20261202
REQUESTS = 400
PROTOBUF = {"Content-Type": "application/x-protobuf"}
AGGREGATIONS = ("sum", "avg", "max", "count", "p99", "rate", "increase", "histogram_quantile")
U64 = 2**64 - 1


class Draw:
    """The fuzzer's choices, from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.now = time.time_ns()

    def pick(self, *options):
        return self.r.choice(options)

    def time(self) -> int:
        r = self.r
        return self.pick(0, 1, U64, 2**63, 2**63 - 1, self.now, self.now - r.randrange(0, 7 * 86400) * 10**9,
                         self.now + 86400 * 10**9, (2153 - 1970) * 365 * 86400 * 10**9, r.randrange(0, 2**64))

    def double(self) -> float:
        return self.pick(0.0, -0.0, 1.5, -1e308, 1e308, float("nan"), float("inf"), float("-inf"), 5e-324,
                         self.r.uniform(-1e6, 1e6))

    def text(self) -> str:
        return self.pick("", "a", "x" * self.r.randrange(1, 3000), "service.name", "http.route", "\x00", "é漢字",
                         "__name__", "le", "quantile", '"', "\\", "NaN", "' OR 1=1 --", "job")

    def value(self, depth: int = 0) -> common_pb2.AnyValue:
        v, k = common_pb2.AnyValue(), self.r.randrange(8 if depth < 5 else 5)
        if k == 0:
            v.string_value = self.text()
        elif k == 1:
            v.int_value = self.pick(0, -1, 2**63 - 1, -2**63, self.r.randrange(-10**6, 10**6))
        elif k == 2:
            v.double_value = self.double()
        elif k == 3:
            v.bool_value = self.r.random() < 0.5
        elif k == 4:
            v.bytes_value = self.r.randbytes(self.r.randrange(0, 20))
        elif k == 5:
            v.array_value.values.extend(self.value(depth + 1) for _ in range(self.r.randrange(0, 4)))
        elif k == 6:
            v.kvlist_value.values.extend(self.attributes(depth + 1))
        return v  # k == 7: an empty AnyValue

    def attributes(self, depth: int = 0) -> list[common_pb2.KeyValue]:
        return [common_pb2.KeyValue(key=self.text(), value=self.value(depth)) for _ in range(self.r.randrange(0, 4))]

    def point(self, p) -> None:
        p.attributes.extend(self.attributes())
        p.time_unix_nano, p.start_time_unix_nano = self.time(), self.pick(0, self.time())
        p.flags = self.pick(0, 0, 1, 2**32 - 1)

    def metrics(self) -> ExportMetricsServiceRequest:
        req, r = ExportMetricsServiceRequest(), self.r
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(self.attributes())
        sm = rm.scope_metrics.add()
        sm.scope.name = self.text()
        for _ in range(r.randrange(1, 4)):
            m = sm.metrics.add(name=self.pick("f.gauge", "f.sum", "f.hist", "f.exp", "f.summary", self.text()))
            kind = r.randrange(5)
            for _ in range(r.randrange(1, 4)):
                if kind == 0:
                    p = m.gauge.data_points.add()
                elif kind == 1:
                    m.sum.aggregation_temporality = self.pick(0, 1, 2, 7)
                    m.sum.is_monotonic = r.random() < 0.5
                    p = m.sum.data_points.add()
                elif kind == 2:
                    m.histogram.aggregation_temporality = self.pick(1, 2)
                    p = m.histogram.data_points.add()
                    n = r.randrange(0, 5)
                    bounds = [self.double() for _ in range(n)]
                    p.explicit_bounds.extend(sorted(bounds) if r.random() < 0.7 else bounds)
                    p.bucket_counts.extend(self.pick(0, 5, U64, r.randrange(100)) for _ in range(n + self.pick(1, 1, 0, 2)))
                    p.count = self.pick(sum(p.bucket_counts) % 2**64, U64, 2**63)
                    p.sum = self.double()
                elif kind == 3:
                    m.exponential_histogram.aggregation_temporality = self.pick(1, 2)
                    p = m.exponential_histogram.data_points.add()
                    p.scale = self.pick(0, 3, 20, -10, 21, -11, 2**31 - 1, -2**31)
                    p.zero_count, p.count = self.pick(0, 3, U64), self.pick(0, 9, U64)
                    p.zero_threshold = self.pick(0.0, 0.0, 1e-9, float("nan"), -1.0)
                    for side in (p.positive, p.negative):
                        side.offset = self.pick(0, 5, -2**31, 2**31 - 1)
                        side.bucket_counts.extend(r.randrange(10) for _ in range(r.randrange(0, 5)))
                else:
                    p = m.summary.data_points.add()
                    p.count, p.sum = self.pick(0, 4, U64), self.double()
                    for _ in range(r.randrange(0, 3)):
                        p.quantile_values.add(quantile=self.pick(0.5, 0.99, 1.5, float("nan")), value=self.double())
                self.point(p)
                if kind < 2 and r.random() < 0.9:
                    if r.random() < 0.5:
                        p.as_double = self.double()
                    else:
                        p.as_int = self.pick(0, -1, 2**63 - 1, -2**63)
        return req

    def traces(self) -> ExportTraceServiceRequest:
        req, r = ExportTraceServiceRequest(), self.r
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(self.attributes())
        ss = rs.scope_spans.add()
        for _ in range(r.randrange(1, 5)):
            s = ss.spans.add(trace_id=r.randbytes(self.pick(16, 16, 16, 0)), span_id=r.randbytes(self.pick(8, 8, 0)),
                             name=self.text(), kind=self.pick(0, 1, 2, 99), start_time_unix_nano=self.time(),
                             end_time_unix_nano=self.time(), trace_state=self.text())
            if r.random() < 0.5:
                s.parent_span_id = r.randbytes(8)
            s.attributes.extend(self.attributes())
            s.status.code, s.status.message = self.pick(0, 1, 2, 77), self.text()
            for _ in range(r.randrange(0, 2)):
                s.events.add(name=self.text(), time_unix_nano=self.time()).attributes.extend(self.attributes())
        return req

    def flipped(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(self.r.randrange(1, 4)):
            if b:
                b[self.r.randrange(len(b))] = self.r.randrange(256)
        return bytes(b)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("fuzzed"), {"api": {"query_timeout": "2s"}})
    yield srv
    srv.kill()


def test_fuzzed_requests_are_stored_or_refused_and_every_read_of_them_answers(fuzzed):
    d = Draw(SEED)
    key = fuzzed.admin_key()
    answers: dict[tuple, int] = {}
    with httpx.Client(base_url=fuzzed.http_url, timeout=30) as http, grpc.insecure_channel(fuzzed.grpc_endpoint) as ch:
        metrics_stub, traces_stub = metrics_service_pb2_grpc.MetricsServiceStub(ch), trace_service_pb2_grpc.TraceServiceStub(ch)
        for i in range(REQUESTS):
            metrics = d.r.random() < 0.6
            req = d.metrics() if metrics else d.traces()
            how = d.pick("protobuf", "protobuf", "flipped", "grpc")
            if how == "grpc":
                try:
                    (metrics_stub if metrics else traces_stub).Export(req, timeout=30)
                    status = "OK"
                except grpc.RpcError as e:
                    status = e.code().name
                assert status in ("OK", "INVALID_ARGUMENT"), (i, status)
            else:
                data = req.SerializeToString()
                r = http.post("/v1/metrics" if metrics else "/v1/traces", headers=PROTOBUF,
                              content=d.flipped(data) if how == "flipped" else data)
                status = r.status_code
                assert status in (200, 400), (i, status, r.text[:200])
            answers[(how, status)] = answers.get((how, status), 0) + 1
        assert answers.get(("protobuf", 200)) and answers.get(("flipped", 400)) and answers.get(("grpc", "OK"))

        db = sqlite3.connect(f"file:{fuzzed.db}?mode=ro", uri=True)
        names = [n for (n,) in db.execute("SELECT DISTINCT name FROM metric_series")]
        keys = [k for (k,) in db.execute("SELECT DISTINCT key FROM span_attribute_keys LIMIT 20")]
        db.close()
        assert names and keys
        auth = {"Authorization": f"Bearer {key}"}
        reads = []  # (method, path, JSON body, query parameters)
        for name in names:
            for aggregation in AGGREGATIONS:
                for window in ("-1h", "-7d"):
                    reads.append(("POST", "/api/projects/1/metrics/query", {"query": {
                        "metricName": name, "aggregation": aggregation, "dateFrom": window}}, None))
            reads.append(("POST", "/api/projects/1/metrics/characterize",
                          {"query": {"metricName": name, "anomalyFrom": "-30m"}}, None))
        reads += [("GET", "/api/projects/1/tracing/spans/values", None, {"key": k}) for k in keys]
        for endpoint in ("query", "sparkline", "aggregate"):
            for window in ("-1h", "-7d", "all"):
                reads.append(("POST", f"/api/projects/1/tracing/spans/{endpoint}",
                              {"query": {"dateRange": {"date_from": window}}}, None))
        reads += [("GET", path, None, None) for path in (
            "/metrics", "/api/projects/1/metrics/attributes", "/api/projects/1/tracing/spans/attributes")]
        # The scrape in OpenMetrics too, read by prometheus_client's strict parser (bucket order, +Inf = count).
        scrape = http.get("/metrics", headers={**auth, "Accept": "application/openmetrics-text; version=1.0.0"})
        assert scrape.status_code == 200
        assert list(parse_openmetrics(scrape.text))
        for method, path, body, params in reads:
            started = time.perf_counter()
            r = http.request(method, path, json=body, params=params, headers=auth)
            assert r.status_code < 500, (method, path, body, params, r.status_code, r.text[:300])
            assert time.perf_counter() - started < 2.5, (method, path, body, params)
    assert fuzzed.alive()
    assert "Traceback" not in fuzzed.log()
