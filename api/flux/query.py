"""Flux reads (flux.md, "Read"): the metric list and detail from the store's catalog, and
`GET /api/v1/metrics/:name/query` through the neutral engine (collector/query).

Parsing is pure (`parse_query`: every error names the parameter); `run_query` runs on a read connection
(`Store.read`) and returns the response's `data`.

Types. Every metric of the store is one of Flux's four types (flux.md): an OTel gauge (and a cumulative
sum that is not monotonic: a level, as Prometheus reads it) is a gauge; any other sum (monotonic, or a
DELTA sum such as a Flux counter) is a counter; histograms, exponential histograms, summaries and Flux
distributions are distributions; a set is a set; a Trifle key (`tally`, one series per dot path, the path
as the tag `path`) is a counter, since Trifle sums what is tracked into each bucket.

Aggregations (seed 003's table), all pooled over every reading of the selected series in a bucket:
  gauge         last, avg, min, max                        (last: the latest reading)
  counter       sum (the increase: a delta's value, a cumulative reading's difference to the one before it,
                so a cumulative OTel counter's sum is what it counted, not a sum of its running totals;
                of a Trifle key, its bucket value as Trifle reads it: the tracks added, an assert
                replacing what came before it), rate (that sum per second of the bucket)
  distribution  avg, sum, min, max, count, p50, p90, p95, p99: exact over a Flux distribution's observations
                (numpy's linear interpolation); over an OTel histogram the percentiles are
                histogram_quantile and count is the increase of its observation count (its buckets hold no
                observations, so avg, sum, min and max are refused with a 400); a summary's percentiles
                come from its own quantiles
  set           count (distinct members)
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from otelite.api.errors import ApiError
from otelite.api.flux.common import INVALID_AGGREGATION, INVALID_PARAMETER, invalid
from otelite.collector.query.engine import evaluate
from otelite.collector.query.grid import FixedGrid
from otelite.collector.query.model import Aggregation, GroupKey, Query, QueryError, TooManyBuckets
from otelite.collector.store import metrics as sm
from otelite.collector.store.points import PointCache
from otelite.api.flux.ingest import flux_time
from otelite.collector.times import NS, parse_iso

AGGREGATIONS = {
    "gauge": ("last", "avg", "min", "max"),
    "counter": ("sum", "rate"),
    "distribution": ("avg", "sum", "min", "max", "p50", "p90", "p95", "p99", "count"),
    "set": ("count",),
}
DEFAULT_AGGREGATION = {"gauge": "last", "counter": "sum", "distribution": "avg", "set": "count"}
_PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
ALL_AGGREGATIONS = sorted({a for aggs in AGGREGATIONS.values() for a in aggs})
_HISTOGRAMS = ("histogram", "exponential_histogram")
_INTERVAL = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
_UNIT_NS = {"s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS}
# flux.md: the interval chosen from the range when none is given (range up to → interval).
_AUTO_INTERVALS = ((3600, "1m"), (6 * 3600, "5m"), (86400, "15m"), (7 * 86400, "1h"), (30 * 86400, "6h"))
_DEFAULT_RANGE_NS = 86400 * NS
MAX_BUCKETS = 50_000  # a range over more buckets of the interval is refused (the answer would be huge)
_TAG_PARAM = re.compile(r"^tags\[(.+)\]$")
_INT64_MAX = (1 << 63) - 1
_TIME_MAX_NS = _INT64_MAX - 1


def tag_filter_key(param: str) -> str | None:
    """`tags[key]` → key; None for another parameter. A malformed `tags[...` parameter is a 400."""
    if not param.startswith("tags["):
        return None
    m = _TAG_PARAM.match(param)
    if m is None:
        raise _bad(param[:64], "a tag filter is tags[<key>]=<value>")
    return m.group(1)


# --- types --------------------------------------------------------------------------------------------------

def flux_type(stored_type: str, monotonic: bool, temporality: int) -> str:
    """The Flux type a stored metric is listed and queried as (module docstring)."""
    if stored_type == "sum":
        return "counter" if monotonic or temporality == 1 else "gauge"
    if stored_type in (sm.DISTRIBUTION, "histogram", "exponential_histogram", "summary"):
        return "distribution"
    if stored_type == sm.SET:
        return "set"
    if stored_type == sm.TALLY:
        return "counter"
    return "gauge"


def _latest(infos: list[sm.MetricInfo]) -> sm.MetricInfo:
    """The type a name is read as when it was stored with several: the one seen last (as select_series)."""
    return max(infos, key=lambda i: (i.last_seen_ns, i.type))


def describe(info: sm.MetricInfo) -> dict:
    """A catalog entry as Flux lists it: tags are the point attribute keys."""
    return {"name": info.name, "type": flux_type(info.type, info.monotonic, info.temporality),
            "tags": list(info.attribute_keys), "first_seen": flux_time(info.first_seen_ns),
            "last_seen": flux_time(info.last_seen_ns)}


def list_metrics(conn: sqlite3.Connection, project_id: int) -> list[dict]:
    """Every metric of the project, by name (one entry per name: the type it was seen with last)."""
    by_name: dict[str, list[sm.MetricInfo]] = {}
    for info in sm.metric_catalog(conn, project_id):
        by_name.setdefault(info.name, []).append(info)
    return [describe(_latest(infos)) for _, infos in sorted(by_name.items())]


def get_metric(conn: sqlite3.Connection, project_id: int, name: str) -> dict | None:
    infos = sm.metric_catalog(conn, project_id, name, with_point_counts=True)
    if not infos:
        return None
    info = _latest(infos)
    return {**describe(info), "data_points": info.point_count}


# --- the query request ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FluxQuery:
    name: str
    start_ns: int
    end_ns: int  # exclusive (the `to` instant is included)
    interval: str
    step_ns: int
    aggregations: tuple[str, ...]  # empty: the type's default
    filters: tuple[sm.LabelFilter, ...]
    group_by: str | None


def _bad(param: str, message: str) -> ApiError:
    return invalid(INVALID_PARAMETER, f"{param}: {message}")


def _time(params: dict, name: str) -> int | None:
    raw = _one(params, name)
    if raw is None:
        return None
    ns = parse_iso(raw) if len(raw) <= 64 else None
    if ns is None:
        raise _bad(name, f"not an ISO 8601 time: {raw[:64]!r}")
    if not 0 <= ns <= _TIME_MAX_NS:
        raise _bad(name, "must be between 1970 and 2262")
    return ns


def _one(params: dict, name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise _bad(name, "give it once")
    return value


def parse_interval(text: str) -> int:
    m = _INTERVAL.match(text)
    if m is None:
        raise _bad("interval", f"must be a whole number of s, m, h or d (1m, 5m, 1h, 1d), got {text[:32]!r}")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


def auto_interval(range_ns: int) -> str:
    """flux.md: ≤1h → 1m, ≤6h → 5m, ≤24h → 15m, ≤7d → 1h, ≤30d → 6h, else 1d."""
    for limit_s, interval in _AUTO_INTERVALS:
        if range_ns <= limit_s * NS:
            return interval
    return "1d"


def parse_query(name: str, params: dict, now_ns: int) -> FluxQuery:
    """Query parameters → a FluxQuery (the aggregation is checked against the type when it is known).

    `to` defaults to now and is inclusive; `from` defaults to 24 hours before `to`, then floored to the
    interval so default buckets fall on whole intervals; buckets start at `from`."""
    end = _time(params, "to")
    end = now_ns if end is None else end
    start = _time(params, "from")
    defaulted = start is None
    if defaulted:
        start = max(end - _DEFAULT_RANGE_NS, 0)
    if start > end:
        raise _bad("from", "must not be after to")
    raw_interval = _one(params, "interval")
    interval = raw_interval if raw_interval is not None else auto_interval(end - start)
    step = parse_interval(interval)
    if defaulted:
        start -= start % step
    if end + 1 + step > _INT64_MAX:
        # The last bucket must end at a time the store can hold (signed 64-bit nanoseconds, 2262).
        raise _bad("interval", f"{interval} from this range reaches past 2262; use a shorter interval")
    if (end + 1 - start) // step > MAX_BUCKETS:
        raise _bad("interval", f"{interval} over this range makes more than {MAX_BUCKETS} buckets; "
                               "use a longer interval or a shorter range")
    raw_aggs = _one(params, "aggregation")
    aggregations: tuple[str, ...] = ()
    if raw_aggs:
        aggregations = tuple(a.strip() for a in raw_aggs.split(","))
        for a in aggregations:
            if a not in ALL_AGGREGATIONS:
                raise invalid(INVALID_AGGREGATION, f"aggregation: unknown aggregation {a[:32]!r}; one of "
                                                   f"{', '.join(ALL_AGGREGATIONS)}")
        if len(set(aggregations)) != len(aggregations):
            raise invalid(INVALID_AGGREGATION, "aggregation: each aggregation may appear once")
    filters = []
    for param, value in params.items():
        key = tag_filter_key(param)
        if key is None:
            continue
        values = value if isinstance(value, list) else [value]  # a repeated tag filter: any of its values
        filters.append(sm.LabelFilter.equals(key, values))
    group_by = _one(params, "group_by")
    if group_by is not None:
        if not group_by.startswith("tags.") or len(group_by) == len("tags."):
            raise _bad("group_by", f"must be tags.<key>, got {group_by[:64]!r}")
        group_by = group_by[len("tags."):]
    return FluxQuery(name, start, end + 1, interval, step, aggregations, tuple(filters), group_by)


# --- running it ---------------------------------------------------------------------------------------------

def engine_aggregation(aggregation: str, ftype: str, stored_type: str) -> Aggregation:
    """The engine's aggregation for a Flux aggregation of a metric of `stored_type` (module docstring)."""
    if aggregation not in AGGREGATIONS[ftype]:
        raise invalid(INVALID_AGGREGATION, f"aggregation: {aggregation} is not valid for a {ftype}; use "
                                           f"{', '.join(AGGREGATIONS[ftype])}")
    if stored_type == sm.TALLY:
        # Each path's bucket value (an assert replaces only its own path), then summed over the paths
        # selected; `rate` divides it by the bucket's seconds (run_query).
        return Aggregation("tally", across="sum")
    if ftype == "counter":
        return Aggregation("increase" if aggregation == "sum" else "rate")
    if ftype == "set":
        return Aggregation("distinct")
    if ftype == "distribution" and stored_type != sm.DISTRIBUTION:
        if aggregation in _PERCENTILES:
            fn = "histogram_quantile" if stored_type in _HISTOGRAMS else "quantile"
            return Aggregation(fn, q=_PERCENTILES[aggregation])
        if aggregation == "count":
            return Aggregation("increase")  # of the observation count
        raise invalid(INVALID_AGGREGATION, f"aggregation: {aggregation} needs every observation, and this "
                                           f"{stored_type} metric (from OTLP) holds bucket counts; use count "
                                           f"or p50, p90, p95, p99")
    if aggregation in _PERCENTILES:
        return Aggregation("quantile", q=_PERCENTILES[aggregation])
    return Aggregation(aggregation)


def _number(v: float) -> float | int | None:
    if not math.isfinite(v):
        return None
    return int(v) if v.is_integer() and abs(v) < 2**53 else float(v)


def run_query(conn: sqlite3.Connection, cache: PointCache, project_id: int, q: FluxQuery) -> dict | None:
    """The `data` of the query's answer, or None when the metric does not exist."""
    infos = sm.metric_catalog(conn, project_id, q.name)
    if not infos:
        return None
    info = _latest(infos)
    ftype = flux_type(info.type, info.monotonic, info.temporality)
    aggregations = q.aggregations or (DEFAULT_AGGREGATION[ftype],)
    engine_aggs = [engine_aggregation(a, ftype, info.type) for a in aggregations]
    selection = sm.SeriesSelection(project_id, q.name, info.type, q.filters)
    grid = FixedGrid(q.step_ns, origin_ns=q.start_ns)
    group_by = (GroupKey(q.group_by),) if q.group_by is not None else ()
    # group label → bucket start → {aggregation: value}
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for name, agg in zip(aggregations, engine_aggs):
        query = Query(selection, q.start_ns, q.end_ns, grid, agg, group_by, max_buckets=MAX_BUCKETS + 1)
        try:
            result = evaluate(conn, cache, query)
        except TooManyBuckets:
            raise _bad("interval", f"more than {MAX_BUCKETS} buckets; use a longer interval") from None
        except QueryError as e:
            raise invalid(INVALID_AGGREGATION, f"aggregation: {e}") from None
        starts = result.bucket_starts
        per_second = NS / q.step_ns if info.type == sm.TALLY and name == "rate" else 1
        for series in result.series:
            group = series.labels.get(q.group_by, "") if q.group_by is not None else ""
            table = rows.setdefault(group, {})
            for b, v in zip(series.buckets.tolist(), series.values.tolist()):
                table.setdefault(int(starts[b]), {})[name] = _number(v * per_second)
    one = len(aggregations) == 1

    def render(table: dict[int, dict[str, Any]]) -> list[dict]:
        out = []
        for t in sorted(table):
            values = table[t]
            row: dict[str, Any] = {"timestamp": flux_time(t)}
            if one:
                row["value"] = values.get(aggregations[0])
            else:
                row.update({a: values.get(a) for a in aggregations})
            out.append(row)
        return out

    data: dict[str, Any] = {"name": q.name, "aggregation": ",".join(aggregations), "interval": q.interval}
    if q.group_by is not None:
        data["groups"] = {group: render(table) for group, table in sorted(rows.items())}
    else:
        data["series"] = render(rows.get("", {}))
    return data

