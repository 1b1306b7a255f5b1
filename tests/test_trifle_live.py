"""The Trifle dialect against a live `otelite serve` with a real SQLite file (issue 12, trifle.md, seed 004).

The requests of the seed are sent as written; Trifle::Stats' API driver is reproduced byte for byte from
its source (gzip, its headers, `iso8601(6)` times): Ruby is not installed here. Expected values are
worked out by hand from Trifle's rules (a track increments a bucket, an assert overwrites it, in the order
written) and bucket starts are written out as literals.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import threading
import time

import httpx
import pytest

from conftest import start_server
from metrics_otlp import CUMULATIVE, counter, gauge

SEED_SIGNUP = {"key": "event::signup", "at": "2026-01-24T10:00:00Z", "values": {
    "count": 1, "failed": 0, "duration": 0.42, "country": {"US": 1}, "channel": {"organic": 1}}}
SEED_LATENCY = {"key": "service.latency", "at": "2026-01-24T12:00:00Z",
                "values": {"count": 1, "p50": 180, "p95": 420, "p99": 900}}
SEED_REVENUE = {"key": "billing.revenue", "at": "2026-01-24T13:00:00Z",
                "values": {"amount": 129.99, "count": 1, "plan": {"pro": 1}}}
SEED_HTTPIE = {"key": "event::signup", "at": "2026-01-24T10:00:00Z", "values": {"count": 1, "duration": 0.42}}
SEED_DAY = {"from": "2026-01-24T00:00:00Z", "to": "2026-01-25T00:00:00Z"}


def _key(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return re.search(r"^(otl_[A-Za-z0-9_-]+)$", proc.stdout, re.M).group(1)


class Client:
    def __init__(self, base: str, token: str | None) -> None:
        self.base, self.token = base, token

    def headers(self, extra: dict | None = None) -> dict:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**h, **(extra or {})}

    def post(self, path: str, body, headers: dict | None = None, prefix: str = "/api/v1") -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.base + prefix + path, content=content,
                          headers=self.headers({"Content-Type": "application/json", **(headers or {})}), timeout=30)

    def get(self, params: dict, headers: dict | None = None, prefix: str = "/api/v1") -> httpx.Response:
        return httpx.get(self.base + prefix + "/metrics", params=params, headers=self.headers(headers), timeout=30)

    def track(self, key: str, at: str, values: dict, operation: str | None = None, **extra) -> None:
        body = {"key": key, "at": at, "values": values, **extra}
        if operation:
            body["operation"] = operation
        r = self.post("/metrics", body)
        assert r.status_code == 201 and r.json() == {"data": {"created": "ok"}}, (r.status_code, r.text)

    def series(self, key: str | None, start: str, end: str, granularity: str, **kw) -> dict:
        params = {"from": start, "to": end, "granularity": granularity}
        if key is not None:
            params["key"] = key
        r = self.get(params, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["data"]

    def query(self, body: dict, **kw) -> httpx.Response:
        return self.post("/metrics/query", body, **kw)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # The seed's dates are months old: keep metric points forever so retention does not delete them.
    srv = start_server(tmp_path_factory.mktemp("trifle"), {"exporters": {"sqlite": {"retention": {"metrics": 0}}}})
    srv.cli("projects", "create", "berlin", "--timezone", "Europe/Berlin")
    srv.keys = {
        "admin": srv.admin_key(),
        "reader": _key(srv.cli("keys", "create", "--project", "default", "--scope", "metrics:read")),
        "tracing": _key(srv.cli("keys", "create", "--project", "default", "--scope", "tracing:read")),
        "berlin": _key(srv.cli("keys", "create", "--project", "berlin", "--scope", "metrics:read",
                               "--scope", "metrics:write")),
    }
    yield srv
    if srv.alive():
        srv.kill()


@pytest.fixture(scope="module")
def api(live) -> Client:
    return Client(live.http_url, live.keys["admin"])


# --- the seed, as written ------------------------------------------------------------------------------------

def test_every_seed_request_answers_in_the_seeds_shape(api):
    for body in (SEED_SIGNUP, SEED_LATENCY, SEED_REVENUE, SEED_HTTPIE):
        r = api.post("/metrics", body)
        assert (r.status_code, r.json()) == (201, {"data": {"created": "ok"}})

    # GET, Basic: every hour from 00:00 to 00:00 the next day, both included; nested values; {} when empty.
    # Sent as the seed's curl writes it (colons not escaped), and as its clients' parameter encoders do.
    raw = httpx.get(api.base + "/api/v1/metrics?key=event::signup&from=2026-01-24T00:00:00Z&to=2026-01-25T00:00:00Z"
                    "&granularity=1h", headers=api.headers(), timeout=30)
    data = api.series("event::signup", SEED_DAY["from"], SEED_DAY["to"], "1h")
    assert raw.status_code == 200 and raw.json() == {"data": data}
    assert data["at"] == [f"2026-01-24T{h:02d}:00:00Z" for h in range(24)] + ["2026-01-25T00:00:00Z"]
    assert data["values"][10] == {"count": 2, "failed": 0, "duration": 0.84, "country": {"US": 1},
                                  "channel": {"organic": 1}}
    assert all(v == {} for i, v in enumerate(data["values"]) if i != 10)
    # GET, Longer range at 6h.
    data = api.series("service.latency", "2026-01-20T00:00:00Z", "2026-01-25T00:00:00Z", "6h")
    assert len(data["at"]) == 21 and data["at"][0] == "2026-01-20T00:00:00Z"
    assert data["values"][data["at"].index("2026-01-24T12:00:00Z")] == {"count": 1, "p50": 180, "p95": 420, "p99": 900}

    # Query, Aggregate.
    r = api.query({"key": "event::signup", **SEED_DAY, "granularity": "1h", "mode": "aggregate",
                   "value_path": "count", "aggregator": "sum"})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    assert set(d) == {"status", "aggregator", "metric_key", "value_path", "slices", "value", "values", "count",
                      "timeframe", "available_paths", "matched_paths", "table"}
    assert (d["status"], d["aggregator"], d["metric_key"], d["value_path"], d["slices"]) == \
        ("ok", "sum", "event::signup", "count", 1)
    assert (d["value"], d["values"], d["count"]) == (2.0, [2.0], 1)
    assert d["timeframe"] == {"from": "2026-01-24T00:00:00Z", "to": "2026-01-25T00:00:00Z", "label": "custom",
                              "granularity": "1h"}
    assert d["available_paths"] == ["channel.organic", "count", "country.US", "duration", "failed"]
    assert d["matched_paths"] == ["count"]
    assert d["table"]["columns"] == ["at", "count"] and len(d["table"]["rows"]) == 25
    assert d["table"]["rows"][10] == ["2026-01-24T10:00:00Z", 2.0] and d["table"]["rows"][0] == \
        ["2026-01-24T00:00:00Z", None]

    # Query, Timeline: every bucket, a missing value 0.0.
    r = api.query({"key": "service.latency", **SEED_DAY, "granularity": "1h", "mode": "timeline", "value_path": "p95"})
    d = r.json()["data"]
    assert r.status_code == 200 and {"status", "formatter", "metric_key", "value_path", "slices", "timeframe",
                                     "result", "available_paths", "matched_paths"} <= set(d)
    assert (d["formatter"], d["matched_paths"], d["available_paths"]) == ("timeline", ["p95"],
                                                                          ["count", "p50", "p95", "p99"])
    points = d["result"]["p95"]
    assert len(points) == 25 and points[12] == {"at": "2026-01-24T12:00:00Z", "value": 420.0}
    assert sum(p["value"] for p in points) == 420.0

    # Query, Category: a map path expands to its leaves, summed as floats.
    api.track("event::signup", "2026-01-24T15:00:00Z", {"count": 1, "country": {"UK": 1, "US": 2}})
    r = api.query({"key": "event::signup", **SEED_DAY, "granularity": "1h", "mode": "category",
                   "value_path": "country"})
    d = r.json()["data"]
    assert r.status_code == 200 and d["formatter"] == "category"
    assert d["result"] == {"country.US": 3.0, "country.UK": 1.0}
    assert d["matched_paths"] == ["country.UK", "country.US"]
    assert {"country.UK", "country.US", "count"} <= set(d["available_paths"])

    # Query, Aggregate (slices): 25 buckets in 6 slices of 4, the oldest bucket dropped; no single value.
    r = api.query({"key": "event::signup", **SEED_DAY, "granularity": "1h", "mode": "aggregate",
                   "value_path": "count", "aggregator": "sum", "slices": 6})
    d = r.json()["data"]
    assert r.status_code == 200 and "value" not in d
    # Buckets 1-4, 5-8, 9-12 (10:00: 2), 13-16 (15:00: 1), 17-20, 21-24.
    assert (d["values"], d["count"], d["slices"]) == ([0.0, 0.0, 2.0, 1.0, 0.0, 0.0], 6, 6)

    # The system key, when no key is given: every write counted per key.
    data = api.series(None, SEED_DAY["from"], SEED_DAY["to"], "1d")
    assert data["values"][0] == {"count": 5, "keys": {"event::signup": 3, "service": {"latency": 1},
                                                      "billing": {"revenue": 1}}}


def test_both_mounts_serve_the_same_dialect(api):
    api.post("/metrics", {"key": "mounts", "at": "2025-03-03T10:00:00Z", "values": {"n": 1}}, prefix="/trifle/api/v1")
    api.track("mounts", "2025-03-03T10:10:00Z", {"n": 2})
    params = {"key": "mounts", "from": "2025-03-03T10:00:00Z", "to": "2025-03-03T10:00:00Z", "granularity": "1h"}
    a = api.get(params).json()
    b = api.get(params, prefix="/trifle/api/v1").json()
    assert a == b == {"data": {"at": ["2025-03-03T10:00:00Z"], "values": [{"n": 3}]}}
    body = {"key": "mounts", "from": "2025-03-03T10:00:00Z", "to": "2025-03-03T10:00:00Z", "granularity": "1h",
            "mode": "aggregate", "value_path": "n", "aggregator": "max"}
    assert api.query(body).json() == api.query(body, prefix="/trifle/api/v1").json()
    assert api.query(body).json()["data"]["value"] == 3.0
    # /trifle paths do not depend on the shape dispatch: a Flux-looking body is Trifle's 400 there.
    r = api.post("/metrics", {"name": "x", "type": "counter", "value": 1}, prefix="/trifle/api/v1")
    assert r.status_code == 400 and set(r.json()["errors"]) == {"detail"}


# --- track and assert -----------------------------------------------------------------------------------------

def test_track_twice_adds_and_assert_replaces_only_its_leaves(api):
    key = "orders"
    api.track(key, "2025-04-07T08:15:00Z", {"count": 5, "country": {"US": 2}})
    api.track(key, "2025-04-07T10:05:00Z", {"count": 1, "country": {"US": 1}})
    api.track(key, "2025-04-07T10:20:00Z", {"count": 1, "country": {"US": 1}, "amount": 9.5})
    hours = api.series(key, "2025-04-07T08:00:00Z", "2025-04-07T10:00:00Z", "1h")["values"]
    assert hours == [{"count": 5, "country": {"US": 2}}, {}, {"count": 2, "country": {"US": 2}, "amount": 9.5}]
    # Assert at 10:30: count is set in every granularity's bucket holding 10:30; the other leaves stay.
    api.track(key, "2025-04-07T10:30:00Z", {"count": 7}, "assert")
    hours = api.series(key, "2025-04-07T08:00:00Z", "2025-04-07T10:00:00Z", "1h")["values"]
    assert hours == [{"count": 5, "country": {"US": 2}}, {}, {"count": 7, "country": {"US": 2}, "amount": 9.5}]
    day = api.series(key, "2025-04-07T00:00:00Z", "2025-04-07T00:00:00Z", "1d")["values"]
    assert day == [{"count": 7, "country": {"US": 4}, "amount": 9.5}]  # the 08:15 track is overwritten too
    # A track after the assert adds to it, wherever in the bucket its time lies.
    api.track(key, "2025-04-07T10:01:00Z", {"count": 1})
    assert api.series(key, "2025-04-07T10:00:00Z", "2025-04-07T10:00:00Z", "1h")["values"][0]["count"] == 8
    assert api.series(key, "2025-04-07T00:00:00Z", "2025-04-07T00:00:00Z", "1d")["values"][0]["count"] == 8
    # In 30-minute buckets the 10:30 assert is in the second half hour only.
    halves = api.series(key, "2025-04-07T10:00:00Z", "2025-04-07T10:30:00Z", "30m")["values"]
    assert [h.get("count") for h in halves] == [3, 7]


def test_the_system_key_counts_keys_and_untracked_writes(api):
    start, end = "2025-05-05T00:00:00Z", "2025-05-05T00:00:00Z"
    api.track("sys.a", "2025-05-05T01:00:00Z", {"n": 1})
    api.track("sys.a", "2025-05-05T02:00:00Z", {"n": 5}, "assert")
    api.track("sys_b", "2025-05-05T03:00:00Z", {"n": 1})
    api.track("sys_b", "2025-05-05T03:00:00Z", {"n": 1}, untracked=True)
    values = api.series(None, start, end, "1d")["values"]
    assert values == [{"count": 4, "keys": {"sys": {"a": 2}, "sys_b": 1, "__untracked__": 1}}]
    # The system key can also be asked for by name.
    assert api.series("__system__key__", start, end, "1d")["values"] == values


def test_trifle_stats_api_driver_request(api, live):
    """Trifle::Stats' Driver::Api#direct_write (trifle-stats 2.6.0, lib/trifle/stats/driver/api.rb), as
    Net::HTTP sends it: `JSON.generate({operation, key, at: at.iso8601(6), values, untracked})` gzipped, its
    headers (Host is its fixed endpoint's, app.trifle.io: a transport that sends it to otelite keeps the
    request as built). `track` sends operation "track", `assert` "assert" (its own spec's pair: an untracked
    track and an assert at 12:00:00.000000Z), and a time in another zone keeps its offset."""
    def driver(payload: dict, source: str) -> httpx.Response:
        body = gzip.compress(json.dumps(payload, separators=(",", ":")).encode())
        return httpx.post(live.http_url + "/api/v1/metrics", content=body, headers={
            "Host": "app.trifle.io", "Authorization": f"Bearer {live.keys['admin']}", "X-Trifle-Source-Id": source,
            "Content-Type": "application/json", "Accept": "application/json", "Content-Encoding": "gzip",
            "User-Agent": "trifle-stats-ruby/2.6.0", "Accept-Encoding": "gzip;q=1.0,deflate;q=0.6,identity;q=0.3"})

    sent = [
        ({"operation": "track", "key": "driver::api", "at": "2025-06-02T12:34:56.123456+02:00",
          "values": {"count": 1, "latency": {"p50": 12.5}}, "untracked": False}, "1"),
        ({"operation": "track", "key": "driver::api", "at": "2025-06-02T10:40:00.000000Z",
          "values": {"count": 1, "latency": {"p50": 12.5}}, "untracked": True}, "default"),
        ({"operation": "assert", "key": "driver::state", "at": "2025-06-02T10:00:00.000000Z",
          "values": {"pending": 4}, "untracked": False}, "default"),
        ({"operation": "assert", "key": "driver::state", "at": "2025-06-02T10:59:59.999999Z",
          "values": {"pending": 2}, "untracked": False}, "1"),
    ]
    for payload, source in sent:
        r = driver(payload, source)
        assert (r.status_code, r.json()) == (201, {"data": {"created": "ok"}}), r.text
    hour = ("2025-06-02T10:00:00Z", "2025-06-02T10:00:00Z", "1h")
    assert api.series("driver::api", *hour) == {"at": ["2025-06-02T10:00:00Z"],
                                                "values": [{"count": 2, "latency": {"p50": 25}}]}
    assert api.series("driver::state", *hour)["values"] == [{"pending": 2}]
    assert api.series(None, *hour)["values"] == [
        {"count": 4, "keys": {"driver::api": 1, "__untracked__": 1, "driver::state": 2}}]
    # What the driver raises on: a non-2xx with its Retry-After (a 429 when rate limited, a 503 when full).
    r = driver({**sent[0][0], "values": {"count": "1"}}, "1")
    assert r.status_code == 400 and r.json()["errors"]["detail"] == "values.count must be a number, got a string"


def test_source_id_must_be_the_tokens_project(api, live):
    body = {"key": "src", "at": "2025-06-03T00:00:00Z", "values": {"n": 1}}
    for bad in ("berlin", "2", "nope", "999"):
        r = api.post("/metrics", body, headers={"X-Trifle-Source-Id": bad})
        assert (r.status_code, r.json()) == (400, {"errors": {"detail": "Invalid X-Trifle-Source-Id header"}})
        r = api.get({"from": SEED_DAY["from"], "to": SEED_DAY["to"], "granularity": "1d"},
                    headers={"X-Trifle-Source-Id": bad})
        assert r.status_code == 400
        r = api.query({}, headers={"X-Trifle-Source-Id": bad})
        assert r.json() == {"errors": {"detail": "Invalid X-Trifle-Source-Id header"}}
    assert api.series("src", "2025-06-03T00:00:00Z", "2025-06-03T00:00:00Z", "1d")["values"] == [{}]
    berlin = Client(live.http_url, live.keys["berlin"])
    r = berlin.post("/metrics", body, headers={"X-Trifle-Source-Id": "berlin"})
    assert r.status_code == 201
    # Projects are isolated: the default project does not see Berlin's write.
    assert api.series("src", "2025-06-03T00:00:00Z", "2025-06-03T00:00:00Z", "1d")["values"] == [{}]


# --- bucket alignment -----------------------------------------------------------------------------------------

ALIGNMENT = [
    # (granularity, from, to, expected at[])
    ("10s", "2025-07-01T10:00:05Z", "2025-07-01T10:00:35Z",
     ["2025-07-01T10:00:00Z", "2025-07-01T10:00:10Z", "2025-07-01T10:00:20Z", "2025-07-01T10:00:30Z"]),
    ("7s", "2025-07-01T10:00:50Z", "2025-07-01T10:01:08Z",
     ["2025-07-01T10:00:49Z", "2025-07-01T10:00:56Z", "2025-07-01T10:01:00Z", "2025-07-01T10:01:07Z"]),
    ("33m", "2025-07-01T10:00:00Z", "2025-07-01T11:40:00Z",
     ["2025-07-01T10:00:00Z", "2025-07-01T10:33:00Z", "2025-07-01T11:00:00Z", "2025-07-01T11:33:00Z"]),
    ("5h", "2025-07-01T16:00:00Z", "2025-07-02T06:00:00Z",
     ["2025-07-01T15:00:00Z", "2025-07-01T20:00:00Z", "2025-07-02T00:00:00Z", "2025-07-02T05:00:00Z"]),
    ("1d", "2025-07-01T16:00:00Z", "2025-07-03T00:00:00Z",
     ["2025-07-01T00:00:00Z", "2025-07-02T00:00:00Z", "2025-07-03T00:00:00Z"]),
    # 3d by day of the year from 1 January: 27 December is day 360; re-floored on 1 January.
    ("3d", "2025-12-28T00:00:00Z", "2026-01-05T00:00:00Z",
     ["2025-12-27T00:00:00Z", "2025-12-30T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"]),
    # Weeks across New Year: 2026 starts on a Thursday, so 1-4 January are a bucket of their own.
    ("1w", "2025-12-24T00:00:00Z", "2026-01-13T00:00:00Z",
     ["2025-12-22T00:00:00Z", "2025-12-29T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z",
      "2026-01-12T00:00:00Z"]),
    ("2w", "2025-12-23T00:00:00Z", "2026-01-20T00:00:00Z",
     ["2025-12-22T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z"]),
    ("1mo", "2026-01-15T00:00:00Z", "2026-04-02T00:00:00Z",
     ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]),
    ("5mo", "2025-09-10T00:00:00Z", "2026-07-01T00:00:00Z",
     ["2025-06-01T00:00:00Z", "2025-11-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"]),
    ("1q", "2025-11-15T00:00:00Z", "2026-05-01T00:00:00Z",
     ["2025-10-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z"]),
    ("2y", "2025-06-01T00:00:00Z", "2027-01-02T00:00:00Z", ["2024-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]),
    # to before from: no bucket.
    ("1h", "2025-07-01T10:00:00Z", "2025-07-01T09:00:00Z", []),
]


@pytest.mark.parametrize("granularity, start, end, expected", ALIGNMENT,
                         ids=[a[0] + "-" + a[1][:10] for a in ALIGNMENT])
def test_bucket_alignment_for_every_unit(api, granularity, start, end, expected):
    data = api.series("align", start, end, granularity)
    assert data["at"] == expected
    assert data["values"] == [{}] * len(expected)


def test_writes_land_in_the_bucket_their_time_belongs_to(api):
    api.track("align.data", "2025-12-31T23:59:59Z", {"n": 1})
    api.track("align.data", "2026-01-01T00:00:00Z", {"n": 10})
    api.track("align.data", "2026-01-04T23:00:00Z", {"n": 100})
    api.track("align.data", "2026-01-05T00:00:00Z", {"n": 1000})
    weeks = api.series("align.data", "2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z", "1w")
    assert weeks["at"] == ["2025-12-29T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z"]
    assert weeks["values"] == [{"n": 1}, {"n": 110}, {"n": 1000}]
    quarters = api.series("align.data", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z", "1q")
    assert quarters["values"] == [{"n": 1}, {"n": 1110}]


def test_an_offset_in_at_is_honoured(api):
    # 2026-02-24T20:30Z sent as +04:00: the 24th's bucket of a UTC project, although the local date is the 25th.
    api.track("offset", "2026-02-25T00:30:00+04:00", {"n": 1})
    data = api.series("offset", "2026-02-24T00:00:00Z", "2026-02-25T00:00:00Z", "1d")
    assert data == {"at": ["2026-02-24T00:00:00Z", "2026-02-25T00:00:00Z"], "values": [{"n": 1}, {}]}
    # from/to keep their offsets as well: 04:00+04:00 is midnight UTC.
    data = api.series("offset", "2026-02-24T04:00:00+04:00", "2026-02-24T04:00:00+04:00", "1d")
    assert data == {"at": ["2026-02-24T00:00:00Z"], "values": [{"n": 1}]}


def test_a_non_utc_project_aligns_in_its_zone(live):
    berlin = Client(live.http_url, live.keys["berlin"])
    berlin.track("tz", "2026-01-24T23:30:00Z", {"n": 1})  # 00:30 on the 25th in Berlin
    data = berlin.series("tz", "2026-01-24T00:00:00Z", "2026-01-25T00:00:00Z", "1d")
    assert data == {"at": ["2026-01-24T00:00:00+01:00", "2026-01-25T00:00:00+01:00"], "values": [{}, {"n": 1}]}
    # Across the change to summer time (29 March 2026): local midnights, 23 hours apart.
    data = berlin.series("tz", "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", "1d")
    assert data["at"] == ["2026-03-28T00:00:00+01:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"]
    # Weeks and months in local time too.
    assert berlin.series("tz", "2026-01-01T00:00:00Z", "2026-01-06T00:00:00Z", "1w")["at"] == [
        "2026-01-01T00:00:00+01:00", "2026-01-05T00:00:00+01:00"]
    assert berlin.series("tz", "2026-01-31T23:30:00Z", "2026-01-31T23:30:00Z", "1mo")["at"] == [
        "2026-02-01T00:00:00+01:00"]
    # Queries: bucket starts in the zone, the timeframe in UTC.
    r = berlin.query({"key": "tz", "from": "2026-01-24T00:00:00Z", "to": "2026-01-25T00:00:00Z", "granularity": "1d",
                      "mode": "timeline", "value_path": "n"})
    d = r.json()["data"]
    assert d["result"] == {"n": [{"at": "2026-01-24T00:00:00+01:00", "value": 0.0},
                                 {"at": "2026-01-25T00:00:00+01:00", "value": 1.0}]}
    assert d["timeframe"]["from"] == "2026-01-24T00:00:00Z"


# --- query modes on live data -----------------------------------------------------------------------------------

def _day(h: int) -> str:
    return f"2025-08-0{1 + h // 24}T{h % 24:02d}:00:00Z"


def test_the_fixtures_through_the_api(api):
    for h, v in enumerate([10, 15, 8, 12]):
        api.track("fixture.counts", _day(h), {"count": v, "only_first": 1} if h == 0 else {"count": v})
    base = {"key": "fixture.counts", "from": _day(0), "to": _day(3), "granularity": "1h", "mode": "aggregate",
            "value_path": "count"}
    assert api.query({**base, "aggregator": "sum"}).json()["data"]["values"] == [45.0]
    assert api.query({**base, "aggregator": "sum", "slices": 2}).json()["data"]["values"] == [25.0, 20.0]
    d = api.query({**base, "aggregator": "mean"}).json()["data"]
    assert (d["value"], d["values"], d["count"]) == (11.25, [11.25], 1)
    assert api.query({**base, "aggregator": "min", "slices": "2"}).json()["data"]["values"] == [10.0, 8.0]
    assert api.query({**base, "aggregator": "MAX ", "slices": 2.0}).json()["data"]["values"] == [15.0, 12.0]
    # A path present only in a dropped or empty slice: mean is 0, min/max have nothing (left out of values).
    d = api.query({**base, "value_path": "only_first", "aggregator": "mean", "slices": 2}).json()["data"]
    assert (d["values"], d["count"]) == ([1.0, 0], 2)
    d = api.query({**base, "to": _day(4), "value_path": "only_first", "aggregator": "min", "slices": 2}).json()
    assert d == {"errors": {"status": "error", "error": "No data available for path only_first in the selected "
                                                        "timeframe.", "available_paths": ["count", "only_first"]}}
    # Ten buckets 10…100, three slices.
    for h in range(10):
        api.track("fixture.ten", _day(h), {"v": 10 * (h + 1)})
    r = api.query({"key": "fixture.ten", "from": _day(0), "to": _day(9), "granularity": "1h", "mode": "aggregate",
                   "value_path": "v", "aggregator": "sum", "slices": 3})
    assert r.json()["data"]["values"] == [90.0, 180.0, 270.0]
    # Timeline slices: lists of lists; category slices: a list of maps.
    r = api.query({**base, "mode": "timeline", "slices": 2})
    assert [[p["value"] for p in chunk] for chunk in r.json()["data"]["result"]["count"]] == [[10.0, 15.0], [8.0, 12.0]]
    r = api.query({**base, "mode": "category", "slices": 2})
    assert r.json()["data"]["result"] == [{"count": 25.0}, {"count": 20.0}]


def test_an_otlp_counter_reads_through_trifles_series_endpoint(api, live):
    """One store: an OTel counter is a key whose `value` is its increase per bucket (series.py's table);
    a gauge's `value` is the last reading, summed over its series."""
    t0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    h = 3600 * 10**9
    points = [(t0 + 10 * 60 * 10**9, 100, {"route": "/a"}), (t0 + h + 60 * 10**9, 130, {"route": "/a"}),
              (t0 + 2 * h + 60 * 10**9, 150, {"route": "/a"}), (t0 + h + 60 * 10**9, 5, {"route": "/b"}),
              (t0 + 2 * h + 60 * 10**9, 9, {"route": "/b"})]
    req = counter("http.server.requests", points, CUMULATIVE, start=t0)
    r = httpx.post(live.http_url + "/v1/metrics", content=req.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200
    data = api.series("http.server.requests", "2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z", "1h")
    # /a started at t0 (its start time): 100 in the first hour, then +30, +20; /b's first reading has its
    # start at t0 as well, so its 5 counts in the second hour, then +4.
    assert data["values"] == [{"value": 100}, {"value": 35}, {"value": 24}]
    r = api.query({"key": "http.server.requests", "from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z",
                   "granularity": "1d", "mode": "aggregate", "value_path": "value", "aggregator": "sum"})
    assert r.json()["data"]["value"] == 159.0
    req = gauge("queue.depth", [(t0 + 60 * 10**9, 3.0, {"q": "a"}), (t0 + 120 * 10**9, 4.0, {"q": "a"}),
                                (t0 + 60 * 10**9, 10.0, {"q": "b"})])
    assert httpx.post(live.http_url + "/v1/metrics", content=req.SerializeToString(),
                      headers={"Content-Type": "application/x-protobuf"}).status_code == 200
    assert api.series("queue.depth", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "1h")["values"] == [{"value": 14}]


# --- the rest of the one store: the scrape and PostHog --------------------------------------------------------------

def test_trifle_keys_on_the_prometheus_scrape_promtool_clean(api, live):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    api.track("checkout::paid", now, {"count": 2, "amount": 30.5, "country": {"US": 2}})
    api.track("checkout::paid", now, {"count": 1, "country": {"UK": 1}})
    api.track("checkout::paid", now, {"amount": 12}, "assert")
    text = httpx.get(live.http_url + "/metrics", headers={"Authorization": f"Bearer {live.keys['admin']}"}).text
    family = [ln for ln in text.splitlines() if re.match(r"(# (HELP|TYPE) )?checkout_paid[ {]", ln)]
    assert family == [
        "# HELP checkout_paid Trifle key checkout::paid: per path, every track added and each assert replacing "
        "the total",
        "# TYPE checkout_paid gauge",
        'checkout_paid{path="amount"} 12',
        'checkout_paid{path="count"} 3',
        'checkout_paid{path="country.UK"} 1',
        'checkout_paid{path="country.US"} 2',
    ]
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's `prometheus` package (.ci/run does)"
    trifle_families = "\n".join(ln for ln in text.splitlines()
                                if re.match(r"(# (HELP|TYPE) )?(checkout_paid|system_key)[ {]", ln)) + "\n"
    p = subprocess.run([promtool, "check", "metrics"], input=trifle_families.encode(), capture_output=True, timeout=30)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert p.returncode in (0, 3) and b"checkout" not in p.stdout + p.stderr, p.stdout + p.stderr


def test_trifle_keys_in_the_posthog_metrics_api(api, live):
    """A Trifle key read through PostHog's metrics query has Trifle's values: per series (path) and bucket
    the tally (tracks added, an assert replacing them), then PostHog's reduction across the paths."""
    now = time.gmtime()
    at, hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", now), time.strftime("%Y-%m-%dT%H:00:00Z", now)
    api.track("posthog.visible", at, {"n": 1, "m": {"x": 4}})
    api.track("posthog.visible", at, {"n": 1})
    api.track("posthog.visible", at, {"n": 10}, "assert")
    api.track("posthog.visible", at, {"n": 2, "m": {"x": 1}})
    trifle = api.series("posthog.visible", hour, hour, "1h")["values"]
    assert trifle == [{"n": 12, "m": {"x": 5}}]
    auth = {"Authorization": f"Bearer {live.keys['admin']}"}
    r = httpx.get(live.http_url + "/api/projects/1/metrics/values", params={"value": "posthog.visible"}, headers=auth)
    assert r.json()["results"] == [{"name": "posthog.visible", "metric_type": "tally"}]

    def posthog(aggregation: str, group_by: list | None = None) -> dict:
        r = httpx.post(live.http_url + "/api/projects/1/metrics/query", headers=auth, json={"query": {
            "metricName": "posthog.visible", "aggregation": aggregation, "dateFrom": "-2h", "interval": "hour",
            "groupBy": group_by or []}})
        assert r.status_code == 200, r.text
        return {s["labels"].get("path", ""): {p["time"][:13]: p["value"] for p in s["points"] if p["value"]}
                for s in r.json()["results"]}

    bucket = hour[:13]
    for aggregation in ("sum", "max", "min", "avg", "p50", "increase"):
        assert posthog(aggregation, [{"key": "path"}]) == {"n": {bucket: 12.0}, "m.x": {bucket: 5.0}}, aggregation
    assert posthog("sum") == {"": {bucket: 17.0}}
    assert posthog("avg") == {"": {bucket: 8.5}}
    assert posthog("max") == {"": {bucket: 12.0}}
    assert posthog("count") == {"": {bucket: 2.0}}  # series (paths) reporting
    assert posthog("increase") == {"": {bucket: 17.0}}
    assert posthog("rate")[""][bucket] == pytest.approx(17 / 3600)


# --- errors -------------------------------------------------------------------------------------------------------

ROUTES = [("get", "/metrics"), ("post", "/metrics"), ("post", "/metrics/query")]


@pytest.mark.parametrize("prefix", ["/api/v1", "/trifle/api/v1"])
def test_401_bad_token_and_403_forbidden_in_trifles_shape(live, prefix):
    body = {"key": "k", "at": "2025-01-01T00:00:00Z", "values": {"n": 1}}
    params = {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "granularity": "1d"}
    for token in (None, "otl_not_a_key", live.keys["tracing"]):
        c = Client(live.http_url, token)
        for method, path in ROUTES:
            r = c.get(params, prefix=prefix) if method == "get" else c.post(path, body, prefix=prefix)
            if token == live.keys["tracing"]:
                assert (r.status_code, r.json()) == (403, {"errors": {"detail": "Forbidden"}}), (method, path)
            else:
                assert (r.status_code, r.json()) == (401, {"errors": {"detail": "Bad token"}}), (method, path)
    reader = Client(live.http_url, live.keys["reader"])
    r = reader.post("/metrics", body, prefix=prefix)
    assert (r.status_code, r.json()) == (403, {"errors": {"detail": "Forbidden"}})
    assert reader.get(params, prefix=prefix).status_code == 200


def test_get_errors(api):
    good = {"key": "k", "from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z", "granularity": "1h"}
    for change, attr in [({"key": ""}, "key"), ({"from": None}, "from"), ({"from": "2025-01-01T00:00:00"}, "from"),
                         ({"to": "tomorrow"}, "to"), ({"granularity": "0h"}, "granularity"),
                         ({"granularity": "1hour"}, "granularity"), ({"granularity": None}, "granularity")]:
        params = {k: v for k, v in {**good, **change}.items() if v is not None}
        r = api.get(params)
        assert r.status_code == 400 and list(r.json()) == ["errors"] and list(r.json()["errors"]) == ["detail"], \
            (change, r.text)
        assert attr in r.json()["errors"]["detail"], (attr, r.text)
    r = api.get({**good, "from": "2000-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "granularity": "1s"})
    assert r.status_code == 400 and "coarser granularity" in r.json()["errors"]["detail"]
    # A bucket that would end beyond the years a time can hold (2000 + 1000 years): a 400 naming granularity;
    # a time outside them: a 400 naming the field.
    r = api.get({**good, "from": "2262-01-01T00:00:00Z", "to": "2262-04-01T00:00:00Z", "granularity": "1000y"})
    assert r.status_code == 400 and "granularity" in r.json()["errors"]["detail"], r.text
    r = api.get({**good, "from": "9000-01-01T00:00:00Z", "to": "9999-06-01T00:00:00Z", "granularity": "1000y"})
    assert r.status_code == 400 and r.json()["errors"]["detail"].startswith("from: '9000-01-01T00:00:00Z' is outside")


def test_bad_writes_are_400_and_store_nothing(api, live):
    before = live.query("SELECT count(*) FROM metric_points")[0][0]
    at = "2025-09-01T00:00:00Z"
    bad_bodies = [
        {"key": "bad", "at": at, "values": {"count": 1, "country": {"US": "1"}}},
        {"key": "bad", "at": at, "values": {"count": 1, "ok": True}},
        {"key": "bad", "at": at, "values": {"count": None}},
        {"key": "bad", "at": at, "values": {"count": [1]}},
        {"key": "bad", "at": at, "values": 5},
        {"key": "bad", "at": at, "values": {"n": 1}, "operation": "increment"},
        {"key": "bad", "at": at, "values": {"n": 1}, "untracked": "no"},
        {"key": "bad", "at": "2025-09-01", "values": {"n": 1}},
        {"key": "", "at": at, "values": {"n": 1}},
        {"at": at, "values": {"n": 1}},
        {"key": "bad", "values": {"n": 1}},
        {"key": "bad", "at": at},
    ]
    for body in bad_bodies:
        r = api.post("/metrics", body, prefix="/trifle/api/v1")
        assert r.status_code == 400 and list(r.json()["errors"]) == ["detail"], (body, r.text)
    for raw, headers in [(b'{"key": "bad", "at": "2025-09-01T00:00:00Z", "values": {"n": NaN}}', {}),
                         (b'{"key": "bad", "at": "2025-09-01T00:00:00Z", "values": {"n": 1e999}}', {}),
                         (b'{"key": "bad\\ud800", "at": "2025-09-01T00:00:00Z", "values": {"n": 1}}', {}),
                         (b'{"key": "bad", "at": ', {}), (b"\xff\xfe", {}), (b"", {}),
                         (b"not gzip", {"Content-Encoding": "gzip"})]:
        r = api.post("/metrics", raw, headers=headers, prefix="/trifle/api/v1")
        assert r.status_code == 400 and "detail" in r.json()["errors"], (raw, r.text)
    r = api.post("/metrics", b"x", headers={"Content-Encoding": "br"}, prefix="/trifle/api/v1")
    assert r.status_code == 415 and "detail" in r.json()["errors"]
    r = api.post("/metrics", gzip.compress(b"{" + b" " * (2 << 20) + b"}"), headers={"Content-Encoding": "gzip"},
                 prefix="/trifle/api/v1")
    assert r.status_code == 413 and "detail" in r.json()["errors"]
    assert live.query("SELECT count(*) FROM metric_points")[0][0] == before
    assert live.query("SELECT count(*) FROM metric_series WHERE name = 'bad'")[0][0] == 0
    assert live.alive()


_ABSENT = object()  # the field is left out
_BAD_INSTANTS = [_ABSENT, None, True, 0, 1.5, [], {}, "", " ", "x", "2026-01-24T00:00:00", "2026-13-01T00:00:00Z",
                 "2026-01-24T00:00:00+99:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1h", "a" * 5000]
_NOT_STRINGS = [True, 0, -1, 1.5, [], ["x"], {}, {"a": 1}]
BAD_WRITES = {  # field → values that must be a 400 (Trifle's {"errors": {"detail"}}), nothing stored
    "key": [_ABSENT, None, "", *_NOT_STRINGS],
    "at": _BAD_INSTANTS,
    "values": [_ABSENT, None, True, 0, "x", [], [1], {"a": None}, {"a": "1"}, {"a": True}, {"a": [1]},
               {"a": {"b": "x"}}, {"a": {"b": {"c": None}}}, {"ok": 1, "bad": False}],
    "operation": ["", "set", "increment", "TRACK", " track", *_NOT_STRINGS],
    "untracked": [0, 1, "true", "", [], {}],
}
BAD_QUERIES = {  # field → (values, status); each is checked in aggregate, timeline and category mode
    "key": ([_ABSENT, None, "", " ", *_NOT_STRINGS], 400),
    "from": (_BAD_INSTANTS, 400),
    "to": (_BAD_INSTANTS, 400),
    "granularity": ([_ABSENT, None, "", "0m", "1x", "m", "-1h", "1.5h", "1 h", "١h", *_NOT_STRINGS], 400),
    "value_path": ([_ABSENT, None, "", " ", *_NOT_STRINGS], 400),
    "slices": ([0, -1, 1.5, "x", "1.0", "", True, [], {}, 10**30 * -1], 422),
}
BAD_SERIES_PARAMS = {
    "key": [""], "from": [_ABSENT, "", "x", "2026-01-24T00:00:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"],
    "to": [_ABSENT, "", "x", "0001-01-01T00:00:00Z"], "granularity": [_ABSENT, "", "0m", "1x", "-1h", "1 h"],
}


def _with(base: dict, field: str, value) -> dict:
    return {k: v for k, v in {**base, field: value}.items() if v is not _ABSENT}


def test_bad_input_on_every_endpoint_is_a_4xx_in_trifles_shape_and_stores_nothing(api, live):
    """Every field of every Trifle endpoint, on both mounts, given values of every wrong kind: a 400 with
    `{"errors": {"detail"}}` (a 422 with `{"errors": {"status", "error"}}` where Trifle answers 422), never
    a 5xx, no point stored, and the server still up. Times otelite cannot store (before 1677 or after
    2262) are 400s naming the field, not a failed commit."""
    points = "SELECT count(*) FROM metric_points"
    before = live.query(points)[0][0]
    write = {"key": "hostile", "at": "2025-12-01T00:00:00Z", "values": {"n": 1}}
    query = {"key": "hostile", "from": "2025-12-01T00:00:00Z", "to": "2025-12-02T00:00:00Z", "granularity": "1h",
             "value_path": "n", "aggregator": "sum"}
    series = {"key": "hostile", "from": "2025-12-01T00:00:00Z", "to": "2025-12-02T00:00:00Z", "granularity": "1h"}
    answers = []
    with httpx.Client(timeout=30, headers=api.headers({"Content-Type": "application/json"})) as client:
        for prefix in ("/trifle/api/v1", "/api/v1"):
            for field, values in BAD_WRITES.items():
                for value in values:
                    body = _with(write, field, value)
                    if prefix == "/api/v1" and not {"key", "values"} <= set(body):
                        continue  # not Trifle's shape there: the dispatch's 400 (test_shared_v1.py)
                    r = client.post(api.base + prefix + "/metrics", content=json.dumps(body).encode())
                    answers.append((("write", prefix, field, value), r, 400))
            for field, (values, status) in BAD_QUERIES.items():
                for value in values:
                    for mode in ("aggregate", "timeline", "category"):
                        r = client.post(api.base + prefix + "/metrics/query",
                                        content=json.dumps(_with({**query, "mode": mode}, field, value)).encode())
                        answers.append((("query", prefix, mode, field, value), r, status))
            for field, values in BAD_SERIES_PARAMS.items():
                for value in values:
                    r = client.get(api.base + prefix + "/metrics", params=_with(series, field, value))
                    answers.append((("series", prefix, field, value), r, 400))
    assert len(answers) > 300
    for case, r, status in answers:
        assert r.status_code == status, (case, r.status_code, r.text)
        errors = r.json()["errors"]
        if status == 400:
            assert list(errors) == ["detail"] and errors["detail"], (case, r.text)
        else:
            assert errors["status"] == "error" and errors["error"], (case, r.text)
    # The message names the field (times out of range included).
    for case, r, status in answers:
        field = case[-2]
        if status == 400 and case[0] != "series" and case[-1] is not _ABSENT and field in ("at", "from", "to"):
            assert field in r.json()["errors"]["detail"], (case, r.text)
    assert live.query(points)[0][0] == before
    assert live.query("SELECT count(*) FROM metric_series WHERE name = 'hostile'")[0][0] == 0
    assert live.alive() and httpx.get(live.http_url + "/healthz", timeout=10).status_code == 200


def test_query_errors_in_trifles_order_with_its_messages(api):
    api.track("q.err", "2025-10-01T01:00:00Z", {"count": 1, "country": {"US": 1}})
    good = {"key": "q.err", "from": "2025-10-01T00:00:00Z", "to": "2025-10-01T03:00:00Z", "granularity": "1h",
            "mode": "aggregate", "value_path": "count", "aggregator": "sum"}

    def ask(**changes):
        body = {k: v for k, v in {**good, **changes}.items() if v is not None}
        r = api.query(body)
        return r.status_code, r.json()

    def detail(status, body):
        assert list(body) == ["errors"] and list(body["errors"]) == ["detail"], body
        return status

    # Everything wrong at once: each check answers in turn as the earlier ones are fixed.
    wrong = dict(key="", to="x", granularity="1x", mode="graph", slices=-1, value_path="", aggregator="avg")
    wrong["from"] = "x"
    steps = [("key", 400), ("from", 400), ("to", 400), ("granularity", 400), ("mode", 400), ("slices", 422),
             ("value_path", 400), ("aggregator", 422)]
    for field, status in steps:
        got, body = ask(**wrong)
        assert got == status, (field, body)
        if status == 400:
            detail(got, body)
        wrong[field] = good.get(field, 1)
    assert ask(**wrong)[0] == 200

    assert ask(slices=0) == (422, {"errors": {"status": "error", "error": "slices must be a positive integer."}})
    assert ask(aggregator=None) == (422, {"errors": {"status": "error", "error":
                                                     "Aggregator must be provided (options: max, mean, min, sum)."}})
    assert ask(aggregator="avg") == (422, {"errors": {"status": "error", "error": 'Unsupported aggregator "avg".',
                                                      "allowed": ["max", "mean", "min", "sum"]}})
    assert ask(aggregator=["sum"]) == (422, {"errors": {"status": "error", "error": "Aggregator must be a string."}})
    assert ask(value_path="country.*") == (422, {"errors": {"status": "error", "error":
                                                            'Wildcards are not supported in value_path "country.*"'}})
    available = ["count", "country.US"]
    unknown = {"errors": {"status": "error", "error": "Unknown path(s): nope", "missing_paths": ["nope"],
                          "available_paths": available}}
    assert ask(value_path="nope") == (422, unknown)
    assert ask(value_path="nope", mode="timeline") == (422, unknown)
    # A map is not a numeric leaf: timeline refuses it like an unknown path, category expands it.
    assert ask(value_path="country", mode="timeline")[1]["errors"]["error"] == "Unknown path(s): country"
    assert ask(value_path="country", mode="category")[1]["data"]["result"] == {"country.US": 1.0}
    assert ask(value_path="nope", mode="category") == (422, {"errors": {
        "status": "error", "error": "No matching data found for path nope in the selected timeframe.",
        "available_paths": available}})
    # More slices than buckets: the aggregators take everything as one slice, the formatters cannot.
    assert ask(slices=9)[1]["data"]["values"] == [1.0]
    status, body = ask(slices=9, mode="timeline")
    assert status == 422 and body["errors"]["error"].startswith("Timeline formatter failed for count")
    status, body = ask(slices=9, mode="category")
    assert status == 422 and body["errors"]["error"].startswith("Category formatter failed for count")
    # Not JSON, not an object.
    for raw in (b"{", b"[1]", b'"x"'):
        r = api.post("/metrics/query", raw)
        assert r.status_code == 400 and "detail" in r.json()["errors"], raw
    # Wrong method: 405 in Trifle's shape.
    r = httpx.get(api.base + "/trifle/api/v1/metrics/query", headers=api.headers())
    assert r.status_code == 405 and "detail" in r.json()["errors"]


def test_503_with_retry_after_when_the_store_is_full(make_server):
    """Acknowledged only after commit: with a tiny queue held by a batch timeout, a second write is refused
    with 503 + Retry-After (nothing of it stored) while the first waits for its commit."""
    srv = make_server({"exporters": {"sqlite": {"sending_queue": {"queue_size": 3}}},
                       "processors": {"batch": {"timeout": "1500ms", "send_batch_size": 100000}, "memory_limiter": {}}})
    client = Client(srv.http_url, srv.admin_key())
    first: dict = {}

    def send_first():
        first["r"] = client.post("/metrics", {"key": "full", "at": "2025-11-01T00:00:00Z", "values": {"a": 1}})

    thread = threading.Thread(target=send_first)
    thread.start()
    time.sleep(0.3)  # the first write is queued, waiting for the batch timeout
    deadline = time.monotonic() + 5
    refused = None
    while time.monotonic() < deadline and thread.is_alive():
        r = client.post("/metrics", {"key": "full", "at": "2025-11-01T00:00:00Z", "values": {"b": 1}})
        if r.status_code == 503:
            refused = r
            break
        time.sleep(0.05)
    thread.join(10)
    assert refused is not None, "the second write was never refused"
    assert int(refused.headers["Retry-After"]) >= 1 and "retry" in refused.json()["errors"]["detail"]
    assert first["r"].status_code == 201
    stored = srv.query("SELECT s.attributes FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
                       "WHERE s.name = 'full'")
    assert stored == [('{"path":"a"}',)]


def test_budget_and_rate_limit_answers_are_in_trifles_shape(make_server):
    """api.query_timeout (collector/store/budget.py) stops a Trifle read like any other: 503 with
    Retry-After; a write over its rate class (auth.rate_limits.write) is a 429 with Retry-After, which
    Trifle::Stats' API driver raises with. Both in Trifle's error shape, and nothing of the refused write
    is stored."""
    srv = make_server({"api": {"query_timeout": "1ms"}, "exporters": {"sqlite": {"retention": {"metrics": 0}}},
                       "auth": {"rate_limits": {"write": {"requests": 2, "per": "1h", "burst": 2}}}})
    client = Client(srv.http_url, srv.admin_key())
    client.track("budget", "2025-11-02T10:00:00Z", {"n": 1})
    day = {"from": "2025-11-02T00:00:00Z", "to": "2025-11-03T00:00:00Z", "granularity": "1s"}  # 86,401 buckets
    r = client.get({"key": "budget", **day})
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
    assert list(r.json()["errors"]) == ["detail"] and "api.query_timeout" in r.json()["errors"]["detail"]
    r = client.query({"key": "budget", **day, "mode": "timeline", "value_path": "n"})
    assert r.status_code == 503 and list(r.json()["errors"]) == ["detail"], r.text
    assert httpx.get(srv.http_url + "/healthz", timeout=10).status_code == 200

    client.track("budget", "2025-11-02T10:00:00Z", {"n": 1})
    r = client.post("/metrics", {"key": "budget", "at": "2025-11-02T10:00:00Z", "values": {"n": 100}})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert list(r.json()["errors"]) == ["detail"], r.text
    stored = srv.query("SELECT p.value FROM metric_points p JOIN metric_series s ON s.id = p.series_id "
                       "WHERE s.name = 'budget'")
    assert sorted(v for (v,) in stored) == [1, 1]
