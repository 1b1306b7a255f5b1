"""BrainzLab Flux (issue 11, flux.md, seed 003) against a live `otelite serve` with a real SQLite file.

Every seed request is sent as written (base URL and key replaced); data with exact timestamps goes in
through the Flux API itself and every expected number is computed here with numpy, independently of the
server's code. The one-store tests read Flux data back through PostHog and the Prometheus scrape, and
OTLP data back through Flux. BrainzLab's SDK (Ruby) is not installable here, so its payloads are sent as
its source builds them (lib/brainzlab/flux.rb: ISO 8601 with milliseconds, negative counters for
decrements, `unit: "ms"` on timings, events with nulls).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import start_server
from metrics_otlp import CUMULATIVE, HOUR, MIN, Api, base_ns, counter, gauge, histogram, iso
from test_prometheus_scrape import promtool_check

S = 10**9
B = base_ns(5)  # a whole hour five hours ago: inside the default 24 h query range


def ms_iso(ns: int) -> str:
    """The SDK's `Time.now.utc.iso8601(3)`."""
    return dt.datetime.fromtimestamp(ns / S, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{(ns // 10**6) % 1000:03d}Z"


class Flux:
    def __init__(self, server, key: str, prefix: str = "/api/v1") -> None:
        self.server, self.prefix = server, prefix
        self.headers = {"Authorization": f"Bearer {key}"}

    def url(self, path: str) -> str:
        return f"{self.server.http_url}{self.prefix}{path}"

    def post(self, path: str, body=None, **kw) -> httpx.Response:
        return httpx.post(self.url(path), json=body, headers={**self.headers, **kw.pop("headers", {})},
                          timeout=20, **kw)

    def get(self, path: str, params=None, **kw) -> httpx.Response:
        return httpx.get(self.url(path), params=params, headers={**self.headers, **kw.pop("headers", {})},
                         timeout=20, **kw)

    def track(self, metrics: list[dict]) -> dict:
        r = self.post("/metrics/batch", {"metrics": metrics})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["rejected"] == 0, r.text
        return r.json()["data"]

    def query(self, name: str, **params) -> dict:
        r = self.get(f"/metrics/{name}/query", params=params)
        assert r.status_code == 200, r.text
        return r.json()["data"]


# Metric retention off: the seed's own example is dated 2024-01-15, long past the default 30 days (older
# points are expired, never read, from the moment they arrive).
NO_LIMITS = {"auth": {"rate_limits": {"flux_batch": {"enabled": False}, "flux_query": {"enabled": False}}},
             "exporters": {"sqlite": {"retention": {"metrics": 0}}}}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server for the module, its batch and query limits configured off; each test uses its own names."""
    srv = start_server(tmp_path_factory.mktemp("flux"), NO_LIMITS)
    yield srv
    if srv.alive():
        srv.kill()


@pytest.fixture(scope="module")
def flux(live) -> Flux:
    return Flux(live, live.admin_key())


def window(start: int, hours: int = 1) -> dict:
    return {"from": iso(start), "to": iso(start + hours * HOUR - S)}


def flux_error(r: httpx.Response, *, shared: bool = False) -> dict:
    """The `error` of a 4xx in Flux's shape. `shared`: a request the /api/v1 dispatch could not give to
    either dialect (api/shared_v1.py) carries Trifle's shape beside Flux's, so each client finds its own."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert set(body) == ({"error", "errors"} if shared else {"error"}), body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    return body["error"]


# --- the seed's requests, as written --------------------------------------------------------------------------

def test_every_seed_request_answers_in_the_seeds_shape(live, flux):
    for prefix in ("/api/v1", "/flux/api/v1"):
        api = Flux(live, flux.headers["Authorization"][7:], prefix)
        r = api.post("/metrics", {"name": "api.response_time", "type": "distribution", "value": 145.2,
                                  "timestamp": "2024-01-15T10:30:00Z",
                                  "tags": {"endpoint": "/users", "method": "GET", "status": "200"}},
                     headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        assert r.json() == {"data": {"name": "api.response_time", "type": "distribution", "value": 145.2,
                                     "timestamp": "2024-01-15T10:30:00Z"}}
        for body in ({"name": "users.online", "type": "gauge", "value": 234},
                     {"name": "api.requests", "type": "counter", "value": 1},
                     {"name": "response_time", "type": "distribution", "value": 145.2},
                     {"name": "daily_active_users", "type": "set", "value": "user_123"}):
            r = api.post("/metrics", body)
            assert r.status_code == 201, r.text
            data = r.json()["data"]
            assert {k: data[k] for k in ("name", "type", "value")} == body
            assert abs(dt.datetime.fromisoformat(data["timestamp"]).timestamp() - time.time()) < 60
        r = api.post("/metrics/batch", {"metrics": [{"name": "users.online", "type": "gauge", "value": 234},
                                                    {"name": "api.requests", "type": "counter", "value": 1},
                                                    {"name": "response_time", "type": "distribution",
                                                     "value": 145.2}]})
        assert r.status_code == 200 and r.json()["data"] == {"accepted": 3, "rejected": 0, "errors": []}
        r = api.post("/flux/batch", {"events": [{"name": "order.placed", "value": 99.99}],
                                     "metrics": [{"name": "orders.count", "type": "counter", "value": 1}]})
        assert r.status_code == 200
        assert r.json()["data"] == {"events": {"accepted": 1, "rejected": 0, "errors": []},
                                    "metrics": {"accepted": 1, "rejected": 0, "errors": []}}

        listed = {m["name"]: m for m in api.get("/metrics").json()["data"]}
        assert listed["api.response_time"] == {"name": "api.response_time", "type": "distribution",
                                               "tags": ["endpoint", "method", "status"],
                                               "first_seen": "2024-01-15T10:30:00Z",
                                               "last_seen": "2024-01-15T10:30:00Z"}
        assert {n: listed[n]["type"] for n in ("users.online", "api.requests", "response_time",
                                               "daily_active_users", "orders.count")} == {
            "users.online": "gauge", "api.requests": "counter", "response_time": "distribution",
            "daily_active_users": "set", "orders.count": "counter"}
        detail = api.get("/metrics/api.response_time").json()["data"]
        assert detail == {**listed["api.response_time"], "data_points": 1 if prefix == "/api/v1" else 2}

    # The seed's query strings, verbatim (tags[endpoint] unencoded as curl -g sends it).
    r = httpx.get(flux.url("/metrics/api.response_time/query?from=2024-01-15T00:00:00Z&to=2024-01-15T23:59:59Z&"
                           "aggregation=p95&interval=1h&tags[endpoint]=/users"), headers=flux.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"name": "api.response_time", "aggregation": "p95", "interval": "1h",
                                 "series": [{"timestamp": "2024-01-15T10:00:00Z", "value": 145.2}]}}
    r = httpx.get(flux.url("/metrics/response_time/query?aggregation=p50,p95,p99&interval=1h"), headers=flux.headers)
    series = r.json()["data"]["series"]
    assert r.json()["data"]["interval"] == "1h" and series  # one row, two if an hour began meanwhile
    assert all({k: row[k] for k in ("p50", "p95", "p99")} == {"p50": 145.2, "p95": 145.2, "p99": 145.2}
               for row in series)
    flux.track([{"name": "api.requests", "type": "counter", "value": v, "tags": {"endpoint": e}}
                for e, v in (("/users", 5), ("/orders", 2), ("/users", 7))])
    r = httpx.get(flux.url("/metrics/api.requests/query?aggregation=sum&interval=1h&group_by=tags.endpoint"),
                  headers=flux.headers)
    groups = r.json()["data"]["groups"]
    # The seed's four untagged requests (two per mount, single and batch) read as the group "".
    assert {g: sum(row["value"] for row in rows) for g, rows in groups.items()} == {"/users": 12, "/orders": 2,
                                                                                    "": 4}


def readme_curls(base_url: str, key: str) -> list[list[str]]:
    """The curl commands of README's Flux section, as argument lists, with its $U and $K filled in."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## BrainzLab Flux API", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    first, body = block.split("\n", 1)  # K="Authorization: Bearer $OTELITE_KEY"; U=http://127.0.0.1:4318/...
    values = {"$OTELITE_KEY": key, "http://127.0.0.1:4318": base_url}
    for assignment in shlex.split(first):
        name, _, value = assignment.rstrip(";").partition("=")
        for old, new in values.items():
            value = value.replace(old, new)
        values["$" + name] = value
    for old in sorted(values, key=len, reverse=True):
        body = body.replace(old, values[old])
    tokens = shlex.split(body, comments=True)
    commands, current = [], None
    for token in tokens:
        if token == "curl":
            current = []
            commands.append(current)
        else:
            current.append(token)
    return commands


def run_curl(args: list[str]) -> httpx.Response:
    """What curl does with README's options: -H headers, -d a POST body (form-encoded Content-Type, as
    curl sends it), -g a URL taken literally."""
    headers, data, url = {}, None, None
    it = iter(args)
    for arg in it:
        if arg == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif arg == "-d":
            data = next(it).encode()
        elif arg == "-g":
            continue
        else:
            assert arg.startswith("http"), f"README uses a curl option this test does not know: {arg}"
            url = arg
    if data is None:
        return httpx.get(url, headers=headers, timeout=20)
    headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    return httpx.post(url, content=data, headers=headers, timeout=20)


def test_readmes_curl_examples_work(live):
    """Each curl line of README's Flux section, run as written (its own project, so its names are its own):
    the writes are stored and every read finds them."""
    live.cli("projects", "create", "readme")
    out = live.cli("keys", "create", "--project", "readme", "--scope", "metrics:read", "--scope", "metrics:write")
    key = re.search(r"^(otl_[A-Za-z0-9_-]+)$", out.stdout, re.M).group(1)
    commands = readme_curls(live.http_url, key)
    assert len(commands) >= 8  # every endpoint: track, batch, flux/batch, list, get, query (2), events
    answers = [run_curl(args) for args in commands]
    for args, r in zip(commands, answers):
        assert r.status_code in (200, 201), (args, r.text)
        assert r.json()["data"], (args, r.text)  # something was found: the writes above it were stored
    paths = {httpx.URL(next(a for a in args if a.startswith("http"))).path for args in commands}
    assert {"/flux/api/v1/metrics", "/flux/api/v1/metrics/batch", "/flux/api/v1/flux/batch", "/flux/api/v1/events",
            "/flux/api/v1/metrics/api.response_time", "/flux/api/v1/metrics/api.response_time/query",
            "/flux/api/v1/metrics/api.requests/query"} <= paths


# --- exact aggregations ------------------------------------------------------------------------------------------

def test_distribution_percentiles_and_stats_are_exact(flux):
    rng = np.random.default_rng(11)
    values = {h: rng.lognormal(4, 1, 600).round(6) for h in (0, 1)}
    metrics = []
    for h, vals in values.items():
        for i, v in enumerate(vals):
            route = "/a" if i % 3 else "/b"
            metrics.append({"name": "t.latency", "type": "distribution", "value": float(v),
                            "timestamp": ms_iso(B + h * HOUR + i * 5 * S + 123 * 10**6),
                            "tags": {"route": route, "unit": "ms"}})
    for i in range(0, len(metrics), 500):
        flux.track(metrics[i:i + 500])
    data = flux.query("t.latency", aggregation="p50,p90,p95,p99,avg,sum,min,max,count", interval="1h",
                      **window(B, 2))
    assert [row["timestamp"] for row in data["series"]] == [iso(B), iso(B + HOUR)]
    for h, row in enumerate(data["series"]):
        vals = values[h]
        for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            assert abs(row[name] - np.percentile(vals, q)) <= 1e-9, (name, h)
        assert row["avg"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["sum"] == pytest.approx(vals.sum(), rel=1e-12)
        assert (row["min"], row["max"], row["count"]) == (vals.min(), vals.max(), 600)
    # A tag filter and a group-by select exactly the observations with that tag.
    mask = np.arange(600) % 3 != 0
    data = flux.query("t.latency", aggregation="p95", interval="1h", **{"tags[route]": "/a"}, **window(B, 2))
    assert [row["value"] for row in data["series"]] == pytest.approx(
        [np.percentile(values[h][mask], 95) for h in (0, 1)], abs=1e-9)
    data = flux.query("t.latency", aggregation="p99", interval="1h", group_by="tags.route", **window(B, 2))
    for route, m in (("/a", mask), ("/b", ~mask)):
        assert [row["value"] for row in data["groups"][route]] == pytest.approx(
            [np.percentile(values[h][m], 99) for h in (0, 1)], abs=1e-9)
    # Several aggregations and a group-by together: one row per bucket with every aggregation.
    data = flux.query("t.latency", aggregation="p50,count", interval="2h", group_by="tags.route", **window(B, 2))
    assert data["groups"]["/b"] == [{"timestamp": iso(B), "p50": pytest.approx(
        np.percentile(np.concatenate([values[0][~mask], values[1][~mask]]), 50), abs=1e-9), "count": 400}]


def test_gauge_counter_and_set_aggregations(flux):
    base = B + 2 * HOUR
    gauge_vals = [(0, 5.0), (40, 9.5), (70, -1.25), (130, 3.0), (170, 8.0)]  # seconds after base
    counter_vals = [(5, 3), (20, -1), (65, 10), (200, 4), (230, -6)]
    members = [(1, "u1"), (2, "u2"), (3, "u1"), (61, "u3"), (62, "u3"), (200, "u9"), (201, 42)]
    metrics = [{"name": "t.gauge", "type": "gauge", "value": v, "timestamp": ms_iso(base + t * S)} for t, v in gauge_vals]
    metrics += [{"name": "t.counter", "type": "counter", "value": v, "timestamp": ms_iso(base + t * S)}
                for t, v in counter_vals]
    metrics += [{"name": "t.set", "type": "set", "value": m, "timestamp": ms_iso(base + t * S)} for t, m in members]
    flux.track(metrics)
    span = {"from": iso(base), "to": iso(base + 4 * MIN - S), "interval": "1m"}

    def by_minute(pairs, fn):
        out: dict[int, list] = {}
        for t, v in pairs:
            out.setdefault(t // 60, []).append(v)
        return {iso(base + m * MIN): fn(vs) for m, vs in sorted(out.items())}

    for agg, fn in (("last", lambda vs: vs[-1]), ("avg", np.mean), ("min", min), ("max", max)):
        rows = flux.query("t.gauge", aggregation=agg, **span)["series"]
        assert {r["timestamp"]: r["value"] for r in rows} == pytest.approx(by_minute(gauge_vals, fn)), agg
    rows = flux.query("t.counter", aggregation="sum,rate", **span)["series"]
    sums = by_minute(counter_vals, sum)
    assert {r["timestamp"]: r["sum"] for r in rows} == sums
    assert {r["timestamp"]: r["rate"] for r in rows} == pytest.approx({k: v / 60 for k, v in sums.items()})
    rows = flux.query("t.set", aggregation="count", **span)["series"]
    assert {r["timestamp"]: r["value"] for r in rows} == by_minute(members, lambda vs: len(set(map(str, vs))))
    # Empty buckets are omitted, not zero-filled (the set has no member in minute 2).
    assert iso(base + 2 * MIN) not in {r["timestamp"] for r in flux.query("t.set", **span)["series"]}
    # The default aggregation per type, and the interval chosen from the range (≤ 1 h → 1m).
    data = flux.query("t.counter", **{"from": iso(base), "to": iso(base + 30 * MIN)})
    assert (data["aggregation"], data["interval"]) == ("sum", "1m")
    assert flux.query("t.gauge", **{"from": iso(base), "to": iso(base + 5 * HOUR)})["interval"] == "5m"
    # An aggregation that is not valid for the type → 400 in Flux's shape.
    for name, agg in (("t.gauge", "p95"), ("t.counter", "avg"), ("t.set", "sum"), ("t.gauge", "sum,last")):
        r = flux.get(f"/metrics/{name}/query", params={"aggregation": agg, **span})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_aggregation", (name, agg)


# --- batches ------------------------------------------------------------------------------------------------------

def test_batch_with_good_and_bad_items(live, flux):
    t0 = ms_iso(B + 3 * HOUR)
    items = [{"name": "t.mixed", "type": "gauge", "value": 1, "timestamp": t0},
             {"name": "t.mixed.bad1", "type": "gauge", "value": "high", "timestamp": t0},
             {"type": "gauge", "value": 1},
             {"name": "t.mixed", "type": "gauge", "value": 2, "tags": {"host": "b"}, "timestamp": t0},
             {"name": "t.mixed.bad2", "type": "histogram", "value": 1},
             {"name": "t.mixed.bad3", "type": "counter", "value": 1, "tags": {"nested": {"a": 1}}},
             "not an object",
             {"name": "t.mixed.bad4", "type": "gauge", "value": 1, "timestamp": "yesterday"}]
    r = flux.post("/metrics/batch", items)  # a bare array is a batch too
    assert r.status_code == 200
    data = r.json()["data"]
    assert (data["accepted"], data["rejected"]) == (2, 6)
    assert [(e["index"], e["code"]) for e in data["errors"]] == [
        (1, "invalid_value"), (2, "missing_name"), (4, "invalid_type"), (5, "invalid_value"), (6, "invalid_value"),
        (7, "invalid_value")]
    assert flux.get("/metrics/t.mixed").json()["data"]["data_points"] == 2
    rows = flux.query("t.mixed", aggregation="max", group_by="tags.host", **window(B + 3 * HOUR))["groups"]
    assert rows == {"": [{"timestamp": iso(B + 3 * HOUR), "value": 1}], "b": [{"timestamp": iso(B + 3 * HOUR), "value": 2}]}
    for bad in ("t.mixed.bad1", "t.mixed.bad2", "t.mixed.bad3", "t.mixed.bad4"):
        r = flux.get(f"/metrics/{bad}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert live.query("SELECT count(*) FROM metric_series WHERE name LIKE 't.mixed.bad%'") == [(0,)]


def test_batch_limits_and_empty_batches(live, flux):
    points_before = live.query("SELECT count(*) FROM metric_points")[0][0]
    r = flux.post("/metrics/batch", {"metrics": [{"name": "t.big", "type": "counter", "value": 1}] * 501})
    assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_large"
    r = flux.post("/flux/batch", {"events": [{"name": "e"}] * 501, "metrics": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == "batch_too_large"
    for body in ({"metrics": []}, {}, []):
        r = flux.post("/metrics/batch", body)
        assert r.status_code == 400 and r.json() == {"error": {"code": "invalid_value",
                                                               "message": "No metrics provided"}}
    assert live.query("SELECT count(*) FROM metric_points")[0][0] == points_before
    assert live.query("SELECT count(*) FROM flux_events WHERE name = 'e'") == [(0,)]
    # Exactly 500 is fine; either list of flux/batch may be empty or absent.
    assert flux.track([{"name": "t.big", "type": "counter", "value": 1}] * 500)["accepted"] == 500
    for body in ({"events": [], "metrics": []}, {"metrics": [{"name": "t.big", "type": "counter", "value": 1}]},
                 {"events": [{"name": "only.event"}]}):
        assert flux.post("/flux/batch", body).status_code == 200
    assert flux.get("/metrics/t.big").json()["data"]["data_points"] == 501


# --- what the SDK sends; events -------------------------------------------------------------------------------------

def test_sdk_batch_is_stored_whole_and_events_are_listed(flux):
    now = time.time_ns()
    events = [{"name": "t.sdk.user.signup", "timestamp": ms_iso(now - 3000 * 10**6),
               "properties": {"plan": "pro", "referrer": None, "items": [1, {"a": "b"}]},
               "user_id": "42", "session_id": "s-1", "value": None, "tags": {},
               "environment": "production", "service": "web"},
              {"name": "t.sdk.order.completed", "timestamp": ms_iso(now - 2000 * 10**6), "properties": {},
               "user_id": None, "session_id": None, "value": 99.99, "tags": {"region": "eu"},
               "environment": None, "service": None},
              {"name": "t.sdk.order.refunded", "timestamp": ms_iso(now - 1000 * 10**6), "properties": {"why": "late"},
               "user_id": 42, "session_id": "s-1", "value": -5, "tags": {"region": "us", "vip": True},
               "environment": "production", "service": "web"}]
    metrics = [{"type": "counter", "name": "t.sdk.jobs", "value": 1, "tags": {}, "timestamp": ms_iso(now)},
               {"type": "counter", "name": "t.sdk.jobs", "value": -1, "tags": {}, "timestamp": ms_iso(now)},
               {"type": "distribution", "name": "t.sdk.render", "value": 12.345, "tags": {"unit": "ms"},
                "timestamp": ms_iso(now)},
               {"type": "gauge", "name": "t.sdk.queue", "value": 3, "tags": {"queue": "default"},
                "timestamp": ms_iso(now)},
               {"type": "set", "name": "t.sdk.visitors", "value": "42", "tags": {}, "timestamp": ms_iso(now)}]
    r = flux.post("/flux/batch", {"events": events, "metrics": metrics},
                  headers={"User-Agent": "brainzlab-sdk/0.1.0"})
    assert r.status_code == 200
    assert r.json()["data"] == {"events": {"accepted": 3, "rejected": 0, "errors": []},
                                "metrics": {"accepted": 5, "rejected": 0, "errors": []}}
    got = flux.get("/events", params={"name": "t.sdk.order.*"}).json()
    assert [e["name"] for e in got["data"]] == ["t.sdk.order.refunded", "t.sdk.order.completed"]  # newest first
    refund = got["data"][0]
    assert refund == {"id": refund["id"], "name": "t.sdk.order.refunded", "timestamp": events[2]["timestamp"],
                      "value": -5.0, "properties": {"why": "late"}, "tags": {"region": "us", "vip": "true"},
                      "user_id": "42", "session_id": "s-1", "environment": "production", "service": "web"}
    signup = flux.get("/events", params={"name": "t.sdk.user.signup"}).json()["data"]
    assert signup[0]["properties"] == events[0]["properties"] and signup[0]["value"] is None
    assert [e["name"] for e in flux.get("/events", params={"user_id": "42"}).json()["data"]] == [
        "t.sdk.order.refunded", "t.sdk.user.signup"]
    assert [e["name"] for e in flux.get("/events", params={"tags[region]": "eu"}).json()["data"]] == [
        "t.sdk.order.completed"]
    page = flux.get("/events", params={"name": "t.sdk.*", "limit": 1, "offset": 1,
                                       "from": events[0]["timestamp"], "to": events[2]["timestamp"]}).json()
    assert [e["name"] for e in page["data"]] == ["t.sdk.order.completed"]
    assert page["meta"] == {"limit": 1, "offset": 1, "count": 1}
    # The decrement is a negative delta: the counter's sum nets to zero; the timing keeps its unit tag.
    assert flux.query("t.sdk.jobs", aggregation="sum", interval="1d")["series"][0]["value"] == 0
    assert flux.get("/metrics/t.sdk.render").json()["data"]["tags"] == ["unit"]


# --- one store ------------------------------------------------------------------------------------------------------

def test_flux_counter_on_posthog_and_prometheus(live, flux):
    now = time.time_ns()
    t = ms_iso(now - 30 * S)
    flux.track([{"name": "t.checkout", "type": "counter", "value": v, "tags": {"plan": "pro"}, "timestamp": t}
                for v in (5, 3, -2)])
    flux.track([{"name": "t.checkout.duration", "type": "distribution", "value": v, "timestamp": t} for v in (1, 2, 3, 10)])
    flux.track([{"name": "t.members", "type": "set", "value": m, "timestamp": t} for m in ("a", "b", "a")])
    flux.track([{"name": "t.queue", "type": "gauge", "value": v, "tags": {"queue": "mail"},
                 "timestamp": ms_iso(now - (33 - i) * S)} for i, v in enumerate((4, 9, 7))])
    minute = now // MIN * MIN
    posthog = {"dateFrom": iso(minute - 5 * MIN), "dateTo": iso(minute + MIN), "interval": "minute"}
    resp = Api(live).query(metricName="t.checkout", aggregation="increase", **posthog)
    assert sum(p["value"] for p in resp["results"][0]["points"]) == 6
    # The other Flux types in PostHog's query: exact percentiles and mean of the observations, a gauge.
    for aggregation, expected in (("p95", np.percentile([1, 2, 3, 10], 95)), ("avg", 4)):
        points = Api(live).query(metricName="t.checkout.duration", aggregation=aggregation,
                                 **posthog)["results"][0]["points"]
        assert [p["value"] for p in points if p["value"]] == [pytest.approx(expected, abs=1e-9)], points
    points = Api(live).query(metricName="t.queue", aggregation="max", **posthog)["results"][0]["points"]
    assert max(p["value"] for p in points) == 9  # (the three readings may straddle a minute)
    text = httpx.get(live.http_url + "/metrics", headers=flux.headers).text
    lines = set(text.splitlines())
    assert "# TYPE t_checkout_total counter" in lines
    assert 't_checkout_total{otel_scope_name="otelite.flux",plan="pro"} 6' in lines
    assert "# TYPE t_checkout_duration summary" in lines
    quantiles = np.percentile([1, 2, 3, 10], [50, 90, 95, 99])
    for q, v in zip(("0.5", "0.9", "0.95", "0.99"), quantiles):
        assert f't_checkout_duration{{otel_scope_name="otelite.flux",quantile="{q}"}} {float(v)!r}' in lines, q
    assert 't_checkout_duration_count{otel_scope_name="otelite.flux"} 4' in lines
    assert 't_checkout_duration_sum{otel_scope_name="otelite.flux"} 16.0' in lines
    assert 't_members{otel_scope_name="otelite.flux"} 2' in lines
    assert "# TYPE t_queue gauge" in lines and 't_queue{otel_scope_name="otelite.flux",queue="mail"} 7' in lines
    lint = promtool_check(text)
    assert all(line.endswith("no help text") for line in lint), lint


def test_otlp_metrics_are_listed_and_queryable_through_flux(live, flux):
    send = Api(live).send
    base = B + 4 * HOUR
    send(gauge("t.otel.temp", [(base + 10 * S, 20.5, {"room": "a"}), (base + 50 * S, 21.5, {"room": "a"}),
                               (base + 70 * S, 19.0, {"room": "b"})]))
    bounds = [10.0, 100.0]
    send(histogram("t.otel.lat", [(base + 10 * S, bounds, [2, 6, 2], {}), (base + 70 * S, bounds, [4, 10, 6], {})],
                   temporality=CUMULATIVE))
    send(counter("t.otel.req", [(base + 10 * S, 100, {}), (base + 50 * S, 130, {}), (base + 70 * S, 175, {})],
                 start=base - HOUR))
    listed = {m["name"]: m for m in flux.get("/metrics").json()["data"]}
    assert (listed["t.otel.temp"]["type"], listed["t.otel.temp"]["tags"]) == ("gauge", ["room"])
    assert listed["t.otel.lat"]["type"] == "distribution" and listed["t.otel.req"]["type"] == "counter"
    span = {"from": iso(base), "to": iso(base + 2 * MIN - S), "interval": "1m"}
    rows = flux.query("t.otel.temp", aggregation="last", group_by="tags.room", **span)["groups"]
    assert rows == {"a": [{"timestamp": iso(base), "value": 21.5}], "b": [{"timestamp": iso(base + MIN), "value": 19}]}
    # A cumulative counter's sum is what it counted (the first reading counts from its start time inside
    # the look-back), never a sum of its running totals.
    rows = flux.query("t.otel.req", aggregation="sum", **{**span, "from": iso(base - 3 * HOUR // 2)})["series"]
    assert rows[-2:] == [{"timestamp": iso(base), "value": 130}, {"timestamp": iso(base + MIN), "value": 45}]
    # Histogram percentiles from the buckets (linear inside a bucket, as Prometheus); count from its counts.
    rows = {r["timestamp"]: r for r in flux.query("t.otel.lat", aggregation="p50,count", **span)["series"]}
    assert rows[iso(base + MIN)] == {"timestamp": iso(base + MIN), "p50": pytest.approx(10 + 90 * (5 - 2) / 4),
                                     "count": 10}
    r = flux.get("/metrics/t.otel.lat/query", params={"aggregation": "avg", **span})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_aggregation"


def test_flux_and_trifle_share_api_v1(live, flux):
    """The merged /api/v1 dispatch (spec README): Flux and Trifle bodies on one URL each reach their own
    dialect, and a Trifle key is a Flux counter whose sums are the values Trifle itself reads."""
    base = B
    r = flux.post("/metrics", {"name": "t.shared.flux", "type": "gauge", "value": 7, "timestamp": iso(base)})
    assert r.status_code == 201 and r.json()["data"]["value"] == 7, r.text
    # minutes after base; the assert of `count` at 25 must not undo the track of `country.US` at 22
    writes = [(5, {"count": 2, "country": {"US": 1}}, "track"), (15, {"count": 3}, "track"),
              (22, {"country": {"US": 4}}, "track"), (25, {"count": 10}, "assert"), (35, {"count": 1}, "track")]
    for minute, values, operation in writes:
        r = flux.post("/metrics", {"key": "t.shared.orders", "at": iso(base + minute * MIN), "values": values,
                                   "operation": operation})
        assert r.status_code == 201 and r.json() == {"data": {"created": "ok"}}, r.text
    # GET without from/to/granularity is Flux's list; with them, Trifle's series fetch.
    listed = {m["name"]: m for m in flux.get("/metrics").json()["data"]}
    assert listed["t.shared.flux"]["type"] == "gauge"
    assert (listed["t.shared.orders"]["type"], listed["t.shared.orders"]["tags"]) == ("counter", ["path"])
    trifle = flux.get("/metrics", {"key": "t.shared.orders", "from": iso(base), "to": iso(base),
                                   "granularity": "1h"}).json()["data"]
    assert trifle["values"] == [{"count": 11, "country": {"US": 5}}]  # the assert replaced 2 + 3
    # Flux reads the key as Trifle does: per path, an assert replacing only its own bucket's earlier tracks.
    hour = {"from": iso(base), "to": iso(base + HOUR - S)}
    groups = flux.query("t.shared.orders", aggregation="sum,rate", interval="1h", group_by="tags.path",
                        **hour)["groups"]
    assert {path: [(row["sum"], row["rate"]) for row in rows] for path, rows in groups.items()} == {
        "count": [(11, pytest.approx(11 / 3600))], "country.US": [(5, pytest.approx(5 / 3600))]}
    rows = flux.query("t.shared.orders", aggregation="sum", interval="10m", **hour)["series"]
    assert [(row["timestamp"], row["value"]) for row in rows] == [
        (iso(base), 3), (iso(base + 10 * MIN), 3), (iso(base + 20 * MIN), 14), (iso(base + 30 * MIN), 1)]
    r = flux.get("/metrics/t.shared.orders/query", params={"aggregation": "last", **hour})
    assert r.status_code == 400 and flux_error(r)["code"] == "invalid_aggregation"

    # What the dispatch cannot give to a dialect: 4xx with Flux's shape (and Trifle's beside it); nothing
    # stored; a body Flux's by shape gets Flux's own error.
    before = _counts(live)
    url = flux.url("/metrics")
    for raw, status in ((b"{not json", 400), (b'{"foo": 1}', 400), (b"", 400), (b'{"key": "k"}', 400),
                        (b"[1, 2]", 400), (b"\xff\xfe", 400), (b"[" * 5000, 400),
                        (b'{"values": {"a": 1}, "x": "' + b"x" * (1 << 20) + b'"}', 413)):
        r = httpx.post(url, content=raw, headers={**flux.headers, "Content-Type": "application/json"}, timeout=20)
        assert r.status_code == status and flux_error(r, shared=True)["message"], (raw[:20], r.text)
    message = flux_error(httpx.post(url, content=b'{"foo": 1}', headers=flux.headers), shared=True)["message"]
    assert "{name, type, value}" in message and "{key, at, values}" in message
    r = httpx.post(url, content=b"{}", headers={**flux.headers, "Content-Encoding": "br"})
    assert r.status_code == 415 and flux_error(r, shared=True)["code"] == "unsupported_media_type"
    r = httpx.put(url, content=b"{}", headers=flux.headers)
    assert r.status_code == 405 and flux_error(r, shared=True)["code"] == "method_not_allowed"
    for body, code in (({"type": "gauge", "value": 1}, "missing_name"), ({"name": "t.shared.bad"}, "invalid_type"),
                       ({"name": "t.shared.bad", "type": "gauge", "value": "x"}, "invalid_value")):
        assert flux_error(flux.post("/metrics", body))["code"] == code
    assert _counts(live) == before and live.alive()


# --- rate limits, auth ------------------------------------------------------------------------------------------------

def test_rate_limits_default_on_configurable_off(tmp_path, live, flux):
    # The module's server has the limits configured off: more than 10 batches in a minute never 429.
    for _ in range(12):
        assert flux.post("/flux/batch", {"events": [], "metrics": []}).status_code == 200
    # A one-item queue in front of the writer, so concurrent writes meet a full store (503 below).
    srv = start_server(tmp_path, {"exporters": {"sqlite": {"sending_queue": {"queue_size": 1}}}}, "limits")
    try:
        key = srv.admin_key()
        api = Flux(srv, key)
        # 10 per minute refills a token every 6 s: on a slow machine one more may pass before the 429.
        started, codes = time.monotonic(), []
        while 429 not in codes and len(codes) < 30:
            codes.append(api.post("/metrics/batch", [{"name": "t.rl", "type": "counter", "value": 1}]).status_code)
        elapsed = time.monotonic() - started
        assert set(codes[:-1]) == {200} and codes[-1] == 429
        assert 10 <= len(codes) - 1 <= 10 + math.ceil(elapsed / 6), (len(codes), elapsed)
        r = api.post("/flux/batch", {"metrics": []})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        assert srv.query("SELECT count(*) FROM metric_points") == [(len(codes) - 1,)]
        # Per key: another key has its own bucket; single metrics are not limited by default.
        other = srv.cli("keys", "create", "--project", "default", "--scope", "metrics:write").stdout
        other_key = [w for w in other.split() if w.startswith("otl_")][0]
        assert Flux(srv, other_key).post("/metrics/batch", {"metrics": [{"name": "t.rl", "type": "gauge",
                                                                          "value": 1}]}).status_code == 200
        assert all(api.post("/metrics", {"name": "t.rl1", "type": "gauge", "value": 1}).status_code == 201
                   for _ in range(12))
        # 60 per minute refills a token a second: the 429 comes after 60 plus what the elapsed time refilled.
        started, codes = time.monotonic(), []
        while 429 not in codes and len(codes) < 120:
            codes.append(api.get("/metrics/t.rl/query").status_code)
        elapsed = time.monotonic() - started
        assert set(codes[:-1]) == {200} and codes[-1] == 429
        assert 60 <= len(codes) - 1 <= 60 + math.ceil(elapsed)
        # A full store answers 503 with Retry-After in Flux's shape; whatever was acknowledged is stored.
        before = srv.query("SELECT count(*) FROM metric_points")[0][0]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: api.post("/metrics", {"name": "t.full", "type": "counter", "value": 1}),
                                    range(48)))
        assert {r.status_code for r in answers} <= {201, 503}
        for r in answers:
            if r.status_code == 503:
                assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "unavailable"
        stored = srv.query("SELECT count(*) FROM metric_points")[0][0] - before
        assert stored == sum(r.status_code == 201 for r in answers)
    finally:
        srv.kill()


def test_auth_in_fluxs_shape(live, flux):
    r = httpx.get(flux.url("/metrics"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(flux.url("/metrics"), headers={"Authorization": "Bearer otl_wrong"})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    # The key as the `api_key` query parameter, as Flux's server allows.
    assert httpx.get(flux.url("/metrics"), params={"api_key": flux.headers["Authorization"][7:]}).status_code == 200
    out = live.cli("keys", "create", "--project", "default", "--scope", "metrics:read").stdout
    reader = {"Authorization": f"Bearer {[w for w in out.split() if w.startswith('otl_')][0]}"}
    r = httpx.post(flux.url("/metrics"), json={"name": "t.ro", "type": "gauge", "value": 1}, headers=reader)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert httpx.get(flux.url("/metrics"), headers=reader).status_code == 200


# --- bad input -----------------------------------------------------------------------------------------------------------

BAD_METRICS = [
    ({"type": "gauge", "value": 1}, "missing_name"),
    ({"name": "", "type": "gauge", "value": 1}, "missing_name"),
    ({"name": "t.bad", "value": 1}, "invalid_type"),
    ({"name": "t.bad", "type": "Gauge", "value": 1}, "invalid_type"),
    ({"name": "t.bad", "type": "gauge"}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": "12"}, "invalid_value"),
    ({"name": "t.bad", "type": "counter", "value": True}, "invalid_value"),
    ({"name": "t.bad", "type": "set", "value": {"a": 1}}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": 1, "tags": {"a": [1]}}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": 1, "tags": ["a"]}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": 1, "timestamp": 1700000000}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": 1, "timestamp": "9999-01-01T00:00:00Z"}, "invalid_value"),
    ({"name": "t.bad", "type": "gauge", "value": 1, "timestamp": "1900-01-01T00:00:00Z"}, "invalid_value"),
    ({"name": "x" * 300, "type": "gauge", "value": 1}, "invalid_value"),
    ({"name": ["t.bad"], "type": "gauge", "value": 1}, "invalid_value"),
]


def _counts(live) -> tuple:
    return (live.query("SELECT count(*) FROM metric_points")[0][0],
            live.query("SELECT count(*) FROM flux_events")[0][0])


@pytest.mark.parametrize("body,code", BAD_METRICS)
def test_bad_metrics_are_refused_in_fluxs_shape(live, flux, body, code):
    before = _counts(live)
    r = flux.post("/metrics", body) if "name" in body or "type" in body else \
        httpx.post(live.http_url + "/flux/api/v1/metrics", json=body, headers=flux.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    r = flux.post("/flux/batch", {"metrics": [body], "events": [{"name": "t.bad.event", "value": "x"}]})
    assert r.status_code == 200 and r.json()["data"]["metrics"]["errors"][0]["code"] == code
    assert _counts(live) == before and live.alive()


MOUNTS = ("/api/v1", "/flux/api/v1")


@pytest.mark.parametrize("raw", [b"{not json", b'{"name": "t.nan", "type": "gauge", "value": NaN}',
                                 b'{"name": "t.inf", "type": "distribution", "value": Infinity}',
                                 b'{"name": "t.big", "type": "gauge", "value": 1e999}', b"\xff\xfe", b"[" * 5000,
                                 b'{"name": "t.s", "type": "gauge", "value": 1, "tags": {"a": "\\ud800"}}',
                                 b"", b"42", b'"text"'])
def test_bad_bodies_on_every_write_endpoint(live, flux, raw):
    before = _counts(live)
    for prefix in MOUNTS:
        for path in ("/metrics", "/metrics/batch", "/flux/batch"):
            r = httpx.post(f"{live.http_url}{prefix}{path}", content=raw, headers=flux.headers)
            # On the shared URL the dispatch reads the body first: one it cannot parse (a lone surrogate is
            # not text) or that is not Flux's by shape is refused there, in both dialects' shapes.
            shared = prefix == "/api/v1" and path == "/metrics" and (b'"name"' not in raw or b"\\ud800" in raw)
            assert r.status_code == 400 and flux_error(r, shared=shared), (prefix, path, r.text)
    r = httpx.post(f"{live.http_url}/flux/api/v1/flux/batch", headers=flux.headers,
                   content=b'{"events": [{"name": "e", "properties": {"x": NaN}}], "metrics": []}')
    assert r.json()["data"]["events"]["rejected"] == 1
    assert _counts(live) == before and live.alive()


@pytest.mark.parametrize("params", [
    {"from": "yesterday"}, {"to": "2024-13-01T00:00:00Z"}, {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"},
    {"from": "0001-01-01T00:00:00Z"}, {"to": "9999-12-31T00:00:00Z"}, {"from": "1e9"},
    {"interval": "5x"}, {"interval": "0m"}, {"interval": "1s", "from": "2000-01-01T00:00:00Z"}, {"interval": "-1h"},
    {"interval": "999999d"}, {"interval": "999999h", "to": "2262-01-01T00:00:00Z"}, {"interval": ["1h", "1d"]},
    {"aggregation": "median"}, {"aggregation": "p50,p50"}, {"aggregation": "p50,,p95"}, {"aggregation": "last"},
    {"group_by": "endpoint"}, {"group_by": "tags."}, {"tags[": "x"},
])
def test_bad_query_parameters(flux, params):
    flux.track([{"name": "t.q", "type": "distribution", "value": 1}])
    for prefix in MOUNTS:
        r = httpx.get(f"{flux.server.http_url}{prefix}/metrics/t.q/query", params=params, headers=flux.headers)
        assert r.status_code == 400, (prefix, r.text)
        assert flux_error(r)["code"] in ("invalid_parameter", "invalid_aggregation")


def test_the_longest_intervals_answer(flux):
    """An interval longer than the range is one bucket (from floored to it: 1970 when from is defaulted);
    only one whose last bucket would end past 2262 (the store's time) is refused (above)."""
    flux.track([{"name": "t.long", "type": "counter", "value": v, "timestamp": ms_iso(B + i * S)}
                for i, v in enumerate((4, 5))])
    assert flux.query("t.long", interval="999999h")["series"] == [{"timestamp": "1970-01-01T00:00:00Z", "value": 9}]
    rate = flux.query("t.long", aggregation="rate", interval="999999s", **{"from": iso(B)})["series"]
    assert rate == [{"timestamp": iso(B), "value": pytest.approx(9 / 999999)}]


def test_unknown_metric_and_bad_event_filters(flux):
    for prefix in MOUNTS:
        api = Flux(flux.server, flux.headers["Authorization"][7:], prefix)
        for path in ("/metrics/t.nothing", "/metrics/t.nothing/query"):
            r = api.get(path)
            assert r.status_code == 404 and flux_error(r)["code"] == "not_found"
        for params in ({"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}, {"from": "soon"}, {"limit": "1e3"},
                       {"offset": str(10**30)}, {"to": "0001-01-01T00:00:00Z"}, {"name": ["a", "b"]},
                       {"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, {"tags[]": "x"},
                       {"user_id": "u" * 5000}):
            r = api.get("/events", params=params)
            assert r.status_code == 400 and flux_error(r)["code"] == "invalid_parameter", (prefix, params)
        for path in ("/metrics/t.nothing", "/events", "/metrics/batch"):
            r = httpx.delete(api.url(path), headers=api.headers)
            assert r.status_code == 405 and flux_error(r)["code"] == "method_not_allowed", (prefix, path)
    r = httpx.post(flux.server.http_url + "/flux/api/v1/metrics", json={"foo": 1}, headers=flux.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_name"


def test_large_integers_and_timestamps_round_trip(flux):
    t = ms_iso(B + 4 * HOUR + 123 * 10**6)
    r = flux.post("/metrics", {"name": "t.int", "type": "gauge", "value": 2**70, "timestamp": t})
    assert r.status_code == 201 and r.json()["data"]["value"] == float(2**70)
    r = flux.post("/metrics", {"name": "t.int", "type": "gauge", "value": 2**62, "timestamp": t})
    assert r.json()["data"] == {"name": "t.int", "type": "gauge", "value": 2**62, "timestamp": t}
    assert math.isclose(flux.query("t.int", aggregation="max", **window(B + 4 * HOUR))["series"][0]["value"], 2**70)
