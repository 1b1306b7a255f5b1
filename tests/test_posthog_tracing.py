"""The PostHog tracing API (issue 4, posthog-tracing.md) against a live server.

Spans go in through the real OpenTelemetry SDK (OTLP/HTTP exporter, hand-set start/end times) and, for
exact trees, through hand-built OTLP protobuf. Every expectation is computed from what was sent: each
span is kept as a plain record, and a small reference evaluator in this file decides which records a
filter selects. One server serves the whole module (spans are read-only once sent).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
import time
from collections import Counter

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from conftest import ServerProcess, free_port

S = 1_000_000_000
MS = 1_000_000
P1 = "/api/projects/1/tracing/spans"
ENV1 = "/api/environments/1/tracing/spans"
SELF_TRACE = "5e1f0000000000000000000000000001"
BIG_TRACE = "b1900000000000000000000000000002"
BIG_SPANS = 2101


# --- what was sent, as plain records --------------------------------------------------------------------

def _iso(ns: int, digits: int = 6) -> str:
    secs, frac = divmod(ns, S)
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        "." + f"{frac:09d}"[:digits] + "Z"


def _text(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(list(v), separators=(",", ":"))


def _record(span) -> dict:
    """An SDK ReadableSpan as the record the API should return."""
    ctx = span.get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
            "name": span.name, "kind": span.kind.value + 1,  # the SDK's SpanKind is the proto's minus one
            "status_code": span.status.status_code.value, "start": span.start_time, "end": span.end_time,
            "service": span.resource.attributes["service.name"],
            "attributes": dict(span.attributes or {}), "resource": dict(span.resource.attributes),
            "events": [{"name": e.name, "timestamp": _iso(e.timestamp),
                        "attributes": {k: _text(v) for k, v in e.attributes.items()}} for e in span.events],
            "links": [{"trace_id": f"{ln.context.trace_id:032x}", "span_id": f"{ln.context.span_id:016x}"}
                      for ln in span.links]}


def _hand_record(trace_id: str, span_id: int, parent: int | None, name: str, start: int, end: int,
                 service: str, **extra) -> dict:
    return {"trace_id": trace_id, "span_id": f"{span_id:016x}",
            "parent_span_id": f"{parent:016x}" if parent is not None else "", "name": name,
            "kind": extra.get("kind", 1), "status_code": extra.get("status_code", 0), "start": start, "end": end,
            "service": service, "attributes": extra.get("attributes", {}),
            "resource": {"service.name": service}, "events": [], "links": []}


def _otlp(records: list[dict]) -> bytes:
    req = ExportTraceServiceRequest()
    by_service: dict[str, object] = {}
    for r in records:
        scope = by_service.get(r["service"])
        if scope is None:
            rs = req.resource_spans.add()
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = "service.name", r["service"]
            scope = by_service[r["service"]] = rs.scope_spans.add()
        sp = scope.spans.add()
        sp.trace_id, sp.span_id = bytes.fromhex(r["trace_id"]), bytes.fromhex(r["span_id"])
        if r["parent_span_id"]:
            sp.parent_span_id = bytes.fromhex(r["parent_span_id"])
        sp.name, sp.kind, sp.status.code = r["name"], r["kind"], r["status_code"]
        sp.start_time_unix_nano, sp.end_time_unix_nano = r["start"], r["end"]
        for k, v in r["attributes"].items():
            kv = sp.attributes.add()
            kv.key, kv.value.string_value = k, v
    return req.SerializeToString()


# --- the reference evaluator ----------------------------------------------------------------------------

def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _matches(rec: dict, f: dict) -> bool:
    op, values = f["operator"], f.get("value")
    values = values if isinstance(values, list) else [values]
    if f["type"] == "span":
        key = f["key"]
        if key == "duration":
            subject, ms = (rec["end"] - rec["start"]) / MS, [float(v) for v in values]
            return {"gt": subject > ms[0], "lt": subject < ms[0], "exact": subject in ms,
                    "is_not": subject not in ms}[op]
        if key in ("kind", "status_code"):
            names = {"Server": [2], "Client": [3], "Internal": [1], "OK": [0, 1], "Error": [2]}
            ints = [x for v in values for x in (names[v] if isinstance(v, str) else [v])]
            subject = rec[key]
            if op in ("is_set", "is_not_set"):
                return op == "is_set"
            if op in ("gt", "lt"):
                return subject > values[0] if op == "gt" else subject < values[0]
            return (subject in ints) == (op == "exact")
        subject = rec[key]
        present = True
    else:
        attrs = rec["attributes"] if f["type"] == "span_attribute" else rec["resource"]
        present = f["key"] in attrs
        subject = _text(attrs[f["key"]]) if present else None
    if op in ("is_set", "is_not_set"):
        return present == (op == "is_set")
    texts = [_text(v) for v in values]
    if not present:
        return op in ("is_not", "not_icontains", "not_regex")
    if op == "exact":
        return subject in texts
    if op == "is_not":
        return subject not in texts
    if op == "icontains":
        return any(t.lower() in subject.lower() for t in texts)
    if op == "not_icontains":
        return not any(t.lower() in subject.lower() for t in texts)
    if op == "regex":
        return any(re.search(t, subject) for t in texts)
    if op == "not_regex":
        return not any(re.search(t, subject) for t in texts)
    n = _number(subject)
    return n is not None and (n > float(values[0]) if op == "gt" else n < float(values[0]))


def _eval(rec: dict, cond) -> bool:
    if isinstance(cond, list):
        return all(_eval(rec, c) for c in cond)
    if "key" in cond:
        return _matches(rec, cond)
    parts = [_eval(rec, c) for c in cond["values"]]
    return all(parts) if cond["type"] == "AND" else any(parts)


# --- fixtures -------------------------------------------------------------------------------------------

class Env:
    server: ServerProcess
    key: str
    records: list[dict]  # everything in project 1
    window: dict  # an explicit ISO range holding exactly the SDK spans of `in_window`
    in_window: list[dict]
    acme_key: str
    metrics_key: str


def _send_sdk_spans(srv: ServerProcess, base: int) -> list[dict]:
    """~40 traces over three services; deterministic attributes, kinds, statuses and times."""
    rng = random.Random(4)
    memory = InMemorySpanExporter()
    providers, tracers = [], {}
    for service, extra in (("checkout", {"deployment.environment": "prod-eu", "tier": "gold"}),
                           ("payments", {"deployment.environment": "prod-us"}),
                           ("web_app%", {"deployment.environment": "staging"})):
        p = TracerProvider(resource=Resource.create({"service.name": service, **extra}))
        p.add_span_processor(SimpleSpanProcessor(memory))
        p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{srv.http_url}/v1/traces", timeout=10),
                                                schedule_delay_millis=60_000, max_export_batch_size=512))
        providers.append(p)
        tracers[service] = p.get_tracer("tests.tracing")
    services = list(tracers)
    kinds = [SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.PRODUCER, SpanKind.CONSUMER]
    statuses = [None, None, Status(StatusCode.OK), Status(StatusCode.ERROR, "boom")]
    first_root = None
    try:
        for i in range(40):
            # Traces 10 and 11 start at the same nanosecond: keyset paging must break the tie.
            start = base + (10 if i == 11 else i) * 7_300 * MS + 123
            if i == 39:
                start = base - 7_200 * S  # two hours old: outside the default one-hour window
            n = 1 + i % 6
            opened = []
            for j in range(n):
                tracer = tracers[services[(i + j) % 3] if j else services[i % 3]]
                attrs = {"http.method": ["GET", "POST", "PUT"][(i + j) % 3],
                         "user.id": f"user-{rng.randrange(5)}", "http.status_code": [200, 404, 500][(i * j) % 3]}
                if j % 2 == 0:
                    attrs["cache.hit"] = j % 4 == 0
                if i % 5 == 0:
                    attrs["db.statement"] = "SELECT 100% _of_ rows"
                if j == 0:
                    attrs["ratio"] = i / 8
                parent = opened[rng.randrange(len(opened))] if opened else None
                s0 = start + (j * 3 * MS if j else 0)
                ctx = trace.set_span_in_context(parent[0]) if parent else Context()
                links = [Link(first_root.get_span_context(), {"why": "retry"})] if (i == 5 and j == 0) else None
                span = tracer.start_span(f"op-{(i + j) % 7}" if j else f"GET /route/{i % 4}", context=ctx,
                                         kind=kinds[(i + j) % 5] if j else SpanKind.SERVER, attributes=attrs,
                                         start_time=s0, links=links)
                if i == 5 and j == 0:
                    span.add_event("cache.miss", {"attempt": 2, "key": "k"}, timestamp=s0 + 1_000)
                status = statuses[(i + j) % 4]
                if status is not None:
                    span.set_status(status)
                end = s0 + (rng.randrange(1, 400) * MS if j else 500 * MS + i * MS)
                opened.append((span, end))
                if first_root is None:
                    first_root = span
            for span, end in reversed(opened):
                span.end(end_time=end)
        for p in providers:
            assert p.force_flush(10_000)
    finally:
        for p in providers:
            p.shutdown()
    return [_record(s) for s in memory.get_finished_spans()]


def _post_otlp(srv: ServerProcess, body: bytes, project: str | None = None) -> None:
    headers = {"Content-Type": "application/x-protobuf"}
    if project:
        headers["X-Otelite-Project"] = project
    r = httpx.post(srv.http_url + "/v1/traces", content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    tmp = tmp_path_factory.mktemp("tracing")
    srv = ServerProcess(db=tmp / "otelite.db", grpc_port=free_port(), http_port=free_port()).start()
    try:
        e = Env()
        e.server, e.key = srv, srv.admin_key()
        now = time.time_ns()
        base = now - 20 * 60 * S
        sdk = _send_sdk_spans(srv, base)
        # Hand-built: a tree with known self times (ten minutes before the SDK spans) ...
        t = base - 600 * S
        tree = [_hand_record(SELF_TRACE, 1, None, "root", t, t + 100 * MS, "selftime", kind=2),
                _hand_record(SELF_TRACE, 2, 1, "a", t + 10 * MS, t + 40 * MS, "selftime"),
                _hand_record(SELF_TRACE, 3, 1, "b", t + 30 * MS, t + 60 * MS, "selftime"),
                _hand_record(SELF_TRACE, 4, 1, "c-async", t + 90 * MS, t + 130 * MS, "selftime"),
                _hand_record(SELF_TRACE, 5, 2, "a1", t + 15 * MS, t + 20 * MS, "selftime")]
        _post_otlp(srv, _otlp(tree))
        # ... and a trace of more spans than one page (three hours old, outside the default window).
        b = now - 3 * 3600 * S
        big = [_hand_record(BIG_TRACE, 1, None, "big-root", b, b + 10 * S, "big")]
        big += [_hand_record(BIG_TRACE, k, 1, f"step-{k}", b + k * MS, b + k * MS + 500, "big")
                for k in range(2, BIG_SPANS + 1)]
        _post_otlp(srv, _otlp(big))
        e.records = sdk + tree + big
        e.window = {"date_from": _iso(base - 300 * S), "date_to": _iso(base + 600 * S)}
        e.in_window = [r for r in sdk if base - 300 * S <= r["start"] <= base + 600 * S]
        assert len(e.in_window) == len(sdk) - 4  # all but the two-hour-old trace (4 spans)

        assert srv.cli("projects", "create", "acme").returncode == 0
        _post_otlp(srv, _otlp([_hand_record("ac" * 16, 9, None, "acme-op", now - 60 * S, now - 59 * S, "acme-svc")]),
                   project="acme")
        e.acme_key = _key(srv.cli("keys", "create", "--project", "acme", "--scope", "tracing:read"))
        e.metrics_key = _key(srv.cli("keys", "create", "--project", "default", "--scope", "metrics:read"))
        yield e
    finally:
        srv.kill()


def _key(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return re.search(r"^(otl_[A-Za-z0-9_-]+)$", proc.stdout, re.M).group(1)


def _post(env: Env, path: str, body, key: str | None = None, base: str = P1) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or env.key}"}
    kw = {"content": body} if isinstance(body, (bytes, str)) else {"json": body}
    return httpx.post(env.server.http_url + base + path, headers=headers, timeout=30, **kw)


def _get(env: Env, path: str, params: dict | None = None, key: str | None = None, base: str = P1) -> httpx.Response:
    return httpx.get(env.server.http_url + base + path, params=params,
                     headers={"Authorization": f"Bearer {key or env.key}"}, timeout=30)


def _query_all(env: Env, query: dict) -> list[dict]:
    r = _post(env, "/query", {"query": {"dateRange": env.window, "rootSpans": False, "limit": 1000, **query}})
    assert r.status_code == 200, r.text
    assert r.json()["hasMore"] is False
    return r.json()["results"]


def _ids(spans) -> set[str]:
    return {s["span_id"] for s in spans}


# --- POST query -----------------------------------------------------------------------------------------

def test_default_query_is_latest_root_spans_of_the_last_hour(env):
    r = _post(env, "/query", {"query": {}})
    assert r.status_code == 200, r.text
    body = r.json()
    now = time.time_ns()
    roots = [x for x in env.records if not x["parent_span_id"] and x["start"] >= now - 3600 * S]
    expected = sorted(roots, key=lambda x: (x["start"], x["span_id"]), reverse=True)
    assert [s["span_id"] for s in body["results"]] == [x["span_id"] for x in expected]
    assert body["hasMore"] is False and body["nextCursor"] is None
    # Both path prefixes, trailing slash optional.
    for base in (ENV1, P1):
        assert _post(env, "/query/", {"query": {}}, base=base).json()["results"] == body["results"]


def test_span_shape_matches_what_was_sent(env):
    rec = next(x for x in env.records if x["events"])  # trace 5's root: an event and a link
    r = _post(env, "/query", {"query": {"dateRange": env.window, "traceId": rec["trace_id"]}})
    (span,) = r.json()["results"]
    trace_spans = [x for x in env.records if x["trace_id"] == rec["trace_id"]]
    first, last = min(x["start"] for x in trace_spans), max(x["end"] for x in trace_spans)
    assert span == {
        "uuid": span["uuid"],
        "trace_id": rec["trace_id"], "span_id": rec["span_id"], "parent_span_id": "", "name": rec["name"],
        "kind": 2, "service_name": rec["service"], "status_code": rec["status_code"], "status_message": "",
        "timestamp": _iso(rec["start"]), "end_time": _iso(rec["end"]), "duration_nano": rec["end"] - rec["start"],
        "is_root_span": True, "trace_start": _iso(first), "trace_duration": last - first,
        "matched_filter": 1,  # the span itself satisfies the query (PostHog's field; prefetched spans may not)
        "attributes": {k: _text(v) for k, v in rec["attributes"].items()},
        "resource_attributes": {k: _text(v) for k, v in rec["resource"].items()},
        "events": rec["events"],
        "links": [{**ln, "trace_state": "", "flags": span["links"][0]["flags"], "attributes": {"why": "retry"}}
                  for ln in rec["links"]],
    }
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", span["uuid"])
    assert span["attributes"]["ratio"] == "0.625" and span["attributes"]["cache.hit"] == "true"


SPAN_FILTERS = [
    {"key": "name", "operator": "exact", "value": ["op-3", "op-4"]},
    {"key": "name", "operator": "exact", "value": "op-3"},
    {"key": "name", "operator": "is_not", "value": ["op-3"]},
    {"key": "name", "operator": "icontains", "value": "ROUTE/1"},
    {"key": "name", "operator": "not_icontains", "value": "op-"},
    {"key": "name", "operator": "regex", "value": r"^op-[0-2]$"},
    {"key": "name", "operator": "not_regex", "value": r"^op-"},
    {"key": "name", "operator": "is_set"},
    {"key": "name", "operator": "is_not_set"},
    {"key": "duration", "operator": "gt", "value": 200},
    {"key": "duration", "operator": "lt", "value": "50.5"},
    {"key": "kind", "operator": "exact", "value": ["Server"]},
    {"key": "kind", "operator": "exact", "value": 3},
    {"key": "kind", "operator": "is_not", "value": ["Client", "Internal"]},
    {"key": "kind", "operator": "gt", "value": 3},
    {"key": "status_code", "operator": "exact", "value": "Error"},
    {"key": "status_code", "operator": "exact", "value": ["OK"]},
    {"key": "status_code", "operator": "is_not", "value": [1]},
    {"key": "status_code", "operator": "lt", "value": 2},
]
ATTRIBUTE_FILTERS = [
    {"key": "http.method", "operator": "exact", "value": ["GET"]},
    {"key": "http.method", "operator": "exact", "value": ["GET", "PUT"]},
    {"key": "http.status_code", "operator": "exact", "value": "404"},  # an int attribute, compared as text
    {"key": "http.status_code", "operator": "exact", "value": 500},
    {"key": "cache.hit", "operator": "exact", "value": True},
    {"key": "cache.hit", "operator": "is_not", "value": ["true"]},  # absent counts as "not true"
    {"key": "user.id", "operator": "icontains", "value": "USER-1"},
    {"key": "user.id", "operator": "not_icontains", "value": "-2"},
    {"key": "db.statement", "operator": "icontains", "value": "100%"},  # % and _ are literal
    {"key": "db.statement", "operator": "icontains", "value": "_of_"},
    {"key": "http.method", "operator": "icontains", "value": "%"},
    {"key": "user.id", "operator": "regex", "value": r"user-[34]$"},
    {"key": "user.id", "operator": "not_regex", "value": r"[01]$"},
    {"key": "http.status_code", "operator": "gt", "value": 250},
    {"key": "ratio", "operator": "lt", "value": 1.5},
    {"key": "cache.hit", "operator": "is_set"},
    {"key": "cache.hit", "operator": "is_not_set"},
]
RESOURCE_FILTERS = [
    {"key": "service.name", "operator": "exact", "value": ["payments"]},
    {"key": "deployment.environment", "operator": "icontains", "value": "PROD"},
    {"key": "deployment.environment", "operator": "regex", "value": "^prod-(eu|us)$"},
    {"key": "deployment.environment", "operator": "not_regex", "value": "eu"},
    {"key": "tier", "operator": "is_set"},
    {"key": "tier", "operator": "is_not_set"},
    {"key": "tier", "operator": "is_not", "value": "gold"},
]


@pytest.mark.parametrize("f", [{"type": "span", **f} for f in SPAN_FILTERS]
                         + [{"type": "span_attribute", **f} for f in ATTRIBUTE_FILTERS]
                         + [{"type": "span_resource_attribute", **f} for f in RESOURCE_FILTERS],
                         ids=lambda f: f"{f['type']}:{f['key']}:{f['operator']}")
def test_each_filter_selects_what_the_reference_selects(env, f):
    expected = {x["span_id"] for x in env.in_window if _matches(x, f)}
    got = _ids(_query_all(env, {"filterGroup": [f]}))
    assert got == expected
    if f["operator"] not in ("is_set", "is_not_set") and f.get("value") != "%":
        assert 0 < len(expected) < len(env.in_window)  # the case discriminates


def test_id_filters(env):
    rec = env.in_window[7]
    tid = rec["trace_id"]
    same_trace = {x["span_id"] for x in env.in_window if x["trace_id"] == tid}
    cases = [
        ({"key": "trace_id", "operator": "exact", "value": tid.upper()}, same_trace),
        ({"key": "trace_id", "operator": "is_not", "value": [tid]}, _ids(env.in_window) - same_trace),
        ({"key": "trace_id", "operator": "icontains", "value": tid[5:15].upper()},
         {x["span_id"] for x in env.in_window if tid[5:15] in x["trace_id"]}),
        ({"key": "trace_id", "operator": "regex", "value": f"^{tid[:6]}"},
         {x["span_id"] for x in env.in_window if x["trace_id"].startswith(tid[:6])}),
        ({"key": "span_id", "operator": "exact", "value": [rec["span_id"]]}, {rec["span_id"]}),
        ({"key": "span_id", "operator": "not_icontains", "value": rec["span_id"][3:11]},
         {x["span_id"] for x in env.in_window if rec["span_id"][3:11] not in x["span_id"]}),
    ]
    for f, expected in cases:
        assert _ids(_query_all(env, {"filterGroup": [{"type": "span", **f}]})) == expected, f
    assert _ids(_query_all(env, {"traceId": tid})) == same_trace


def test_nested_groups_service_status_and_root_filters(env):
    groups = [
        {"type": "OR", "values": [
            {"type": "AND", "values": [{"key": "http.method", "type": "span_attribute", "operator": "exact",
                                        "value": ["GET"]},
                                       {"key": "status_code", "type": "span", "operator": "exact", "value": "Error"}]},
            {"type": "AND", "values": [{"key": "service.name", "type": "span_resource_attribute",
                                        "operator": "exact", "value": ["payments"]},
                                       {"type": "OR", "values": [
                                           {"key": "kind", "type": "span", "operator": "exact", "value": "Server"},
                                           {"key": "duration", "type": "span", "operator": "gt", "value": 300}]}]}]},
        {"type": "AND", "values": [{"type": "AND", "values": []},
                                   {"key": "user.id", "type": "span_attribute", "operator": "exact",
                                    "value": ["user-1", "user-2"]}]},
        [{"key": "name", "type": "span", "operator": "regex", "value": "op"},
         {"type": "OR", "values": [{"key": "cache.hit", "type": "span_attribute", "operator": "is_set"},
                                   {"key": "tier", "type": "span_resource_attribute", "operator": "is_set"}]}],
    ]
    for g in groups:
        expected = {x["span_id"] for x in env.in_window if _eval(x, g)}
        assert 0 < len(expected) < len(env.in_window)
        assert _ids(_query_all(env, {"filterGroup": g})) == expected

    only = {"serviceNames": ["payments", "web_app%"], "statusCodes": [0, 2]}
    expected = {x["span_id"] for x in env.in_window
                if x["service"] in only["serviceNames"] and x["status_code"] in only["statusCodes"]}
    assert _ids(_query_all(env, only)) == expected
    roots = _query_all(env, {"rootSpans": True})
    assert _ids(roots) == {x["span_id"] for x in env.in_window if not x["parent_span_id"]}
    assert all(s["is_root_span"] and s["parent_span_id"] == "" for s in roots)
    # A half-edited filter (no value yet) constrains nothing.
    assert _ids(_query_all(env, {"filterGroup": [{"key": "name", "type": "span", "operator": "exact",
                                                   "value": []}]})) == _ids(env.in_window)


@pytest.mark.parametrize("order,direction", [("timestamp", "DESC"), ("timestamp", "ASC"), ("latest", None),
                                             ("earliest", None), ("duration", "DESC"), ("duration", "ASC")])
def test_ordering_and_paging_visit_every_span_once(env, order, direction):
    descending = direction == "DESC" or order == "latest"
    if order == "duration":
        key = lambda x: (x["end"] - x["start"], x["start"], x["span_id"])  # noqa: E731
    else:
        key = lambda x: (x["start"], x["span_id"])  # noqa: E731
    expected = [x["span_id"] for x in sorted(env.in_window, key=key, reverse=descending)]
    query = {"dateRange": env.window, "rootSpans": False, "orderBy": order, "limit": 7}
    if direction:
        query["orderDirection"] = direction
    seen, after, offset = [], None, 0
    for _ in range(100):
        q = dict(query, **({"after": after} if after else {}), **({"offset": offset} if order == "duration" else {}))
        body = _post(env, "/query", {"query": q}).json()
        seen += [s["span_id"] for s in body["results"]]
        assert len(body["results"]) <= 7
        if not body["hasMore"]:
            assert body["nextCursor"] is None
            break
        if order == "duration":
            assert body["nextCursor"] is None
            offset += len(body["results"])
        else:
            after = body["nextCursor"]
            doc = json.loads(base64.b64decode(after))
            assert set(doc) == {"timestamp", "span_id"} and doc["span_id"] == seen[-1]
    assert seen == expected
    assert len(seen) == len(set(seen)) == len(env.in_window)


# --- POST sparkline -------------------------------------------------------------------------------------

def test_sparkline_counts_zero_fill_and_roots(env):
    body = {"query": {"dateRange": env.window}}
    r = _post(env, "/sparkline", body)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    # A 15-minute window: 900 s / 50 = 18 s, nearest step 10 s.
    lo = int(dt.datetime.fromisoformat(env.window["date_from"]).timestamp()) * S
    hi = int(dt.datetime.fromisoformat(env.window["date_to"]).timestamp()) * S
    step = 10 * S
    buckets = [_iso(i * step) for i in range(lo // step, hi // step + 1)]
    assert sorted({x["time"] for x in results}) == buckets
    assert results == sorted(results, key=lambda x: (x["time"], -x["count"], x["service"]))
    expected = Counter((_iso(x["start"] // step * step), x["service"]) for x in env.in_window)
    assert {(x["time"], x["service"]): x["count"] for x in results if x["count"]} == dict(expected)
    assert sum(x["count"] for x in results) == len(env.in_window)
    empty = [x for x in results if x["count"] == 0]
    assert empty and all(x["service"] == "" for x in empty)
    assert len(results) == len(expected) + len(buckets) - len({t for t, _ in expected})

    roots = _post(env, "/sparkline", {"query": {"dateRange": env.window, "rootSpans": True}}).json()["results"]
    assert sum(x["count"] for x in roots) == len({x["trace_id"] for x in env.in_window if not x["parent_span_id"]})
    # Filters apply as in the query.
    f = {"dateRange": env.window, "serviceNames": ["checkout"],
         "filterGroup": [{"key": "http.method", "type": "span_attribute", "operator": "exact", "value": "GET"}]}
    filtered = _post(env, "/sparkline", {"query": f}).json()["results"]
    assert sum(x["count"] for x in filtered) == len(
        [x for x in env.in_window if x["service"] == "checkout" and x["attributes"]["http.method"] == "GET"])
    assert {x["service"] for x in filtered} <= {"checkout", ""}


# --- POST trace -----------------------------------------------------------------------------------------

def test_trace_view_self_times_and_paging(env):
    r = _post(env, f"/trace/{SELF_TRACE}", {})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hasMore"] is False and body["nextOffset"] is None
    assert [s["name"] for s in body["results"]] == ["root", "a", "a1", "b", "c-async"]  # start order
    # root: 100 ms minus the union of a∪b = [10,60] and c clipped to [90,100]; a: 30 minus a1 (5).
    assert {s["name"]: s["self_time_nano"] for s in body["results"]} == {
        "root": 40 * MS, "a": 25 * MS, "a1": 5 * MS, "b": 30 * MS, "c-async": 40 * MS}
    assert all(s["trace_duration"] == 130 * MS for s in body["results"])
    # Filters narrow the page but not the self times (computed over the whole trace).
    only = _post(env, f"/trace/{SELF_TRACE}", {"filterGroup": [{"key": "name", "type": "span",
                                                                "operator": "exact", "value": "root"}]}).json()
    assert [(s["name"], s["self_time_nano"]) for s in only["results"]] == [("root", 40 * MS)]
    # A date range that misses the trace returns nothing.
    assert _post(env, f"/trace/{SELF_TRACE}", {"dateRange": {"date_from": "-1M"}}).json()["results"] == []

    first = _post(env, f"/trace/{BIG_TRACE}", {}).json()
    assert len(first["results"]) == 2000 and first["hasMore"] is True and first["nextOffset"] == 2000
    rest = _post(env, f"/trace/{BIG_TRACE}", {"offset": 2000}).json()
    assert len(rest["results"]) == BIG_SPANS - 2000 and rest["hasMore"] is False and rest["nextOffset"] is None
    names = [s["name"] for s in first["results"] + rest["results"]]
    assert names == ["big-root"] + [f"step-{k}" for k in range(2, BIG_SPANS + 1)]
    assert first["results"][0]["self_time_nano"] == 10 * S - (BIG_SPANS - 1) * 500  # disjoint 500 ns children
    assert _post(env, "/trace/" + "0" * 32, {}).json() == {"results": [], "hasMore": False, "nextOffset": None}


# --- GET pickers ----------------------------------------------------------------------------------------

def test_service_names(env):
    names = lambda params=None: [x["name"] for x in _get(env, "/service-names", params).json()["results"]]  # noqa
    assert names() == ["checkout", "payments", "selftime", "web_app%"]
    assert names({"dateRange": json.dumps({"date_from": "-4h"})}) == ["big", "checkout", "payments", "selftime",
                                                                       "web_app%"]
    assert names({"search": "APP%"}) == ["web_app%"]
    assert names({"search": "_"}) == ["web_app%"]
    assert names({"search": "%"}) == ["web_app%"]
    assert names({"search": "ay"}) == ["payments"]
    assert names({"dateRange": json.dumps({"date_from": "-1M"})}) == []
    assert [x["name"] for x in _get(env, "/service-names", key=env.acme_key,
                                    base="/api/projects/acme/tracing/spans").json()["results"]] == ["acme-svc"]


def test_attribute_keys_and_values(env):
    span_keys = Counter(k for x in env.records for k in x["attributes"])
    expected = sorted(span_keys, key=lambda k: (-span_keys[k], k))
    r = _get(env, "/attributes").json()
    assert r == {"results": [{"name": k, "propertyFilterType": "span_attribute", "matchedOn": "key"}
                             for k in expected], "count": len(expected)}
    r = _get(env, "/attributes", {"attribute_type": "span_attribute", "search": "HTTP.", "limit": 1, "offset": 1})
    http = [k for k in expected if "http." in k]
    assert r.json() == {"results": [{"name": http[1], "propertyFilterType": "span_attribute", "matchedOn": "key"}],
                        "count": len(http)}
    resource_keys = Counter(k for x in env.records for k in x["resource"])
    r = _get(env, "/attributes", {"attribute_type": "resource"}).json()
    assert [x["name"] for x in r["results"]] == sorted(resource_keys, key=lambda k: (-resource_keys[k], k))
    assert {x["propertyFilterType"] for x in r["results"]} == {"span_resource_attribute"}

    users = Counter(x["attributes"]["user.id"] for x in env.records if "user.id" in x["attributes"])
    by_freq = sorted(users, key=lambda v: (-users[v], v))
    assert _get(env, "/values", {"key": "user.id"}).json() == {"results": [{"id": v, "name": v} for v in by_freq]}
    assert [x["name"] for x in _get(env, "/values", {"key": "user.id", "limit": 2, "offset": 1}).json()["results"]] \
        == by_freq[1:3]
    assert [x["name"] for x in _get(env, "/values", {"key": "user.id", "value": "R-3"}).json()["results"]] \
        == ["user-3"]
    codes = Counter(_text(x["attributes"]["http.status_code"]) for x in env.records
                    if "http.status_code" in x["attributes"])
    assert [x["name"] for x in _get(env, "/values", {"key": "http.status_code"}).json()["results"]] == \
        sorted(codes, key=lambda v: (-codes[v], v))
    envs = Counter(x["resource"].get("deployment.environment") for x in env.records)
    envs.pop(None)
    got = _get(env, "/values", {"key": "deployment.environment", "attribute_type": "resource"}).json()["results"]
    assert [x["name"] for x in got] == sorted(envs, key=lambda v: (-envs[v], v))
    r = _get(env, "/values")
    assert r.status_code == 400 and r.json() == {"error": "key is required"}


# --- errors, auth, schema -------------------------------------------------------------------------------

BAD_QUERIES = [
    ({"filterGroup": [{"key": "nope", "type": "span", "operator": "exact", "value": 1}]}, "unknown span key 'nope'"),
    ({"filterGroup": [{"key": "name", "type": "span", "operator": "like", "value": "x"}]}, "unknown operator 'like'"),
    ({"filterGroup": [{"key": "name", "type": "span", "operator": "gt", "value": 1}]},
     "gt does not apply to span key 'name'"),
    ({"filterGroup": [{"key": "k", "type": "event", "operator": "exact", "value": 1}]}, "type: expected span"),
    ({"filterGroup": [{"key": "k", "type": "span_attribute", "operator": "regex", "value": "(unclosed"}]},
     "invalid regex"),
    ({"filterGroup": [{"key": "k", "type": "span_attribute", "operator": "gt", "value": "ten"}]}, "needs a number"),
    ({"filterGroup": [{"key": "kind", "type": "span", "operator": "exact", "value": "Sideways"}]},
     "unknown span kind"),
    ({"filterGroup": [{"key": "trace_id", "type": "span", "operator": "exact", "value": "xyz"}]},
     "expected 32 hex characters"),
    ({"filterGroup": {"type": "XOR", "values": []}}, "expected AND or OR"),
    ({"filterGroup": "name=x"}, "expected a filter"),
    ({"traceId": "not-hex"}, "traceId: expected 32 hex characters"),
    ({"limit": 1001}, "limit: must be between 1 and 1000"),
    ({"limit": 0}, "limit: must be between 1 and 1000"),
    ({"limit": "ten"}, "limit: expected an integer"),
    ({"offset": -1}, "offset: must be at least 0"),
    ({"dateRange": {"date_from": "yesterday"}}, "dateRange.date_from: 'yesterday' is neither"),
    ({"dateRange": {"date_from": "-1h", "date_to": "-2h"}}, "dateRange: date_from is after date_to"),
    ({"dateRange": "-1h"}, "dateRange: not valid JSON"),
    ({"dateRange": 5}, "dateRange: expected an object"),
    ({"orderBy": "size"}, "orderBy: expected timestamp or duration"),
    ({"orderDirection": "up"}, "orderDirection: expected DESC or ASC"),
    ({"after": "!!!"}, "after: not a cursor"),
    ({"serviceNames": "checkout"}, "serviceNames: expected a list of strings"),
    ({"statusCodes": [7]}, "statusCodes: expected a list of OTel status codes"),
    ({"rootSpans": "yes"}, "rootSpans: expected true or false"),
]


@pytest.mark.parametrize("query,message", BAD_QUERIES, ids=[m for _, m in BAD_QUERIES])
def test_bad_query_is_400_naming_the_field(env, query, message):
    for path in ("/query", "/sparkline"):
        if path == "/sparkline" and set(query) & {"limit", "offset", "orderBy", "orderDirection", "after"}:
            continue
        r = _post(env, path, {"query": query})
        assert r.status_code == 400, (path, r.text)
        body = r.json()
        assert body["type"] == "validation_error" and message in body["detail"], body
        assert body["attr"] == next(iter(query))


def test_other_bad_input(env):
    for path, body, message in [
        ("/query", b"{not json", "request body is not valid JSON"),
        ("/query", b"[1, 2]", "request body must be a JSON object"),
        ("/query", {"query": [1]}, "query: expected an object"),
        ("/trace/1234", {}, "trace_id: expected 32 hex characters"),
        ("/trace/" + "g" * 32, {}, "trace_id: expected 32 hex characters"),
        (f"/trace/{SELF_TRACE}", {"offset": "x"}, "offset: expected an integer"),
        (f"/trace/{SELF_TRACE}", {"dateRange": {"date_to": "soon"}}, "dateRange.date_to"),
    ]:
        r = _post(env, path, body)
        assert r.status_code == 400 and message in r.json()["detail"], (path, r.text)
    for path, params, message in [
        ("/service-names", {"dateRange": "{bad"}, "dateRange: not valid JSON"),
        ("/service-names", {"dateRange": json.dumps({"date_from": "-3x"})}, "dateRange.date_from"),
        ("/attributes", {"attribute_type": "event"}, "attribute_type: expected span or resource"),
        ("/attributes", {"limit": "1001"}, "limit: must be between 1 and 1000"),
        ("/values", {"key": "k", "offset": "-2"}, "offset: must be at least 0"),
    ]:
        r = _get(env, path, params)
        assert r.status_code == 400 and message in r.json()["detail"], (path, r.text)


def test_scope_and_project_isolation(env):
    r = _post(env, "/query", {"query": {}}, key=env.metrics_key)
    assert r.status_code == 403 and "tracing:read" in r.json()["detail"]
    assert _get(env, "/attributes", key=env.metrics_key).status_code == 403
    for path in ("/query", "/sparkline", f"/trace/{SELF_TRACE}"):
        r = _post(env, path, {}, key=env.acme_key)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert _get(env, "/service-names", key=env.acme_key).status_code == 404
    assert httpx.post(env.server.http_url + P1 + "/query", json={}).status_code == 401
    # The acme key sees acme's span only; the default project never sees it.
    acme = "/api/environments/acme/tracing/spans"
    spans = _post(env, "/query", {"query": {}}, key=env.acme_key, base=acme).json()["results"]
    assert [s["name"] for s in spans] == ["acme-op"]
    assert _post(env, "/trace/" + "ac" * 16, {}).json()["results"] == []
    assert [x["name"] for x in _get(env, "/attributes", {"attribute_type": "resource"}, key=env.acme_key,
                                    base=acme).json()["results"]] == ["service.name"]


def test_openapi_lists_the_tracing_routes(env):
    paths = httpx.get(env.server.http_url + "/api/schema/").json()["paths"]
    for prefix in ("/api/environments/{project_id}", "/api/projects/{project_id}"):
        assert "post" in paths[f"{prefix}/tracing/spans/query"]
        assert "post" in paths[f"{prefix}/tracing/spans/trace/{{trace_id}}"]
        assert "post" in paths[f"{prefix}/tracing/spans/sparkline"]
        for name in ("service-names", "attributes", "values"):
            assert "get" in paths[f"{prefix}/tracing/spans/{name}"]
