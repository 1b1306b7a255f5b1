"""PostHog parity (issue 14) against a live `otelite serve`: the requests PostHog's own clients send —
its curl docs (`-d query=<json>`, form-encoded), its MCP tools and front end (`{"query": {...}}` JSON,
sometimes without a Content-Type), property filters `{key, value, operator, type}` with the operators of
newer clients, the span-query fields `excludeAttributes`/`flatSpans`/`prefetchSpans`, and the endpoints
`tracing/spans/aggregate`, `tracing/spans/tree`, `metrics/attributes`, `metrics/attribute_values`.

Spans and metrics go in as hand-built OTLP/HTTP protobuf with exact times and values; every expected
answer is computed here from what was sent (a small reference evaluator for filters, numpy for the
statistics), independently of the server's code. One server serves the module.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import start_server
from metrics_otlp import CUMULATIVE, DELTA, MIN, Api, counter, gauge, histogram, iso

S = 10**9
MS = 10**6
NOW = time.time_ns()
T0 = (NOW // MIN - 30) * MIN  # spans start half an hour ago, on a whole minute
TRACING = "/api/projects/1/tracing/spans"


# --- what is sent -------------------------------------------------------------------------------------------

def _span(trace: int, span: int, parent: int | None, name: str, service: str, start_ms: float, end_ms: float,
          status: int = 0, kind: int = 1, attrs: dict | None = None, base: int = T0) -> dict:
    return {"trace_id": f"{trace:032x}", "span_id": f"{span:016x}",
            "parent_span_id": f"{parent:016x}" if parent is not None else "", "name": name, "service": service,
            "start": base + int(start_ms * MS), "end": base + int(end_ms * MS), "status_code": status,
            "kind": kind, "attributes": attrs or {}}


SPANS = [
    # trace 1: a request with an auth check, two queries (one failing, with a fetch under it)
    _span(1, 0x11, None, "GET /api/users", "web", 0, 100, kind=2,
          attrs={"http.route": "/api/users", "app.version": "1.4.2", "http.status_code": 200}),
    _span(1, 0x12, 0x11, "auth.check", "web", 5, 15),
    _span(1, 0x13, 0x11, "db.query", "db", 20, 50, status=2, attrs={"db.system": "postgres"}),
    _span(1, 0x14, 0x11, "db.query", "db", 55, 65, attrs={"db.system": "postgres"}),
    _span(1, 0x15, 0x13, "db.fetch", "db", 22, 30),
    # trace 2: another route, one long query
    _span(2, 0x21, None, "GET /api/orders", "web", 60_000, 60_200, kind=2,
          attrs={"http.route": "/api/orders", "app.version": "2.0.0", "http.status_code": 500}),
    _span(2, 0x22, 0x21, "db.query", "db", 60_010, 60_110, attrs={"db.system": "mysql"}),
    # trace 3: a worker (no route; a version that sorts before 1.5 as text but after it as a version)
    _span(3, 0x31, None, "job.run", "worker", 120_000, 120_050, attrs={"app.version": "1.10.0", "retry": True}),
    _span(3, 0x32, 0x31, "job.step", "worker", 120_005, 120_010),
    # trace 4: a span whose parent was never received
    _span(4, 0x41, 0xDEAD, "late.callback", "web", 180_000, 180_003),
    # trace 5: forty minutes old (outside -30M, inside -1h)
    _span(5, 0x51, None, "GET /api/users", "web", -10 * 60_000, -10 * 60_000 + 80, kind=2,
          attrs={"http.route": "/api/users", "app.version": "1.4.0"}),
]
WINDOW = {"date_from": iso(T0 - 20 * MIN), "date_to": iso(T0 + 10 * MIN)}


def _otlp(spans: list[dict]) -> bytes:
    req = ExportTraceServiceRequest()
    scopes: dict[str, object] = {}
    for r in spans:
        scope = scopes.get(r["service"])
        if scope is None:
            rs = req.resource_spans.add()
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = "service.name", r["service"]
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = "deployment.environment", "prod" if r["service"] != "worker" else "batch"
            scope = scopes[r["service"]] = rs.scope_spans.add()
        sp = scope.spans.add()
        sp.trace_id, sp.span_id = bytes.fromhex(r["trace_id"]), bytes.fromhex(r["span_id"])
        if r["parent_span_id"]:
            sp.parent_span_id = bytes.fromhex(r["parent_span_id"])
        sp.name, sp.kind, sp.status.code = r["name"], r["kind"], r["status_code"]
        sp.start_time_unix_nano, sp.end_time_unix_nano = r["start"], r["end"]
        for k, v in r["attributes"].items():
            kv = sp.attributes.add()
            kv.key = k
            if isinstance(v, bool):
                kv.value.bool_value = v
            elif isinstance(v, int):
                kv.value.int_value = v
            else:
                kv.value.string_value = v
    return req.SerializeToString()


# --- a reference evaluator: what a filter should select, in plain Python ----------------------------------

def _text(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _version(text: str):
    parts = text.split("-")[0].split(".")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def _subject(rec: dict, f: dict):
    if f["type"] == "span":
        key = f["key"]
        if key == "is_root_span":
            return not rec["parent_span_id"]
        if key == "duration":
            return (rec["end"] - rec["start"]) / MS
        return {"service_name": rec["service"]}.get(key, rec.get(key))
    attrs = rec["attributes"] if f["type"] == "span_attribute" else {
        "service.name": rec["service"], "deployment.environment": "prod" if rec["service"] != "worker" else "batch"}
    return _text(attrs[f["key"]]) if f["key"] in attrs else None


def matches(rec: dict, f: dict) -> bool:
    op, value = f["operator"], f.get("value")
    values = value if isinstance(value, list) else [value]
    subject = _subject(rec, f)
    if op in ("is_set", "is_not_set"):
        return (subject is not None) == (op == "is_set")
    if subject is None:
        return op.startswith("not_") or op == "is_not"
    if isinstance(subject, bool):
        return (subject in [v in (True, "true", 1) for v in values]) == (op == "exact")
    if isinstance(subject, float):
        return _compare_number(op, subject, values)
    low, texts = subject.lower(), [str(v).lower() for v in values]
    tests = {"exact": subject in map(str, values), "in": subject in map(str, values),
             "is_not": subject not in map(str, values), "not_in": subject not in map(str, values),
             "icontains": any(t in low for t in texts), "not_icontains": not any(t in low for t in texts),
             "icontains_multi": any(t in low for t in texts),
             "starts_with": any(low.startswith(t) for t in texts),
             "not_starts_with": not any(low.startswith(t) for t in texts),
             "ends_with": any(low.endswith(t) for t in texts), "not_ends_with": not any(low.endswith(t) for t in texts)}
    if op in tests:
        return tests[op]
    if op.startswith("semver_"):
        v, ref = _version(subject), _version(values[0].lstrip("~^").rstrip(".*"))
        return {"semver_eq": v == ref, "semver_gt": v > ref, "semver_gte": v >= ref, "semver_lt": v < ref,
                "semver_tilde": ref <= v < (ref[0], ref[1] + 1, 0)}[op]
    try:
        n = float(subject)
    except ValueError:
        return False
    return _compare_number(op, n, values)


def _compare_number(op: str, n: float, values: list) -> bool:
    bounds = [float(v) for v in values]
    if op in ("between", "not_between"):
        return (bounds[0] <= n <= bounds[1]) == (op == "between")
    return {"gt": n > bounds[0], "gte": n >= bounds[0], "lt": n < bounds[0], "lte": n <= bounds[0]}[op]


def _in_window(rec: dict) -> bool:
    return T0 - 20 * MIN <= rec["start"] <= T0 + 10 * MIN


# --- the server -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("parity"))
    r = httpx.post(srv.http_url + "/v1/traces", content=_otlp(SPANS),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=30)
    assert r.status_code == 200, r.text
    yield srv
    if srv.alive():
        srv.kill()


@pytest.fixture(scope="module")
def api(live) -> Api:
    return Api(live)


def _post(live, path: str, body=None, *, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or live.admin_key()}", **kw.pop("headers", {})}
    if body is not None:
        kw["json"] = body
    return httpx.post(live.http_url + path, headers=headers, timeout=30, **kw)


def _spans(live, query: dict) -> list[dict]:
    r = _post(live, TRACING + "/query", {"query": {"dateRange": WINDOW, "limit": 1000, **query}})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _posthog_error(r: httpx.Response, status: int, attr: str | None = None) -> dict:
    """A PostHog (DRF) error body: type, code, detail, attr."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"type", "code", "detail", "attr"} and body["detail"], body
    if attr is not None:
        assert body["attr"] == attr, body
    return body


# --- item 2: the operators of newer clients, and is_root_span ------------------------------------------------

SPAN_FILTERS = [
    {"key": "http.route", "type": "span_attribute", "operator": "starts_with", "value": "/API/u"},
    {"key": "http.route", "type": "span_attribute", "operator": "not_starts_with", "value": "/api/u"},
    {"key": "http.route", "type": "span_attribute", "operator": "ends_with", "value": "ORDERS"},
    {"key": "http.route", "type": "span_attribute", "operator": "not_ends_with", "value": "orders"},
    {"key": "http.status_code", "type": "span_attribute", "operator": "gte", "value": 500},
    {"key": "http.status_code", "type": "span_attribute", "operator": "lte", "value": "200"},
    {"key": "http.status_code", "type": "span_attribute", "operator": "between", "value": [100, 299]},
    {"key": "duration", "type": "span", "operator": "between", "value": [10, 100]},
    {"key": "duration", "type": "span", "operator": "not_between", "value": [10, 100]},
    {"key": "duration", "type": "span", "operator": "gte", "value": 100},
    {"key": "app.version", "type": "span_attribute", "operator": "semver_gt", "value": "1.5.0"},
    {"key": "app.version", "type": "span_attribute", "operator": "semver_lt", "value": "1.5.0"},
    {"key": "app.version", "type": "span_attribute", "operator": "semver_tilde", "value": "~1.4"},
    {"key": "service_name", "type": "span", "operator": "in", "value": ["db", "worker"]},
    {"key": "service_name", "type": "span", "operator": "not_in", "value": ["db", "worker"]},
    {"key": "name", "type": "span", "operator": "icontains_multi", "value": ["AUTH", "fetch"]},
    {"key": "is_root_span", "type": "span", "operator": "exact", "value": True},
    {"key": "is_root_span", "type": "span", "operator": "exact", "value": "false"},
    {"key": "is_root_span", "type": "span", "operator": "is_not", "value": True},
    {"key": "deployment.environment", "type": "span_resource_attribute", "operator": "starts_with", "value": "ba"},
]


@pytest.mark.parametrize("f", SPAN_FILTERS, ids=lambda f: f"{f['key']}-{f['operator']}")
def test_span_operators_of_newer_clients(live, f):
    got = {s["span_id"] for s in _spans(live, {"rootSpans": False, "filterGroup": [f]})}
    want = {r["span_id"] for r in SPANS if _in_window(r) and matches(r, f)}
    assert got == want and want, f  # every case selects something, and not everything
    assert len(want) < sum(map(_in_window, SPANS))


def test_semver_compares_versions_not_text(live):
    # "1.10.0" < "1.5.0" as text; as versions 1.10.0 > 1.5.0.
    got = _spans(live, {"filterGroup": [{"key": "app.version", "type": "span_attribute", "operator": "semver_gt",
                                         "value": "1.5.0"}]})
    assert {s["name"] for s in got} == {"GET /api/orders", "job.run"}


# --- item 3: form-encoded and Content-Type-less bodies, in both APIs -------------------------------------------

def test_form_and_multipart_bodies_as_django_rest_reads_them(live, api):
    query = {"dateRange": WINDOW, "rootSpans": False, "filterGroup": [
        {"key": "service_name", "type": "span", "operator": "exact", "value": "db"}]}
    as_json = _post(live, TRACING + "/query", {"query": query})
    assert as_json.status_code == 200 and len(as_json.json()["results"]) == 4
    # PostHog's docs: curl -d query=<json> (application/x-www-form-urlencoded)
    form = _post(live, TRACING + "/query/", data={"query": json.dumps(query)})
    assert form.status_code == 200, form.text
    assert form.json() == as_json.json()
    multipart = _post(live, TRACING + "/query", files={"query": (None, json.dumps(query))})
    assert multipart.status_code == 200 and multipart.json() == as_json.json()
    # the trace endpoint's fields are top-level form fields (seed 002: -d dateRange=...)
    trace = _post(live, TRACING + "/trace/" + f"{1:032x}", data={"dateRange": json.dumps(WINDOW)})
    assert trace.status_code == 200 and len(trace.json()["results"]) == 5
    sparkline = _post(live, TRACING + "/sparkline", data={"query": json.dumps({"dateRange": WINDOW})})
    assert sparkline.status_code == 200
    assert sum(x["count"] for x in sparkline.json()["results"]) == sum(map(_in_window, SPANS))

    api.send(gauge("par.form", [(T0 + 5 * S, 3.0, {"host": "a"})]))
    metrics_query = {"metricName": "par.form", "dateFrom": iso(T0), "dateTo": iso(T0 + MIN), "interval": "minute"}
    expected = api.query(**metrics_query)
    assert expected["results"][0]["points"][0]["value"] == 3.0
    url = "/api/projects/1/metrics/query"
    # JSON without a Content-Type (httpx `content=` sends none): metrics answered 415 before.
    for headers in ({}, {"Content-Type": "text/plain"}):
        r = _post(live, url, content=json.dumps({"query": metrics_query}).encode(), headers=headers)
        assert r.status_code == 200 and r.json() == expected, (headers, r.text)
        r = _post(live, TRACING + "/query", content=json.dumps({"query": query}).encode(), headers=headers)
        assert r.status_code == 200 and r.json() == as_json.json()
    assert _post(live, url, files={"query": (None, json.dumps(metrics_query))}).json() == expected
    # Neither JSON nor a form: 415 in PostHog's shape, naming the type; nothing JSON-like and no type: 400.
    for path in (url, TRACING + "/query"):
        body = _posthog_error(_post(live, path, content=b"a,b\n1,2", headers={"Content-Type": "text/csv"}), 415)
        assert body["code"] == "unsupported_media_type" and "text/csv" in body["detail"]
        _posthog_error(_post(live, path, content=b"query: yes"), 400)
        _posthog_error(_post(live, path, data={"query": "undefined"}), 400, "query")
        _posthog_error(_post(live, path, files={"query": ("q.json", b"{}", "application/json")}), 400, "query")
    assert live.alive()


# --- item 1: metrics filters in PostHog's property-filter shape -----------------------------------------------

@pytest.fixture(scope="module")
def hosts(api) -> dict:
    """A gauge on four hosts (one minute, one reading each)."""
    values = {"web-1": 1.0, "web-2": 10.0, "db-1": 100.0, "batch-1.10": 1000.0}
    api.send(gauge("par.g", [(T0 + 5 * S, v, {"host": h, "version": {"web-1": "1.4.2", "web-2": "2.0.0",
                                                                       "db-1": "1.10.0", "batch-1.10": "0.9"}[h]})
                             for h, v in values.items()]))
    return values


def _total(api, filters: list) -> float | None:
    resp = api.query(metricName="par.g", filters=filters, dateFrom=iso(T0), dateTo=iso(T0 + MIN), interval="minute")
    points = resp["results"][0]["points"]
    return points[0]["value"] if points else None


def test_metrics_operator_is_not_excludes_what_it_names(api, hosts):
    # Before: `operator` was not read, so this was equality with web-1, the very series excluded.
    excluded = {"key": "host", "value": "web-1", "operator": "is_not", "type": "attribute"}
    assert _total(api, [excluded]) == sum(v for h, v in hosts.items() if h != "web-1")
    assert _total(api, [{"key": "host", "value": "web-1", "operator": "exact"}]) == hosts["web-1"]
    # the legacy shape still means the same
    assert _total(api, [{"key": "host", "value": "web-1", "op": "neq", "scope": "attribute"}]) == \
        sum(v for h, v in hosts.items() if h != "web-1")


@pytest.mark.parametrize("operator,value,selects", [
    ("starts_with", "WEB", {"web-1", "web-2"}),
    ("not_starts_with", "web", {"db-1", "batch-1.10"}),
    ("ends_with", "-1", {"web-1", "db-1"}),
    ("not_ends_with", "-1", {"web-2", "batch-1.10"}),
    ("icontains", "B-", {"web-1", "web-2", "db-1"}),
    ("in", ["db-1", "web-2"], {"db-1", "web-2"}),
    ("not_in", ["db-1", "web-2"], {"web-1", "batch-1.10"}),
    ("regex", "^(db|batch)", {"db-1", "batch-1.10"}),
])
def test_metrics_string_operators(api, hosts, operator, value, selects):
    f = {"key": "host", "operator": operator, "value": value, "type": "attribute"}
    assert _total(api, [f]) == sum(hosts[h] for h in selects)


def test_metrics_number_and_version_operators(api, hosts):
    versions = {"web-1": "1.4.2", "web-2": "2.0.0", "db-1": "1.10.0", "batch-1.10": "0.9"}
    cases = [("semver_gte", "1.5.0", lambda v: _version(v) >= (1, 5, 0)),
             ("semver_caret", "^1.4.0", lambda v: (1, 4, 0) <= _version(v) < (2, 0, 0)),
             ("semver_wildcard", "1.*", lambda v: (1, 0, 0) <= _version(v) < (2, 0, 0))]
    for op, value, keep in cases:
        want = sum(hosts[h] for h, v in versions.items() if keep(v))
        assert _total(api, [{"key": "version", "operator": op, "value": value}]) == want, op
    # Numbers compare as numbers; a label that is not one never matches.
    api.send(gauge("par.code", [(T0 + 5 * S, 1.0, {"code": c}) for c in ("200", "404", "500", "n/a")]))
    for op, value, want in (("gte", 404, 2.0), ("lt", "404", 1.0), ("between", [200, 404], 2.0),
                            ("not_between", [200, 404], 1.0), ("max", 200, 1.0), ("min", 500, 1.0)):
        resp = api.query(metricName="par.code", filters=[{"key": "code", "operator": op, "value": value}],
                         dateFrom=iso(T0), dateTo=iso(T0 + MIN), interval="minute")
        assert resp["results"][0]["points"][0]["value"] == want, op
    assert _total(api, [{"key": "host", "operator": "is_set"}]) == sum(hosts.values())
    assert _total(api, [{"key": "nope", "operator": "is_not_set"}]) == sum(hosts.values())


@pytest.mark.parametrize("f,attr,says", [
    ({"key": "host", "value": "a", "operator": "is_nott"}, "query.filters", "is_nott"),
    ({"key": "host", "value": "a", "operator": "is_not", "negate": True}, "query.filters", "negate"),
    ({"key": "host", "value": "a", "op": "eq", "operator": "is_not"}, "query.filters", "disagree"),
    ({"key": "host", "value": "a", "scope": "resource", "type": "attribute"}, "query.filters", "disagree"),
    ({"key": "host", "value": "a", "type": "span"}, "query.filters", "span"),
    ({"key": "host", "value": "1.2", "operator": "is_date_after"}, "query.filters", "not supported"),
    ({"key": "host", "value": [2, 1], "operator": "between"}, "query.filters", "low <= high"),
    ({"key": "host", "value": "x", "operator": "semver_gt"}, "query.filters", "not a version"),
    ({"key": "host", "operator": "starts_with"}, "query.filters", "needs a value"),
])
def test_metrics_filters_never_silently_ignored(live, api, hosts, f, attr, says):
    r = api.post("query", {"metricName": "par.g", "dateFrom": "-1h", "filters": [f]})
    body = _posthog_error(r, 400, attr)
    assert says in body["detail"], body


def test_unknown_fields_are_refused_in_both_apis(live, api):
    r = api.post("query", {"metricName": "par.g", "dateFrom": "-1h", "groupby": [{"key": "host"}]})
    assert "groupby" in _posthog_error(r, 400, "query")["detail"]
    r = api.post("query", {"clauses": [{"metricName": "par.g"}], "aggregation": "avg", "dateFrom": "-1h"})
    _posthog_error(r, 400, "aggregation")
    r = _post(live, TRACING + "/query", {"query": {"serviceName": ["web"]}})
    assert "serviceName" in _posthog_error(r, 400, "query")["detail"]
    r = _post(live, TRACING + "/query", {"query": {"filterGroup": [
        {"key": "name", "type": "span", "op": "exact", "value": "x"}]}})
    assert "'op'" in _posthog_error(r, 400, "filterGroup")["detail"]
    r = _post(live, TRACING + "/query", {"query": {"filterGroup": [
        {"key": "name", "type": "span", "operator": "flag_evaluates_to", "value": "x"}]}})
    assert "not supported" in _posthog_error(r, 400, "filterGroup")["detail"]
    # Schema bookkeeping PostHog's clients send along changes nothing and is accepted.
    r = _post(live, TRACING + "/query", {"query": {"kind": "TraceSpansQuery", "dateRange": WINDOW}})
    assert r.status_code == 200, r.text


# --- item 4: excludeAttributes, flatSpans, prefetchSpans -----------------------------------------------------

def test_exclude_attributes_leaves_the_maps_out(live):
    full = _spans(live, {"traceId": f"{1:032x}", "rootSpans": False})
    lean = _spans(live, {"traceId": f"{1:032x}", "rootSpans": False, "excludeAttributes": True})
    assert [s["span_id"] for s in lean] == [s["span_id"] for s in full]
    assert all(s["attributes"] == {} and s["resource_attributes"] == {} for s in lean)
    assert any(s["attributes"] for s in full) and all(s["resource_attributes"] for s in full)
    strip = ("attributes", "resource_attributes")
    assert [{k: v for k, v in s.items() if k not in strip} for s in lean] == \
        [{k: v for k, v in s.items() if k not in strip} for s in full]


def test_flat_spans_lists_the_matching_spans_themselves(live):
    db = {"key": "name", "type": "span", "operator": "exact", "value": "db.query"}
    roots = _spans(live, {"filterGroup": [db]})  # rootSpans defaults to true: no root is a db.query
    assert roots == []
    flat = _spans(live, {"flatSpans": True, "filterGroup": [db]})
    want = sorted((r for r in SPANS if _in_window(r) and r["name"] == "db.query"),
                  key=lambda r: (r["start"], r["span_id"]), reverse=True)
    assert [s["span_id"] for s in flat] == [r["span_id"] for r in want]
    assert all(s["matched_filter"] == 1 for s in flat)
    r = _post(live, TRACING + "/query", {"query": {"flatSpans": True, "rootSpans": True}})
    _posthog_error(r, 400, "rootSpans")
    r = _post(live, TRACING + "/query", {"query": {"flatSpans": True, "prefetchSpans": 5}})
    _posthog_error(r, 400, "prefetchSpans")


def test_prefetch_spans_returns_children_of_the_matched_roots(live):
    route = {"key": "http.route", "type": "span_attribute", "operator": "exact", "value": "/api/users"}
    plain = _spans(live, {"filterGroup": [route]})
    assert [s["span_id"] for s in plain] == [f"{0x11:016x}", f"{0x51:016x}"]  # trace 5 has no children
    got = _spans(live, {"filterGroup": [route], "prefetchSpans": 100})
    trace1 = [r for r in SPANS if r["trace_id"] == f"{1:032x}"]
    children = sorted((r for r in trace1 if r["parent_span_id"]), key=lambda r: (r["start"], r["span_id"]))
    assert [(s["span_id"], s["matched_filter"]) for s in got] == \
        [(f"{0x11:016x}", 1)] + [(r["span_id"], 0) for r in children] + [(f"{0x51:016x}", 1)]
    # N spans per trace in all, counting the listed one; a child matching the query comes first.
    failing = {"key": "status_code", "type": "span", "operator": "exact", "value": "Error"}
    got = _spans(live, {"rootSpans": False, "filterGroup": [failing], "prefetchSpans": 3})
    assert [(s["span_id"], s["matched_filter"]) for s in got] == [
        (f"{0x13:016x}", 1), (f"{0x11:016x}", 0), (f"{0x12:016x}", 0)]
    # PostHog caps prefetchSpans at 100; below 1 or not a number → 400.
    assert len(_spans(live, {"filterGroup": [route], "prefetchSpans": 5000})) == len(trace1) + 1
    for bad in (0, -1, "many", 1.5):
        _posthog_error(_post(live, TRACING + "/query", {"query": {"prefetchSpans": bad}}), 400, "prefetchSpans")


# --- item 6: span query and sparkline defaults --------------------------------------------------------------

def test_query_and_sparkline_defaults_and_how_to_make_them_agree(live):
    in_window = [r for r in SPANS if _in_window(r)]

    def spark(**extra) -> int:
        r = _post(live, TRACING + "/sparkline", {"query": {"dateRange": WINDOW, **extra}})
        assert r.status_code == 200, r.text
        return sum(x["count"] for x in r.json()["results"])

    # Defaults (PostHog's): the list shows root spans, the sparkline counts every span.
    assert len(_spans(live, {})) == sum(1 for r in in_window if not r["parent_span_id"])
    assert spark() == len(in_window)
    # The same rootSpans for both makes them agree.
    for roots in (True, False):
        assert spark(rootSpans=roots) == len(_spans(live, {"rootSpans": roots}))


# --- item 5: histogram sum, count and avg -------------------------------------------------------------------

def test_histogram_sum_count_avg_are_the_buckets_observations(api):
    """Two cumulative series and one delta series; per minute: the observations recorded in it."""
    bounds = [10.0, 100.0]
    # (time, counts per bucket, sum of observations) as an SDK reports them: cumulative since start.
    a = [(T0 - 30 * S, [1, 0, 0], 5.0), (T0 + 20 * S, [3, 1, 0], 75.0), (T0 + 50 * S, [4, 2, 0], 175.0),
         (T0 + MIN + 20 * S, [1, 0, 0], 2.0)]  # restarted: a reset (count fell)
    b = [(T0 - 30 * S, [0, 0, 0], 0.0), (T0 + MIN + 10 * S, [0, 0, 2], 400.0)]
    d = [(T0 + 10 * S, [1, 1, 0], 60.0), (T0 + MIN + 40 * S, [2, 0, 0], 8.0)]

    def send(name, points, host, temporality):
        req = histogram(name, [(t, bounds, c, {"host": host}) for t, c, _ in points], temporality=temporality)
        for dp, (_, _, total) in zip(req.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points,
                                     points):
            dp.sum = total
        api.send(req)

    send("par.lat", a, "a", CUMULATIVE)
    send("par.lat", b, "b", CUMULATIVE)
    send("par.lat.delta", d, "d", DELTA)
    # Minute 0: a: 5 more observations summing 170; b: none. Minute 1: a: reset → 1 obs, 2.0; b: 2 obs, 400.
    want = {"sum": [170.0, 402.0], "count": [5.0, 3.0], "avg": [170 / 5, 402 / 3]}
    window = {"dateFrom": iso(T0), "dateTo": iso(T0 + 2 * MIN), "interval": "minute"}
    for agg, values in want.items():
        resp = api.query(metricName="par.lat", aggregation=agg, **window)
        assert [p["value"] for p in resp["results"][0]["points"]] == pytest.approx(values), agg
    by_host = api.query(metricName="par.lat", aggregation="avg", groupBy=[{"key": "host"}], **window)
    got = {s["labels"]["host"]: [p["value"] for p in s["points"]] for s in by_host["results"]}
    # b recorded nothing in minute 0: no value there, zero-filled like every missing point (spec)
    assert got["a"] == pytest.approx([34.0, 2.0]) and got["b"] == [0.0, 200.0]
    delta = {"sum": [60.0, 8.0], "count": [2.0, 2.0], "avg": [30.0, 4.0]}
    for agg, values in delta.items():
        resp = api.query(metricName="par.lat.delta", aggregation=agg, **window)
        assert [p["value"] for p in resp["results"][0]["points"]] == pytest.approx(values), agg
    # increase is the number of observations too; min/max have no per-bucket meaning: refused.
    assert [p["value"] for p in api.query(metricName="par.lat", aggregation="increase", **window)["results"][0][
        "points"]] == want["count"]
    for agg in ("min", "max"):
        _posthog_error(api.post("query", {"metricName": "par.lat", "aggregation": agg, **window}), 400, "aggregation")
    # On gauges and counters sum/count/avg keep their meaning (last reading summed, series counted, mean).
    api.send(counter("par.c", [(T0 + 10 * S, 7, {"host": "a"}), (T0 + 10 * S, 9, {"host": "b"})]))
    assert api.query(metricName="par.c", aggregation="count", **window)["results"][0]["points"][0]["value"] == 2.0


def test_a_histograms_first_export_answers_every_aggregation(api):
    """One cumulative histogram point with no start time (an SDK's first export): it only sets the baseline,
    so no bucket has observations; every aggregation answers (the quantile path raised IndexError: 500)."""
    api.send(histogram("par.first", [(T0 + 10 * S, [10.0, 100.0], [3, 1, 0], {"host": "a"})]))
    window = {"dateFrom": iso(T0), "dateTo": iso(T0 + 2 * MIN), "interval": "minute"}
    for agg in ("histogram_quantile", "p95", "sum", "count", "avg", "rate", "increase"):
        r = api.post("query", {"metricName": "par.first", "aggregation": agg, **window})
        assert r.status_code == 200, (agg, r.text)
        assert all(p["value"] in (0.0, None) for s in r.json()["results"] for p in s["points"]), (agg, r.json())
    r = api.post("characterize", {"metricName": "par.first", "anomalyFrom": iso(T0 + MIN), "anomalyTo": iso(T0 + 2 * MIN)})
    assert r.status_code == 200 and r.json()["direction"] == "flat", r.text


# --- item 7: tracing/spans/aggregate and tracing/spans/tree -------------------------------------------------

def _stats(durations_ns: list[int]) -> dict:
    d = np.array(durations_ns, dtype=float)
    return {"count": len(d), "total_duration_nano": float(d.sum()), "avg_duration_nano": float(d.mean()),
            **{f"p{k}_duration_nano": float(np.quantile(d, q)) for k, q in
               (("50", 0.5), ("95", 0.95), ("99", 0.99), ("999", 0.999))}}


def test_aggregate_per_service_and_name(live):
    r = _post(live, TRACING + "/aggregate", {"query": {"dateRange": WINDOW}})
    assert r.status_code == 200, r.text
    body = r.json()
    groups: dict[tuple, list] = {}
    for rec in SPANS:
        if _in_window(rec):
            groups.setdefault((rec["service"], rec["name"]), []).append(rec)
    want = []
    for (service, name), recs in groups.items():
        want.append({"service_name": service, "name": name, **_stats([x["end"] - x["start"] for x in recs]),
                     "error_count": sum(x["status_code"] == 2 for x in recs)})
    want.sort(key=lambda x: (-x["total_duration_nano"], x["service_name"], x["name"]))
    assert [(x["service_name"], x["name"]) for x in body["results"]] == [(x["service_name"], x["name"]) for x in want]
    for got, exp in zip(body["results"], want):
        assert got == pytest.approx(exp)
    assert body["compare"] is None and body["has_more"] is False and body["next_offset"] is None
    # Filters, paging and a comparison window (the previous 30 minutes hold trace 5 only).
    q = {"dateRange": WINDOW, "filterGroup": [{"key": "service_name", "type": "span", "operator": "exact",
                                               "value": "db"}], "limit": 1}
    page = _post(live, TRACING + "/aggregate", {"query": q}).json()
    assert [x["name"] for x in page["results"]] == ["db.query"] and page["has_more"] and page["next_offset"] == 1
    page2 = _post(live, TRACING + "/aggregate", {"query": {**q, "offset": 1}}).json()
    assert [x["name"] for x in page2["results"]] == ["db.fetch"] and page2["has_more"] is False
    cmp = _post(live, TRACING + "/aggregate", {"query": {"dateRange": WINDOW, "compareFilter": {"compare": True}}})
    assert cmp.status_code == 200 and cmp.json()["compare"] == []
    earlier = {"date_from": iso(T0 - 15 * MIN), "date_to": iso(T0 + 5 * MIN)}
    cmp = _post(live, TRACING + "/aggregate", {"query": {"dateRange": earlier,
                                                         "compareFilter": {"compare": True, "compare_to": "-1h"}}})
    assert cmp.json()["compare"] == []
    # [T0 − 5 min, T0 + 90 s] holds traces 1 and 2; the 6.5 minutes before it hold trace 5 only.
    cmp = _post(live, TRACING + "/aggregate", {"query": {"dateRange": {"date_from": iso(T0 - 5 * MIN),
                                                                       "date_to": iso(T0 + 90 * S)},
                                                         "compareFilter": {"compare": True}}}).json()
    assert len(cmp["results"]) == 5 and [(x["name"], x["count"]) for x in cmp["compare"]] == [("GET /api/users", 1)]


def test_tree_under_a_span_name(live):
    r = _post(live, TRACING + "/tree", {"query": {"spanName": "auth.check", "dateRange": WINDOW}})
    assert r.status_code == 200, r.text
    rows = {(x["parent_service"], x["parent_name"], x["service_name"], x["name"]): x for x in r.json()["results"]}
    trace1 = [x for x in SPANS if x["trace_id"] == f"{1:032x}"]
    by_id = {x["span_id"]: x for x in trace1}
    edges: dict[tuple, list] = {}
    for x in trace1:
        p = by_id.get(x["parent_span_id"])
        key = (p["service"], p["name"]) if p else ("", "<ROOT>")
        edges.setdefault(key + (x["service"], x["name"]), []).append((x, p))
    assert set(rows) == set(edges)
    calls = {}
    for key, pairs in edges.items():
        calls[key[2:]] = calls.get(key[2:], 0) + len(pairs)
    for key, pairs in edges.items():
        got = rows[key]
        exp = {**_stats([x["end"] - x["start"] for x, _ in pairs]),
               "error_count": sum(x["status_code"] == 2 for x, _ in pairs),
               "avg_start_offset_nano": float(np.mean([x["start"] - p["start"] if p else 0 for x, p in pairs])),
               "calls_per_parent_invocation": len(pairs) / calls[key[:2]] if key[:2] in calls else None}
        assert {k: got[k] for k in exp} == pytest.approx(exp), key
    assert rows[("web", "GET /api/users", "db", "db.query")]["calls_per_parent_invocation"] == 2.0
    # serviceName scopes the tree to one service: db spans only, their web parents become the root.
    r = _post(live, TRACING + "/tree", {"query": {"spanName": "db.query", "serviceName": "db", "dateRange": WINDOW}})
    got = {(x["parent_name"], x["name"], x["count"]) for x in r.json()["results"]}
    assert got == {("<ROOT>", "db.query", 3), ("db.query", "db.fetch", 1)}
    body = _posthog_error(_post(live, TRACING + "/tree", {"query": {"dateRange": WINDOW}}), 400, "spanName")
    assert body["detail"] == "`spanName` is required for tree aggregation queries."


@pytest.mark.parametrize("path,query,attr", [
    ("/aggregate", {"limit": 0}, "limit"),
    ("/aggregate", {"limit": 5001}, "limit"),
    ("/aggregate", {"offset": -1}, "offset"),
    ("/aggregate", {"compareFilter": {"compare": True, "compare_to": "yesterday"}}, "compareFilter"),
    ("/aggregate", {"compareFilter": {"compare": True, "shift": "-1d"}}, "compareFilter"),
    ("/aggregate", {"compareFilter": {"compare": True}, "dateRange": {"date_from": "all"}}, "compareFilter"),
    ("/aggregate", {"dateRange": {"date_from": "-1x"}}, "dateRange"),
    ("/aggregate", {"dateRange": {"date_from": "0338-01-01T00:00:00Z"}}, "dateRange"),  # not 64-bit ns
    ("/aggregate", {"orderBy": "duration"}, "query"),
    ("/aggregate", {"filterGroup": [{"key": "k", "type": "span_attribute", "operator": "gt", "value": "x"}]},
     "filterGroup"),
    ("/tree", {"spanName": 5}, "spanName"),
    ("/tree", {"spanName": "x", "serviceName": ["a"]}, "serviceName"),
    ("/tree", {"spanName": "x", "limit": 10}, "query"),
])
def test_new_tracing_endpoints_refuse_bad_input(live, path, query, attr):
    _posthog_error(_post(live, TRACING + path, {"query": query}), 400, attr)
    fine = {"spanName": "x"} if path == "/tree" else {}
    assert _post(live, TRACING + path, {"query": fine}).status_code == 200
    assert live.alive()


HUGE = 10**30  # beyond SQLite's 64-bit integers
_DURATION_HUGE = [{"key": "duration", "type": "span", "operator": "gt", "value": HUGE}]
HOSTILE = [  # (method, path under /api/projects/1, request, expected status, attr of the 400)
    ("POST", "/tracing/spans/query", {"json": {"query": {"filterGroup": _DURATION_HUGE}}}, 200, None),
    ("POST", "/tracing/spans/query", {"json": {"query": {"rootSpans": False, "filterGroup": [
        {"key": "status_code", "type": "span", "operator": "exact", "value": -HUGE}]}}}, 200, None),
    ("POST", "/tracing/spans/query", {"json": {"query": {"filterGroup": [
        {"key": "http.status_code", "type": "span_attribute", "operator": "between", "value": [-HUGE, HUGE]}]}}},
     200, None),
    ("POST", "/tracing/spans/query", {"json": {"query": {"dateRange": {"date_from": "-1h", "dateTo": None}}}},
     400, "dateRange"),
    ("POST", "/tracing/spans/query", {"json": {"query": {"filterGroup": [
        {"key": "name", "type": "span", "operator": "exact", "value": {"a": 1}}]}}}, 400, "filterGroup"),
    ("POST", "/tracing/spans/sparkline", {"json": {"query": {"filterGroup": [
        {"key": "kind", "type": "span", "operator": "lt", "value": HUGE}]}}}, 200, None),
    ("POST", f"/tracing/spans/trace/{1:032x}", {"json": {"filterGroup": _DURATION_HUGE}}, 200, None),
    ("POST", "/tracing/spans/aggregate", {"json": {"query": {"filterGroup": _DURATION_HUGE}}}, 200, None),
    ("POST", "/tracing/spans/tree", {"json": {"query": {"spanName": "db.query", "filterGroup": _DURATION_HUGE}}},
     200, None),
    ("GET", "/tracing/spans/attributes", {"params": {"offset": str(10**17)}}, 200, None),
    ("GET", "/tracing/spans/values", {"params": {"key": "http.route", "limit": str(HUGE)}}, 400, "limit"),
    ("GET", "/tracing/spans/service-names", {"params": {"dateRange": "[1]"}}, 400, "dateRange"),
    ("POST", "/metrics/query", {"json": {"query": {"metricName": "par.g", "dateFrom": "-1h", "interval": ["minute"]}}},
     400, "interval"),
    ("POST", "/metrics/query", {"json": {"query": {"metricName": "par.g", "dateFrom": "-1h", "interval": {"a": 1}}}},
     400, "interval"),
    ("POST", "/metrics/query", {"json": {"query": {"metricName": "par.g", "dateFrom": "-1h", "filters": [
        {"key": "host", "operator": "gt", "value": HUGE}]}}}, 200, None),
    ("POST", "/metrics/characterize", {"json": {"query": {"metricName": "par.g", "anomalyFrom": "-30M",
                                                          "aggregation": ["avg"]}}}, 400, "aggregation"),
    ("GET", "/metrics/attributes", {"params": {"limit": "\u00b2"}}, 400, "limit"),  # "²".isdigit(), not int()
    ("GET", "/metrics/attribute_values", {"params": {"key": "host", "offset": "x"}}, 400, "offset"),
    ("GET", "/metrics/values", {"params": {"limit": "\u00b2"}}, 400, "limit"),
]


@pytest.mark.parametrize("method,path,request_,status,attr", HOSTILE, ids=[f"{m} {p} {i}" for i, (m, p, *_)
                                                                            in enumerate(HOSTILE)])
def test_hostile_values_are_answered_or_refused_never_a_5xx(live, hosts, method, path, request_, status, attr):
    """Values found by fuzzing every PostHog endpoint (numbers beyond 64 bits, lists and objects where a
    name belongs, digits that are not ASCII): each is a 200 or a 400 in PostHog's shape naming the field."""
    r = httpx.request(method, live.http_url + "/api/projects/1" + path, timeout=30,
                      headers={"Authorization": f"Bearer {live.admin_key()}"}, **request_)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        _posthog_error(r, status, attr)
    assert live.alive()


# --- item 7: metrics/attributes and metrics/attribute_values ------------------------------------------------

def test_metric_attribute_keys_and_values(live, api, hosts):
    api.send(gauge("par.attr", [(T0 + 5 * S, 1.0, {"region": "eu", "zone": "a"}),
                                (T0 + 5 * S, 1.0, {"region": "us"})],
                   resource={"service.name": "billing"}))
    api.send(gauge("par.attr", [(T0 + 5 * S, 1.0, {"region": "eu"})], resource={"service.name": "search"}))
    window = {"dateFrom": iso(T0 - MIN), "dateTo": iso(T0 + MIN)}
    r = api.get("attributes", search="re", metricName="par.attr", **window)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"name": "region", "attribute_count": 3}], "count": 1}
    body = api.get("attributes", metricName="par.attr", **window).json()
    names = [x["name"] for x in body["results"]]
    assert names[0] == "service_name" and "service.name" not in names  # one key, first (PostHog)
    assert body["results"][0]["attribute_count"] == 3 and names[1:] == ["region", "zone"]
    assert body["count"] == 3 and api.get("attributes", limit="1", **window).json()["count"] == 1
    values = api.get("attribute_values", key="region", metricName="par.attr", **window).json()
    assert values == {"results": [{"id": "eu", "name": "eu", "count": 2}, {"id": "us", "name": "us", "count": 1}]}
    exact_first = api.get("attribute_values", key="region", value="US", metricName="par.attr", **window).json()
    assert [x["name"] for x in exact_first["results"]] == ["us"]
    services = api.get("attribute_values", key="service.name", metricName="par.attr", **window).json()
    assert sorted(x["name"] for x in services["results"]) == ["billing", "search"]
    # Outside the window: nothing (series last seen before it).
    later = {"dateFrom": iso(T0 + 10 * MIN), "dateTo": iso(T0 + 20 * MIN)}
    assert api.get("attributes", metricName="par.attr", **later).json()["results"] in (
        [], [{"name": "service_name", "attribute_count": None}])
    for params, attr in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"dateFrom": "soon"}, "dateFrom"),
                         ({"dateFrom": iso(T0), "dateTo": iso(T0 - MIN)}, "dateTo"), ({"serach": "x"}, "serach"),
                         ({"dateTo": "0338-01-01T02:02:00Z"}, "dateTo")):
        _posthog_error(api.get("attributes", **params), 400, attr)
    _posthog_error(api.get("attribute_values"), 400, "key")
    _posthog_error(api.get("attribute_values", key="region", limit="abc"), 400, "limit")


def _get(live, path: str, params: dict) -> httpx.Response:
    return httpx.get(live.http_url + path, params=params, headers={"Authorization": f"Bearer {live.admin_key()}"},
                     timeout=30)


def test_pickers_answer_the_requests_posthogs_filter_bar_sends(live, api, hosts):
    """PostHog's filter bar (TaxonomicFilter) loads keys with `search`, `limit`, `offset`,
    `excluded_properties` (JSON) plus the page's endpointFilters: tracing adds `dateRange`, `filterGroup`,
    `serviceNames` (JSON) and `search_values`; metrics `metricName`, `dateFrom`. Values add `value`."""
    front_end = {"attribute_type": "span_attribute", "search_values": "true", "search": "",
                 "filterGroup": json.dumps({"type": "AND", "values": [{"type": "AND", "values": []}]}),
                 "serviceNames": json.dumps(["web"]), "limit": "50", "offset": "0", "excluded_properties": "[]",
                 "dateRange": json.dumps({"date_from": iso(T0 - 20 * MIN), "date_to": iso(T0 + 10 * MIN)})}
    span_keys: dict[str, int] = {}
    for rec in SPANS:
        for k in rec["attributes"]:
            span_keys[k] = span_keys.get(k, 0) + 1
    ranked = sorted(span_keys, key=lambda k: (-span_keys[k], k))
    r = _get(live, TRACING + "/attributes", front_end)
    assert r.status_code == 200, r.text
    assert [x["name"] for x in r.json()["results"]] == ranked and r.json()["count"] == len(ranked)
    # the next page, keys the bar already shows left out, an allowlist
    page = _get(live, TRACING + "/attributes", {**front_end, "limit": "2", "offset": "2"}).json()
    assert [x["name"] for x in page["results"]] == ranked[2:4]
    left_out = _get(live, TRACING + "/attributes", {**front_end, "excluded_properties": json.dumps(ranked[:2])})
    assert [x["name"] for x in left_out.json()["results"]] == ranked[2:]
    only = _get(live, TRACING + "/attributes", {**front_end, "properties": "retry,nope"}).json()
    assert [x["name"] for x in only["results"]] == ["retry"] and only["count"] == 1
    # a window with no span (whole hours: the rollup is hourly) lists nothing
    empty = {"date_from": iso(T0 - 30 * 86400 * S), "date_to": iso(T0 - 29 * 86400 * S)}
    assert _get(live, TRACING + "/attributes", {**front_end, "dateRange": json.dumps(empty)}).json() == \
        {"results": [], "count": 0}
    values = {k: v for k, v in front_end.items() if k not in ("search", "search_values", "excluded_properties")}
    r = _get(live, TRACING + "/values", {**values, "key": "http.route", "value": "USERS"})
    assert r.status_code == 200 and r.json() == {"results": [{"id": "/api/users", "name": "/api/users"}]}
    assert _get(live, TRACING + "/values", {**values, "key": "http.route", "dateRange": json.dumps(empty)}).json() \
        == {"results": []}
    # anything else is refused, naming it
    _posthog_error(_get(live, TRACING + "/attributes", {**front_end, "serach": "x"}), 400, "serach")
    _posthog_error(_get(live, TRACING + "/attributes", {**front_end, "excluded_properties": "a,b"}), 400,
                   "excluded_properties")
    _posthog_error(_get(live, TRACING + "/service-names", {"dateRange": json.dumps({"date_from": "-1h"}),
                                                          "limit": "5"}), 400, "limit")

    # metrics: par.g's hosts carry `host` and `version`; PostHog's bar pages with offset
    metrics = {"search": "", "limit": "1", "offset": "0", "excluded_properties": "[]", "metricName": "par.g",
               "dateFrom": iso(T0 - MIN)}
    first = api.get("attributes", **metrics)
    assert first.status_code == 200, first.text
    names = [x["name"] for x in first.json()["results"]]
    assert names == ["service_name"]
    rest = [x["name"] for x in api.get("attributes", **{**metrics, "limit": "10", "offset": "1"}).json()["results"]]
    assert rest == ["host", "version"]
    kept = api.get("attributes", **{**metrics, "limit": "10", "excluded_properties": json.dumps(["host", "service_name"])})
    assert [x["name"] for x in kept.json()["results"]] == ["version"]
    assert [x["name"] for x in api.get("attributes", **{**metrics, "limit": "10", "properties": "version"}).json()[
        "results"]] == ["version"]
    ranked_hosts = sorted(hosts)
    page = api.get("attribute_values", key="host", metricName="par.g", dateFrom=iso(T0 - MIN), limit="2", offset="2")
    assert [x["name"] for x in page.json()["results"]] == ranked_hosts[2:4]  # each host: one series (ties by value)


def test_metric_names_narrowed_to_services_as_posthogs_picker_asks(live, api):
    """GET metrics/values?service=a,b (PostHog's _MetricValuesParamsSerializer): names of series whose
    service is one of them, verbatim; `service=` (empty) the series without a service name; absent, all."""
    api.send(gauge("par.svc.billing", [(T0 + 5 * S, 1.0, {})], resource={"service.name": "billing"}))
    api.send(gauge("par.svc.padded", [(T0 + 5 * S, 1.0, {})], resource={"service.name": " search "}))
    api.send(gauge("par.svc.none", [(T0 + 5 * S, 1.0, {})], resource={"host.name": "h1"}))

    def names(**params) -> set[str]:
        r = api.get("values", value="par.svc.", **params)
        assert r.status_code == 200, r.text
        return {x["name"] for x in r.json()["results"]}

    assert names() == {"par.svc.billing", "par.svc.padded", "par.svc.none"}
    assert names(service="billing") == {"par.svc.billing"}
    assert names(service="billing, search ,") == {"par.svc.billing", "par.svc.padded"}  # verbatim, "" dropped
    assert names(service="search") == set()  # not trimmed: the name is " search "
    assert names(service="") == {"par.svc.none"}
    assert names(service="nobody") == set()
    _posthog_error(api.get("values", services="billing"), 400, "services")


# --- item 8: PostHog's relative dates in the new endpoints ---------------------------------------------------

def test_relative_dates_in_new_endpoints(live, api):
    """`-35M` is thirty-five minutes and `-1m` one month (PostHog's relative_date_parse); trace 5 started
    forty minutes ago. The module's data is placed around NOW (its import); a long suite runs this test
    minutes later, so the minute windows are widened by the whole minutes since then (`ago`)."""
    elapsed = (time.time_ns() - NOW) // MIN

    def ago(minutes: int) -> str:  # the minute `minutes` before NOW, as a relative date
        return f"-{minutes + elapsed}M"

    def users_count(date_from: str) -> int:
        r = _post(live, TRACING + "/aggregate", {"query": {"dateRange": {"date_from": date_from}}})
        assert r.status_code == 200, r.text
        return sum(x["count"] for x in r.json()["results"] if x["name"] == "GET /api/users")

    assert users_count(ago(35)) == 1 and users_count("-1m") == 2 and users_count(ago(60)) == 2
    assert users_count("-1dStart") == 2 or time.gmtime(NOW / S).tm_hour == 0  # start of yesterday
    r = _post(live, TRACING + "/tree", {"query": {"spanName": "GET /api/users", "dateRange": {"date_from": ago(35)}}})
    assert {x["count"] for x in r.json()["results"] if x["name"] == "GET /api/users"} == {1}
    # the sparkline, the trace view and characterize read them the same way
    def spark_total(date_from: str) -> int:
        r = _post(live, TRACING + "/sparkline", {"query": {"dateRange": {"date_from": date_from}}})
        assert r.status_code == 200, r.text
        return sum(x["count"] for x in r.json()["results"])

    recent = sum(1 for x in SPANS if x["trace_id"] != f"{5:032x}")
    assert spark_total(ago(35)) == recent and spark_total(ago(60)) == recent + 1
    trace5 = lambda date_from: _post(live, TRACING + f"/trace/{5:032x}", {"dateRange": {"date_from": date_from}}  # noqa
                                     ).json()["results"]
    assert trace5(ago(35)) == [] and [x["name"] for x in trace5("-1m")] == ["GET /api/users"]
    before = time.time_ns()
    report = api.characterize(metricName="par.g", anomalyFrom="-35M")
    after = time.time_ns()
    anomaly_from = dt.datetime.fromisoformat(report["anomaly_from"]).timestamp() * S
    assert before - 35 * MIN - S <= anomaly_from <= after - 35 * MIN + S
    api.send(gauge("par.old", [(NOW - 50 * MIN, 1.0, {"only_old": "x"})]))
    assert api.get("attributes", search="only_old", dateFrom="-30M").json()["results"] == []
    assert [x["name"] for x in api.get("attributes", search="only_old", dateFrom=ago(60)).json()["results"]] == \
        ["only_old"]
