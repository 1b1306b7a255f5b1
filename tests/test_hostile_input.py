"""otelite under a hostile or careless client (issue 10), against a live server with a key and real data.

Each row of the issue's table has a test here that reproduces it (rows 4-9: test_keepalive.py,
test_secure_defaults.py, test_prometheus_scrape.py):

1. a catastrophic-backtracking regex over a long attribute/label: answered fast (RE2), and neither it
   nor the slowest query we can build (stopped by api.query_timeout with a 503) delays /healthz or an
   OTLP export;
2. a huge body to any REST route: 413 before it is read (or at the limit, for a chunked or gzip body),
   without the server's memory growing;
3. numbers, dates, ids, keys and nesting that used to be 500s: a 400/404 in the dialect's shape.

Latency assertions (the issue asks for them): the medians must be under the issue's 100 ms and every
single request under one second (the old failure was a 13.6 s freeze). The maxima are not held to
100 ms: the CI machine is shared, and a scheduling hiccup of another process is not otelite's.
"""

from __future__ import annotations

import gzip
import json
import socket
import statistics
import threading
import time

import httpx
import pytest

from conftest import start_server, trace_request
from metrics_otlp import base_ns, exp_histogram, gauge, iso
from otelite.collector.store.points import point_rows

PROTOBUF = {"Content-Type": "application/x-protobuf"}
EVIL = "a" * 40 + "!"  # issue 10 row 1, with 40 a's
CATASTROPHIC = "(a+)+$"  # exponential in Python's re on EVIL; linear in RE2
BUDGET_S = 1.0
TRACING = "/api/projects/default/tracing/spans"
METRICS = "/api/projects/default/metrics"
SLOW_SPANS, SLOW_PAYLOAD = 400, 20_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("hostile"), {"api": {"query_timeout": f"{BUDGET_S}s"}})
    key = s.admin_key()
    s.headers = {"Authorization": f"Bearer {key}"}
    # Spans whose attribute is the ReDoS subject, and spans with a large payload for the slow query.
    req = trace_request(3, seed=1, with_attribute=True)
    for sp in req.resource_spans[0].scope_spans[0].spans:
        a = sp.attributes.add()
        a.key, a.value.string_value = "evil", EVIL
    slow = trace_request(SLOW_SPANS, seed=2)
    for sp in slow.resource_spans[0].scope_spans[0].spans:
        a = sp.attributes.add()
        a.key, a.value.string_value = "payload", "a" * SLOW_PAYLOAD + "!"
    s.base = base_ns(1)
    metrics = gauge("evil.gauge", [(s.base + i * 60 * 10**9, float(i), {"evil": EVIL}) for i in range(30)])
    for body in (req, slow, metrics):
        path = "/v1/metrics" if body is metrics else "/v1/traces"
        r = httpx.post(s.http_url + path, content=body.SerializeToString(), headers=PROTOBUF, timeout=30)
        assert r.status_code == 200, r.text
    yield s
    s.kill()


def _redos_tracing(client: httpx.Client, srv) -> httpx.Response:
    return client.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, json={"query": {
        "dateRange": {"date_from": "all"}, "rootSpans": False,
        "filterGroup": [{"key": "evil", "type": "span_attribute", "operator": "regex", "value": CATASTROPHIC}]}})


def _redos_metrics(client: httpx.Client, srv) -> httpx.Response:
    return client.post(f"{srv.http_url}{METRICS}/query", headers=srv.headers, json={"query": {
        "metricName": "evil.gauge", "aggregation": "avg", "dateFrom": iso(srv.base), "dateTo": iso(srv.base + 3600 * 10**9),
        "filters": [{"key": "evil", "op": "regex", "value": CATASTROPHIC}]}})


def _slow_query(client: httpx.Client, srv) -> httpx.Response:
    """The most expensive request the tracing API takes: 100 negative regexes (every one is evaluated)
    over every span of every time, each span carrying 20 KB, ordered by duration (no index helps)."""
    return client.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, json={"query": {
        "dateRange": {"date_from": "all"}, "rootSpans": False, "orderBy": "duration",
        "filterGroup": [{"key": "payload", "type": "span_attribute", "operator": "not_regex", "value": f"b{i}$"}
                        for i in range(100)]}})


def _meanwhile(srv, busy: list[threading.Thread]) -> tuple[list[float], list[float]]:
    """Latencies of /healthz and of a one-span OTLP export (both on keep-alive connections) sent while
    `busy` threads run; at least five of each."""
    health, export = [], []
    seed = 1000
    with httpx.Client(timeout=30) as client:
        while any(t.is_alive() for t in busy) or len(health) < 5:
            started = time.perf_counter()
            r = client.get(f"{srv.http_url}/healthz")
            health.append(time.perf_counter() - started)
            assert r.status_code == 200
            seed += 1
            started = time.perf_counter()
            r = client.post(f"{srv.http_url}/v1/traces", content=trace_request(1, seed).SerializeToString(),
                            headers=PROTOBUF)
            export.append(time.perf_counter() - started)
            assert r.status_code == 200  # acknowledged: committed
            time.sleep(0.02)
    return health, export


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms, n={len(values)}"


def _assert_fast(name: str, values: list[float]) -> None:
    assert statistics.median(values) < 0.100 and max(values) < 1.0, f"{name}: {_ms(values)}"


# --- row 1 ---------------------------------------------------------------------------------------------

def test_redos_regex_answers_fast_while_health_and_ingest_stay_fast(srv):
    answers: list[tuple[str, int, float]] = []

    def attack():
        with httpx.Client(timeout=30) as client:
            for _ in range(4):
                for name, send in (("tracing", _redos_tracing), ("metrics", _redos_metrics)):
                    started = time.perf_counter()
                    r = send(client, srv)
                    answers.append((name, r.status_code, time.perf_counter() - started))
                    assert r.status_code == 200, r.text

    attacker = threading.Thread(target=attack)
    attacker.start()
    health, export = _meanwhile(srv, [attacker])
    attacker.join()
    assert len(answers) == 8
    for name, status, took in answers:
        assert took < 1.0, (name, took)
    _assert_fast("/healthz", health)
    _assert_fast("OTLP export", export)
    # The pattern really was evaluated: it matches no value ending in "!", and its negation keeps them all.
    with httpx.Client(timeout=30) as client:
        assert _redos_tracing(client, srv).json()["results"] == []
        assert _redos_metrics(client, srv).json()["results"][0]["points"] == [] or \
            all(p["value"] is None for p in _redos_metrics(client, srv).json()["results"][0]["points"])
        r = client.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, json={"query": {
            "dateRange": {"date_from": "all"}, "rootSpans": False,
            "filterGroup": [{"key": "evil", "type": "span_attribute", "operator": "not_regex", "value": CATASTROPHIC},
                            {"key": "evil", "type": "span_attribute", "operator": "is_set"}]}})
        assert len(r.json()["results"]) == 3


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)", "(?<!a)b", "a{2000}{2000}", "(unclosed"])
def test_patterns_re2_refuses_are_400_naming_the_filter(srv, pattern):
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, json={"query": {
            "filterGroup": [{"key": "evil", "type": "span_attribute", "operator": "regex", "value": pattern}]}})
        assert r.status_code == 400 and r.json()["attr"] == "filterGroup", r.text
        assert "filterGroup[0].value" in r.json()["detail"] and "invalid regex" in r.json()["detail"]
        r = client.post(f"{srv.http_url}{METRICS}/query", headers=srv.headers, json={"query": {
            "metricName": "evil.gauge", "dateFrom": "-1h", "filters": [{"key": "evil", "op": "not_regex",
                                                                         "value": pattern}]}})
        assert r.status_code == 400 and r.json()["attr"] == "query.filters", r.text
        assert "invalid regex" in r.json()["detail"]


def test_the_slowest_query_is_stopped_at_the_budget_while_health_and_ingest_stay_fast(srv):
    """Eight of the most expensive queries at once (twice the query workers): each is answered 503 in
    PostHog's shape within about the budget, and /healthz and OTLP exports meanwhile stay fast."""
    answers: list[tuple[httpx.Response, float]] = []
    lock = threading.Lock()

    def one():
        with httpx.Client(timeout=30) as client:
            started = time.perf_counter()
            r = _slow_query(client, srv)
            with lock:
                answers.append((r, time.perf_counter() - started))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    health, export = _meanwhile(srv, threads)
    for t in threads:
        t.join()
    for r, took in answers:
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        body = r.json()
        assert body["type"] == "server_error" and body["code"] == "unavailable", body
        assert "api.query_timeout" in body["detail"] and "1 s" in body["detail"]
        assert took < BUDGET_S + 2.0, took  # stopped near the budget (the waiting ones never started)
    _assert_fast("/healthz", health)
    _assert_fast("OTLP export", export)
    # The workers' connections came back clean: a normal query answers, with the spans exported meanwhile.
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers,
                        json={"query": {"dateRange": {"date_from": "-10m"}, "limit": 1000}})
        assert r.status_code == 200
        assert len(r.json()["results"]) >= len(export)


# --- row 2 ---------------------------------------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _raw_post(srv, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST with exactly these headers (a Content-Length that need not match what is sent): status, body."""
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + \
               "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_a_200_mb_body_is_refused_before_it_is_read(srv):
    rss_before = _rss_kib(srv.proc.pid)
    status, body = _raw_post(srv, f"{METRICS}/query", {**srv.headers, "Content-Type": "application/json",
                                                     "Content-Length": str(200 * 2**20)}, b'{"query": ')
    assert status == 413, body
    doc = json.loads(body)
    assert doc["type"] == "invalid_request" and doc["code"] == "payload_too_large"  # PostHog's shape
    assert "1048576 bytes" in doc["detail"]
    assert _rss_kib(srv.proc.pid) - rss_before < 20 * 1024


def test_chunked_and_compressed_bodies_stop_at_the_limit(srv):
    rss_before = _rss_kib(srv.proc.pid)
    big = b'{"query": {"metricName": "' + b"x" * (5 * 2**20) + b'"}}'
    with httpx.Client(timeout=30) as client:
        # Chunked: no Content-Length to refuse up front; reading stops at limit + 1 bytes.
        r = client.post(f"{srv.http_url}{METRICS}/query", headers={**srv.headers, "Content-Type": "application/json"},
                        content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]))
        assert r.status_code == 413, r.text
        # A gzip bomb: 200 MB of JSON whitespace in ~200 KB; decompression stops at the limit.
        bomb = gzip.compress(b"{" + b" " * (200 * 2**20) + b"}", 9)
        assert len(bomb) < 2**20
        for path in (f"{METRICS}/query", f"{TRACING}/query"):
            r = client.post(f"{srv.http_url}{path}", content=bomb,
                            headers={**srv.headers, "Content-Type": "application/json", "Content-Encoding": "gzip"})
            assert r.status_code == 413, r.text
            assert r.json()["code"] == "payload_too_large"
    assert _rss_kib(srv.proc.pid) - rss_before < 50 * 1024


def test_every_rest_operation_with_a_body_refuses_one_over_the_limit(srv):
    """Generic over the served OpenAPI document: every operation of every dialect that takes a body
    (OTLP excepted: its own, larger limit) answers 413 to a Content-Length over api.max_request_body_size."""
    doc = httpx.get(f"{srv.http_url}/api/schema/", timeout=10).json()
    checked = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method != "post" or "requestBody" not in op or path in ("/v1/traces", "/v1/metrics"):
                continue
            concrete = (path.replace("{project_id}", "default").replace("{projectKey}", "default")
                        .replace("{trace_id}", "0" * 32))
            # The first bytes of the body: Falcon waits for the first body event before routing.
            status, body = _raw_post(srv, concrete, {**srv.headers, "Content-Type": "application/json",
                                                     "Content-Length": str(2**20 + 1)}, b'{"query": {')
            assert status == 413, (path, body)
            checked.append(path)
    assert len(checked) >= 8, checked  # both PostHog prefixes: query, sparkline, trace, metrics query, characterize


def test_a_max_size_otlp_json_body_is_parsed_off_the_event_loop(srv):
    """OTLP/JSON bodies were parsed (json.loads, the mapping to protobuf) and their messages walked in the
    event loop: a body of 20 MiB of gauge points kept /healthz waiting 3.5 s. The decode workers take both
    encodings now; the points are all stored."""
    n = 385_000
    t0 = srv.base

    def body(name: str) -> bytes:
        points = [{"timeUnixNano": str(t0 + i), "asInt": i} for i in range(n)]
        return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": name, "gauge": {"dataPoints": points}}]}]}]}, separators=(",", ":")).encode()

    bodies = {name: body(name) for name in ("json.big.a", "json.big.b")}
    assert all(19 * 2**20 < len(b) < 20 * 2**20 for b in bodies.values())
    statuses = []

    def send() -> None:
        with httpx.Client(timeout=120) as client:
            for data in bodies.values():
                r = client.post(f"{srv.http_url}/v1/metrics", content=data, headers={"Content-Type": "application/json"})
                statuses.append((r.status_code, r.text))

    sender = threading.Thread(target=send)
    sender.start()
    health = []
    try:
        with httpx.Client(timeout=30) as client:
            # (not _meanwhile: an OTLP export meanwhile is refused with 503 while the big request fills the
            # writer's queue, which is backpressure, not a stall)
            while sender.is_alive() or len(health) < 5:
                started = time.perf_counter()
                assert client.get(f"{srv.http_url}/healthz").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.02)
    finally:
        sender.join()  # a failure here must not leave the bodies in the queue for this module's next tests
    assert statuses == [(200, "{}")] * 2
    _assert_fast("/healthz", health)
    for name in bodies:
        ids = [r[0] for r in srv.query("SELECT id FROM metric_series WHERE name = ?", (name,))]
        assert len(srv.read(point_rows, ids)) == n, name


# --- row 3 ---------------------------------------------------------------------------------------------

ROW_3 = [
    # tracing: numbers, dates, ids, keys
    ("POST", f"{TRACING}/query", {"query": {"offset": 10**29}}, 400, "offset"),
    ("POST", f"{TRACING}/query", {"query": {"limit": 10**29}}, 400, "limit"),
    ("POST", f"{TRACING}/query", {"query": {"dateRange": {"date_from": "0001-01-01"}}}, 400, "dateRange"),
    ("POST", f"{TRACING}/query", {"query": {"dateRange": {"date_from": "-1h", "date_to": "9999-12-31T23:59:59"}}},
     400, "dateRange"),
    ("POST", f"{TRACING}/query", {"query": {"dateRange": {"date_from": "-999999999h"}}}, 400, "dateRange"),
    ("POST", f"{TRACING}/trace/{'0' * 32}", {"offset": 10**29}, 400, "offset"),
    ("POST", f"{TRACING}/sparkline", {"query": {"dateRange": {"date_from": "0001-01-01", "date_to": "0001-01-02"}}},
     400, "dateRange"),
    ("GET", f"{TRACING}/service-names?dateRange=" + json.dumps({"date_from": "0001-01-01"}), None, 400, "dateRange"),
    ("GET", f"{TRACING}/attributes?offset={10**30}", None, 400, "offset"),
    ("GET", f"{TRACING}/values?key=k&limit=%C2%B2", None, 400, "limit"),
    # metrics: dates and epoch numbers
    ("POST", f"{METRICS}/query", {"query": {"metricName": "x", "dateFrom": "0001-01-01", "dateTo": "0001-01-02"}},
     400, "dateFrom"),
    ("POST", f"{METRICS}/query", {"query": {"metricName": "x", "dateFrom": 1e11}}, 400, "dateFrom"),
    ("POST", f"{METRICS}/characterize", {"query": {"metricName": "x", "anomalyFrom": "0001-01-01"}}, 400,
     "anomalyFrom"),
    ("GET", f"{METRICS}/values?limit=%C2%B2", None, 400, "limit"),
    # ids
    ("GET", "/api/projects/99999999999999999999999999/metrics/has_metrics", None, 404, None),
    ("GET", "/api/projects/%C2%B2/metrics/has_metrics", None, 404, None),
    ("POST", "/api/environments/99999999999999999999999999/tracing/spans/query", {}, 404, None),
]


@pytest.mark.parametrize("method, path, body, status, attr", ROW_3, ids=[f"{r[0]} {r[1][:60]}" for r in ROW_3])
def test_out_of_range_input_is_a_4xx_in_posthog_shape(srv, method, path, body, status, attr):
    r = httpx.request(method, srv.http_url + path, json=body, headers=srv.headers, timeout=30)
    assert r.status_code == status, r.text
    doc = r.json()
    assert set(doc) >= {"type", "code", "detail", "attr"}, doc
    if attr is not None:
        assert doc["attr"] == attr and doc["detail"].startswith(attr) or attr in doc["detail"], doc


def test_an_attribute_key_with_a_nul_is_400_naming_the_filter(srv):
    """It was a SQLite JSON path error (500). SQLite's JSON functions end a key at a NUL, so no stored
    key can match it: refused, not silently empty."""
    r = httpx.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, timeout=30, json={"query": {
        "filterGroup": [{"key": "a\u0000b", "type": "span_attribute", "operator": "exact", "value": "x"}]}})
    assert r.status_code == 400 and r.json()["attr"] == "filterGroup", r.text
    assert "filterGroup[0].key" in r.json()["detail"] and "NUL" in r.json()["detail"]


@pytest.mark.parametrize("key", ['a"b', "a\\b", "line\nbreak", "tab\tkey", "bell\x07"])
def test_attribute_keys_with_characters_json_escapes_are_found(srv, key):
    """A JSON path label is compared with the key as JSON escapes it: a quote, backslash or control
    character in a key never matched. Spans carrying exactly such keys are found by them."""
    req = trace_request(1, seed=5000 + ord(key[1]))
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    a = sp.attributes.add()
    a.key, a.value.string_value = key, "found"
    assert httpx.post(srv.http_url + "/v1/traces", content=req.SerializeToString(), headers=PROTOBUF,
                      timeout=10).status_code == 200
    r = httpx.post(f"{srv.http_url}{TRACING}/query", headers=srv.headers, timeout=30, json={"query": {
        "dateRange": {"date_from": "all"}, "rootSpans": False,
        "filterGroup": [{"key": key, "type": "span_attribute", "operator": "exact", "value": "found"}]}})
    assert r.status_code == 200, r.text
    assert [s["span_id"] for s in r.json()["results"]] == [sp.span_id.hex()]
    assert r.json()["results"][0]["attributes"][key] == "found"


@pytest.mark.parametrize("raw, message", [
    (b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"query": {"metricName": "\\ud800", "dateFrom": "-1h"}}', "lone UTF-16 surrogate"),
    (b'{"query": {"filterGroup": [{"key": "\\udfff", "type": "span_attribute", "value": "x"}]}}',
     "lone UTF-16 surrogate"),
    (b"\xff\xfe{", "not valid JSON"),
])
def test_bodies_no_parser_can_take_are_400(srv, raw, message):
    for path in (f"{METRICS}/query", f"{TRACING}/query", f"{TRACING}/sparkline"):
        r = httpx.post(srv.http_url + path, content=raw, timeout=30,
                       headers={**srv.headers, "Content-Type": "application/json"})
        assert r.status_code == 400 and message in r.json()["detail"], (path, r.text)


def test_filter_groups_nested_500_deep_are_400(srv):
    """JSON nested 500 deep (250 groups of an object and a list): parsed, then refused by the filter parser."""
    leaf = '{"key": "evil", "type": "span_attribute", "operator": "exact", "value": "x"}'
    group = '{"type": "AND", "values": [' * 250 + leaf + "]}" * 250
    r = httpx.post(f"{srv.http_url}{TRACING}/query", headers={**srv.headers, "Content-Type": "application/json"},
                   timeout=30, content='{"query": {"filterGroup": %s}}' % group)
    assert r.status_code == 400 and r.json()["attr"] == "filterGroup", r.text
    assert srv.alive()


@pytest.mark.parametrize("offsets, scale", [((0, 8000), 10), ((-2**31, 2**31 - 1), 20)], ids=["apart", "int32-ends"])
def test_exponential_buckets_far_apart_are_combined_within_bounds(srv, offsets, scale):
    """Two series whose buckets lie far apart at one scale (offsets of +-2^31 are valid at scale 20): their
    quantiles combine at a coarser scale, as an SDK downscales to fit its buckets. The combined span at
    one scale had numpy allocate 32 GiB (a 500), and a scale past 2^10 raised OverflowError."""
    t = srv.base + 10 * 60 * 10**9
    name = f"far.exp.{scale}"
    req = exp_histogram(name, [(t, scale, off, [1], 0, {"at": str(off)}) for off in offsets])
    assert httpx.post(srv.http_url + "/v1/metrics", content=req.SerializeToString(), headers=PROTOBUF,
                      timeout=10).status_code == 200
    answers = {}
    for q in (0.01, 0.99):
        r = httpx.post(f"{srv.http_url}{METRICS}/query", headers=srv.headers, timeout=30, json={"query": {
            "metricName": name, "aggregation": "histogram_quantile", "quantile": q, "interval": "hour",
            "dateFrom": iso(srv.base), "dateTo": iso(srv.base + 3600 * 10**9)}})
        assert r.status_code == 200, r.text
        [series] = r.json()["results"]
        answers[q] = [p["value"] for p in series["points"] if p["value"] is not None]
    if scale == 10:
        # One observation in (1, 2^(1/1024)] and one in (2^(8000/1024), 2^(8001/1024)]; at scale 9 (a span of
        # 4,001 buckets) each is placed within its bucket of relative width 2^(1/512) - 1 = 0.14%.
        assert answers[0.01] == [pytest.approx(1.0, rel=0.002)]
        assert answers[0.99] == [pytest.approx(2 ** (8000 / 1024), rel=0.002)]
    else:  # 2^(+-2048), off the doubles at both ends: 0, and infinity, which the API answers as null
        assert answers == {0.01: [0.0], 0.99: []}
    assert srv.alive()


def test_a_span_from_the_far_future_does_not_slow_the_value_pickers(srv):
    """The value picker read the hourly rollup one seek per hour from its first hour to its last: one span
    starting in 2153 put a million empty hours between, and every /values query ran out of its budget
    (503). It now steps from one hour the rollup holds to the next."""
    far = (2153 - 1970) * 365 * 86400 * 10**9
    for seed, start, value in ((7001, time.time_ns() - 60 * 10**9, "now"), (7002, far, "future")):
        req = trace_request(1, seed=seed, start_ns=start)
        a = req.resource_spans[0].scope_spans[0].spans[0].attributes.add()
        a.key, a.value.string_value = "era", value
        assert httpx.post(srv.http_url + "/v1/traces", content=req.SerializeToString(), headers=PROTOBUF,
                          timeout=10).status_code == 200
    started = time.perf_counter()
    r = httpx.get(f"{srv.http_url}{TRACING}/values", params={"key": "era"}, headers=srv.headers, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(v["name"] for v in r.json()["results"]) == ["future", "now"]
    assert time.perf_counter() - started < BUDGET_S


def test_spans_lasting_centuries_are_aggregated_without_overflow(srv):
    """Two spans from 1970 to 2262 (valid OTLP times): their durations' sum overflowed SQLite's sum()
    ("integer overflow", a 500 from /aggregate). Totals are doubles now."""
    req = trace_request(2, seed=7100, start_ns=1, service="centuries")
    for sp in req.resource_spans[0].scope_spans[0].spans:
        sp.name, sp.end_time_unix_nano = "forever", 2**63 - 1
    assert httpx.post(srv.http_url + "/v1/traces", content=req.SerializeToString(), headers=PROTOBUF,
                      timeout=10).status_code == 200
    r = httpx.post(f"{srv.http_url}{TRACING}/aggregate", headers=srv.headers, timeout=30, json={"query": {
        "dateRange": {"date_from": "all"}, "serviceNames": ["centuries"]}})
    assert r.status_code == 200, r.text
    [row] = [x for x in r.json()["results"] if x["name"] == "forever"]
    assert row["count"] == 2
    assert row["total_duration_nano"] == pytest.approx(2 * (2**63 - 2))
    assert row["p50_duration_nano"] == pytest.approx(2**63 - 2)
