"""Pure parts of the Flux dialect (api/flux/ingest.py, query.py), the rate-limit defaults, the writer's
running totals of distributions, and the events reader on a real SQLite file. The live behaviour is in
test_flux.py."""

from __future__ import annotations

import sqlite3

import pytest

from otelite.api.errors import ApiError
from otelite.api.flux.common import RATE_LIMITS
from otelite.api.flux.ingest import (ItemError, flux_time, metric_rows, parse_event, parse_metric, parse_tags,
                                     parse_timestamp)
from otelite.api.flux.query import auto_interval, engine_aggregation, flux_type, parse_query
from otelite.api.ratelimit import RateLimiter, effective_limits
from otelite.collector.config import RateLimitConfig
from otelite.collector.query.model import Aggregation
from otelite.collector.store.db import prepare_database
from otelite.collector.store.events import (EventRow, EventSelection, delete_events_before, insert_events,
                                            list_events)
from otelite.collector.store.metrics import FLUX_SCOPE
from otelite.collector.store.series_state import count_observations
from otelite.collector.times import parse_iso

S = 10**9
NOW = parse_iso("2024-01-15T10:30:00Z")


def test_metrics_parse_as_the_sdk_sends_them():
    m = parse_metric({"type": "counter", "name": "jobs", "value": -1, "tags": {"unit": "ms", "n": 5, "ok": True,
                                                                               "gone": None},
                      "timestamp": "2024-01-15T10:30:00.123Z"}, NOW)
    assert (m.name, m.type, m.value, m.tags) == ("jobs", "counter", -1, {"unit": "ms", "n": "5", "ok": "true"})
    assert m.time_ns == NOW + 123 * 10**6
    assert m.echo()["timestamp"] == "2024-01-15T10:30:00.123Z"
    assert parse_metric({"name": "s", "type": "set", "value": 42}, NOW).value == "42"
    assert parse_metric({"name": "g", "type": "gauge", "value": 1.5, "timestamp": None}, NOW).time_ns == NOW
    assert parse_metric({"name": "g", "type": "gauge", "value": 2**64}, NOW).value == float(2**64)


@pytest.mark.parametrize("item,code", [
    (None, "invalid_value"), ({"type": "gauge", "value": 1}, "missing_name"),
    ({"name": "  ", "type": "gauge", "value": 1}, "missing_name"), ({"name": "x", "value": 1}, "invalid_type"),
    ({"name": "x", "type": 1, "value": 1}, "invalid_type"), ({"name": "x", "type": "gauge", "value": None}, "invalid_value"),
    ({"name": "x", "type": "gauge", "value": float("nan")}, "invalid_value"),
    ({"name": "x", "type": "distribution", "value": float("inf")}, "invalid_value"),
    ({"name": "x", "type": "counter", "value": 10**400}, "invalid_value"),  # no double holds it (was a 500)
    ({"name": "x", "type": "set", "value": [1]}, "invalid_value"),
    ({"name": "x", "type": "gauge", "value": 1, "tags": {"a": {"b": 1}}}, "invalid_value"),
    ({"name": "x", "type": "gauge", "value": 1, "tags": {"": "v"}}, "invalid_value"),
    ({"name": "x", "type": "gauge", "value": 1, "timestamp": "2024-01-15"}, None),
])
def test_each_bad_metric_names_its_code(item, code):
    if code is None:
        assert parse_metric(item, NOW).time_ns == parse_iso("2024-01-15")
        return
    with pytest.raises(ItemError) as e:
        parse_metric(item, NOW)
    assert e.value.code == code


def test_timestamps_and_tags_limits():
    for bad in ("1969-12-31T23:59:59Z", "2263-01-01T00:00:00Z", "soon", 17, "x" * 100):
        with pytest.raises(ItemError):
            parse_timestamp(bad, NOW)
    assert parse_timestamp("2024-01-15T10:30:00", NOW) == NOW  # no offset: UTC
    with pytest.raises(ItemError):
        parse_tags({f"k{i}": "v" for i in range(129)})
    assert flux_time(NOW) == "2024-01-15T10:30:00Z"
    assert flux_time(NOW + 5) == "2024-01-15T10:30:00.000000005Z"


def test_rows_are_one_series_per_name_type_and_tags():
    metrics = [parse_metric({"name": "c", "type": "counter", "value": v, "tags": {"k": tag}}, NOW)
               for v, tag in ((1, "a"), (2, "a"), (3, 1), (4, "1"))]
    batch = metric_rows(7, metrics)
    assert len(batch.series) == 2  # {"k": 1} and {"k": "1"} are one series
    row = next(iter(batch.series.values()))
    assert row[1:8] == (7, "c", "sum", "", "", 1, 0)  # DELTA, not monotonic
    assert [p[4] for p in batch.points] == [1, 2, 3, 4]
    assert list(batch.scopes.values())[0][2] == FLUX_SCOPE


def test_events_parse_with_nulls_and_refuse_nan_inside_properties():
    e = parse_event({"name": "signup", "timestamp": None, "value": None, "properties": {"a": [1, {"b": None}]},
                     "tags": None, "user_id": 42, "session_id": None, "environment": None, "service": "web"}, 3, NOW)
    assert e == EventRow(3, "signup", NOW, None, {"a": [1, {"b": None}]}, None, "42", None, None, "web")
    assert parse_event({"name": "e", "user_id": 10**330}, 3, NOW).user_id == str(10**330)  # (isfinite raised)
    for bad in ({"name": "e", "properties": {"a": [float("nan")]}}, {"name": "e", "properties": []},
                {"name": "e", "user_id": True}, {"name": "e", "service": 1}, {"value": 1},
                {"name": "e", "value": 10**400}):
        with pytest.raises(ItemError):
            parse_event(bad, 1, NOW)


def test_query_defaults_and_interval_choice():
    assert [auto_interval(h * 3600 * S) for h in (1, 2, 24, 24 * 7, 24 * 30, 24 * 31)] == \
        ["1m", "5m", "15m", "1h", "6h", "1d"]
    q = parse_query("m", {}, NOW)
    assert (q.interval, q.end_ns - 1) == ("15m", NOW)
    assert q.start_ns == NOW - 86400 * S  # already a whole quarter hour
    q = parse_query("m", {"from": "2024-01-15T00:00:30Z", "to": "2024-01-15T00:10:00Z", "tags[a]": ["x", "y"],
                          "group_by": "tags.route", "aggregation": "p50, p95"}, NOW)
    assert (q.start_ns, q.step_ns, q.aggregations, q.group_by) == (
        parse_iso("2024-01-15T00:00:30Z"), 60 * S, ("p50", "p95"), "route")
    assert q.filters[0].values == ("x", "y")
    for params in ({"interval": ""}, {"interval": "1w"}, {"from": "2024-01-16T00:00:00Z", "to": "2024-01-15T00:00:00Z"},
                   {"aggregation": "p42"}, {"group_by": "route"}, {"tags[": "x"}, {"to": ["a", "b"]},
                   {"interval": "999999d"}, {"interval": "999999h", "to": "2262-01-01T00:00:00Z"}):
        with pytest.raises(ApiError):
            parse_query("m", params, NOW)
    # The longest interval whose last bucket still ends inside the store's time (2262-04-11).
    q = parse_query("m", {"interval": "999999h", "to": "2140-01-01T00:00:00Z"}, NOW)
    assert q.end_ns + q.step_ns < 1 << 63


def test_types_and_aggregations_map_onto_the_engine():
    assert [flux_type(t, mono, temp) for t, mono, temp in (
        ("gauge", False, 0), ("sum", True, 2), ("sum", False, 1), ("sum", False, 2), ("histogram", False, 2),
        ("summary", False, 0), ("distribution", False, 0), ("set", False, 0), ("tally", False, 1))] == \
        ["gauge", "counter", "counter", "gauge", "distribution", "distribution", "distribution", "set", "counter"]
    # A Trifle key: its bucket value per path (asserts replace), summed over the paths.
    assert engine_aggregation("sum", "counter", "tally") == engine_aggregation("rate", "counter", "tally") == \
        Aggregation("tally", across="sum")
    assert engine_aggregation("sum", "counter", "sum").fn == "increase"
    assert engine_aggregation("p95", "distribution", "distribution").q == 0.95
    assert engine_aggregation("p99", "distribution", "histogram").fn == "histogram_quantile"
    assert engine_aggregation("count", "distribution", "exponential_histogram").fn == "increase"
    assert engine_aggregation("count", "set", "set").fn == "distinct"
    for agg, ftype, stored in (("avg", "distribution", "histogram"), ("rate", "gauge", "gauge"),
                               ("last", "counter", "sum")):
        with pytest.raises(ApiError):
            engine_aggregation(agg, ftype, stored)


def test_dialect_rate_limits_are_defaults_the_config_replaces_or_disables():
    assert effective_limits({}, [RATE_LIMITS]) == RATE_LIMITS
    mine = RateLimitConfig(requests=2, per=1.0)
    limits = effective_limits({"flux_batch": mine, "flux_query": RateLimitConfig(enabled=False)}, [RATE_LIMITS])
    assert limits == {"flux_batch": mine}
    clock = [0.0]
    limiter = RateLimiter(effective_limits({}, [RATE_LIMITS]), clock=lambda: clock[0])
    assert [limiter.take(1, "flux_batch").allowed for _ in range(11)] == [True] * 10 + [False]
    assert limiter.take(1, "flux_batch").retry_after == 6  # one token per 6 s
    assert limiter.take(2, "flux_batch").allowed  # per key
    clock[0] = 6.0
    assert limiter.take(1, "flux_batch").allowed
    assert not limiter.limited("flux")


def test_distribution_state_keeps_running_totals():
    point = lambda t, v: (1, 9, 0, t, v, None, None, None, None, 0, None, None)  # noqa: E731
    state = count_observations(None, [point(5, 2.0), point(3, 10)])
    assert (state[2], state[4], state[5], state[6], state[7], state[8]) == (5, 2.0, 2, 12.0, 2.0, 10)
    state = count_observations(state, [point(9, -1.5)])
    assert (state[2], state[4], state[5], state[6], state[7], state[8]) == (9, -1.5, 3, 10.5, -1.5, 10)


def test_events_reader_filters_pages_and_retention(tmp_path):
    db = str(tmp_path / "events.db")
    prepare_database(db)
    conn = sqlite3.connect(db, isolation_level=None)
    rows = [EventRow(1, name, t * S, None, None, tags, user, None, None, None)
            for name, t, tags, user in (("order.placed", 1, {"r": "eu"}, "u1"), ("order.paid", 2, {"r": "us"}, "u1"),
                                        ("signup", 3, None, "u2"), ("orders", 4, None, None))]
    assert insert_events(conn, rows) == 4
    insert_events(conn, [EventRow(2, "order.placed", 5 * S, 1.0, None, None, "u1", None, None, None)])

    def names(**kw) -> list[str]:
        return [e.name for e in list_events(conn, EventSelection(1, **kw))]

    assert names() == ["orders", "signup", "order.paid", "order.placed"]
    assert names(name="order.*") == ["order.paid", "order.placed"]
    assert names(name="order") == [] and names(name="*") == names()
    assert names(user_id="u1") == ["order.paid", "order.placed"]
    assert names(tags=(("r", "eu"),)) == ["order.placed"]
    assert names(start_ns=2 * S, end_ns=3 * S) == ["signup", "order.paid"]
    assert names(limit=2, offset=1) == ["signup", "order.paid"]
    assert delete_events_before(conn, 1, 3 * S, 1) == 1 and names() == ["orders", "signup", "order.paid"]
    assert [e.name for e in list_events(conn, EventSelection(2))] == ["order.placed"]  # projects apart
    assert conn.execute("SELECT count(*) FROM flux_events").fetchone()[0] == 4
