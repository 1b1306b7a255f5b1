"""PostHog metrics API (issue 5, posthog-metrics.md) against a live `otelite serve`.

Data goes in as hand-built OTLP/HTTP protobuf (exact timestamps and values) or through the real
OpenTelemetry SDK; every expected number is computed here, independently of the server's code.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import pytest

from conftest import start_server
from metrics_otlp import (DELTA, HOUR, MIN, Api, base_ns, counter, exp_histogram, gauge, histogram,
                          iso, series_by, summary)

B = base_ns(6)
S = 10**9


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One server for the module; each test uses its own metric names."""
    srv = start_server(tmp_path_factory.mktemp("phm"))
    yield srv
    if srv.alive():
        srv.kill()


@pytest.fixture(scope="module")
def api(live) -> Api:
    return Api(live)


def _window(minutes: int, start: int = B) -> dict:
    return {"dateFrom": iso(start), "dateTo": iso(start + minutes * MIN), "interval": "minute"}


def _values(resp: dict, clause_or_label: str | None = None, key: str | None = None) -> dict:
    found = series_by(resp, key)
    return found[clause_or_label] if clause_or_label is not None else found


# --- aggregations -------------------------------------------------------------------------------------------

def test_gauge_aggregations_against_independent_values(api):
    rng = np.random.default_rng(1)
    readings = {h: rng.normal(50, 20, (5, 3)).round(3) for h in "abc"}  # host → minute → 3 readings
    points = []
    for h, table in readings.items():
        for m in range(5):
            for j, off in enumerate((5, 20, 40)):
                points.append((B + m * MIN + off * S, float(table[m, j]), {"host": h}))
    points.append((B + 2 * MIN + 50 * S, None, {"host": "a"}))  # no recorded value: not a reading
    api.send(gauge("t.agg", points))

    per_series = {
        "sum": lambda r: r[-1], "count": lambda r: r[-1], "avg": np.mean, "min": np.min, "max": np.max,
        "p50": lambda r: np.quantile(r, 0.5), "p90": lambda r: np.quantile(r, 0.9),
        "p95": lambda r: np.quantile(r, 0.95), "p99": lambda r: np.quantile(r, 0.99)}
    across = {"sum": np.sum, "count": len, "avg": np.mean, "min": np.min, "max": np.max,
              "p50": lambda v: np.quantile(v, 0.5), "p90": lambda v: np.quantile(v, 0.9),
              "p95": lambda v: np.quantile(v, 0.95), "p99": lambda v: np.quantile(v, 0.99)}
    for agg in per_series:
        resp = api.query(metricName="t.agg", aggregation=agg, **_window(5))
        assert len(resp["results"]) == 1
        s = resp["results"][0]
        assert s["labels"] == {} and s["clause"] == "a" and s["metric_name"] == "t.agg"
        got = [p["value"] for p in s["points"]]
        assert [p["time"] for p in s["points"]] == [iso(B + m * MIN) for m in range(5)]
        expected = [float(across[agg]([per_series[agg](readings[h][m]) for h in "abc"])) for m in range(5)]
        assert got == pytest.approx(expected, rel=1e-12), agg


def test_counter_increase_rate_reset_and_lookback(api):
    a = [(B - 2 * MIN, 100), (B + 10 * S, 110), (B + 40 * S, 125), (B + MIN + 5 * S, 130),
         (B + 2 * MIN + 5 * S, 5), (B + 2 * MIN + 35 * S, 20), (B + 3 * MIN + 5 * S, 40)]
    c = [(B - 10 * MIN, 50), (B + 10 * S, 60), (B + MIN + 10 * S, 70)]  # predecessor beyond the 5 min look-back
    api.send(counter("t.req", [(t, v, {"host": "a"}) for t, v in a] + [(t, v, {"host": "c"}) for t, v in c]))
    # a: 25 in minute 0, 5, then a reset (5 counts) + 15, then 20. c: nothing in minute 0 (no predecessor), 10.
    inc = {"a": [25, 5, 20, 20], "c": [None, 10, None, None]}
    resp = api.query(metricName="t.req", aggregation="increase", groupBy=[{"key": "host"}], **_window(4))
    got = _values(resp, key="host")
    assert got["a"] == {iso(B + m * MIN): float(v) for m, v in enumerate(inc["a"])}
    assert got["c"] == {iso(B + m * MIN): float(v or 0) for m, v in enumerate(inc["c"])}  # zero-filled
    resp = api.query(metricName="t.req", aggregation="rate", **_window(4))
    assert [p["value"] for p in resp["results"][0]["points"]] == pytest.approx([25 / 60, 15 / 60, 20 / 60, 20 / 60])

    # Delta temporality: each value is the increase itself.
    api.send(counter("t.delta", [(B + 5 * S, 3, {}), (B + 25 * S, 4, {}), (B + MIN + 5 * S, 5, {})], temporality=DELTA))
    resp = api.query(metricName="t.delta", aggregation="increase", **_window(2))
    assert [p["value"] for p in resp["results"][0]["points"]] == [7.0, 5.0]
    # A non-monotonic cumulative sum (up-down counter): a drop is a decrease, not a reset.
    api.send(counter("t.updown", [(B + 5 * S, 10, {}), (B + MIN + 5 * S, 4, {}), (B + 2 * MIN + 5 * S, 6, {})],
                     monotonic=False))
    resp = api.query(metricName="t.updown", aggregation="increase", **_window(3))
    assert [p["value"] for p in resp["results"][0]["points"]] == [-6.0, 2.0]


def test_histogram_quantile_interpolation(api):
    bounds = [1.0, 2.0, 5.0, 10.0]
    x = [(B - MIN, [1, 1, 1, 1, 0]), (B + 30 * S, [3, 5, 2, 1, 0]), (B + MIN + 30 * S, [3, 5, 2, 1, 4])]
    y = [(B - MIN, [0, 0, 0, 0, 0]), (B + 30 * S, [0, 2, 2, 0, 0]), (B + MIN + 30 * S, [1, 0, 0, 0, 0])]  # reset
    api.send(histogram("t.lat", [(t, bounds, c, {"host": "x"}) for t, c in x] + [(t, bounds, c, {"host": "y"}) for t, c in y]))
    # Minute 0 increases: x [2,4,1,0,0] + y [0,2,2,0,0] = [2,6,3,0,0], cumulative [2,8,11,11,11].
    # q 0.5: rank 5.5 lands in (1, 2]: 1 + (2 − 1)·(5.5 − 2)/6. q 0.9: rank 9.9 in (2, 5]: 2 + 3·(9.9 − 8)/3.
    # Minute 1: x [0,0,0,0,4] + y reset [1,0,0,0,0]: cumulative [1,1,1,1,5]; q 0.5 → rank 2.5 only in the
    # overflow bucket → clamped to 10; q 0.1 → rank 0.5 in the first bucket (lower edge 0) → 0.5.
    # q 0.1, minute 0: rank 1.1 in the first bucket (2 counts): 0 + 1·1.1/2.
    expected = {0.5: [1 + 3.5 / 6, 10.0], 0.9: [2 + 3 * 1.9 / 3, 10.0], 0.1: [1.1 / 2, 0.5]}
    for q, want in expected.items():
        resp = api.query(metricName="t.lat", aggregation="histogram_quantile", quantile=q, **_window(2))
        assert [p["value"] for p in resp["results"][0]["points"]] == pytest.approx(want, rel=1e-12), q
    # pNN on a histogram is the same estimate from the merged buckets.
    resp = api.query(metricName="t.lat", aggregation="p90", **_window(2))
    assert resp["results"][0]["points"][0]["value"] == pytest.approx(3.9)
    # Different bounds across the selected series → 400.
    api.send(histogram("t.lat2", [(B + 5 * S, [1.0, 2.0], [1, 1, 1], {"host": "x"}),
                                  (B + 5 * S, [1.0, 3.0], [1, 1, 1], {"host": "y"})], temporality=DELTA))
    r = api.post("query", {"metricName": "t.lat2", "aggregation": "histogram_quantile", "quantile": 0.5, **_window(1)})
    assert r.status_code == 400 and "bounds" in r.json()["detail"]
    # histogram_quantile on a gauge → 400.
    r = api.post("query", {"metricName": "t.agg", "aggregation": "histogram_quantile", "quantile": 0.5, **_window(1)})
    assert r.status_code == 400


def test_exponential_histogram_and_summary(api):
    # Scale 0: bucket i holds (2^i, 2^(i+1)]. Four observations in (2, 4]: the median is 2·(4/2)^0.5.
    api.send(exp_histogram("t.exp", [(B + 5 * S, 0, 1, [4], 0, {})]))
    resp = api.query(metricName="t.exp", aggregation="p50", **_window(1))
    assert resp["results"][0]["points"][0]["value"] == pytest.approx(2 * 2 ** 0.5)
    # Summaries: avg is the mean observation of the bucket (increase of sum / increase of count: the points
    # are cumulative; README "Histogram semantics"); p90 interpolates the stated quantiles 0.5 → 4, 0.99 → 9.
    api.send(summary("t.sum", [(B - MIN, 4, 18.0, [(0.5, 3.0)], {}),
                               (B + 5 * S, 14, 68.0, [(0.5, 4.0), (0.99, 9.0)], {})]))
    assert api.query(metricName="t.sum", aggregation="avg", **_window(1))["results"][0]["points"][0]["value"] == 5.0
    resp = api.query(metricName="t.sum", aggregation="p90", **_window(1))
    assert resp["results"][0]["points"][0]["value"] == pytest.approx(4 + 5 * 0.4 / 0.49)


# --- filters, groupBy --------------------------------------------------------------------------------------

def test_filters_and_group_by(api):
    api.send(gauge("t.filt", [(B + 5 * S, 1.0, {"env": "prod", "host": "a"})],
                   resource={"service.name": "svc1", "region": "eu"}))
    api.send(gauge("t.filt", [(B + 5 * S, 2.0, {"env": "prod", "host": "b"})],
                   resource={"service.name": "svc1", "region": "us"}))
    api.send(gauge("t.filt", [(B + 5 * S, 4.0, {"env": "dev", "host": "c"})],
                   resource={"service.name": "svc2", "region": "us"}))

    def total(*filters) -> float | None:
        resp = api.query(metricName="t.filt", filters=list(filters), **_window(1))
        points = resp["results"][0]["points"]
        return points[0]["value"] if points else None

    assert total() == 7.0
    assert total({"key": "env", "value": "prod"}) == 3.0
    assert total({"key": "env", "op": "neq", "value": "prod"}) == 4.0
    assert total({"key": "host", "op": "regex", "value": "^[ab]$"}) == 3.0
    assert total({"key": "host", "op": "not_regex", "value": "a"}) == 6.0
    assert total({"key": "region", "value": "eu", "scope": "resource"}) == 1.0
    assert total({"key": "region", "value": "eu", "scope": "attribute"}) is None
    assert total({"key": "service_name", "value": "svc2"}) == 4.0
    assert total({"key": "service.name", "value": "svc1", "scope": "resource"}) == 3.0
    assert total({"key": "env", "value": "prod"}, {"key": "region", "value": "us"}) == 2.0
    resp = api.query(metricName="t.filt", filters=[{"key": "env", "value": "nope"}], **_window(1))
    assert resp["results"] == [{"labels": {}, "points": [], "metric_name": "t.filt", "clause": "a"}]
    r = api.post("query", {"metricName": "t.filt", "filters": [{"key": "host", "op": "regex", "value": "("}],
                           **_window(1)})
    assert r.status_code == 400 and r.json()["type"] == "validation_error" and "regex" in r.json()["detail"]

    resp = api.query(metricName="t.filt", groupBy=[{"key": "region", "scope": "resource"}], **_window(1))
    assert [(s["labels"], s["points"][0]["value"]) for s in resp["results"]] == [({"region": "us"}, 6.0),
                                                                                 ({"region": "eu"}, 1.0)]
    resp = api.query(metricName="t.filt", groupBy=[{"key": "env"}, {"key": "region"}], **_window(1))
    assert sorted((s["labels"]["env"], s["labels"]["region"], s["points"][0]["value"]) for s in resp["results"]) == [
        ("dev", "us", 4.0), ("prod", "eu", 1.0), ("prod", "us", 2.0)]


# --- formula, zero fill, ranking, nulls --------------------------------------------------------------------

def test_formula_with_division_by_zero(api):
    api.send(gauge("f.a", [(B + 5 * S, 10.0, {"host": "x"}), (B + MIN + 5 * S, 0.0, {"host": "x"}),
                           (B + 5 * S, 4.0, {"host": "y"}), (B + MIN + 5 * S, 2.0, {"host": "y"})]))
    api.send(gauge("f.b", [(B + 5 * S, 5.0, {"host": "x"}), (B + MIN + 5 * S, 3.0, {"host": "x"}),
                           (B + 5 * S, 4.0, {"host": "y"}), (B + MIN + 5 * S, 2.0, {"host": "y"})]))
    clauses = [{"name": "a", "metricName": "f.a", "groupBy": [{"key": "host"}]},
               {"name": "b", "metricName": "f.b", "groupBy": [{"key": "host"}]},
               {"name": "c", "metricName": "f.b"}]
    resp = api.query(clauses=clauses, formula="(a - b) / a", **_window(2))
    assert all(s["clause"] == "formula" and s["metric_name"] is None for s in resp["results"])
    got = _values(resp, key="host")
    assert got["x"] == {iso(B): 0.5, iso(B + MIN): 0.0}  # 0/0 at minute 1 → 0
    assert got["y"] == {iso(B): 0.0, iso(B + MIN): 0.0}
    # An ungrouped clause applies to every label set: a / c with c = 5 + 4, 3 + 2.
    got = _values(api.query(clauses=clauses, formula="a / c", **_window(2)), key="host")
    assert got["x"] == pytest.approx({iso(B): 10 / 9, iso(B + MIN): 0.0})
    assert got["y"] == pytest.approx({iso(B): 4 / 9, iso(B + MIN): 2 / 5})
    # Without a formula every clause comes back, named.
    resp = api.query(clauses=clauses, **_window(2))
    assert sorted({s["clause"] for s in resp["results"]}) == ["a", "b", "c"]
    for bad in ("a +", "a / d", "(a", "a $ b", "a b"):
        r = api.post("query", {"clauses": clauses, "formula": bad, **_window(2)})
        assert r.status_code == 400 and r.json()["attr"] == "formula", bad


def test_zero_fill_ranking_nulls_and_limit(api):
    api.send(gauge("z.g", [(B + m * MIN + 5 * S, 1.0, {"host": "p"}) for m in range(3)]
                   + [(B + MIN + 5 * S, -10.0, {"host": "q"}), (B + MIN + 5 * S, float("nan"), {"host": "r"})]))
    resp = api.query(metricName="z.g", groupBy=[{"key": "host"}], **_window(3))
    assert [s["labels"]["host"] for s in resp["results"]] == ["q", "p", "r"]  # by Σ|value|, NaN ignored
    times = [iso(B + m * MIN) for m in range(3)]
    q, p, r = resp["results"]
    assert q["points"] == [{"time": times[0], "value": 0.0}, {"time": times[1], "value": -10.0},
                           {"time": times[2], "value": 0.0}]
    assert [pt["value"] for pt in p["points"]] == [1.0, 1.0, 1.0]
    assert [pt["value"] for pt in r["points"]] == [0.0, None, 0.0]  # NaN → null, missing → 0.0
    # At most 100 series per clause: the 100 largest.
    api.send(gauge("z.many", [(B + i * S, float(i), {"host": f"h{i:03d}"}) for i in range(105)]))
    resp = api.query(metricName="z.many", groupBy=[{"key": "host"}], **_window(2))
    assert len(resp["results"]) == 100
    assert [s["labels"]["host"] for s in resp["results"]] == [f"h{i:03d}" for i in range(104, 4, -1)]
    # The union grid across clauses: z.many has minutes 0 and 1, host p minutes 0-2, host q minute 1.
    resp = api.query(clauses=[{"name": "a", "metricName": "z.many"},
                              {"name": "b", "metricName": "z.g", "filters": [{"key": "host", "value": "q"}]},
                              {"name": "c", "metricName": "z.g", "filters": [{"key": "host", "value": "p"}]}],
                     **_window(3))
    by = _values(resp)
    assert by["a"] == {times[0]: float(sum(range(60))), times[1]: float(sum(range(60, 105))), times[2]: 0.0}
    assert by["b"] == {times[0]: 0.0, times[1]: -10.0, times[2]: 0.0}
    assert by["c"] == {times[0]: 1.0, times[1]: 1.0, times[2]: 1.0}
    # A metric that does not exist: one empty series.
    resp = api.query(metricName="no.such.metric", **_window(3))
    assert resp == {"results": [{"labels": {}, "points": [], "metric_name": "no.such.metric", "clause": "a"}]}


def test_automatic_interval_and_snapping(api):
    api.send(gauge("t.auto", [(B + 90 * S, 1.0, {}), (B + HOUR - 5 * S, 2.0, {})]))
    # One hour → minute buckets (60); dateFrom is snapped down to the minute.
    resp = api.query(metricName="t.auto", dateFrom=iso(B + 30 * S), dateTo=iso(B + HOUR))
    assert [p["time"] for p in resp["results"][0]["points"]] == [iso(B + MIN), iso(B + 59 * MIN)]
    # 24 hours → 15-minute buckets (96; closest to 60 by ratio).
    resp = api.query(metricName="t.auto", dateFrom=iso(B - 23 * HOUR), dateTo=iso(B + HOUR))
    assert [p["time"] for p in resp["results"][0]["points"]] == [iso(B), iso(B + 45 * MIN)]


# --- limits -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, attr", [
    ({"metricName": "t.agg", "dateFrom": "-32d"}, "dateFrom"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "dateTo": "-2h"}, "dateTo"),
    ({"metricName": "t.agg", "dateFrom": "-3h", "interval": "second"}, "interval"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "aggregation": "median"}, "query.aggregation"),
    ({"metricName": "t.lat", "dateFrom": "-1h", "aggregation": "histogram_quantile", "quantile": 1.5}, "query.quantile"),
    ({"metricName": "t.lat", "dateFrom": "-1h", "aggregation": "histogram_quantile", "quantile": 0}, "query.quantile"),
    ({"metricName": "t.agg", "clauses": [{"metricName": "t.agg"}], "dateFrom": "-1h"}, "metricName"),
    ({"dateFrom": "-1h"}, "metricName"),
    ({"clauses": [{"metricName": "t.agg"}] * 11, "dateFrom": "-1h"}, "clauses"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "formula": "a"}, "formula"),
    ({"metricName": "t.agg"}, "dateFrom"),
    ({"metricName": "t.agg", "dateFrom": "yesterday-ish"}, "dateFrom"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "interval": "fortnight"}, "interval"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "filters": [{"key": "a", "op": "like", "value": "x"}]}, "query.filters"),
    # RE2: a backreference or look-ahead is refused (linear-time matching only), never run
    ({"metricName": "t.agg", "dateFrom": "-1h", "filters": [{"key": "a", "op": "regex", "value": r"(a)\1"}]},
     "query.filters"),
    ({"clauses": [{"metricName": "t.agg", "filters": [{"key": "a", "op": "not_regex", "value": "(?!x)"}]}],
      "dateFrom": "-1h"}, "clauses[0].filters"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "dateTo": "-5H"}, "dateTo"),
    ({"metricName": "t.agg", "dateFrom": "-1h", "metricType": "counter"}, "query.metricType"),
])
def test_invalid_queries_are_400(api, query, attr):
    r = api.post("query", query)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "validation_error" and body["code"] == "invalid_input"
    assert body["attr"] == attr and body["detail"]


def test_too_many_bucket_group_rows_is_400(api):
    # 105 groups, each in its own second: 105 × 105 rows > 10,000.
    r = api.post("query", {"metricName": "z.many", "groupBy": [{"key": "host"}], "interval": "second",
                           "dateFrom": iso(B), "dateTo": iso(B + 2 * HOUR)})
    assert r.status_code == 400 and "10000" in r.json()["detail"]
    r = api.post("query", {"metricName": "z.many", "interval": "second", "dateFrom": iso(B), "dateTo": iso(B + 2 * HOUR)})
    assert r.status_code == 200 and len(r.json()["results"][0]["points"]) == 105


# --- values, has_metrics, routes ---------------------------------------------------------------------------

def test_values_and_has_metrics(make_server):
    srv = make_server()
    api = Api(srv)
    assert api.get("has_metrics").json() == {"hasMetrics": False}
    assert api.get("values").json() == {"results": []}
    api.send(gauge("zeta.one", [(B + MIN, 1.0, {})]))
    api.send(counter("Alpha.two", [(B + 3 * MIN, 1, {})]))
    api.send(histogram("alpha.three", [(B + 2 * MIN, [1.0], [1, 0], {})]))
    assert api.get("has_metrics").json() == {"hasMetrics": True}
    assert api.get("values").json() == {"results": [
        {"name": "Alpha.two", "metric_type": "sum"}, {"name": "alpha.three", "metric_type": "histogram"},
        {"name": "zeta.one", "metric_type": "gauge"}]}
    assert [x["name"] for x in api.get("values", value="ALPHA").json()["results"]] == ["Alpha.two", "alpha.three"]
    assert [x["name"] for x in api.get("values", limit="1").json()["results"]] == ["Alpha.two"]
    assert len(api.get("values", limit="1000").json()["results"]) == 3
    for bad in ("0", "1001", "abc", "-1"):
        r = api.get("values", limit=bad)
        assert r.status_code == 400 and r.json()["attr"] == "limit", bad


def test_environment_prefix_scope_and_openapi(live, api):
    env = api.post("query", {"metricName": "t.filt", **_window(1)}, prefix="/api/environments/default")
    assert env.status_code == 200 and env.json() == api.query(metricName="t.filt", **_window(1))
    # PostHog's curl examples send `-d query=...`: a form field holding the JSON query.
    form = httpx.post(f"{live.http_url}/api/projects/1/metrics/query/", headers=api.headers,
                      data={"query": json.dumps({"metricName": "t.filt", **_window(1)})})
    assert form.status_code == 200 and form.json() == env.json()
    assert httpx.post(f"{live.http_url}/api/projects/1/metrics/query", headers=api.headers,
                      data={"query": "undefined"}).status_code == 400
    url = f"{live.http_url}/api/environments/1/metrics/values/"  # trailing slash optional
    assert httpx.get(url, headers=api.headers).status_code == 200
    created = live.cli("keys", "create", "--project", "default", "--scope", "tracing:read")
    tracing_only = re.search(r"^(otl_[A-Za-z0-9_-]+)$", created.stdout, re.M).group(1)
    r = httpx.post(f"{live.http_url}/api/projects/1/metrics/query", json={"query": {"metricName": "x", "dateFrom": "-1h"}},
                   headers={"Authorization": f"Bearer {tracing_only}"})
    assert r.status_code == 403
    paths = httpx.get(f"{live.http_url}/api/schema/").json()["paths"]
    for prefix in ("/api/projects/{project_id}", "/api/environments/{project_id}"):
        assert "post" in paths[f"{prefix}/metrics/query"] and "post" in paths[f"{prefix}/metrics/characterize"]
        assert "get" in paths[f"{prefix}/metrics/values"] and "get" in paths[f"{prefix}/metrics/has_metrics"]


# --- the real SDK -------------------------------------------------------------------------------------------

def test_sdk_counter_increase(api, live):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    def provider(temporality):
        exporter = OTLPMetricExporter(endpoint=f"{live.http_url}/v1/metrics", timeout=10,
                                      preferred_temporality={Counter: temporality})
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        return MeterProvider(resource=Resource.create({"service.name": "sdk-test"}), metric_readers=[reader])

    start = time.time_ns()
    for temporality, name in ((AggregationTemporality.DELTA, "sdk.delta"), (AggregationTemporality.CUMULATIVE, "sdk.cumul")):
        mp = provider(temporality)
        c = mp.get_meter("test").create_counter(name)
        adds = [(5, "/a"), (7, "/b"), (11, "/a"), (13, "/a"), (17, "/b")]
        for i, (n, route) in enumerate(adds):
            c.add(n, {"route": route})
            if i in (0, 2, 4):
                assert mp.force_flush(10_000)
        mp.shutdown()
    window = {"dateFrom": iso(start - MIN), "dateTo": iso(time.time_ns() + MIN), "interval": "minute"}

    def totals(name):
        resp = api.query(metricName=name, aggregation="increase", groupBy=[{"key": "route"}], **window)
        return {s["labels"]["route"]: sum(p["value"] for p in s["points"]) for s in resp["results"]}

    # Delta: every export's value is an increase. Cumulative: the SDK sends each series' start time, which
    # lies inside the range, so a series' first reading counts from it (OTel data model): the same totals.
    assert totals("sdk.delta") == {"/a": 29.0, "/b": 24.0}
    assert totals("sdk.cumul") == {"/a": 29.0, "/b": 24.0}
    resp = api.query(metricName="sdk.delta", aggregation="sum", filters=[{"key": "service_name", "value": "sdk-test"}], **window)
    assert resp["results"][0]["labels"] == {} and resp["results"][0]["points"]


def test_counter_restart_with_start_time_counts_toward_increase_and_rate(api):
    """OTel data model, "Resets and Gaps": a cumulative point whose start time is after the previous reading
    begins a new stream; its whole value is its increase, even when it is above the value before."""
    s1 = B - HOUR  # the first process started long before the range
    s2 = B + 2 * MIN + 10 * S  # restarted
    s3 = B + 3 * MIN + 20 * S  # restarted again, and its first value is above the last one of s2
    api.send(counter("t.restart", [(B - MIN, 100, {"host": "a"}, s1), (B + 30 * S, 110, {"host": "a"}, s1),
                                   (B + MIN + 30 * S, 130, {"host": "a"}, s1), (B + 2 * MIN + 40 * S, 7, {"host": "a"}, s2),
                                   (B + 3 * MIN + 10 * S, 9, {"host": "a"}, s2), (B + 3 * MIN + 50 * S, 25, {"host": "a"}, s3),
                                   # an app that started inside the range: its first export counts from its start
                                   (B + 2 * MIN + 30 * S, 4, {"host": "new"}, B + 2 * MIN),
                                   (B + 3 * MIN + 30 * S, 6, {"host": "new"}, B + 2 * MIN)]))
    resp = api.query(metricName="t.restart", aggregation="increase", groupBy=[{"key": "host"}], **_window(4))
    got = _values(resp, key="host")
    assert got["a"] == {iso(B): 10.0, iso(B + MIN): 20.0, iso(B + 2 * MIN): 7.0, iso(B + 3 * MIN): 27.0}
    assert got["new"] == {iso(B): 0.0, iso(B + MIN): 0.0, iso(B + 2 * MIN): 4.0, iso(B + 3 * MIN): 2.0}
    resp = api.query(metricName="t.restart", aggregation="rate", **_window(4))
    assert [p["value"] for p in resp["results"][0]["points"]] == pytest.approx([10 / 60, 20 / 60, 11 / 60, 29 / 60])


def test_readme_p95_example_for_a_short_lived_app(api, live):
    """README, "PostHog APIs": p95 of http.server.duration by service_name over the last hour, for an app
    that recorded a few requests and exited within a minute (one cumulative export, at shutdown)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(endpoint=f"{live.http_url}/v1/metrics", timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "short-lived"}), metric_readers=[reader])
    duration = provider.get_meter("app").create_histogram("http.server.duration", unit="ms")
    for ms in range(1, 21):
        duration.record(ms, {"http.route": "/"})
    provider.shutdown()  # the one and only export
    readme_query = {"metricName": "http.server.duration", "aggregation": "p95", "dateFrom": "-1h",
                    "groupBy": [{"key": "service_name"}]}
    resp = api.query(**readme_query)
    [series] = resp["results"]
    assert series["labels"] == {"service_name": "short-lived"}
    # The SDK's default bounds put 1-5 in (0, 5], 6-10 in (5, 10], 11-20 in (10, 25]: rank 19 of 20 lies in
    # (10, 25] after 10 observations, so 10 + 15 · 9/10 (Prometheus' interpolation).
    assert [p["value"] for p in series["points"] if p["value"]] == [pytest.approx(23.5)]
    resp = api.query(**{**readme_query, "aggregation": "histogram_quantile", "quantile": 0.5})
    assert [p["value"] for p in resp["results"][0]["points"] if p["value"]] == [pytest.approx(10.0)]


def test_project_timezone_buckets(live):
    import datetime as dt
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    assert live.cli("projects", "create", "berlin", "--timezone", "Europe/Berlin").returncode == 0
    created = live.cli("keys", "create", "--project", "berlin", "--scope", "metrics:read")
    key = re.search(r"^(otl_[A-Za-z0-9_-]+)$", created.stdout, re.M).group(1)
    api = Api(live, key, prefix="/api/projects/berlin")
    today = dt.datetime.now(berlin).date()
    day = [dt.datetime.combine(today - dt.timedelta(days=n), dt.time(0), tzinfo=berlin) for n in (2, 1)]
    ns = lambda d: int(d.timestamp()) * 10**9
    req = gauge("tz.g", [(ns(day[1]) - 2 * 3600 * S, 1.0, {}), (ns(day[1]) + 3600 * S, 2.0, {})])
    r = httpx.post(live.http_url + "/v1/metrics", content=req.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf", "X-Otelite-Project": "berlin"})
    assert r.status_code == 200
    # A dateFrom without an offset is read in the project's zone; day buckets start at local midnight.
    resp = api.query(metricName="tz.g", interval="day", dateFrom=day[0].replace(tzinfo=None).isoformat(),
                     dateTo=(day[1] + dt.timedelta(days=1)).isoformat())
    assert [(p["time"], p["value"]) for p in resp["results"][0]["points"]] == [
        (day[0].isoformat(), 1.0), (day[1].isoformat(), 2.0)]
    # The default project does not see it.
    assert Api(live).query(metricName="tz.g", dateFrom="-3d")["results"][0]["points"] == []
