"""Bad input to the OTLP receivers (otlp.md, "Status codes"), against one live `otelite serve`.

Acceptance: garbage protobuf, bad JSON, a wrong-length trace id, a wrong Content-Type (415), GET (405),
an unknown encoding, an over-limit body and a gzip bomb (413 without allocating the decompressed size)
each get the right status and a google.rpc.Status body; the server stays up; earlier data is intact.

The module shares one server (small limits: 256 KiB HTTP body, 1 MiB gRPC message). Every payload that
could be stored but must not be carries `service.name = "bad"`; every payload that must be stored uses
its own service name and is recorded in `STORED`, so the last test can check the file holds exactly
the accepted rows and nothing else.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import time
import zlib
from collections import Counter

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToJson
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import ServerProcess, free_port, write_config

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
HTTP_LIMIT = 256 * 1024  # receivers.otlp.protocols.http.max_request_body_size for this module
GRPC_LIMIT_MIB = 1
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED = 3, 5, 8, 12
# Recent timestamps: retention (7d spans, 30d points) must not delete the test data on restart.
T0 = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000

# service.name → spans / data points that a test saw acknowledged (checked by the last test).
STORED_SPANS: Counter = Counter()
STORED_POINTS: Counter = Counter()


# --- payloads -------------------------------------------------------------------------------------------

def _resource(service: str) -> Resource:
    return Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])


def span(n: int, *, trace_id: bytes | None = None, span_id: bytes | None = None, **kw) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id if trace_id is not None else struct.pack(">QQ", 0xABC, n + 1),
        span_id=span_id if span_id is not None else struct.pack(">Q", n + 1),
        name=f"op-{n}", kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0 + n * 1000, end_time_unix_nano=T0 + n * 1000 + 500, **kw)


def traces(service: str, spans: list[trace_pb2.Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=_resource(service),
        scope_spans=[trace_pb2.ScopeSpans(scope={"name": "tests"}, spans=spans)])])


def gauge(service: str, points: list[metrics_pb2.NumberDataPoint]) -> metrics_service_pb2.ExportMetricsServiceRequest:
    metric = metrics_pb2.Metric(name="queue.depth", unit="1", gauge=metrics_pb2.Gauge(data_points=points))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=_resource(service), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])])


def json_traces(service: str, trace_id: str) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": "00000000000000a1", "name": "op",
                                   "kind": 2, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}]}],
    }]}).encode()


def gzip_bomb(decompressed_mib: int = 100) -> bytes:
    """`decompressed_mib` MiB of zeros gzip-compressed, built in 1 MiB steps (about 100 KiB on the wire)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    out = [c.compress(zeros) for _ in range(decompressed_mib)]
    out.append(c.flush())
    return b"".join(out)


# --- response checks ------------------------------------------------------------------------------------

def status_of(resp: httpx.Response, encoding: str) -> status_pb2.Status:
    """The google.rpc.Status body, decoded per `encoding` (which must be the response's Content-Type)."""
    assert resp.headers["content-type"] == encoding, resp.headers
    if encoding == PROTOBUF:
        return status_pb2.Status.FromString(resp.content)
    doc = resp.json()
    assert set(doc) == {"code", "message"}, doc
    return status_pb2.Status(code=doc["code"], message=doc["message"])


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    # Listing `protocols` enables exactly the listed ones (as in the Collector), so both are listed.
    cfg = write_config(tmp, {"receivers": {"otlp": {"protocols": {
        "grpc": {"max_recv_msg_size_mib": GRPC_LIMIT_MIB},
        "http": {"max_request_body_size": HTTP_LIMIT}}}}})
    server = ServerProcess(db=tmp / "otelite.db", grpc_port=free_port(), http_port=free_port(),
                           config_path=cfg).start()
    yield server
    if server.alive():
        server.kill()


@pytest.fixture(scope="module")
def http(srv):
    with httpx.Client(base_url=srv.http_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def good(srv, http):
    """A known good batch stored before any bad input: 10 spans of service `good`."""
    req = traces("good", [span(i) for i in range(10)])
    r = http.post("/v1/traces", content=req.SerializeToString(), headers={"Content-Type": PROTOBUF})
    assert r.status_code == 200, r.text
    assert r.content == b""  # ExportTraceServiceResponse with partial_success unset
    STORED_SPANS["good"] += 10
    return sorted(s.span_id for s in req.resource_spans[0].scope_spans[0].spans)


@pytest.fixture(scope="module")
def channel(srv):
    with grpc.insecure_channel(srv.grpc_endpoint) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


# --- HTTP: each bad request gets its status and a Status body -------------------------------------------

_BAD_TRACE_ID = traces("bad", [span(0, trace_id=bytes(15))]).SerializeToString()
_BAD_LINK = traces("bad", [span(0, links=[trace_pb2.Span.Link(trace_id=bytes(16), span_id=b"\x01" * 9)])])
_VALID_BAD = traces("bad", [span(i) for i in range(3)]).SerializeToString()  # valid, sent wrongly

# (id, method, path, headers, body, HTTP status, google.rpc code, response encoding, message fragment)
BAD_HTTP = [
    ("garbage-protobuf", "POST", "/v1/traces", {"Content-Type": PROTOBUF}, b"\x0a\x05abc", 400,
     INVALID_ARGUMENT, PROTOBUF, "the body is not a valid protobuf ExportTraceServiceRequest"),
    ("garbage-protobuf-metrics", "POST", "/v1/metrics", {"Content-Type": PROTOBUF}, b"garbage!", 400,
     INVALID_ARGUMENT, PROTOBUF, "the body is not a valid protobuf ExportMetricsServiceRequest"),
    ("bad-json", "POST", "/v1/traces", {"Content-Type": JSON}, b'{"resourceSpans": [', 400,
     INVALID_ARGUMENT, JSON, "the body is not valid JSON"),
    ("json-not-otlp", "POST", "/v1/metrics", {"Content-Type": JSON}, b'{"resourceMetrics": "x"}', 400,
     INVALID_ARGUMENT, JSON, "resourceMetrics"),
    ("json-top-level-array", "POST", "/v1/traces", {"Content-Type": JSON}, b"[]", 400,
     INVALID_ARGUMENT, JSON, "expected a JSON object at the top level"),
    ("short-trace-id-protobuf", "POST", "/v1/traces", {"Content-Type": PROTOBUF}, _BAD_TRACE_ID, 400,
     INVALID_ARGUMENT, PROTOBUF, "span.trace_id must be 16 bytes (32 hex characters), got 15 bytes"),
    ("short-trace-id-json", "POST", "/v1/traces", {"Content-Type": JSON}, json_traces("bad", "abcd"), 400,
     INVALID_ARGUMENT, JSON, "resourceSpans[0].scopeSpans[0].spans[0].traceId"),
    ("non-hex-trace-id-json", "POST", "/v1/traces", {"Content-Type": JSON},
     json_traces("bad", "zz" * 16), 400, INVALID_ARGUMENT, JSON, "traceId"),
    ("long-link-span-id", "POST", "/v1/traces", {"Content-Type": PROTOBUF}, _BAD_LINK.SerializeToString(),
     400, INVALID_ARGUMENT, PROTOBUF, "link.span_id must be 8 bytes"),
    ("text-plain", "POST", "/v1/traces", {"Content-Type": "text/plain"}, _VALID_BAD, 415,
     INVALID_ARGUMENT, JSON, "unsupported Content-Type 'text/plain'"),
    ("no-content-type", "POST", "/v1/metrics", {}, _VALID_BAD, 415, INVALID_ARGUMENT, JSON,
     "unsupported Content-Type"),
    ("get", "GET", "/v1/traces", {}, None, 405, UNIMPLEMENTED, JSON, "GET is not supported; use POST"),
    ("put-protobuf", "PUT", "/v1/metrics", {"Content-Type": PROTOBUF}, _VALID_BAD, 405, UNIMPLEMENTED,
     PROTOBUF, "PUT is not supported; use POST"),
    ("unknown-encoding", "POST", "/v1/traces", {"Content-Type": PROTOBUF, "Content-Encoding": "br"},
     _VALID_BAD, 400, INVALID_ARGUMENT, PROTOBUF, "unsupported Content-Encoding 'br'"),
    ("truncated-gzip", "POST", "/v1/traces", {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
     gzip.compress(_VALID_BAD)[:-12], 400, INVALID_ARGUMENT, PROTOBUF, "the body is not valid gzip data"),
    ("gzip-trailing-garbage", "POST", "/v1/traces", {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
     gzip.compress(_VALID_BAD) + b"garbage", 400, INVALID_ARGUMENT, PROTOBUF, "the body is not valid gzip data"),
    ("deeply-nested-json", "POST", "/v1/traces", {"Content-Type": JSON},
     b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, INVALID_ARGUMENT, JSON,
     "the body is not valid JSON: nested too deeply"),
    ("gzip-header-not-gzip", "POST", "/v1/traces", {"Content-Type": JSON, "Content-Encoding": "gzip"},
     b'{"resourceSpans": []}', 400, INVALID_ARGUMENT, JSON, "the body is not valid gzip data"),
    ("over-limit", "POST", "/v1/traces", {"Content-Type": PROTOBUF}, bytes(HTTP_LIMIT + 1), 413,
     RESOURCE_EXHAUSTED, PROTOBUF, f"exceeds the limit of {HTTP_LIMIT} bytes"),
    ("gzip-over-limit", "POST", "/v1/traces", {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
     gzip.compress(bytes(HTTP_LIMIT + 1)), 413, RESOURCE_EXHAUSTED, PROTOBUF,
     f"exceeds the limit of {HTTP_LIMIT} bytes (after decompression)"),
    ("logs", "POST", "/v1/logs", {"Content-Type": PROTOBUF}, b"", 404, NOT_FOUND, PROTOBUF,
     "otelite does not store logs yet"),
]


@pytest.mark.parametrize("case", BAD_HTTP, ids=[c[0] for c in BAD_HTTP])
def test_bad_http_request_gets_status_body(srv, http, good, case):
    _, method, path, headers, body, code, rpc_code, encoding, fragment = case
    r = http.request(method, path, headers=headers, content=body)
    assert r.status_code == code, r.content
    status = status_of(r, encoding)
    assert status.code == rpc_code
    assert fragment in status.message, status.message
    if code == 405:
        assert r.headers["allow"] == "POST"
    assert "retry-after" not in r.headers  # none of these is worth retrying


def test_options_lists_only_post(srv, http, good):
    for path in ("/v1/traces", "/v1/metrics"):
        r = http.request("OPTIONS", path)
        assert r.status_code == 204 and r.headers["Allow"] == "POST, OPTIONS"


def test_over_limit_chunked_body_is_413(srv, http, good):
    """No Content-Length to refuse early: the streaming read must stop at the limit."""
    def chunks():
        for _ in range(8):
            yield bytes(64 * 1024)
    r = http.post("/v1/traces", content=chunks(), headers={"Content-Type": PROTOBUF})
    assert r.status_code == 413
    assert f"exceeds the limit of {HTTP_LIMIT} bytes" in status_of(r, PROTOBUF).message


def test_gzip_bomb_is_413_without_allocating_it(srv, http, good):
    bomb = gzip_bomb(100)
    assert len(bomb) < HTTP_LIMIT // 2  # small on the wire: only decompression can exceed the limit
    pid = srv.proc.pid
    rss_before = vm_kib(pid, "VmRSS")
    deflate_bomb = zlib.compress(bytes(8 << 20), 9)  # HTTP deflate (zlib-wrapped), 8 MiB of zeros
    assert len(deflate_bomb) < HTTP_LIMIT // 2
    for encoding, body in (("gzip", bomb), ("x-gzip", bomb), ("deflate", deflate_bomb),
                           ("gzip", gzip.compress(b"") + bomb)):  # the bomb as a second gzip member
        r = http.post("/v1/traces", content=body,
                      headers={"Content-Type": PROTOBUF, "Content-Encoding": encoding})
        assert r.status_code == 413
        status = status_of(r, PROTOBUF)
        assert status.code == RESOURCE_EXHAUSTED
        assert status.message == (f"the request body exceeds the limit of {HTTP_LIMIT} bytes "
                                  "(after decompression)")
    # Peak resident memory (VmHWM covers the whole request, not just the moment after it) stays far
    # below the 100 MiB that decompressing the bomb would take.
    assert vm_kib(pid, "VmHWM") - rss_before < 30 * 1024
    assert http.get("/healthz").status_code == 200


# --- HTTP: what must be accepted ------------------------------------------------------------------------

def test_deflate_and_gzip_bodies_are_accepted(srv, http, good):
    req = traces("deflate", [span(i) for i in range(4)]).SerializeToString()
    for body in (zlib.compress(req), zlib.compress(req)[2:-4]):  # zlib-wrapped, and raw deflate as seen
        r = http.post("/v1/traces", content=body,
                      headers={"Content-Type": PROTOBUF, "Content-Encoding": "deflate"})
        assert r.status_code == 200, r.content
        STORED_SPANS["deflate"] += 4
    r = http.post("/v1/traces", content=gzip.compress(json_traces("gzip-json", "0af7651916cd43dd8448eb211c80319c")),
                  headers={"Content-Type": JSON, "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.content
    assert r.headers["content-type"] == JSON and r.json() == {}
    STORED_SPANS["gzip-json"] += 1
    assert srv.query("SELECT service_name, count(*) FROM spans WHERE service_name IN ('deflate', 'gzip-json') "
                     "GROUP BY 1 ORDER BY 1") == [("deflate", 8), ("gzip-json", 1)]


def test_multi_member_gzip_is_read_whole(srv, http, good):
    """RFC 1952: a gzip file is a series of members (Go's gzip.Reader, in the Collector, reads them all).
    Concatenated protobuf messages merge, so the two members together carry both spans."""
    first = traces("multi-member", [span(0)]).SerializeToString()
    second = traces("multi-member", [span(1)]).SerializeToString()
    r = http.post("/v1/traces", content=gzip.compress(first) + gzip.compress(second),
                  headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.content
    STORED_SPANS["multi-member"] += 2
    assert srv.query("SELECT count(*) FROM spans WHERE service_name = 'multi-member'") == [(2,)]


def test_json_content_type_parameters_are_accepted(srv, http, good):
    r = http.post("/v1/traces", content=json_traces("charset", "0AF7651916CD43DD8448EB211C80319C"),
                  headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.content
    assert r.headers["content-type"] == JSON
    STORED_SPANS["charset"] += 1
    assert srv.query("SELECT hex(trace_id) FROM spans WHERE service_name = 'charset'") == [
        ("0AF7651916CD43DD8448EB211C80319C",)]


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/metrics"])
@pytest.mark.parametrize("encoding,body", [(PROTOBUF, b""), (JSON, b""), (JSON, b"{}")])
def test_empty_request_is_success(srv, http, good, path, encoding, body):
    r = http.post(path, content=body, headers={"Content-Type": encoding})
    assert r.status_code == 200, r.content
    assert r.headers["content-type"] == encoding
    assert (r.json() == {}) if encoding == JSON else (r.content == b"")


def test_partial_success_rejects_zero_trace_id_and_stores_the_rest(srv, http, good):
    spans = [span(0), span(1, trace_id=bytes(16)), span(2)]
    r = http.post("/v1/traces", content=traces("partial", spans).SerializeToString(),
                  headers={"Content-Type": PROTOBUF})
    assert r.status_code == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 1
    assert "trace_id" in resp.partial_success.error_message
    STORED_SPANS["partial"] += 2
    stored = srv.query("SELECT span_id FROM spans WHERE service_name = 'partial' ORDER BY span_id")
    assert stored == [(spans[0].span_id,), (spans[2].span_id,)]


def test_partial_success_over_json(srv, http, good):
    doc = json.loads(json_traces("partial-json", "0af7651916cd43dd8448eb211c80319c"))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(dict(spans[0], traceId="0" * 32, spanId="00000000000000a2"))
    r = http.post("/v1/traces", content=json.dumps(doc), headers={"Content-Type": JSON})
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1 and partial["errorMessage"]
    STORED_SPANS["partial-json"] += 1
    assert srv.query("SELECT hex(span_id) FROM spans WHERE service_name = 'partial-json'") == [("00000000000000A1",)]


def test_data_point_without_value_is_rejected_alone(srv, http, good):
    points = [metrics_pb2.NumberDataPoint(time_unix_nano=T0 + i, as_int=i) for i in range(3)]
    points.insert(1, metrics_pb2.NumberDataPoint(time_unix_nano=T0 + 10))  # no value, no flag
    r = http.post("/v1/metrics", content=gauge("no-value", points).SerializeToString(),
                  headers={"Content-Type": PROTOBUF})
    assert r.status_code == 200
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_data_points == 1
    assert "no value" in resp.partial_success.error_message
    STORED_POINTS["no-value"] += 3
    assert srv.query(
        "SELECT p.value FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
        "JOIN resources r ON r.id = s.resource_id WHERE r.service_name = 'no-value' ORDER BY p.time_ns"
    ) == [(0,), (1,), (2,)]


_PAST_INT64 = (1 << 63, (1 << 64) - 1)  # uint64 values SQLite's INTEGER cannot hold (after the year 2262)


def _far_spans() -> list[trace_pb2.Span]:
    """Two good spans around three whose start or end does not fit in int64."""
    spans = [span(n) for n in range(5)]
    spans[1].start_time_unix_nano = _PAST_INT64[1]
    spans[2].end_time_unix_nano = _PAST_INT64[0]
    spans[3].start_time_unix_nano, spans[3].end_time_unix_nano = _PAST_INT64
    return spans


def _far_points() -> list[metrics_pb2.Metric]:
    """A gauge and a histogram, each with good points around points whose time, start time or count does
    not fit in int64."""
    gauge_points = [metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_int=1),
                    metrics_pb2.NumberDataPoint(time_unix_nano=_PAST_INT64[0], as_int=2),
                    metrics_pb2.NumberDataPoint(time_unix_nano=T0 + 1, start_time_unix_nano=_PAST_INT64[1], as_int=3),
                    metrics_pb2.NumberDataPoint(time_unix_nano=T0 + 2, as_int=4)]
    hist = [metrics_pb2.HistogramDataPoint(time_unix_nano=T0 + i, start_time_unix_nano=T0 - 1, count=count,
                                           explicit_bounds=[1.0], bucket_counts=[count, 0])
            for i, count in enumerate((3, _PAST_INT64[0], 5))]
    return [metrics_pb2.Metric(name="far.gauge", gauge=metrics_pb2.Gauge(data_points=gauge_points)),
            metrics_pb2.Metric(name="far.hist", histogram=metrics_pb2.Histogram(
                data_points=hist, aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE))]


@pytest.mark.parametrize("transport", ["protobuf", "json", "grpc"])
def test_times_and_counts_past_int64_are_rejected_alone(srv, http, channel, good, transport):
    """uint64 times and counts over 2^63 - 1 cannot be stored: those items are rejected (partial success) and
    the rest stored. Before, the writer failed the whole commit with 503, for every request in its group."""
    service = f"far-{transport}"
    tr = traces(service, _far_spans())
    mr = metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=_resource(service), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=_far_points())])])
    if transport == "grpc":
        t_resp = trace_service_pb2_grpc.TraceServiceStub(channel).Export(tr, timeout=10)
        m_resp = metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(mr, timeout=10)
        rejected = (t_resp.partial_success.rejected_spans, m_resp.partial_success.rejected_data_points)
        message = t_resp.partial_success.error_message + m_resp.partial_success.error_message
    elif transport == "protobuf":
        t_http = http.post("/v1/traces", content=tr.SerializeToString(), headers={"Content-Type": PROTOBUF})
        m_http = http.post("/v1/metrics", content=mr.SerializeToString(), headers={"Content-Type": PROTOBUF})
        assert (t_http.status_code, m_http.status_code) == (200, 200), (t_http.content, m_http.content)
        t_resp = trace_service_pb2.ExportTraceServiceResponse.FromString(t_http.content)
        m_resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(m_http.content)
        rejected = (t_resp.partial_success.rejected_spans, m_resp.partial_success.rejected_data_points)
        message = t_resp.partial_success.error_message + m_resp.partial_success.error_message
    else:  # OTLP/JSON: uint64 fields as decimal strings (otlp.md)
        answers = []
        for path, req in (("/v1/traces", tr), ("/v1/metrics", mr)):
            body = json.loads(MessageToJson(req))
            for rs in body.get("resourceSpans", ()):  # json_format writes ids as base64: OTLP/JSON wants hex
                for sp in rs["scopeSpans"][0]["spans"]:
                    sp["traceId"], sp["spanId"] = (base64.b64decode(sp[k]).hex() for k in ("traceId", "spanId"))
            r = http.post(path, content=json.dumps(body), headers={"Content-Type": JSON})
            assert r.status_code == 200, r.content
            answers.append(r.json()["partialSuccess"])
        rejected = (int(answers[0]["rejectedSpans"]), int(answers[1]["rejectedDataPoints"]))
        message = answers[0]["errorMessage"] + answers[1]["errorMessage"]
    assert rejected == (3, 3)
    assert "2^63 - 1" in message
    STORED_SPANS[service] += 2
    STORED_POINTS[service] += 4
    assert srv.query(f"SELECT name FROM spans WHERE service_name = '{service}' ORDER BY name") == [("op-0",), ("op-4",)]
    assert srv.alive()


def _layouts(t0: int) -> list[tuple[metrics_pb2.Metric, int, str]]:
    """Per kind, a metric with one good point first and points whose bucket layout is not one (the OTLP
    data model) from `t0` on, how many of them there are and a fragment of the reason."""
    nan, inf = float("nan"), float("inf")
    hist = [metrics_pb2.HistogramDataPoint(time_unix_nano=t0 + i, count=1, bucket_counts=[1] + [0] * len(b),
                                           explicit_bounds=b)
            for i, b in enumerate(([1.0, 2.0], [1.0, nan], [inf], [-inf, 0.0], [2.0, 1.0], [1.0, 1.0]))]
    scales = [metrics_pb2.ExponentialHistogramDataPoint(time_unix_nano=t0 + i, count=1, zero_count=1, scale=scale)
              for i, scale in enumerate((3, 21, -11, 2**31 - 1, -2**31))]
    thresholds = [metrics_pb2.ExponentialHistogramDataPoint(time_unix_nano=t0 + i, count=1, zero_count=1, scale=3,
                                                            zero_threshold=zt)
                  for i, zt in enumerate((0.5, nan, -1.0, inf))]
    counts = [metrics_pb2.HistogramDataPoint(time_unix_nano=t0 + i, count=c, bucket_counts=[2, 3], explicit_bounds=[1.0])
              for i, c in enumerate((5, 4, 6, 0))]
    exp_counts = [metrics_pb2.ExponentialHistogramDataPoint(time_unix_nano=t0 + i, count=c, zero_count=1, scale=3,
                                                            positive={"bucket_counts": [2]})
                  for i, c in enumerate((3, 2, 4))]
    summ = [metrics_pb2.SummaryDataPoint(time_unix_nano=t0 + i, count=1, sum=1.0, quantile_values=[
        metrics_pb2.SummaryDataPoint.ValueAtQuantile(quantile=q, value=inf)]) for i, q in enumerate((0.5, 1.5, -0.1, nan))]
    return [
        (metrics_pb2.Metric(name="layout.hist", histogram=metrics_pb2.Histogram(data_points=hist)), 5,
         "explicit_bounds that are not finite and strictly increasing"),
        (metrics_pb2.Metric(name="layout.scale", exponential_histogram=metrics_pb2.ExponentialHistogram(
            data_points=scales)), 4, "(the data model's range is -10 to 20)"),
        (metrics_pb2.Metric(name="layout.zero", exponential_histogram=metrics_pb2.ExponentialHistogram(
            data_points=thresholds)), 3, "zero_threshold"),
        (metrics_pb2.Metric(name="layout.summary", summary=metrics_pb2.Summary(data_points=summ)), 3,
         "a quantile outside [0, 1]"),
        (metrics_pb2.Metric(name="layout.count", histogram=metrics_pb2.Histogram(data_points=counts)), 3,
         "a count that is not the sum of its bucket_counts"),
        (metrics_pb2.Metric(name="layout.expcount", exponential_histogram=metrics_pb2.ExponentialHistogram(
            data_points=exp_counts)), 2, "a count that is not the sum of its buckets and zero_count")]


@pytest.mark.parametrize("case", range(6), ids=["hist-bounds", "exp-scale", "exp-zero-threshold", "summary-quantile",
                                                 "hist-count", "exp-count"])
def test_points_whose_bucket_layout_is_not_one_are_rejected_alone(srv, http, good, case):
    """Non-finite or unordered bounds, an exponential scale outside [-10, 20] or a bad zero threshold, a
    quantile outside [0, 1], a count that is not its buckets' sum: rejected (partial success), the good
    point stored. A count below its buckets' sum made the scrape's +Inf bucket smaller than the one before
    it, which OpenMetrics parsers refuse, and the whole scrape with it. Stored, they broke every
    later query of their metric (NaN bounds are not JSON SQLite reads) or stalled the scrape (a scale of
    2^31 made it shift by 2^31 bits)."""
    metric, rejected, reason = _layouts(time.time_ns() - 10**9)[case]  # now: live for the scrape
    service = metric.name.replace(".", "-")
    req = metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=_resource(service), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])])
    r = http.post("/v1/metrics", content=req.SerializeToString(), headers={"Content-Type": PROTOBUF})
    assert r.status_code == 200, r.content
    partial = metrics_service_pb2.ExportMetricsServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_data_points == rejected
    assert reason in partial.error_message
    STORED_POINTS[service] += 1
    assert srv.query("SELECT count(*) FROM metric_series s JOIN resources r ON r.id = s.resource_id "
                     f"WHERE r.service_name = '{service}'") == [(1,)]
    scrape = http.get("/metrics", headers={"Authorization": f"Bearer {srv.admin_key()}"}, timeout=10)
    assert scrape.status_code == 200 and metric.name.replace(".", "_") in scrape.text


# --- gRPC -----------------------------------------------------------------------------------------------

def test_grpc_wrong_length_trace_id_is_invalid_argument(srv, channel, good):
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Export(traces("bad", [span(0), span(1, trace_id=bytes(17))]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "span.trace_id must be 16 bytes (32 hex characters), got 17 bytes"


@pytest.mark.parametrize("service", ["trace.v1.TraceService", "metrics.v1.MetricsService"])
def test_grpc_garbage_is_invalid_argument(srv, channel, good, service):
    """Undecodable bytes are bad data (otlp.md), not grpc's UNKNOWN with a Python exception's text."""
    export = channel.unary_unary(f"/opentelemetry.proto.collector.{service}/Export",
                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        export(b"\x0a\x05abc", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    kind = "ExportTraceServiceRequest" if service.startswith("trace") else "ExportMetricsServiceRequest"
    assert err.value.details() == f"the message is not a valid protobuf {kind}"


def test_grpc_exemplar_with_bad_span_id_is_invalid_argument(srv, channel, good):
    point = metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=1.5, exemplars=[
        metrics_pb2.Exemplar(time_unix_nano=T0, as_double=1.5, span_id=b"\x01\x02\x03")])
    with pytest.raises(grpc.RpcError) as err:
        metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(gauge("bad", [point]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exemplar.span_id must be 8 bytes" in err.value.details()


def test_grpc_oversized_message_is_resource_exhausted(srv, channel, good):
    big = span(0, attributes=[KeyValue(key="blob", value=AnyValue(string_value="x" * (GRPC_LIMIT_MIB << 20)))])
    with pytest.raises(grpc.RpcError) as err:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(traces("bad", [big]), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_partial_success_and_still_serving(srv, channel, good):
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    resp = stub.Export(traces("grpc-ok", [span(0), span(1, span_id=bytes(8)), span(2)]), timeout=10)
    assert resp.partial_success.rejected_spans == 1
    STORED_SPANS["grpc-ok"] += 2
    resp = metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(
        gauge("grpc-ok", [metrics_pb2.NumberDataPoint(time_unix_nano=T0, as_double=2.5)]), timeout=10)
    assert not resp.HasField("partial_success")
    STORED_POINTS["grpc-ok"] += 1
    assert srv.query("SELECT count(*) FROM spans WHERE service_name = 'grpc-ok'") == [(2,)]


# --- after all of it ------------------------------------------------------------------------------------

def test_server_survived_and_earlier_data_is_intact(srv, http, good):
    assert srv.alive()
    r = http.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # The good batch is exactly there, untouched.
    assert [row[0] for row in srv.query("SELECT span_id FROM spans WHERE service_name = 'good' "
                                        "ORDER BY span_id")] == good
    # Nothing from a refused request was stored; everything stored was acknowledged by some test.
    assert srv.query("SELECT count(*) FROM resources WHERE service_name = 'bad'") == [(0,)]
    spans = dict(srv.query("SELECT service_name, count(*) FROM spans GROUP BY 1"))
    assert spans == {k: v for k, v in STORED_SPANS.items() if v}
    points = dict(srv.query("SELECT r.service_name, count(*) FROM metric_points p JOIN metric_series s "
                            "ON s.id = p.series_id JOIN resources r ON r.id = s.resource_id GROUP BY 1"))
    assert points == {k: v for k, v in STORED_POINTS.items() if v}
    # And a new good request still goes through both transports.
    r = http.post("/v1/traces", content=traces("after", [span(0)]).SerializeToString(),
                  headers={"Content-Type": PROTOBUF})
    assert r.status_code == 200
    assert srv.query("SELECT count(*) FROM spans WHERE service_name = 'after'") == [(1,)]
    STORED_SPANS["after"] += 1
