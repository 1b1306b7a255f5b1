"""Unit tests for the tracing API's pure pieces: request parsing (api/posthog/tracing_query.py) and the SQL the
store builds from it (collector/store/tracing.py), the latter run on a real SQLite file made by the
store's own migrations and filled through the OTLP normalizer."""

from __future__ import annotations

import base64
import json
import sqlite3

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.api.posthog import tracing_query as tq
from otelite.api.errors import ApiError
from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.store import tracing as st
from otelite.collector.store.db import connect_reader, prepare_database
from otelite.collector.store.span_counts import count_spans
from otelite.collector.store.spans import insert_spans
from otelite.collector.store.records import RESOURCE_COLUMNS, SCOPE_COLUMNS
from otelite.exporters.forwarding.rows import _any_value

S = 1_000_000_000
MS = 1_000_000
NOW = 1_700_000_000 * S  # 2023-11-14T22:13:20Z


def _bad(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    assert info.value.status.startswith("400")
    return info.value


# --- dates ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    # PostHog's relative_date_parse: M minutes, m months (NOW is 2023-11-14T22:13:20Z).
    ("-30M", NOW - 1800 * S), ("-90s", NOW - 90 * S), ("-6h", NOW - 6 * 3600 * S), ("-7d", NOW - 7 * 86400 * S),
    ("-2w", NOW - 14 * 86400 * S), ("30M", NOW - 1800 * S), ("-1q", NOW - 13 * 7 * 86400 * S),
    ("-3m", NOW - (31 + 30 + 31) * 86400 * S), ("-1y", NOW - 365 * 86400 * S),  # 14 Aug 2023, 14 Nov 2022
    ("-1dStart", NOW - (86400 + 22 * 3600 + 13 * 60 + 20) * S), ("dStart", NOW - (22 * 3600 + 13 * 60 + 20) * S),
    ("2023-11-14T22:13:20Z", NOW), ("2023-11-14T23:13:20+01:00", NOW), ("2023-11-14T22:13:20.5Z", NOW + S // 2),
    ("2023-11-14T22:13:20.000000007Z", NOW + 7), ("2023-11-14", NOW - (22 * 3600 + 13 * 60 + 20) * S),
])
def test_parse_date(text, expected):
    assert tq.parse_date(text, field="dateRange.date_from", now_ns=NOW) == expected


def test_naive_iso_dates_are_in_the_project_timezone():
    assert tq.parse_date("2023-11-14T23:13:20", field="f", now_ns=NOW, timezone="Europe/Paris") == NOW
    assert tq.parse_date("2023-11-14T22:13:20", field="f", now_ns=NOW, timezone="UTC") == NOW


@pytest.mark.parametrize("text", ["yesterday", "-1x", "-h", "-5H", "", "12:00", 5, None, "-5 m", "2023-13-01"])
def test_parse_date_rejects(text):
    e = _bad(tq.parse_date, text, field="dateRange.date_to", now_ns=NOW)
    assert e.message.startswith("dateRange.date_to: ") and e.attr == "dateRange"


def test_parse_date_range_defaults_and_json():
    kw = dict(now_ns=NOW, timezone="UTC")
    assert tq.parse_date_range(None, default_from="-1h", **kw) == (NOW - 3600 * S, NOW)
    assert tq.parse_date_range({"date_from": None, "date_to": None}, default_from="-1h", **kw) == (NOW - 3600 * S, NOW)
    assert tq.parse_date_range(None, default_from=None, **kw) == (None, None)  # trace view: everything
    assert tq.parse_date_range({"date_from": "all"}, default_from="-1h", **kw) == (None, NOW)  # all retained
    assert _bad(tq.parse_sparkline, {"query": {"dateRange": {"date_from": "all"}}}, 1, "UTC", NOW).attr == "dateRange"
    assert tq.parse_date_range({"date_to": "-1h"}, default_from=None, **kw) == (None, NOW - 3600 * S)
    assert tq.parse_date_range('{"date_from": "-2h", "date_to": "-1h"}', default_from="-1h", **kw) == \
        (NOW - 7200 * S, NOW - 3600 * S)
    assert tq.parse_date_range("", default_from="-1h", **kw) == (NOW - 3600 * S, NOW)
    assert "not valid JSON" in _bad(tq.parse_date_range, "{", default_from="-1h", **kw).message
    assert "date_from is after date_to" in _bad(tq.parse_date_range, {"date_from": "-1h", "date_to": "-2h"},
                                                default_from=None, **kw).message


def test_iso_rendering():
    assert tq.iso(NOW + 123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert tq.iso(NOW + 123_456_789, 9) == "2023-11-14T22:13:20.123456789Z"
    assert tq.iso(0) == "1970-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("window_s,bucket_s", [
    (60, 1), (300, 5), (600, 10), (1800, 60), (3600, 60), (6 * 3600, 300), (12 * 3600, 900), (86400, 1800),
    (2 * 86400, 3600), (7 * 86400, 14400), (30 * 86400, 43200), (365 * 86400, 86400)])
def test_sparkline_bucket_ladder(window_s, bucket_s):
    assert tq.bucket_seconds(window_s * S) == bucket_s


# --- cursors and scalars --------------------------------------------------------------------------------

def test_cursor_round_trip_keeps_nanoseconds():
    cursor = tq.encode_cursor(NOW + 987_654_321, bytes.fromhex("00112233445566ff"))
    assert json.loads(base64.b64decode(cursor)) == {"timestamp": "2023-11-14T22:13:20.987654321Z",
                                                    "span_id": "00112233445566ff"}
    assert tq.decode_cursor(cursor) == (NOW + 987_654_321, bytes.fromhex("00112233445566ff"))
    # A cursor written by hand with microseconds, URL-safe and unpadded, works too.
    doc = base64.urlsafe_b64encode(b'{"timestamp":"2023-11-14T22:13:20.5Z","span_id":"ffffffffffffffff"}')
    assert tq.decode_cursor(doc.decode().rstrip("=")) == (NOW + S // 2, b"\xff" * 8)
    assert tq.decode_cursor(None) is None and tq.decode_cursor("") is None
    encoded = [base64.b64encode(doc).decode() for doc in (
        b"[]", b'{"timestamp":"x","span_id":"00"}', b'{"timestamp":"2023-11-14T22:13:20Z","span_id":"abc"}')]
    for bad in ["nope", 7, *encoded]:
        assert _bad(tq.decode_cursor, bad).attr == "after"


def test_parse_int():
    assert tq.parse_int(None, field="limit", default=100) == 100
    assert tq.parse_int("25", field="limit", default=100) == 25
    assert tq.parse_int(1000, field="limit", default=100, minimum=1, maximum=1000) == 1000
    for bad in [1001, 0, True, 1.5, "1e3", [1]]:
        assert _bad(tq.parse_int, bad, field="limit", default=100, minimum=1, maximum=1000).attr == "limit"


def test_span_query_defaults_and_order():
    q = tq.parse_span_query({}, 3, "UTC", NOW)
    assert q.selection == st.Selection(3, NOW - 3600 * S, NOW, roots_only=True)
    assert (q.order, q.limit, q.offset, q.after) == (st.SpanOrder("timestamp", True), 100, 0, None)
    order = lambda **kw: tq.parse_order(kw)  # noqa: E731
    assert order(orderBy="duration", orderDirection="asc") == st.SpanOrder("duration", False)
    assert order(orderBy="earliest") == st.SpanOrder("timestamp", False)
    assert order(orderDirection="latest") == st.SpanOrder("timestamp", True)
    assert order(orderBy="latest", orderDirection="ASC") == st.SpanOrder("timestamp", False)
    cursor = tq.encode_cursor(NOW, b"\x01" * 8)
    # A cursor is a position in timestamp order: with duration order it would be ignored, so it is refused.
    assert _bad(tq.parse_span_query, {"query": {"orderBy": "duration", "after": cursor}}, 1, "UTC", NOW).attr == "after"
    assert tq.parse_span_query({"query": {"orderBy": "duration", "after": None, "offset": 5}}, 1, "UTC", NOW).offset == 5
    s = tq.parse_sparkline({"query": {"dateRange": {"date_from": "-24h"}}}, 1, "UTC", NOW)
    assert (s.bucket_ns, s.distinct_traces, s.selection.roots_only) == (1800 * S, False, False)
    assert tq.parse_sparkline({"query": {"rootSpans": True}}, 1, "UTC", NOW).distinct_traces is True
    assert "too long" in _bad(tq.parse_sparkline, {"query": {"dateRange": {"date_from": "-300w"}}},
                              1, "UTC", NOW).message


# --- filters --------------------------------------------------------------------------------------------

def _f(key, op, value=None, kind="span"):
    out = {"key": key, "type": kind, "operator": op}
    if value is not None:
        out["value"] = value
    return out


def test_filter_group_shapes():
    a, b = _f("name", "exact", "x"), _f("http.method", "exact", ["GET"], "span_attribute")
    flat = tq.parse_filter_group([a, b])
    assert flat == st.Group("AND", (st.Filter("span", "name", "exact", ("x",)),
                                    st.Filter("attribute", "http.method", "exact", ("GET",))))
    nested = tq.parse_filter_group({"type": "OR", "values": [{"type": "and", "values": [a]}, b]})
    assert nested == st.Group("OR", (st.Group("AND", (flat.items[0],)), flat.items[1]))
    assert tq.parse_filter_group(a) == flat.items[0]
    assert tq.parse_filter_group(None) is None
    # Half-edited filters (no value) are dropped.
    assert tq.parse_filter_group([_f("name", "exact"), _f("name", "icontains", [])]) == st.Group("AND", ())


def test_filter_value_normalization():
    def one(f):
        return tq.parse_filter_group(f)
    assert one(_f("status_code", "exact", ["OK", "Error"])).values == (0, 1, 2)
    assert one(_f("status_code", "is_not", "ok")).values == (0, 1)
    assert one(_f("kind", "exact", ["Server", "SPAN_KIND_CLIENT", "4", 5])).values == (2, 3, 4, 5)
    assert one(_f("duration", "gt", "1.5")).values == (1_500_000,)
    assert one(_f("duration", "lt", 0.0000005)).values == (0.5,)
    assert one(_f("trace_id", "exact", "AB" * 16)).values == (b"\xab" * 16,)
    assert one(_f("trace_id", "icontains", "AB")).values == ("AB",)
    assert one(_f("k", "exact", [True, 200, 1.5, "x"], "span_attribute")).values == ("true", "200", "1.5", "x")
    assert one(_f("k", "gt", "10", "span_resource_attribute")) == st.Filter("resource", "k", "gt", (10,))
    assert one(_f("k", "is_set", None, "span_attribute")) == st.Filter("attribute", "k", "is_set")
    # Beyond SQLite's 64-bit integers: compared as a float (it overflowed the query before: a 500).
    assert one(_f("duration", "gt", 10**30)).values == (1e36,)
    assert one(_f("k", "lt", str(-10**20), "span_attribute")).values == (-1e20,)
    assert one(_f("status_code", "exact", 2**63)).values == (float(2**63),)


@pytest.mark.parametrize("f,message", [
    (_f("nope", "exact", 1), "filterGroup.key: unknown span key 'nope'"),
    (_f("name", "contains", "x"), "filterGroup.operator: unknown operator 'contains'"),
    (_f("duration", "regex", "1"), "regex does not apply to span key 'duration'"),
    (_f("k", "regex", "[a-", "span_attribute"), "filterGroup.value: invalid regex '[a-'"),
    # RE2 (linear time) has no backreferences or look-arounds: such patterns are refused, never run.
    (_f("k", "regex", r"(a)\1", "span_attribute"), "filterGroup.value: invalid regex '(a)\\\\1'"),
    (_f("name", "not_regex", "(?=x)"), "filterGroup.value: invalid regex '(?=x)'"),
    (_f("k", "lt", ["1", "2"], "span_attribute"), "lt takes one number"),
    (_f("k", "exact", [{"a": 1}], "span_attribute"), "expected a string or number"),
    (_f("status_code", "gt", "Error"), "gt needs a number"),
    (_f("status_code", "exact", "Fine"), "unknown status code"),
    (_f("kind", "exact", "Sideways"), "unknown span kind"),
    (_f("span_id", "exact", "abc"), "expected 16 hex characters"),
    ({"key": "", "type": "span"}, "filterGroup.key: expected a non-empty string"),
    ({"key": "x", "operator": "exact"}, "filterGroup.type: expected span, span_attribute"),
    (5, "filterGroup: expected a filter"),
    ({"type": "AND", "values": "x"}, "filterGroup.values: expected a list"),
])
def test_filter_errors(f, message):
    e = _bad(tq.parse_filter_group, f)
    assert message in e.message and e.attr == "filterGroup"


def test_filter_limits():
    deep: object = _f("name", "exact", "x")
    for _ in range(tq.MAX_DEPTH):
        deep = {"type": "AND", "values": [deep]}
    assert "deeper than" in _bad(tq.parse_filter_group, deep).message
    many = [_f("name", "exact", str(i)) for i in range(tq.MAX_FILTERS + 1)]
    assert "more than" in _bad(tq.parse_filter_group, many).message


def test_user_values_never_reach_sql_text():
    evil = "x'); DROP TABLE spans; --"
    cond = st.Group("OR", (st.Filter("attribute", evil, "exact", (evil,)),
                           st.Filter("resource", 'a"b', "icontains", (evil,)),
                           st.Filter("span", "name", "regex", (evil,))))
    sql = st.compile_where(st.Selection(1, 0, 10, services=(evil,), where=cond))
    assert evil not in sql.text and "DROP" not in sql.text and 'a"b' not in sql.text
    assert sql.text.count("?") == len(sql.params)
    assert sql.params.count(evil) == 4


# --- SQL on a real store --------------------------------------------------------------------------------

def _request(spans: list[dict], resource: dict) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in resource.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    scope = rs.scope_spans.add()
    for s in spans:
        sp = scope.spans.add()
        sp.trace_id, sp.span_id, sp.name = s["trace"].to_bytes(16, "big"), s["id"].to_bytes(8, "big"), s["name"]
        if s.get("parent"):
            sp.parent_span_id = s["parent"].to_bytes(8, "big")
        sp.start_time_unix_nano, sp.end_time_unix_nano = s["start"], s["end"]
        sp.status.code, sp.kind = s.get("status", 0), s.get("kind", 1)
        for k, v in s.get("attrs", {}).items():
            kv = sp.attributes.add()
            if isinstance(v, bool):
                kv.value.bool_value = v
            elif isinstance(v, int):
                kv.value.int_value = v
            elif isinstance(v, float):
                kv.value.double_value = v
            else:
                kv.value.string_value = v
            kv.key = k
    return req


def _ins(table: str, cols: tuple[str, ...], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _insert(path, req: ExportTraceServiceRequest, project_id: int = 1) -> None:
    """What the writer does with a batch (same column orders, same rollup upserts)."""
    b = traces_to_batch(req, project_id)
    conn = sqlite3.connect(path)
    with conn:
        ins = _ins
        conn.executemany(ins("resources", RESOURCE_COLUMNS, "INSERT OR IGNORE"), list(b.resources.values()))
        conn.executemany(ins("scopes", SCOPE_COLUMNS, "INSERT OR IGNORE"), list(b.scopes.values()))
        insert_spans(conn, b.spans)  # the writer's own span insert (rowids and trace-index runs)
        count_spans(conn, b.spans)  # and its span counts by service (span_counts.py)
        conn.executemany("INSERT INTO span_attribute_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                         "count = count + excluded.count", [k + (n,) for k, n in b.span_attribute_keys.items()])
        conn.executemany("INSERT INTO span_attribute_values VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                         "count = count + excluded.count", [k + (n,) for k, n in b.span_attribute_values.items()])
    conn.close()


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "t.db")
    prepare_database(path)
    spans = [
        {"trace": 1, "id": 1, "name": "root", "start": NOW, "end": NOW + 100 * MS, "kind": 2,
         "attrs": {"http.status_code": 200, "ok": True, "ratio": 0.5, "note": "100% _done_", 'we"ird': "q"}},
        {"trace": 1, "id": 2, "parent": 1, "name": "child", "start": NOW + 10 * MS, "end": NOW + 20 * MS,
         "status": 2, "attrs": {"http.status_code": "404", "ok": False, "note": "1000 done"}},
        {"trace": 2, "id": 3, "name": "other", "start": NOW + 3600 * S, "end": NOW + 3601 * S,
         "attrs": {"ratio": "7.5"}},
    ]
    _insert(path, _request(spans[:2], {"service.name": "api", "env": "prod"}))
    _insert(path, _request(spans[2:], {"service.name": "db"}))
    _insert(path, _request([{"trace": 9, "id": 9, "name": "root", "start": NOW, "end": NOW + 1}],
                           {"service.name": "api"}), project_id=2)  # another project: never visible
    conn = connect_reader(path)
    yield conn
    conn.close()


def _names(conn, where=None, **sel) -> list[str]:
    sel.setdefault("project_id", 1)
    rows, _ = st.find_spans(conn, st.Selection(where=where, **sel), st.SpanOrder("timestamp", False), 100)
    return [r.name for r in rows]


@pytest.mark.parametrize("f,expected", [
    (st.Filter("attribute", "http.status_code", "exact", ("200", "404")), ["root", "child"]),
    (st.Filter("attribute", "ok", "exact", ("false",)), ["child"]),
    (st.Filter("attribute", "ok", "is_not", ("true",)), ["child", "other"]),  # absent counts as "not"
    (st.Filter("attribute", "ratio", "gt", (1,)), ["other"]),  # a numeric string compares as a number
    (st.Filter("attribute", "ratio", "lt", (1,)), ["root"]),
    (st.Filter("attribute", "note", "icontains", ("0% _D",)), ["root"]),  # % and _ are literal
    (st.Filter("attribute", "note", "not_icontains", ("DONE",)), ["other"]),
    (st.Filter("attribute", "note", "regex", (r"^\d+ done$",)), ["child"]),
    (st.Filter("attribute", "note", "not_regex", (r"^\d+ done$",)), ["root", "other"]),
    (st.Filter("attribute", 'we"ird', "exact", ("q",)), ["root"]),  # a key json paths cannot quote
    (st.Filter("attribute", 'we"ird', "is_set"), ["root"]),
    (st.Filter("attribute", "ratio", "is_not_set"), ["child"]),
    (st.Filter("resource", "env", "exact", ("prod",)), ["root", "child"]),
    (st.Filter("resource", "env", "is_not_set"), ["other"]),
    (st.Filter("span", "duration", "gt", (50 * MS,)), ["root", "other"]),
    (st.Filter("span", "trace_id", "exact", ((2).to_bytes(16, "big"),)), ["other"]),
    (st.Filter("span", "span_id", "regex", ("2$",)), ["child"]),
    (st.Filter("span", "status_code", "is_not", (0, 1)), ["child"]),
    (st.Filter("span", "kind", "lt", (2,)), ["child", "other"]),
])
def test_filters_on_sqlite(store, f, expected):
    assert _names(store, f) == expected


def test_selection_terms_and_keyset(store):
    assert _names(store) == ["root", "child", "other"]
    assert _names(store, roots_only=True) == ["root", "other"]
    assert _names(store, services=("db",)) == ["other"]
    assert _names(store, status_codes=(2,)) == ["child"]
    assert _names(store, start_ns=NOW + 10 * MS, end_ns=NOW + 3600 * S) == ["child", "other"]  # inclusive
    assert _names(store, trace_id=(1).to_bytes(16, "big")) == ["root", "child"]
    assert _names(store, project_id=2) == ["root"]
    sel = st.Selection(1)
    rows, more = st.find_spans(store, sel, st.SpanOrder(), 1)
    assert [r.name for r in rows] == ["other"] and more
    rows, more = st.find_spans(store, sel, st.SpanOrder(), 5, after=(rows[0].start_ns, rows[0].span_id))
    assert [r.name for r in rows] == ["child", "root"] and not more
    rows, _ = st.find_spans(store, sel, st.SpanOrder("duration", True), 5)
    assert [r.name for r in rows] == ["other", "root", "child"]


def test_query_plans_use_the_intended_indexes(store):
    def plan(q: st.Sql) -> str:
        return " | ".join(r[3] for r in store.execute("EXPLAIN QUERY PLAN " + q.text, q.params))
    roots = st.compile_span_list(st.Selection(1, NOW, NOW + S, roots_only=True), st.SpanOrder(), 101)
    assert "spans_roots_by_time" in plan(roots) and "TEMP B-TREE" not in plan(roots)
    by_trace = st.compile_span_list(st.Selection(1, NOW, NOW + S, trace_id=b"\x01" * 16, roots_only=True),
                                    st.SpanOrder(), 101)
    # Issue 16: the trace's runs (primary key), then its spans by rowid; no scan of a time range.
    text = plan(by_trace)
    assert "SEARCH span_trace_runs USING PRIMARY KEY (trace_id=?)" in text, text
    assert "SEARCH s USING INTEGER PRIMARY KEY (rowid=?)" in text, text
    assert "spans_by_time" not in text and "spans_roots" not in text, text


def test_sparkline_counts_clip_buckets_to_the_window(store):
    sel = st.Selection(1, NOW + 15 * MS, NOW + 3600 * S)
    counts = st.span_counts(store, sel, 1800 * S)
    assert counts == [(NOW // (1800 * S) * 1800 * S + 3600 * S, "db", 1)]  # "root", "child" start before
    sel = st.Selection(1, NOW, NOW + 3600 * S)
    assert sorted(st.span_counts(store, sel, 60 * S)) == [(NOW // (60 * S) * 60 * S, "api", 2),
                                                          ((NOW + 3600 * S) // (60 * S) * 60 * S, "db", 1)]
    roots = st.Selection(1, NOW, NOW + 3600 * S, roots_only=True)
    assert sum(n for _, _, n in st.span_counts(store, roots, 60 * S, distinct_traces=True)) == 2
    results = tq.sparkline_results(st.span_counts(store, sel, 1800 * S),
                                   tq.SparklineQuery(sel, 1800 * S, False))
    assert [r["count"] for r in results] == [2, 0, 1]
    assert results[1] == {"time": tq.iso((NOW // (1800 * S) + 1) * 1800 * S), "service": "", "count": 0}


def test_pickers_on_sqlite(store):
    assert st.service_names(store, 1, NOW, NOW + 3600 * S) == ["api", "db"]
    # Same hour in the rollup, but no span starts in the window: exact to the nanosecond.
    assert st.service_names(store, 1, NOW + 101 * MS, NOW + 3600 * S - 1) == []
    assert st.service_names(store, 1, NOW, NOW + S, "P") == ["api"]
    keys, total = st.attribute_keys(store, 1, "span", None, 100, 0)
    assert keys == ["http.status_code", "note", "ok", "ratio", 'we"ird'] and total == 5  # ties by name
    assert st.attribute_keys(store, 1, "span", "AT", 1, 1) == (["ratio"], 2)  # http.status_code, ratio
    assert st.attribute_keys(store, 1, "resource", None, 10, 0) == (["service.name", "env"], 2)
    assert st.attribute_values(store, 1, "span", "http.status_code", None, 10, 0) == ["200", "404"]
    assert st.attribute_values(store, 1, "resource", "service.name", "A", 10, 0) == ["api"]
    assert st.attribute_values(store, 2, "resource", "service.name", None, 10, 0) == ["api"]


def test_pickers_narrow_to_the_hours_of_a_window_and_leave_keys_out(store):
    """dateRange / excluded_properties / properties of PostHog's filter bar, on the hourly rollups: span 3
    ("ratio": "7.5") started an hour after the others."""
    first_hour, next_hour = (NOW, NOW + 100 * MS), (NOW + 3600 * S, NOW + 3600 * S)
    assert st.attribute_keys(store, 1, "span", None, 100, 0, window=next_hour) == (["ratio"], 1)
    keys, total = st.attribute_keys(store, 1, "span", None, 100, 0, window=first_hour)
    assert keys[:3] == ["http.status_code", "note", "ok"] and keys[3:] == ["ratio", 'we"ird'] and total == 5
    assert st.attribute_values(store, 1, "span", "ratio", None, 10, 0, window=first_hour) == ["0.5"]
    assert st.attribute_values(store, 1, "span", "ratio", None, 10, 0, window=next_hour) == ["7.5"]
    assert st.attribute_values(store, 1, "span", "ratio", None, 10, 0, window=(0, NOW - 3600 * S)) == []
    assert st.attribute_keys(store, 1, "span", None, 100, 0, exclude=("note", "ok")) == \
        (["http.status_code", "ratio", 'we"ird'], 3)
    assert st.attribute_keys(store, 1, "span", None, 100, 0, only=("ok", "nope")) == (["ok"], 1)
    assert st.attribute_keys(store, 1, "span", None, 100, 0, only=()) == ([], 0)


def test_picker_parameters_as_posthogs_filter_bar_sends_them():
    window = json.dumps({"date_from": "2023-11-14T22:00:00Z", "date_to": "2023-11-14T23:00:00Z"})
    sent = {"attribute_type": "span_attribute", "search_values": "true", "dateRange": window,
            "filterGroup": json.dumps({"type": "AND", "values": []}), "serviceNames": "[]", "search": "ht",
            "limit": "50", "offset": "50", "excluded_properties": json.dumps(["a", "b"]), "properties": "x, y"}
    q = tq.parse_picker(sent, values=False, now_ns=NOW, timezone="UTC")
    assert (q.kind, q.search, q.limit, q.offset) == ("span", "ht", 50, 50)
    assert q.window == (1_699_999_200 * S, 1_700_002_800 * S) and q.exclude == ("a", "b") and q.only == ("x", "y")
    q = tq.parse_picker({"key": "k", "attribute_type": "resource"}, values=True, now_ns=NOW, timezone="UTC")
    assert (q.kind, q.key, q.window, q.exclude, q.only) == ("resource", "k", None, (), None)
    assert tq.parse_picker({"dateRange": '{"date_from": "all"}'}, values=False, now_ns=NOW,
                           timezone="UTC").window[1] == NOW
    for params, attr in (({"serach": "x"}, "serach"), ({"excluded_properties": "a,b"}, "excluded_properties"),
                         ({"excluded_properties": "[1]"}, "excluded_properties"),
                         ({"dateRange": '{"from": "-1h"}'}, "dateRange"), ({"dateRange": "-1h"}, "dateRange"),
                         ({"offset": "-1"}, "offset"), ({"limit": "0"}, "limit")):
        assert _bad(tq.parse_picker, params, values=False, now_ns=NOW, timezone="UTC").attr == attr, params
    # PostHog's DateRange: explicitDate (dates verbatim, as otelite always reads them); no other field.
    plain = tq.parse_date_range({"date_from": "-1h"}, now_ns=NOW, timezone="UTC", default_from=None)
    assert tq.parse_date_range({"date_from": "-1h", "explicitDate": True}, now_ns=NOW, timezone="UTC",
                               default_from=None) == plain
    assert _bad(tq.parse_date_range, {"date_from": "-1h", "explicitDate": "yes"}, now_ns=NOW, timezone="UTC",
                default_from=None).attr.startswith("dateRange")
    # properties and excluded_properties belong to the key list, not to a key's values
    assert _bad(tq.parse_picker, {"key": "k", "properties": "a"}, values=True, now_ns=NOW,
                timezone="UTC").attr == "properties"


def test_self_times():
    spans = [(b"r", None, 0, 100), (b"a", b"r", 10, 40), (b"b", b"r", 30, 60), (b"c", b"r", 90, 130),
             (b"a1", b"a", 15, 20), (b"x", b"missing-parent", 5, 6)]
    assert st.self_times(spans) == {b"r": 40, b"a": 25, b"b": 30, b"c": 40, b"a1": 5, b"x": 1}
    # Children covering everything leave nothing; a child before its parent counts for nothing.
    assert st.self_times([(b"p", None, 10, 20), (b"k", b"p", 0, 30), (b"e", b"p", 0, 5)])[b"p"] == 0
    assert st.self_times([(b"p", None, 10, 20), (b"e", b"p", 0, 5)])[b"p"] == 10


# --- the attribute rollups' pre-check (cannot_match) ----------------------------------------------------

def _any(value, out) -> None:
    """Set AnyValue `out` from a Python value: the forwarders' own conversion (JSON-shaped values), and
    bytes, which stored JSON never holds (the normalizer writes them as base64 text)."""
    if isinstance(value, bytes):
        out.bytes_value = value
    else:
        out.CopyFrom(_any_value(value))


_ODD_VALUES = {"n": 200, "f": 1e20, "half": 0.5, "neg0": -0.0, "one": 1.0, "yes": True, "raw": b"\x01\x02\x03",
               "long": "x" * 300, "numeric_text": "1e+20", "word": "POST", "empty": "", "list": [1, "a"],
               "map": {"a": 1}, "uni": "héllo wörld", "spaced": " 5 ", 'we"ird': "q", "null_text": "null"}
HOUR0 = NOW // (3600 * S) * 3600 * S  # the odd store's first hour
_CANDIDATES = ("200", "200.0", "1e+20", "1.0e+20", "0.5", "-0.0", "0.0", "1.0", "1", "true", "false", "AQID",
               "x" * 300, "POST", "GET", "", '[1,"a"]', '{"a":1}', "héllo wörld", " 5 ", "5", "q", "null", "nope")


@pytest.fixture
def odd_store(tmp_path):
    """Spans over two hours whose attributes take every kind of value OTLP has."""
    path = str(tmp_path / "odd.db")
    prepare_database(path)
    for hour, keys in ((0, ("n", "f", "half", "neg0", "yes", "raw", "long", "word", "list", "uni", 'we"ird')),
                       (1, ("one", "numeric_text", "empty", "map", "spaced", "null_text", "word", "n"))):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        for k, v in (("service.name", "api"), ("env", "prod" if hour == 0 else "1.5")):
            kv = rs.resource.attributes.add()
            kv.key = k
            _any(v, kv.value)
        scope = rs.scope_spans.add()
        for i, key in enumerate(keys):
            sp = scope.spans.add()
            sp.trace_id, sp.span_id = (hour * 100 + i + 1).to_bytes(16, "big"), (hour * 100 + i + 1).to_bytes(8, "big")
            sp.name, sp.kind = f"{hour}:{key}", 1
            sp.start_time_unix_nano = HOUR0 + hour * 3600 * S + i * MS
            sp.end_time_unix_nano = sp.start_time_unix_nano + MS
            kv = sp.attributes.add()
            kv.key = key
            _any(_ODD_VALUES[key], kv.value)
        _insert(path, req)
    conn = connect_reader(path)
    yield conn
    conn.close()


def _scanned(conn, sel: st.Selection) -> list[str]:
    """find_spans' answer without the pre-check: its SQL run as it is."""
    q = st.compile_span_list(sel, st.SpanOrder("timestamp", False), 1000)
    return [st.SpanRow(*r).name for r in conn.execute(q.text, q.params)]


def test_rollup_precheck_never_drops_a_span_the_scan_finds(odd_store):
    windows = [(None, None), (HOUR0, HOUR0 + 3599 * S), (HOUR0 + 3600 * S, HOUR0 + 7200 * S),
               (HOUR0 - 7200 * S, HOUR0 - S), (HOUR0 + S, HOUR0 + 3601 * S)]
    ops = ("exact", "is_not", "is_set", "is_not_set", "icontains", "regex", "gt")
    filters = [st.Filter("attribute", key, op, () if op.endswith("set") else ((0,) if op == "gt" else (v,)))
               for key in [*_ODD_VALUES, "absent"] for op in ops for v in (_CANDIDATES if op == "exact" else ("1",))]
    filters += [st.Filter("resource", "env", "exact", (v,)) for v in ("prod", "1.5", "nope")]
    filters += [st.Filter("resource", "nope", "is_set")]
    conditions: list = list(filters)
    conditions += [st.Group("AND", (st.Filter("attribute", "word", "exact", ("POST",)), f)) for f in filters[::7]]
    conditions += [st.Group("OR", (st.Filter("attribute", "absent", "exact", ("x",)), f)) for f in filters[::5]]
    precheck_answered = 0
    for lo, hi in windows:
        for cond in conditions:
            sel = st.Selection(1, lo, hi, where=cond)
            expected = _scanned(odd_store, sel)
            got = [r.name for r in st.find_spans(odd_store, sel, st.SpanOrder("timestamp", False), 1000)[0]]
            assert got == expected, (lo, hi, cond)
            precheck_answered += st.cannot_match(odd_store, sel)
    assert precheck_answered > 100  # the pre-check does answer; the scans agree with it


def test_rollup_precheck_answers_from_keys_and_string_values(odd_store):
    def cannot(f, lo=None, hi=None) -> bool:
        return st.cannot_match(odd_store, st.Selection(1, lo, hi, where=f))

    assert cannot(st.Filter("attribute", "absent", "exact", ("x",)))
    assert cannot(st.Filter("attribute", "absent", "is_set"))
    assert not cannot(st.Filter("attribute", "absent", "is_not", ("x",)))  # a span without it matches
    assert not cannot(st.Filter("attribute", "absent", "is_not_set"))
    assert cannot(st.Filter("attribute", "word", "exact", ("GET",)))  # the key is there, that value is not
    assert not cannot(st.Filter("attribute", "word", "exact", ("GET", "POST")))
    # A value that a number could read as is left to the scan (SQLite renders 1e20 as 1.0e+20).
    assert not cannot(st.Filter("attribute", "f", "exact", ("1.0e+20",)))
    assert not cannot(st.Filter("attribute", "long", "exact", ("y" * 300,)))  # too long to be counted
    # Only the window's hours count: "one" was sent in the second hour alone.
    assert cannot(st.Filter("attribute", "one", "is_set"), HOUR0, HOUR0 + 3599 * S)
    assert not cannot(st.Filter("attribute", "one", "is_set"), HOUR0, HOUR0 + 3600 * S)
    assert not cannot(st.Filter("attribute", "word", "exact", ("POST",)))
    # Another project's rollup rows never answer for this one.
    assert st.cannot_match(odd_store, st.Selection(2, where=st.Filter("attribute", "word", "exact", ("POST",))))
    present, absent = st.Filter("attribute", "word", "is_set"), st.Filter("attribute", "absent", "is_set")
    assert cannot(st.Group("AND", (present, absent)))
    assert not cannot(st.Group("OR", (present, absent)))
    assert not cannot(st.Group("AND", ()))
