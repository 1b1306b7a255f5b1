"""PostHog's relative dates in both PostHog APIs on a live server (posthog-tracing.md, "Date ranges"):
`-30M` is thirty minutes and `-3m` three months in metrics/query and in tracing/spans/query, and
`-1dStart` is the start of yesterday in the project's time zone (a Europe/Paris project)."""

from __future__ import annotations

import datetime as dt
import re
import time
from zoneinfo import ZoneInfo

import httpx
import pytest

from conftest import start_server, trace_request
from metrics_otlp import gauge

PARIS = ZoneInfo("Europe/Paris")
MIN = 60 * 10**9
DAY = 86400 * 10**9


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    # Data months old must survive retention for the `-3m` cases.
    srv = start_server(tmp_path_factory.mktemp("dates"),
                       {"exporters": {"sqlite": {"retention": {"traces": 0, "metrics": 0}}}})
    assert srv.cli("projects", "create", "paris", "--timezone", "Europe/Paris").returncode == 0
    created = srv.cli("keys", "create", "--project", "paris", "--scope", "metrics:read", "--scope", "tracing:read")
    srv.paris_key = re.search(r"^(otl_[A-Za-z0-9_-]+)$", created.stdout, re.M).group(1)
    yield srv
    if srv.alive():
        srv.kill()


def _send(live, path: str, req, project: str = "default") -> None:
    r = httpx.post(live.http_url + path, content=req.SerializeToString(), timeout=10,
                   headers={"Content-Type": "application/x-protobuf", "X-Otelite-Project": project})
    assert r.status_code == 200, r.text


def _spans(live, name: str, start_ns: int, project: str = "default"):
    req = trace_request(1, seed=start_ns % 1_000_000 + len(name), start_ns=start_ns, service="dates")
    req.resource_spans[0].scope_spans[0].spans[0].name = name
    _send(live, "/v1/traces", req, project)


def _span_names(live, key: str, project: str, date_range: dict) -> list[str]:
    r = httpx.post(f"{live.http_url}/api/projects/{project}/tracing/spans/query", timeout=10,
                   headers={"Authorization": f"Bearer {key}"}, json={"query": {"dateRange": date_range}})
    assert r.status_code == 200, r.text
    return sorted(s["name"] for s in r.json()["results"])


def _metric_values(live, key: str, project: str, query: dict) -> list[tuple[str, float]]:
    r = httpx.post(f"{live.http_url}/api/projects/{project}/metrics/query", timeout=10,
                   headers={"Authorization": f"Bearer {key}"}, json={"query": query})
    assert r.status_code == 200, r.text
    return [(p["time"], p["value"]) for s in r.json()["results"] for p in s["points"] if p["value"]]


def test_capital_m_is_minutes_small_m_is_months_in_both_apis(live):
    key = live.admin_key()
    now = time.time_ns()
    for name, age in (("twenty-minutes", 20 * MIN), ("forty-minutes", 40 * MIN), ("seventy-five-days", 75 * DAY)):
        _spans(live, name, now - age)
    _send(live, "/v1/metrics", gauge("dates.g", [(now - 20 * MIN, 1.0, {}), (now - 40 * MIN, 2.0, {}),
                                                 (now - 75 * DAY, 3.0, {})]))

    ours = {"twenty-minutes", "forty-minutes", "seventy-five-days"}
    names = lambda window: [n for n in _span_names(live, key, "default", window) if n in ours]  # noqa: E731
    assert names({"date_from": "-30M"}) == ["twenty-minutes"]
    assert names({"date_from": "-3m", "date_to": "-2m"}) == ["seventy-five-days"]
    assert names({"date_from": "-3m"}) == ["forty-minutes", "seventy-five-days", "twenty-minutes"]
    assert names({"date_from": "all"}) == ["forty-minutes", "seventy-five-days", "twenty-minutes"]  # all retained
    r = httpx.get(f"{live.http_url}/api/projects/default/tracing/spans/service-names", timeout=10,
                  params={"dateRange": '{"date_from": "all"}'}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and {"name": "dates"} in r.json()["results"]
    # Read as minutes, `-3m` .. `-2m` would hold nothing, and `-30M` was refused before.
    assert [v for _, v in _metric_values(live, key, "default", {"metricName": "dates.g", "dateFrom": "-30M",
                                                                 "interval": "minute"})] == [1.0]
    assert [v for _, v in _metric_values(live, key, "default", {"metricName": "dates.g", "dateFrom": "-3m",
                                                                 "dateTo": "-2m", "interval": "day"})] == [3.0]
    # Bad units are a 400 naming the field in both APIs.
    r = httpx.post(f"{live.http_url}/api/projects/default/tracing/spans/query", json={"query": {"dateRange": {
        "date_from": "-5H"}}}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 400 and r.json()["attr"] == "dateRange"
    r = httpx.post(f"{live.http_url}/api/projects/default/metrics/query", json={"query": {
        "metricName": "dates.g", "dateFrom": "-5H"}}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 400 and r.json()["attr"] == "dateFrom"


def _paris_yesterday() -> dt.datetime:
    """Midnight starting yesterday in Paris (waiting out the last minute before a Paris midnight, so the
    server and the test agree on which day is yesterday)."""
    now = dt.datetime.now(PARIS)
    to_midnight = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), PARIS) - now).total_seconds()
    if to_midnight < 90:
        time.sleep(to_midnight + 5)
    today = dt.datetime.now(PARIS).date()
    return dt.datetime.combine(today - dt.timedelta(days=1), dt.time(0), PARIS)


def test_day_start_is_the_projects_midnight_in_both_apis(live):
    yesterday = _paris_yesterday()
    y0 = int(yesterday.timestamp()) * 10**9
    # Paris midnight is 22:00 or 23:00 UTC the day before: the "after" readings lie before UTC's -1dStart.
    _spans(live, "before-midnight", y0 - 30 * MIN, "paris")
    _spans(live, "after-midnight", y0 + 30 * MIN, "paris")
    _send(live, "/v1/metrics", gauge("dates.paris", [(y0 - 30 * MIN, 1.0, {}), (y0 + 30 * MIN, 2.0, {})]), "paris")

    window = {"date_from": "-1dStart", "date_to": "-1dEnd"}
    assert _span_names(live, live.paris_key, "paris", window) == ["after-midnight"]
    got = _metric_values(live, live.paris_key, "paris", {"metricName": "dates.paris", "dateFrom": "-1dStart",
                                                         "dateTo": "-1dEnd", "interval": "hour"})
    assert got == [(yesterday.isoformat(), 2.0)]  # the first bucket is Paris midnight, with its offset
    # The default project (UTC) reads -1dStart as UTC midnight.
    utc_midnight = dt.datetime.combine(dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1), dt.time(0),
                                       dt.timezone.utc)
    _spans(live, "utc-before", int(utc_midnight.timestamp()) * 10**9 - MIN)
    _spans(live, "utc-after", int(utc_midnight.timestamp()) * 10**9 + MIN)
    names = _span_names(live, live.admin_key(), "default", window)
    assert "utc-after" in names and "utc-before" not in names
