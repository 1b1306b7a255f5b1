"""The Trifle dialect's pure parts: values ⇄ dot paths, request parsing in Trifle's order with its messages,
Trifle::Stats' aggregator and formatter fixtures, and the rows a write becomes. The live behaviour (HTTP,
the store, bucket alignment) is in test_trifle_live.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otelite.api.errors import ApiError
from otelite.api.trifle import formatters
from otelite.api.trifle.request import (SYSTEM_KEY, parse_aggregator, parse_granularity, parse_instant,
                                        parse_query, parse_series_params, parse_slices, parse_write)
from otelite.api.trifle.rows import write_rows
from otelite.api.trifle.series import BucketTable
from otelite.api.trifle.values import ValuesError, flatten, unflatten
from otelite.collector.store.metrics import TALLY
from otelite.collector.store.records import TALLY_SET
from otelite.collector.times import NS, iso

NAN = math.nan


# --- values ------------------------------------------------------------------------------------------------

def test_flatten_joins_keys_with_dots_and_keeps_numbers_exact():
    values = {"count": 1, "duration": 0.42, "country": {"US": 1, "UK": {"London": 2}}, "empty": {}}
    assert flatten(values) == {"count": 1, "duration": 0.42, "country.US": 1, "country.UK.London": 2}
    assert isinstance(flatten({"n": 3})["n"], int)
    # Beyond SQLite's 64-bit integers: kept as a double rather than failing the commit.
    assert flatten({"big": 2**70}) == {"big": float(2**70)}


@pytest.mark.parametrize("leaf, kind", [("1", "a string"), (True, "a boolean"), (None, "null"), ([1], "a list")])
def test_flatten_refuses_a_leaf_that_is_not_a_number_naming_its_path(leaf, kind):
    with pytest.raises(ValuesError, match=f"values.a.b must be a number, got {kind}"):
        flatten({"ok": 1, "a": {"b": leaf}})


def test_flatten_refuses_non_finite_numbers_and_unstorable_text():
    for leaf in (math.inf, -math.inf, math.nan, 10**400, -10**400):  # (float() of the last two raised: 500)
        with pytest.raises(ValuesError, match="finite"):
            flatten({"x": leaf})
    with pytest.raises(ValuesError, match="surrogate"):
        flatten({"bad\ud800": 1})


def test_flatten_of_deep_nesting_does_not_recurse():
    deep: dict = {"v": 1}
    for _ in range(5000):
        deep = {"a": deep}
    (path, value), = flatten(deep).items()
    assert path.count(".") == 5000 and value == 1


def test_two_spellings_of_one_path_the_later_wins_as_in_trifles_packer():
    assert flatten({"a.b": 1, "a": {"b": 2}}) == {"a.b": 2}
    assert flatten({"a": {"b": 2}, "a.b": 1}) == {"a.b": 1}


def test_unflatten_nests_and_a_map_wins_over_a_leaf_of_the_same_path():
    assert unflatten({"count": 3, "country.US": 1, "country.UK": 2}) == {"count": 3, "country": {"US": 1, "UK": 2}}
    assert unflatten({"a": 1, "a.b": 2}) == {"a": {"b": 2}}
    assert unflatten({}) == {}


# --- request parsing ---------------------------------------------------------------------------------------

def _error(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value


def test_instants_need_an_offset_and_keep_it():
    assert parse_instant("2026-02-24T20:30:00Z", "at") == parse_instant("2026-02-25T00:30:00+04:00", "at")
    assert parse_instant("2026-02-24T20:30:00.123456+00:00", "at") % NS == 123_456_000
    for bad in ("2026-02-24T20:30:00", "2026-02-24", "yesterday", "", 5, None):
        e = _error(parse_instant, bad, "from")
        assert e.status.startswith("400") and e.attr == "from"
    # The store keeps 64-bit nanoseconds: 1677-09-21 to 2262-04-11 (a time beyond failed the commit: 503).
    assert parse_instant("1677-09-21T00:12:44Z", "at") < 0 and parse_instant("2262-04-11T23:47:16Z", "at") > 0
    for bad in ("0001-01-01T00:00:00Z", "1677-09-21T00:12:42Z", "2262-04-11T23:47:17Z", "9999-12-31T23:59:59Z"):
        e = _error(parse_instant, bad, "at")
        assert e.status.startswith("400") and e.attr == "at" and "1677-09-21 to 2262-04-11" in e.message, bad


@pytest.mark.parametrize("text, count, unit", [("1s", 1, "s"), ("33m", 33, "m"), (" 6h ", 6, "h"), ("1d", 1, "d"),
                                               ("2w", 2, "w"), ("1mo", 1, "mo"), ("1q", 1, "q"), ("10y", 10, "y"),
                                               ("01h", 1, "h")])
def test_granularities(text, count, unit):
    g = parse_granularity(text)
    assert (g.count, g.unit, g.text) == (count, unit, text.strip())


@pytest.mark.parametrize("bad", ["0h", "1", "h", "1H", "1min", "-1d", "1.5h", "", None, 5, "1 h"])
def test_bad_granularities_are_400(bad):
    e = _error(parse_granularity, bad)
    assert e.status.startswith("400") and e.attr == "granularity"


def test_write_parses_the_trifle_stats_api_driver_payload():
    w = parse_write({"operation": "assert", "key": "event::signup", "at": "2026-01-24T10:00:00.000000+00:00",
                     "values": {"count": 2, "country": {"US": 1}}, "untracked": False})
    assert (w.key, w.operation, w.untracked, w.tracked_as) == ("event::signup", "assert", False, "event::signup")
    assert w.leaves == {"count": 2, "country.US": 1}
    w = parse_write({"key": "k", "at": "2026-01-24T10:00:00Z", "values": {}, "untracked": True})
    assert (w.operation, w.tracked_as, w.leaves) == ("track", "__untracked__", {})


@pytest.mark.parametrize("body, attr", [
    (None, None), ([], None), ({}, "key"), ({"key": "", "at": "x", "values": {}}, "key"),
    ({"key": 5, "at": "x", "values": {}}, "key"), ({"key": "k", "values": {}}, "at"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z"}, "values"),
    ({"key": "k", "at": "2026-01-24T10:00:00", "values": {}}, "at"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z", "values": [1]}, "values"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z", "values": {"a": "1"}}, "values"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z", "values": {"a": 1}, "operation": "inc"}, "operation"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z", "values": {"a": 1}, "operation": "Track"}, "operation"),
    ({"key": "k", "at": "2026-01-24T10:00:00Z", "values": {"a": 1}, "untracked": "yes"}, "untracked"),
])
def test_bad_writes_are_400_naming_the_field(body, attr):
    e = _error(parse_write, body)
    assert e.status.startswith("400") and e.attr == attr, (e.status, e.attr, e.message)


def test_key_is_checked_before_at_and_at_presence_before_values():
    assert _error(parse_write, {"at": "bad", "values": "bad"}).attr == "key"
    assert _error(parse_write, {"key": "k", "values": None}).attr == "at"
    # `at` is parsed only after `values` is known to be there, as Trifle's controller does.
    assert _error(parse_write, {"key": "k", "at": "not a time"}).attr == "values"


def test_series_params_default_to_the_system_key_but_an_empty_key_is_400():
    params = {"from": "2026-01-24T00:00:00Z", "to": "2026-01-25T00:00:00Z", "granularity": "1h"}
    assert parse_series_params(params).key == SYSTEM_KEY
    assert parse_series_params({**params, "key": " event::signup "}).key == "event::signup"
    assert _error(parse_series_params, {**params, "key": "  "}).attr == "key"
    assert _error(parse_series_params, {**params, "from": None}).attr == "from"


QUERY = {"key": "k", "from": "2026-01-24T00:00:00Z", "to": "2026-01-25T00:00:00Z", "granularity": "1h",
         "mode": "aggregate", "value_path": "count", "aggregator": "sum"}


def _query_error(**changes) -> tuple[str, str | None, str]:
    body = {**QUERY, **changes}
    body = {k: v for k, v in body.items() if v is not _DROP}
    e = _error(parse_query, body)
    return e.status[:3], e.attr, e.message


_DROP = object()


def test_query_checks_come_in_trifles_order():
    everything_wrong = dict(key=_DROP, to="x", granularity="0h", mode="sideways", slices=0, value_path="",
                            aggregator="avg")
    order = [("key", "400"), ("from", "400"), ("to", "400"), ("granularity", "400"), ("mode", "400"),
             ("slices", "422"), ("value_path", "400"), ("aggregator", "422")]
    fixed = {"key": "k", "from": QUERY["from"], "to": QUERY["to"], "granularity": "1h", "mode": "aggregate",
             "slices": 1, "value_path": "a.*", "aggregator": "sum"}
    changes = dict(everything_wrong, **{"from": "nope"})
    for field, status in order:
        got_status, attr, message = _query_error(**changes)
        assert got_status == status, (field, got_status, message)
        if status == "400":
            assert attr == field, (field, attr, message)
        changes[field] = fixed[field]
    # Last: the wildcard.
    assert _query_error(**changes) == ("422", None, 'Wildcards are not supported in value_path "a.*"')


def test_query_messages_are_trifles():
    assert _query_error(aggregator=None)[2] == "Aggregator must be provided (options: max, mean, min, sum)."
    assert _query_error(aggregator=_DROP)[2] == "Aggregator must be provided (options: max, mean, min, sum)."
    assert _query_error(aggregator=5)[2] == "Aggregator must be a string."
    assert _query_error(aggregator=True)[2] == "Aggregator must be a string."
    e = _error(parse_aggregator, "Avg ")
    assert e.message == 'Unsupported aggregator "Avg ".' and e.extra == {"allowed": ["max", "mean", "min", "sum"]}
    assert _query_error(slices="two")[:3:2] == ("422", "slices must be a positive integer.")
    assert _query_error(mode=_DROP)[:2] == ("400", "mode")


def test_trimming_is_unicode_white_space_as_in_elixir():
    from otelite.api.trifle.request import trim
    assert trim("\u3000 key\t\u2028") == "key"
    # Information separators are not White_Space (Python's str.strip would remove them).
    assert parse_query({**QUERY, "value_path": "\x1e"}).value_path == "\x1e"
    assert parse_slices("\u00a03\u2009") == 3


def test_mode_format_alias_trim_and_case():
    assert parse_query({**QUERY, "mode": " Timeline "}).mode == "timeline"
    body = dict(QUERY)
    del body["mode"]
    assert parse_query({**body, "format": "CATEGORY"}).mode == "category"
    # Only aggregate needs an aggregator.
    assert parse_query({**QUERY, "mode": "timeline", "aggregator": None}).aggregator is None
    assert parse_query({**QUERY, "aggregator": " MEAN"}).aggregator == "mean"


@pytest.mark.parametrize("value, want", [(None, 1), (False, 1), (1, 1), (3, 3), (2.0, 2), ("4", 4), (" 5 ", 5),
                                         ("+6", 6)])
def test_slices(value, want):
    assert parse_slices(value) == want


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1.0", "3_0", "", True, [2], {"n": 1}])
def test_bad_slices_are_422(bad):
    e = _error(parse_slices, bad)
    assert e.status.startswith("422") and e.message == "slices must be a positive integer."


# --- Trifle::Stats' own fixtures --------------------------------------------------------------------------------

COUNTS = np.array([10.0, 15.0, 8.0, 12.0])


def test_sum_fixtures():
    assert formatters.aggregate(COUNTS, "sum", 1) == [45.0]
    assert formatters.aggregate(COUNTS, "sum", 2) == [25.0, 20.0]
    # Ten buckets 10…100, three slices: the oldest bucket is dropped.
    assert formatters.aggregate(np.arange(10.0, 101.0, 10.0), "sum", 3) == [90.0, 180.0, 270.0]
    # More slices than buckets: one value over all of them (Trifle::Stats' aggregators).
    assert formatters.aggregate(COUNTS, "sum", 9) == [45.0]
    assert formatters.aggregate(np.zeros(0), "sum", 1) == []


def test_mean_min_max_and_missing_values():
    assert formatters.aggregate(COUNTS, "mean", 1) == [11.25]
    assert formatters.aggregate(COUNTS, "min", 2) == [10.0, 8.0]
    assert formatters.aggregate(COUNTS, "max", 2) == [15.0, 12.0]
    missing = np.full(4, NAN)
    assert formatters.aggregate(missing, "mean", 1) == [0]
    assert formatters.aggregate(missing, "min", 1) == [None]
    assert formatters.aggregate(missing, "max", 1) == [None]
    assert formatters.aggregate(missing, "sum", 1) == [0.0]
    # Missing values are ignored, not zeros: mean of 10 and 8.
    assert formatters.aggregate(np.array([10.0, NAN, 8.0, NAN]), "mean", 1) == [9.0]


H = 3600 * NS


def _ats(table: BucketTable) -> list[str]:
    return [iso(t) for t in table.starts.tolist()]


def test_timeline_formatting():
    table = BucketTable(np.arange(4, dtype=np.int64) * H, {"count": np.array([1.0, NAN, 3.0, 4.0])})
    assert formatters.timeline(table, "count", 1, _ats(table)) == {"count": [
        {"at": "1970-01-01T00:00:00Z", "value": 1.0}, {"at": "1970-01-01T01:00:00Z", "value": 0.0},
        {"at": "1970-01-01T02:00:00Z", "value": 3.0}, {"at": "1970-01-01T03:00:00Z", "value": 4.0}]}
    sliced = formatters.timeline(table, "count", 2, _ats(table))["count"]
    assert [[p["value"] for p in chunk] for chunk in sliced] == [[1.0, 0.0], [3.0, 4.0]]
    assert [[p["value"] for p in chunk] for chunk in formatters.timeline(table, "count", 3, _ats(table))["count"]] == \
        [[0.0], [3.0], [4.0]]
    with pytest.raises(formatters.SlicesError):
        formatters.timeline(table, "count", 5, _ats(table))
    assert formatters.timeline(BucketTable(np.zeros(0, np.int64), {}), "count", 1, []) == {}


def test_category_formatting():
    cols = {"count": np.array([1.0, 2.0, 3.0]), "country.US": np.array([1.0, NAN, 2.0]),
            "country.UK": np.array([NAN, 1.0, NAN]), "country.EU.FR": np.array([5.0, NAN, NAN])}
    table = BucketTable(np.arange(3, dtype=np.int64) * H, cols)
    result, resolved = formatters.category(table, "country", 1)
    # One level: EU is a map, so it adds 0.0 (Trifle's to_float of a map), and it is not a numeric leaf.
    assert result == {"country.EU": 0.0, "country.UK": 1.0, "country.US": 3.0}
    assert resolved == ["country.EU", "country.UK", "country.US"]
    assert all(isinstance(v, float) for v in result.values())
    result, resolved = formatters.category(table, "count", 1)
    assert (result, resolved) == ({"count": 6.0}, ["count"])
    sliced, _ = formatters.category(table, "country", 2)  # 3 buckets, 2 slices: the first is dropped
    assert sliced == [{"country.EU": 0.0, "country.UK": 1.0, "country.US": 0.0},
                      {"country.EU": 0.0, "country.UK": 0.0, "country.US": 2.0}]
    assert formatters.category(table, "nothing", 1) == ({"nothing": 0.0}, ["nothing"])
    with pytest.raises(formatters.SlicesError):
        formatters.category(table, "country", 4)


def test_table_rows_are_oldest_first_with_null_where_missing():
    table = BucketTable(np.arange(2, dtype=np.int64) * H, {"a": np.array([NAN, 2.0]), "b": np.array([1.0, NAN])})
    assert formatters.table(table, ["b", "a"], _ats(table)) == {
        "columns": ["at", "b", "a"], "rows": [["1970-01-01T00:00:00Z", 1.0, None], ["1970-01-01T01:00:00Z", None, 2.0]]}
    assert formatters.table(table, [], _ats(table)) is None


# --- rows -------------------------------------------------------------------------------------------------

def test_a_write_becomes_one_tally_series_per_path_and_counts_on_the_system_key():
    w = parse_write({"key": "event::signup", "at": "2026-01-24T10:00:00Z", "operation": "assert",
                     "values": {"count": 2, "country": {"US": 1}}})
    rows = write_rows(7, w)
    series = {r[0]: r for r in rows.series.values()}
    by_name = sorted((r[2], r[10]) for r in series.values())
    assert by_name == [("__system__key__", '{"path":"count"}'), ("__system__key__", '{"path":"keys.event::signup"}'),
                       ("event::signup", '{"path":"count"}'), ("event::signup", '{"path":"country.US"}')]
    assert {r[3] for r in series.values()} == {TALLY} and {r[1] for r in series.values()} == {7}
    flags = {(series[p[1]][2], series[p[1]][10]): (p[4], p[9]) for p in rows.points}
    # The key's leaves set; the system key's counts always add.
    assert flags[("event::signup", '{"path":"count"}')] == (2, TALLY_SET)
    assert flags[("__system__key__", '{"path":"count"}')] == (1, 0)
    assert {p[3] for p in rows.points} == {w.at_ns}
    # Every series' resource and scope travel with the batch.
    assert all(r[8] in rows.resources and r[9] in rows.scopes for r in series.values())
    # The same key and path in another project is another series.
    other = write_rows(8, w)
    assert not set(other.series) & set(rows.series)
