"""PostHog tracing requests → store selections, and stored spans → PostHog span JSON (posthog-tracing.md).

Pure functions: each takes the decoded request, the project and "now" and returns the typed query for
collector/store/tracing.py, or raises `bad_request` with a message that names the field. Nothing here
touches the database, so every rule is unit-testable.

    q = parse_span_query({"query": {"filterGroup": [...], "limit": 50}}, project, time.time_ns())
    rows, has_more = await store.read(find_spans, q.selection, q.order, q.limit, q.offset, q.after)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from otelite.api.errors import bad_request
from otelite.api.posthog import filters
from otelite.collector.store import comparisons
from otelite.collector import times
from otelite.collector.store.tracing import SPAN_KEYS, Condition, Filter, Group, Selection, SpanOrder, SpanRow

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TRACE_PAGE = 2000
SERVICE_NAMES_MAX = 1000
MAX_FILTERS = 100  # conditions in one filterGroup, all levels together
MAX_DEPTH = 8  # nesting of filter groups
MAX_SPARKLINE_BUCKETS = 2000
SPARKLINE_TARGET_BUCKETS = 50
SPARKLINE_TOP_SERVICES = 10
MAX_PREFETCH = 100
# The fields each body may hold (posthog-tracing.md, and the TraceSpansQuery fields of PostHog's
# products/tracing views); anything else → 400 naming it.
BODY_FIELDS = ("query", "client_query_id", "refresh")  # the last two only steer PostHog's query cache
INERT_FIELDS = ("kind", "version", "tags", "modifiers", "response")  # schema bookkeeping PostHog's views ignore
_FILTER_FIELDS = ("dateRange", "serviceNames", "statusCodes", "filterGroup")
QUERY_FIELDS = _FILTER_FIELDS + ("traceId", "rootSpans", "limit", "offset", "after", "orderBy", "orderDirection",
                                 "prefetchSpans", "flatSpans", "excludeAttributes")
SPARKLINE_FIELDS = QUERY_FIELDS
TRACE_FIELDS = _FILTER_FIELDS + ("offset",)
AGGREGATE_FIELDS = _FILTER_FIELDS + ("traceId", "rootSpans", "compareFilter", "limit", "offset")
TREE_FIELDS = _FILTER_FIELDS + ("traceId", "rootSpans", "compareFilter", "spanName", "serviceName")
AGGREGATE_DEFAULT_LIMIT = 100  # PostHog caps an unpaged aggregate too (DEFAULT_AGGREGATION_ROW_LIMIT)
AGGREGATE_MAX_ROWS = 5000  # PostHog's _ROW_LIMIT per period, for the tree as well
# posthog-tracing.md, "POST sparkline": window/50 rounded to the nearest of these (seconds).
BUCKET_LADDER_S = (1, 5, 10, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)

_NS = 1_000_000_000
_MAX_INT = 2**63 - 1  # SQLite INTEGER
_HEX = re.compile(r"^[0-9a-fA-F]*$")
KINDS = {"unspecified": 0, "internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS_NAMES = {"unset": (0,), "ok": (0, 1), "error": (2,)}  # "OK" means not an error (spec)
FILTER_TYPES = {"span": "span", "span_attribute": "attribute", "span_resource_attribute": "resource"}
FILTER_FIELDS = ("key", "type", "operator", "value", "label")  # `label` is the UI's display name
GROUP_FIELDS = ("type", "values")
DATE_RANGE_FIELDS = ("date_from", "date_to", "explicitDate")
ATTRIBUTE_TYPES = {"span": "span", "span_attribute": "span", "resource": "resource",
                   "span_resource_attribute": "resource"}
PROPERTY_FILTER_TYPE = {"span": "span_attribute", "resource": "span_resource_attribute"}


@dataclass(frozen=True, slots=True)
class SpanListQuery:
    selection: Selection
    order: SpanOrder
    limit: int
    offset: int
    after: tuple[int, bytes] | None  # (start_ns, span_id) from the cursor, timestamp order only
    prefetch: int | None = None  # prefetchSpans: spans per trace of each listed span, itself included
    exclude_attributes: bool = False


@dataclass(frozen=True, slots=True)
class SparklineQuery:
    selection: Selection  # always with a window
    bucket_ns: int
    distinct_traces: bool


@dataclass(frozen=True, slots=True)
class TraceQuery:
    selection: Selection  # names the trace
    offset: int


# --- dates ------------------------------------------------------------------------------------------------

def parse_date(value: Any, *, field: str, now_ns: int, timezone: str = "UTC") -> int:
    """A PostHog relative date (`-30M` minutes, `-6h`, `-7d`, `-3m` months, `-1dStart`; collector/times.py)
    or an ISO datetime (a naive one is in the project's timezone, as relative dates are) → nanoseconds."""
    try:
        return times.parse_time(value, times.zone(timezone), now_ns)
    except times.TimeError as e:
        raise bad_request(f"{field}: {e}", attr=field.split(".")[0]) from None


def parse_date_range(value: Any, *, now_ns: int, timezone: str, default_from: str | None,
                     field: str = "dateRange") -> tuple[int | None, int | None]:
    """`{"date_from", "date_to"}` → (start_ns or None, end_ns or None), both inclusive.

    date_to defaults to now when anything bounds the range; with no range at all and no default
    (trace view) both are None: every retained span. `date_from: "all"` is everything retained up to
    date_to (posthog-tracing.md): no start."""
    if value is None:
        value = {}
    if isinstance(value, str):  # GET endpoints: JSON in the query string
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise bad_request(f"{field}: not valid JSON (expected {{\"date_from\": \"-1h\", \"date_to\": null}})",
                              attr=field) from None
        if value is None:
            value = {}
    if not isinstance(value, dict):
        raise bad_request(f"{field}: expected an object like {{\"date_from\": \"-1h\", \"date_to\": null}}",
                          attr=field)
    # PostHog's DateRange (extra fields forbidden). explicitDate asks for the dates verbatim, without
    # rounding to an interval: what otelite always does, so either value gives the same answer.
    filters.check_fields(value, DATE_RANGE_FIELDS, field, field)
    _bool(value.get("explicitDate"), field=f"{field}.explicitDate", default=False)
    raw_from, raw_to = value.get("date_from"), value.get("date_to")
    raw_from = default_from if raw_from in (None, "") else raw_from
    if raw_from is None and raw_to in (None, ""):
        return None, None
    if raw_from == "all":
        raw_from = None
    start = None if raw_from is None else parse_date(raw_from, field=f"{field}.date_from", now_ns=now_ns,
                                                       timezone=timezone)
    end = now_ns if raw_to in (None, "") else parse_date(raw_to, field=f"{field}.date_to", now_ns=now_ns,
                                                         timezone=timezone)
    if start is not None and start > end:
        raise bad_request(f"{field}: date_from is after date_to", attr=field)
    return start, end


iso = times.iso_utc  # span times: ISO 8601 UTC, microseconds (nine digits in cursors)


# --- scalar fields ----------------------------------------------------------------------------------------

def parse_int(value: Any, *, field: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    """An integer field (JSON number or query-string text) within [minimum, maximum], and at most the
    largest 64-bit integer SQLite takes (a bigger offset is a 400, not an overflow in the query)."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(f"{field}: expected an integer, got {value!r}", attr=field)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise bad_request(f"{field}: must be {bound}, got {value}", attr=field)
    if value > _MAX_INT:
        raise bad_request(f"{field}: must be at most {_MAX_INT}, got {value}", attr=field)
    return value


def _bool(value: Any, *, field: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{field}: expected true or false, got {value!r}", attr=field)
    return value


def parse_hex_id(value: Any, *, field: str, size: int, attr: str | None = None) -> bytes:
    if not isinstance(value, str) or len(value) != size * 2 or not _HEX.match(value):
        raise bad_request(f"{field}: expected {size * 2} hex characters, got {value!r}", attr=attr or field)
    return bytes.fromhex(value)


def _strings(value: Any, *, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{field}: expected a list of strings", attr=field)
    return tuple(dict.fromkeys(value))


def _status_codes(value: Any, *, field: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2
                                              for v in value):
        raise bad_request(f"{field}: expected a list of OTel status codes (0 unset, 1 ok, 2 error)", attr=field)
    return tuple(dict.fromkeys(value))


def parse_attribute_type(value: Any, *, field: str = "attribute_type") -> str:
    """`span` | `resource` (also the filter spellings span_attribute | span_resource_attribute)."""
    if value in (None, ""):
        return "span"
    kind = ATTRIBUTE_TYPES.get(value) if isinstance(value, str) else None
    if kind is None:
        raise bad_request(f"{field}: expected span or resource, got {value!r}", attr=field)
    return kind


# --- the pickers: GET service-names, attributes, values ------------------------------------------------------

# Query parameters each picker reads (posthog-tracing.md; PostHog's SpansViewSet), and those PostHog's own
# filter bar sends along with every picker request that PostHog's views read none of: `search_values`,
# `filterGroup`, `serviceNames` (its TracingFilterBar's endpointFilters). Anything else → 400 naming it.
SERVICE_NAMES_PARAMS = ("dateRange", "search")
ATTRIBUTES_PARAMS = ("attribute_type", "search", "limit", "offset", "dateRange", "excluded_properties",
                     "properties")
VALUES_PARAMS = ("key", "attribute_type", "value", "limit", "offset", "dateRange")
PICKER_INERT_PARAMS = ("search_values", "filterGroup", "serviceNames")


@dataclass(frozen=True, slots=True)
class PickerQuery:
    kind: str  # span | resource
    search: str | None
    limit: int
    offset: int
    window: tuple[int, int] | None  # [start_ns, end_ns], None: every retained span
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    key: str | None = None  # values only


def check_params(names, allowed: tuple[str, ...]) -> None:
    """400 naming the first query parameter that is neither read nor one of PostHog's inert ones."""
    for name in names:
        if name not in allowed and name not in PICKER_INERT_PARAMS:
            raise bad_request(f"unknown query parameter {name!r} (expected {', '.join(allowed)})", attr=name)


def parse_picker(params: dict[str, str], *, values: bool, now_ns: int, timezone: str) -> PickerQuery:
    """GET attributes (`values=False`) or values: query parameters → PickerQuery. `dateRange` (JSON, as
    PostHog's front end sends it) narrows to the hours it overlaps (the rollup is hourly); without it
    every retained span (posthog-tracing.md)."""
    check_params(params, VALUES_PARAMS if values else ATTRIBUTES_PARAMS)
    kind = parse_attribute_type(params.get("attribute_type"))
    limit = parse_int(params.get("limit"), field="limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = parse_int(params.get("offset"), field="offset", default=0)
    start, end = parse_date_range(params.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from=None)
    window = None if start is None and end is None else (times.MIN_NS if start is None else start, end)
    if values:
        return PickerQuery(kind, params.get("value") or None, limit, offset, window, key=params.get("key"))
    exclude = filters.key_list(params.get("excluded_properties"), "excluded_properties", json_list=True) or ()
    only = filters.key_list(params.get("properties"), "properties", json_list=False)
    return PickerQuery(kind, params.get("search") or None, limit, offset, window, exclude, only)


# --- filters ----------------------------------------------------------------------------------------------

def parse_filter_group(value: Any, field: str = "filterGroup") -> Condition | None:
    """A flat list of filters (AND) or nested `{"type": "AND"|"OR", "values": [...]}` groups → Condition.

    A filter whose value is missing or an empty list (a half-edited filter in a UI) constrains nothing.
    """
    if value is None:
        return None
    count = [0]
    cond = _condition(value, field, 1, count)
    return cond


def _condition(value: Any, path: str, depth: int, count: list[int]) -> Condition | None:
    if depth > MAX_DEPTH:
        raise bad_request(f"{path}: filter groups nest deeper than {MAX_DEPTH} levels", attr="filterGroup")
    if isinstance(value, list):
        return _group("AND", value, path, depth, count)
    if isinstance(value, dict):
        if "key" in value:
            count[0] += 1
            if count[0] > MAX_FILTERS:
                raise bad_request(f"filterGroup: more than {MAX_FILTERS} filters", attr="filterGroup")
            return parse_filter(value, path)
        if "values" in value:
            filters.check_fields(value, GROUP_FIELDS, path, "filterGroup")
            op = value.get("type", "AND")
            if not isinstance(op, str) or op.upper() not in ("AND", "OR"):
                raise bad_request(f"{path}.type: expected AND or OR, got {op!r}", attr="filterGroup")
            items = value["values"]
            if not isinstance(items, list):
                raise bad_request(f"{path}.values: expected a list", attr="filterGroup")
            return _group(op.upper(), items, f"{path}.values", depth, count)
    raise bad_request(f"{path}: expected a filter {{key, type, operator, value}} or a group "
                      f"{{type: AND|OR, values: [...]}}", attr="filterGroup")


def _group(op: str, items: list, path: str, depth: int, count: list[int]) -> Group:
    parsed = (_condition(item, f"{path}[{i}]", depth + 1, count) for i, item in enumerate(items))
    return Group(op, tuple(c for c in parsed if c is not None))


def parse_filter(value: dict, path: str) -> Filter | None:
    """One PostHog span property filter → Filter (api/posthog/filters.py reads the operator and value)."""
    filters.check_fields(value, FILTER_FIELDS, path, "filterGroup")
    key, kind = value.get("key"), value.get("type")
    if not isinstance(key, str) or not key:
        raise bad_request(f"{path}.key: expected a non-empty string", attr="filterGroup")
    if "\x00" in key:  # SQLite's JSON functions end a key at a NUL: such a key can never be found
        raise bad_request(f"{path}.key: an attribute key cannot contain a NUL character", attr="filterGroup")
    source = FILTER_TYPES.get(kind) if isinstance(kind, str) else None
    if source is None:
        raise bad_request(f"{path}.type: expected span, span_attribute or span_resource_attribute, got {kind!r}",
                          attr="filterGroup")
    op = filters.operator(value.get("operator", "exact"), f"{path}.operator", "filterGroup")
    if source == "span":
        if key not in SPAN_KEYS:
            raise bad_request(f"{path}.key: unknown span key {key!r} (expected one of {', '.join(SPAN_KEYS)})",
                              attr="filterGroup")
        if op not in SPAN_KEYS[key]:
            raise bad_request(f"{path}.operator: {op} does not apply to span key {key!r}", attr="filterGroup")
    vpath = f"{path}.value"
    if source != "span":
        values = filters.comparison_values(op, value.get("value"), vpath, "filterGroup")
    else:
        values = _span_values(key, op, value.get("value"), vpath)
    if values is None:  # a filter without a value (a half-edited filter in a UI) constrains nothing
        return None
    return Filter(source, key, op, values)


def _span_values(key: str, op: str, raw: Any, path: str) -> tuple | None:
    """The values of a filter on a span key, in the store's units: id bytes for exact/is_not on ids,
    nanoseconds for duration (milliseconds in the API), ints for kind, status_code and is_root_span."""
    if op in comparisons.PRESENCE:
        return ()
    items = filters.items(raw)
    if not items:
        return None
    attr = "filterGroup"
    if key in ("trace_id", "span_id", "parent_span_id") and op in comparisons.EQUALITY:
        size = 16 if key == "trace_id" else 8
        return tuple(dict.fromkeys(parse_hex_id(v, field=path, size=size, attr=attr) for v in items))
    if key in ("trace_id", "span_id", "parent_span_id", "name", "service_name"):
        return filters.comparison_values(op, items, path, attr)
    if key == "is_root_span":
        return tuple(dict.fromkeys(_flag(v, path) for v in items))
    convert = {"duration": _duration_ns, "kind": _kind, "status_code": _status_number}[key]
    if op in comparisons.NUMERIC:
        return filters.numbers(op, items, path, attr, convert)
    if key == "status_code":  # OK means {0, 1}
        return tuple(dict.fromkeys(c for v in items for c in _status_codes_of(v, path, op)))
    return tuple(dict.fromkeys(convert(v, path, op, attr) for v in items))


def _duration_ns(v: Any, path: str, op: str, attr: str) -> int | float:
    ns = filters.number(v, path, op, attr) * 1_000_000
    return filters.as_sql_number(int(ns)) if float(ns).is_integer() else ns


def _kind(v: Any, path: str, op: str, attr: str) -> int | float:
    if isinstance(v, str) and not re.fullmatch(r"\s*-?\d+\s*", v):
        name = v.strip().lower().removeprefix("span_kind_")
        if name not in KINDS:
            raise bad_request(f"{path}: unknown span kind {v!r} (expected 0-5 or Server, Client, Producer, "
                              f"Consumer, Internal, Unspecified)", attr=attr)
        return KINDS[name]
    return filters.number(v, path, op, attr)


def _status_number(v: Any, path: str, op: str, attr: str) -> int | float:
    if isinstance(v, str) and not re.fullmatch(r"\s*-?\d+\s*", v):
        raise bad_request(f"{path}: {op} needs a number, got {v!r} (OK and Error only go with exact and is_not)",
                          attr=attr)
    return filters.number(v, path, op, attr)


def _status_codes_of(v: Any, path: str, op: str) -> tuple:
    if isinstance(v, str) and not re.fullmatch(r"\s*-?\d+\s*", v):
        name = v.strip().lower().removeprefix("status_code_")
        if name not in STATUS_NAMES:
            raise bad_request(f"{path}: unknown status code {v!r} (expected 0, 1, 2, OK or Error)",
                              attr="filterGroup")
        return STATUS_NAMES[name]
    return (filters.number(v, path, op, "filterGroup"),)


def _flag(v: Any, path: str) -> int:
    """is_root_span's value: true/false, 1/0, or their texts."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return int(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return int(v.strip().lower() in ("true", "1"))
    raise bad_request(f"{path}: is_root_span takes true or false, got {v!r}", attr="filterGroup")


# --- request bodies ---------------------------------------------------------------------------------------

def _query_object(body: dict, fields: tuple[str, ...]) -> dict:
    """The body's `query` object, every field of it understood (a field that is not would be ignored,
    and it could change the answer)."""
    filters.check_fields(body, BODY_FIELDS, "body", "query")
    q = body.get("query", {})
    if q is None or q == "":  # an empty form field: no query, every default
        return {}
    if not isinstance(q, dict):
        raise bad_request("query: expected an object", attr="query")
    filters.check_fields(q, fields + INERT_FIELDS, "query", "query")
    return q


def _selection(q: dict, project_id: int, window: tuple[int | None, int | None], *, roots_default: bool,
               trace_id: bytes | None = None) -> Selection:
    if trace_id is None and q.get("traceId") not in (None, ""):
        trace_id = parse_hex_id(q["traceId"], field="traceId", size=16)
    return Selection(
        project_id=project_id, start_ns=window[0], end_ns=window[1],
        services=_strings(q.get("serviceNames"), field="serviceNames"),
        status_codes=_status_codes(q.get("statusCodes"), field="statusCodes"),
        trace_id=trace_id,
        roots_only=_bool(q.get("rootSpans"), field="rootSpans", default=roots_default),
        where=parse_filter_group(q.get("filterGroup")))


def parse_order(q: dict) -> SpanOrder:
    by, direction = q.get("orderBy"), q.get("orderDirection")
    descending = True
    if by in (None, "timestamp", "latest", "earliest", "duration"):
        descending = by != "earliest"
        by = "duration" if by == "duration" else "timestamp"
    else:
        raise bad_request(f"orderBy: expected timestamp or duration, got {by!r}", attr="orderBy")
    if direction is not None:
        d = direction.upper() if isinstance(direction, str) else None
        if d not in ("DESC", "ASC", "LATEST", "EARLIEST"):
            raise bad_request(f"orderDirection: expected DESC or ASC, got {direction!r}", attr="orderDirection")
        descending = d in ("DESC", "LATEST")
    return SpanOrder(by, descending)


def parse_span_query(body: dict, project_id: int, timezone: str, now_ns: int) -> SpanListQuery:
    """POST tracing/spans/query. `flatSpans` lists the matching spans themselves (rootSpans defaults to
    false then, and cannot be true); `prefetchSpans` adds spans of each listed span's trace;
    `excludeAttributes` leaves the attribute maps empty (docs/posthog-compatibility.md)."""
    q = _query_object(body, QUERY_FIELDS)
    window = parse_date_range(q.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from="-1h")
    flat = _bool(q.get("flatSpans"), field="flatSpans", default=False)
    prefetch = _prefetch(q.get("prefetchSpans"))
    if flat and q.get("rootSpans") is True:
        raise bad_request("rootSpans: flatSpans lists every matching span, root or not; send one of "
                          "rootSpans: true or flatSpans: true", attr="rootSpans")
    if flat and prefetch is not None:
        raise bad_request("prefetchSpans: flatSpans returns the matching spans themselves, without spans of "
                          "their traces; drop one of the two", attr="prefetchSpans")
    selection = _selection(q, project_id, window, roots_default=not flat)
    order = parse_order(q)
    limit = parse_int(q.get("limit"), field="limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    offset = parse_int(q.get("offset"), field="offset", default=0)
    after = decode_cursor(q.get("after"))
    if after is not None and order.by != "timestamp":
        # A cursor is a (timestamp, span_id) position; duration order pages with offset (nextCursor is null).
        raise bad_request("after: a cursor pages timestamp order; duration order pages with offset", attr="after")
    exclude = _bool(q.get("excludeAttributes"), field="excludeAttributes", default=False)
    return SpanListQuery(selection, order, limit, offset, after, prefetch, exclude)


def _prefetch(value: Any) -> int | None:
    """prefetchSpans: spans per trace, 1–100; PostHog caps a larger number at 100 (min(n, 100))."""
    if value is None:
        return None
    n = parse_int(value, field="prefetchSpans", default=1, minimum=1)
    return min(n, MAX_PREFETCH)


def parse_sparkline(body: dict, project_id: int, timezone: str, now_ns: int) -> SparklineQuery:
    """POST tracing/spans/sparkline: the query's filters, rootSpans false by default (PostHog's sparkline
    counts every matching span unless rootSpans is true; its span list shows root spans unless rootSpans
    is false: docs/posthog-compatibility.md). The list-only fields of a span query (order, paging,
    prefetch, attribute exclusion) are accepted, checked, and change no count."""
    q = _query_object(body, SPARKLINE_FIELDS)
    start, end = parse_date_range(q.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from="-1h")
    if start is None:
        raise bad_request("dateRange: a sparkline needs a window; date_from \"all\" has no start",
                          attr="dateRange")
    flat = _bool(q.get("flatSpans"), field="flatSpans", default=False)
    if flat and q.get("rootSpans") is True:
        raise bad_request("rootSpans: flatSpans counts every matching span, root or not; send one of "
                          "rootSpans: true or flatSpans: true", attr="rootSpans")
    parse_order(q)
    parse_int(q.get("limit"), field="limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    parse_int(q.get("offset"), field="offset", default=0)
    decode_cursor(q.get("after"))
    _prefetch(q.get("prefetchSpans"))
    _bool(q.get("excludeAttributes"), field="excludeAttributes", default=False)
    selection = _selection(q, project_id, (start, end), roots_default=False)
    bucket_ns = bucket_seconds(end - start) * _NS
    if end // bucket_ns - start // bucket_ns + 1 > MAX_SPARKLINE_BUCKETS:
        raise bad_request(f"dateRange: too long for a sparkline (more than {MAX_SPARKLINE_BUCKETS} buckets of "
                          f"{bucket_ns // _NS} s)", attr="dateRange")
    return SparklineQuery(selection, bucket_ns, selection.roots_only)


def parse_trace_request(trace_id: str, body: dict, project_id: int, timezone: str, now_ns: int) -> TraceQuery:
    """POST tracing/spans/trace/:trace_id (body fields at the top level, no `query` wrapper)."""
    tid = parse_hex_id(trace_id, field="trace_id", size=16)
    filters.check_fields(body, TRACE_FIELDS + INERT_FIELDS, "body", "body")
    window = parse_date_range(body.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from=None)
    q = {k: body.get(k) for k in ("serviceNames", "statusCodes", "filterGroup")}
    selection = _selection(q, project_id, window, roots_default=False, trace_id=tid)
    return TraceQuery(selection, parse_int(body.get("offset"), field="offset", default=0))


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    selection: Selection
    compare: Selection | None  # compareFilter's window, same filters
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class TreeQuery:
    selection: Selection
    compare: Selection | None
    span_name: str
    service_name: str | None


def parse_aggregate(body: dict, project_id: int, timezone: str, now_ns: int) -> AggregateQuery:
    """POST tracing/spans/aggregate: duration statistics per (service, span name) of the matching spans
    (every span unless rootSpans is true), by total duration, `limit`/`offset` pages of them."""
    q = _query_object(body, AGGREGATE_FIELDS)
    window = parse_date_range(q.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from="-1h")
    selection = _selection(q, project_id, window, roots_default=False)
    limit = parse_int(q.get("limit"), field="limit", default=AGGREGATE_DEFAULT_LIMIT, minimum=1,
                      maximum=AGGREGATE_MAX_ROWS)
    offset = parse_int(q.get("offset"), field="offset", default=0)
    return AggregateQuery(selection, _compare(q.get("compareFilter"), selection, timezone), limit, offset)


def parse_tree(body: dict, project_id: int, timezone: str, now_ns: int) -> TreeQuery:
    """POST tracing/spans/tree: the call tree under the spans named `spanName` (of `serviceName`, when
    given), as per-edge duration statistics."""
    q = _query_object(body, TREE_FIELDS)
    span_name = q.get("spanName")
    if not span_name or not isinstance(span_name, str):
        # PostHog's own message (products/tracing views: the join is unbounded without a span name)
        raise bad_request("`spanName` is required for tree aggregation queries.", attr="spanName")
    service = q.get("serviceName")
    if service is not None and not isinstance(service, str):
        raise bad_request(f"serviceName: expected a string, got {service!r}", attr="serviceName")
    window = parse_date_range(q.get("dateRange"), now_ns=now_ns, timezone=timezone, default_from="-1h")
    selection = _selection(q, project_id, window, roots_default=False)
    return TreeQuery(selection, _compare(q.get("compareFilter"), selection, timezone), span_name, service)


def _compare(value: Any, sel: Selection, timezone: str) -> Selection | None:
    """compareFilter `{compare, compare_to}` → the comparison window with the same filters, or None.
    Without compare_to the previous period of equal length (PostHog's QueryPreviousPeriodDateRange);
    with it both ends moved by that relative date (`-1d`, `-7d`, `-1m`: QueryCompareToDateRange)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("compareFilter: expected {compare: bool, compare_to: relative date}", attr="compareFilter")
    filters.check_fields(value, ("compare", "compare_to"), "compareFilter", "compareFilter")
    shift = value.get("compare_to")
    if shift is not None and not isinstance(shift, str):
        raise bad_request(f"compareFilter.compare_to: expected a relative date such as -1d, got {shift!r}",
                          attr="compareFilter")
    if not _bool(value.get("compare"), field="compareFilter.compare", default=False):
        return None  # compare_to only places a comparison that is asked for
    if sel.start_ns is None:
        raise bad_request("compareFilter: a comparison needs a window; date_from \"all\" has none",
                          attr="compareFilter")
    if shift in (None, ""):
        length = sel.end_ns - sel.start_ns
        start, end = sel.start_ns - length, sel.start_ns
    else:
        tz = times.zone(timezone)
        try:
            start = times.parse_relative(shift, tz, sel.start_ns) if isinstance(shift, str) else None
            end = times.parse_relative(shift, tz, sel.end_ns) if start is not None else None
        except times.TimeError as e:
            raise bad_request(f"compareFilter.compare_to: {e}", attr="compareFilter") from None
        if start is None or end is None:
            raise bad_request(f"compareFilter.compare_to: expected a relative date such as -1d or -7d, "
                              f"got {shift!r}", attr="compareFilter")
    if not times.MIN_NS <= start <= end <= times.MAX_NS:
        raise bad_request("compareFilter: the comparison window falls outside the times the store can hold",
                          attr="compareFilter")
    return Selection(sel.project_id, start, end, sel.services, sel.status_codes, sel.trace_id, sel.roots_only,
                     sel.where)


def render_aggregate(stats) -> dict:
    """One (service, name) row as PostHog's AggregatedSpanRow (durations in ns, as floats)."""
    p50, p95, p99, p999 = stats.quantiles
    return {"service_name": stats.group[0], "name": stats.group[1], "count": stats.count,
            "total_duration_nano": float(stats.total), "avg_duration_nano": stats.mean,
            "p50_duration_nano": p50, "p95_duration_nano": p95, "p99_duration_nano": p99,
            "p999_duration_nano": p999, "error_count": stats.errors}


def render_tree(rows) -> list[dict]:
    """Edges as PostHog's SpanTreeNode, with `calls_per_parent_invocation`: the edge's count over the
    parent's own count as a child anywhere in the returned tree (None for edges under the root)."""
    invocations: dict[tuple[str, str], int] = {}
    for r in rows:
        invocations[(r.group[2], r.group[3])] = invocations.get((r.group[2], r.group[3]), 0) + r.count
    out = []
    for r in rows:
        p50, p95, p99, p999 = r.quantiles
        parent_total = invocations.get((r.group[0], r.group[1]))
        out.append({"parent_service": r.group[0], "parent_name": r.group[1], "service_name": r.group[2],
                    "name": r.group[3], "count": r.count, "total_duration_nano": float(r.total),
                    "avg_duration_nano": r.mean, "p50_duration_nano": p50, "p95_duration_nano": p95,
                    "p99_duration_nano": p99, "p999_duration_nano": p999, "error_count": r.errors,
                    "avg_start_offset_nano": r.mean_offset,
                    "calls_per_parent_invocation": r.count / parent_total if parent_total else None})
    return out


def bucket_seconds(window_ns: int) -> int:
    """window/50 rounded to the nearest step of the ladder (ties to the smaller step)."""
    target = window_ns / SPARKLINE_TARGET_BUCKETS / _NS
    return min(BUCKET_LADDER_S, key=lambda s: (abs(s - target), s))


# --- cursors ----------------------------------------------------------------------------------------------

def encode_cursor(start_ns: int, span_id: bytes) -> str:
    """base64 of {"timestamp": ISO, "span_id": hex}. The ISO time keeps all nine fraction digits so a
    page boundary between spans of the same microsecond neither skips nor repeats one."""
    doc = {"timestamp": iso(start_ns, 9), "span_id": span_id.hex()}
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode("ascii")


def decode_cursor(value: Any) -> tuple[int, bytes] | None:
    if value in (None, ""):
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        text = value.strip().replace("-", "+").replace("_", "/")
        doc = json.loads(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
        ts, sid = doc["timestamp"], doc["span_id"]
        start = times.parse_iso(ts) if isinstance(ts, str) else None
        if start is None or not times.MIN_NS <= start <= times.MAX_NS or not isinstance(sid, str) or len(sid) != 16 or not _HEX.match(sid):
            raise ValueError
        return start, bytes.fromhex(sid)
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise bad_request("after: not a cursor returned as nextCursor by this endpoint", attr="after") from None


# --- rendering --------------------------------------------------------------------------------------------

def attr_text(v: Any) -> str:
    """An attribute value as a string, the way filters compare it (SQLite's JSON text for nested values)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # what json.dumps writes
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _string_map(attrs: dict) -> dict[str, str]:
    return {k: attr_text(v) for k, v in attrs.items()}


def span_uuid(row: SpanRow) -> str:
    """Stable per stored row: the span id, then the row id (two copies of a retried span differ)."""
    return str(uuid.UUID(bytes=row.span_id + row.id.to_bytes(8, "big")))


def with_prefetched(rows: list[SpanRow], context: list[tuple[SpanRow, bool]], per_trace: int
                    ) -> list[tuple[SpanRow, bool]]:
    """prefetchSpans: each listed span, and after the first listed span of each trace the spans of that
    trace that were not listed (store.trace_context's order: root, matching, by start time), so that a
    trace shows at most `per_trace` spans counting its listed ones (more only when more of its spans
    were listed). Each with whether it matched the query (PostHog's `matched_filter`)."""
    listed_per_trace: dict[bytes, int] = {}
    for r in rows:
        listed_per_trace[r.trace_id] = listed_per_trace.get(r.trace_id, 0) + 1
    extra: dict[bytes, list[tuple[SpanRow, bool]]] = {}
    for row, matched in context:
        extra.setdefault(row.trace_id, []).append((row, matched))
    out: list[tuple[SpanRow, bool]] = []
    done: set[bytes] = set()
    for r in rows:
        out.append((r, True))
        if r.trace_id not in done:
            done.add(r.trace_id)
            room = max(per_trace - listed_per_trace[r.trace_id], 0)
            out.extend(extra.get(r.trace_id, [])[:room])
    return out


def render_span(row: SpanRow, resources: dict[int, dict], bounds: tuple[int, int] | None,
                self_time: int | None = None, *, matched: bool | None = None,
                exclude_attributes: bool = False) -> dict:
    """A span as PostHog returns it. `matched` (span query only) becomes `matched_filter` (1/0: whether
    the span itself satisfies the query, PostHog's field); `exclude_attributes` leaves `attributes` and
    `resource_attributes` empty maps (excludeAttributes, as PostHog selects `map()` for both)."""
    out = {
        "uuid": span_uuid(row),
        "trace_id": row.trace_id.hex(),
        "span_id": row.span_id.hex(),
        "parent_span_id": row.parent_span_id.hex() if row.parent_span_id else "",
        "name": row.name,
        "kind": row.kind,
        "service_name": row.service_name,
        "status_code": row.status_code,
        "status_message": row.status_message,
        "timestamp": iso(row.start_ns),
        "end_time": iso(row.end_ns),
        "duration_nano": row.end_ns - row.start_ns,
        "is_root_span": row.parent_span_id is None,
    }
    if bounds is not None:
        out["trace_start"] = iso(bounds[0])
        out["trace_duration"] = bounds[1] - bounds[0]  # nanoseconds, like duration_nano
    if matched is not None:
        out["matched_filter"] = int(matched)
    out["attributes"] = {} if exclude_attributes else _string_map(json.loads(row.attributes))
    out["resource_attributes"] = {} if exclude_attributes else _string_map(resources.get(row.resource_id, {}))
    out["events"] = [{"name": e.get("name", ""), "timestamp": iso(e.get("time_ns", 0)),
                      "attributes": _string_map(e.get("attributes", {}))}
                     for e in (json.loads(row.events) if row.events else [])]
    out["links"] = [{"trace_id": ln.get("trace_id", ""), "span_id": ln.get("span_id", ""),
                     "trace_state": ln.get("trace_state", ""), "flags": ln.get("flags", 0),
                     "attributes": _string_map(ln.get("attributes", {}))}
                    for ln in (json.loads(row.links) if row.links else [])]
    if self_time is not None:
        out["self_time_nano"] = self_time
    return out


def sparkline_results(counts: list[tuple[int, str, int]], query: SparklineQuery) -> list[dict]:
    """Every bucket of the window, time ascending; per bucket the top services by count (count
    descending, then name); a bucket with nothing gets one zero row with an empty service, as
    ClickHouse's WITH FILL gives PostHog."""
    sel, b = query.selection, query.bucket_ns
    by_bucket: dict[int, list[tuple[str, int]]] = {}
    for t, service, n in counts:
        by_bucket.setdefault(t, []).append((service, n))
    out = []
    for i in range(sel.start_ns // b, sel.end_ns // b + 1):
        t = i * b
        rows = sorted(by_bucket.get(t, ()), key=lambda r: (-r[1], r[0]))[:SPARKLINE_TOP_SERVICES]
        for service, n in rows or [("", 0)]:
            out.append({"time": iso(t), "service": service, "count": n})
    return out
