"""Metric reads: which series a selection names, their labels, the metric catalog, and the latest state of
live series for the Prometheus scrape. Points by time range, as numpy columns through the store's point
cache, are in points.py. Like tracing.py: typed inputs and outputs, parameterized SQL, every statement
constrained by project (series ids are fingerprints that include the project), and functions that take
the connection first so they run through `Store.read(fn, *args)`:

    series = await store.read(select_series, SeriesSelection(project_id, "http.server.duration"))

How metrics are stored (migrations.py has the columns; store.md, "Series identity"):

- `metric_series`: one row per series; its id is the fingerprint of (project, name, type, resource,
  scope, point attributes). `type` is an OTel type (`gauge`, `sum`, `histogram`,
  `exponential_histogram`, `summary`) or one of the types of dialects that keep raw observations:

  - `distribution` (Flux distributions): every observed value is one `metric_points` row with the value
    in `value` (a number; count/sum/buckets NULL). Percentiles are computed exactly over these rows.
  - `set` (Flux sets): every observed member is one `metric_points` row with the member as TEXT in
    `value` (the column has no affinity, so a member "42" stays the text "42"). The cardinality of a
    bucket is the number of distinct members in it.

  For both, write `temporality` 0, `is_monotonic` 0, `start_ns` 0 and `flags` 0, and the tags as point
  attributes (records.label_text renders the values), exactly as an OTLP series is written, so labels,
  filters, group-by and the catalog work unchanged. The Prometheus scrape shows a distribution as a
  summary (quantiles over the observations of its expiry window; `_sum`/`_count` from the running totals
  series_state.py keeps) and a set as a gauge of the distinct members of that window (prometheus.md).
- Flux gauges and counters are OTel types: a gauge is a `gauge`, a counter a DELTA `sum` (each request's
  value is a delta) with `is_monotonic` 0, since Flux counters take negative values (the SDK's
  `decrement`). Flux writes every series under the instrumentation scope `FLUX_SCOPE`; the scrape shows a
  sum of that scope as a counter (`_total`) of the exact running total, as prometheus.md asks.
- `tally` (Trifle keys, api/trifle/): one series per (key, dot path) with the path as the point attribute
  `path`; every `track` or `assert` of a leaf is one `metric_points` row with the number in `value`.
  A track adds (`flags` 0); an assert sets (`flags` has records.TALLY_SET). The value of any time bucket
  is its rows applied in write order (the rowid): the last assert in the bucket, plus every track
  written after it (the sum of the tracks when there is none). That is what Trifle stores per bucket
  at every granularity (its assert overwrites the leaf in each granularity's bucket, its track
  increments it), so raw rows answer any granularity asked later, exactly. `temporality` 1 (a track is
  a delta), `is_monotonic` 0, `start_ns` 0; the engine's `tally` aggregation computes it
  (collector/query/reduce.py), and the series state (series_state.py) folds the same way over all time.
- `metric_series_labels`: one row per (series, key) for point attributes (`source` 'point') and resource
  attributes ('resource'), so filters and group-by never touch points.

Labels. A key is read in a scope: `attribute` (the point attribute), `resource` (the resource
attribute) or `auto` (the point attribute when the series has one, else the resource attribute). A
series without the key reads as the empty label "", as Prometheus treats a missing label. The key
`service_name` also reads the resource's `service.name` when no label is literally called that (the
name the PostHog and Flux APIs use for the service).

Regex filters are compiled by RE2 (regex.py) when the filter is built, so a bad pattern is a
`RegexError` at request parsing, never an error inside a read.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from otelite.collector.store import budget, comparisons
from otelite.collector.store.points import point_counts, point_rows
from otelite.collector.store.regex import compile_regex
from otelite.collector.store.series_state import LAST_SEEN_LAG_NS

SCOPES = ("auto", "attribute", "resource")
LABEL_OPS = ("eq", "neq") + tuple(op for op in comparisons.OPERATORS if op not in comparisons.EQUALITY)
DISTRIBUTION = "distribution"
SET = "set"
FLUX_SCOPE = "otelite.flux"  # the instrumentation scope of every series the Flux dialect writes
TALLY = "tally"
METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary", DISTRIBUTION, SET, TALLY)
SERVICE_NAME = "service_name"
_CHUNK = 500  # ids per IN (...) list


def _marks(n: int) -> str:
    return ",".join("?" * n)


# --- selections -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelFilter:
    """One condition on a series' label `key` in `scope`. Build with `equals`, `matches` or `compare`.

    `op` is `eq`/`neq` (any / none of `values`), `regex`/`not_regex` (the one RE2 pattern), or any other
    operator of comparisons.py (PostHog's property-filter operators) with `values` normalized as it says:
    texts, numbers for the order and range operators, a version (or a range's [low, high) as version
    texts) for the semver ones.
    """

    key: str
    op: str
    values: tuple = ()
    scope: str = "auto"
    pattern: Any = field(default=None, compare=False, repr=False)  # compiled RE2 for the regex ops

    @classmethod
    def equals(cls, key: str, values: tuple[str, ...] | list[str], scope: str = "auto",
               negate: bool = False) -> "LabelFilter":
        return cls(key, "neq" if negate else "eq", tuple(values), scope)

    @classmethod
    def matches(cls, key: str, pattern: str, scope: str = "auto", negate: bool = False) -> "LabelFilter":
        """Raises regex.RegexError for a pattern RE2 rejects."""
        return cls(key, "not_regex" if negate else "regex", (pattern,), scope, compile_regex(pattern))

    @classmethod
    def compare(cls, key: str, op: str, values: tuple | list, scope: str = "auto") -> "LabelFilter":
        """Any operator of comparisons.OPERATORS (regexes: every value a pattern, any of them matching;
        raises regex.RegexError)."""
        if op not in comparisons.OPERATORS:
            raise ValueError(f"unknown label operator {op!r}")
        if op == "exact":
            return cls.equals(key, values, scope)
        if op == "is_not":
            return cls.equals(key, values, scope, negate=True)
        patterns = tuple(compile_regex(v) for v in values) if op in comparisons.PATTERN else None
        return cls(key, op, tuple(values), scope, patterns)

    def mask(self, labels: list[str | None]) -> np.ndarray:
        """Which of the labels (None: the series lacks the key, read as "") satisfy the condition."""
        op, n = self.op, len(labels)
        if op in ("eq", "neq"):
            wanted = set(self.values)
            hit = np.fromiter(((v if v is not None else "") in wanted for v in labels), bool, n)
            return hit if op == "eq" else ~hit
        if op in comparisons.PRESENCE:
            present = np.fromiter((v is not None for v in labels), bool, n)
            return present if op == "is_set" else ~present
        values = self.values
        if op in comparisons.PATTERN:
            values = self.pattern if isinstance(self.pattern, tuple) else (self.pattern,)
        holds = comparisons.holds
        return np.fromiter((holds(op, v if v is not None else "", values) for v in labels), bool, n)


@dataclass(frozen=True)
class SeriesSelection:
    """Which series: one metric of one project (and type, when the name is used with several), narrowed by
    label filters (AND-ed)."""

    project_id: int
    name: str
    type: str | None = None  # None: the type the name was seen with most recently
    filters: tuple[LabelFilter, ...] = ()


@dataclass
class SeriesSet:
    """Series of one metric, sorted by id, with what increases need to know about each."""

    project_id: int
    name: str
    type: str | None  # None: no such metric
    ids: np.ndarray  # int64, sorted
    temporality: np.ndarray  # int8: 1 delta, 2 cumulative, 0 unspecified (gauges, distributions, sets)
    monotonic: np.ndarray  # bool
    complete: bool = True  # every series of the metric (no filter left any out)
    _ids_json: str | None = field(default=None, repr=False, compare=False)  # _ids_json(), once

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "SeriesSet":
        return SeriesSet(self.project_id, self.name, self.type, self.ids[mask], self.temporality[mask],
                         self.monotonic[mask], self.complete and bool(mask.all()))


# The newest point time of series `s` (issue 16): the writer moves `metric_series_state.time_ns` with every
# commit and lets `metric_series.last_seen_ns` lag by up to series_state.LAST_SEEN_LAG_NS, except where the
# state does not carry the newest time; the larger of the two is exact. Needs `LEFT JOIN
# metric_series_state AS st ON st.series_id = s.id`.
LAST_SEEN_SQL = "max(s.last_seen_ns, ifnull(st.time_ns, 0))"
_STATE_JOIN = "LEFT JOIN metric_series_state AS st ON st.series_id = s.id"


def _metric_series(conn: sqlite3.Connection, project_id: int, name: str, metric_type: str | None) -> SeriesSet:
    if metric_type is None:  # mixing a gauge with a histogram has no meaning: the latest type wins
        metric_type = _latest_type(conn, project_id, name)
    rows = [] if metric_type is None else conn.execute(
        "SELECT id, temporality, is_monotonic FROM metric_series WHERE project_id = ? AND name = ? AND type = ? "
        "ORDER BY id", (project_id, name, metric_type)).fetchall()
    if not rows:
        return SeriesSet(project_id, name, metric_type, np.zeros(0, np.int64), np.zeros(0, np.int8),
                         np.zeros(0, bool))
    columns = np.array(rows, dtype=np.int64)  # (n, 3), without a Python loop per series
    return SeriesSet(project_id, name, metric_type, columns[:, 0].copy(), columns[:, 1].astype(np.int8),
                     columns[:, 2] != 0)


def _latest_type(conn: sqlite3.Connection, project_id: int, name: str) -> str | None:
    types = [r[0] for r in conn.execute("SELECT DISTINCT type FROM metric_series WHERE project_id = ? AND name = ?",
                                        (project_id, name))]
    if len(types) <= 1:  # the usual case: no need to find the newest series
        return types[0] if types else None
    return conn.execute(
        f"SELECT s.type FROM metric_series AS s {_STATE_JOIN} WHERE s.project_id = ? AND s.name = ? "
        f"ORDER BY {LAST_SEEN_SQL} DESC, s.type DESC LIMIT 1", (project_id, name)).fetchone()[0]


def metric_type(conn: sqlite3.Connection, project_id: int, name: str) -> str | None:
    """The type a metric name was seen with most recently (the one `select_series` picks when the
    selection names none), or None when the project has no such metric."""
    return _latest_type(conn, project_id, name)


def select_series(conn: sqlite3.Connection, selection: SeriesSelection) -> SeriesSet:
    """The series `selection` names. `type` is resolved even when filters leave no series, so a caller
    can tell "no such metric" (type None) from "nothing matched"."""
    series = _metric_series(conn, selection.project_id, selection.name, selection.type)
    if selection.filters and len(series):
        series = series.subset(filter_mask(conn, series, selection.filters))
    return series


def _ids_json(series: SeriesSet) -> str:
    """The series' ids as one JSON array: a single parameter that `json_each` turns into rows, so one
    statement reads the labels of exactly these series, however many there are (kept on the set: a
    query reads several keys of the same series)."""
    if series._ids_json is None:
        series._ids_json = "[" + ",".join(map(str, series.ids.tolist())) + "]"
    return series._ids_json


# The labels of the given series only: `CROSS JOIN` makes SQLite walk the ids and look each one up in
# metric_series_labels_by_series (a covering index: the table is WITHOUT ROWID), so the cost follows the
# series asked about, never the project's other metrics that share a key.
_SELECTED_LABELS = ("FROM json_each(?) AS ids CROSS JOIN metric_series_labels AS l ON l.series_id = ids.value "
                    "WHERE l.project_id = ?")


class LabelRow(NamedTuple):
    """One distinct (key, source, value) among some series' labels and the positions (in `series.ids`)
    of the series that have it."""

    key: str
    source: str  # 'point' | 'resource'
    value: str
    positions: np.ndarray  # int64


class LabelKeyCount(NamedTuple):
    key: str
    series: int  # how many of the series have the key
    values: int  # how many distinct values they have for it


class SeriesLabels:
    """The labels of `n` series (all their keys, or some), grouped by (key, source, value): a query
    that groups the same series by several keys reads them once, and only one row per distinct label
    crossed into Python, not one per series. Pure: `read_series_labels` loads one."""

    def __init__(self, rows: list[LabelRow], n: int) -> None:
        self.n = n
        self.by_key: dict[str, list[LabelRow]] = {}
        for r in rows:
            self.by_key.setdefault(r.key, []).append(r)

    def codes(self, key: str, scope: str = "auto", *, alias_sources: tuple[str, ...] = ("point", "resource")
              ) -> tuple[np.ndarray, list[str]]:
        """Each series' label for `key` under `scope` (module docstring: `auto` is the point attribute,
        else the resource attribute; `service_name` falls back to `service.name`, read from
        `alias_sources`) as a code into the returned distinct values, -1 where the series has none."""
        values: dict[str, int] = {}
        point, resource = np.full(self.n, -1, np.int64), np.full(self.n, -1, np.int64)
        for k in [key] + (["service.name"] if key == SERVICE_NAME else []):
            for row in self.by_key.get(k, ()):
                target = point if row.source == "point" else resource
                if k == key:
                    pos = row.positions
                elif row.source in alias_sources:
                    pos = row.positions[target[row.positions] < 0]  # the alias: only where the label is missing
                else:
                    continue
                target[pos] = values.setdefault(row.value, len(values))
        if scope == "attribute":
            codes = point
        elif scope == "resource":
            codes = resource
        else:
            codes = np.where(point >= 0, point, resource)
        return codes, list(values)

    def key_counts(self, mask: np.ndarray | None = None) -> list[LabelKeyCount]:
        """Every label key of the series (those in `mask`, when given) as `series_labels` reads them
        (auto scope; `service_name` from the resource's `service.name` where the series has no label of
        that name), with how many series have it and how many distinct values, by key."""
        alias = any(r.source == "resource" for r in self.by_key.get("service.name", ()))
        out = []
        for key in sorted(set(self.by_key) | ({SERVICE_NAME} if alias else set())):
            codes, _ = self.codes(key, alias_sources=("resource",))
            present = codes[(codes >= 0) & mask] if mask is not None else codes[codes >= 0]
            if present.size:
                out.append(LabelKeyCount(key, int(present.size), int(np.unique(present).size)))
        return out


def read_series_labels(conn: sqlite3.Connection, series: SeriesSet, keys: list[str] | None = None) -> SeriesLabels:
    """The labels of `series` (of `keys` only, with `service.name` when `service_name` is asked for),
    grouped by (key, value, source) in SQLite. Two plans give the same rows: when the series are most of
    the project's, its label rows are read in primary-key order (already grouped: no sort) keeping those
    of the series; otherwise each series' rows are looked up (`_SELECTED_LABELS`) and sorted, so the cost
    follows the series asked about, never the project's other metrics."""
    if not len(series) or keys == []:
        return SeriesLabels([], len(series))
    budget.check()  # a read's deadline (collector/store/budget.py), before a pass over every series
    key_sql, key_args = "", []
    if keys is not None:
        wanted = sorted(set(keys) | ({"service.name"} if SERVICE_NAME in keys else set()))
        key_sql, key_args = f" AND l.key IN ({_marks(len(wanted))})", wanted
    ids, pid = _ids_json(series), series.project_id
    in_project = conn.execute("SELECT count(*) FROM metric_series WHERE project_id = ?", (pid,)).fetchone()[0]
    if 2 * len(series) >= in_project:
        sql = ("SELECT l.key, l.source, l.value, group_concat(l.series_id) FROM metric_series_labels AS l "
               f"WHERE l.project_id = ?{key_sql} AND l.series_id IN (SELECT value FROM json_each(?))")
        args = [pid, *key_args, ids]
    else:
        sql = f"SELECT l.key, l.source, l.value, group_concat(l.series_id) {_SELECTED_LABELS}{key_sql}"
        args = [ids, pid, *key_args]
    rows = conn.execute(sql + " GROUP BY l.key, l.value, l.source", args).fetchall()
    members = json.loads("[[" + "],[".join(r[3] for r in rows) + "]]") if rows else []  # one decode for all
    return SeriesLabels([LabelRow(k, source, value, np.searchsorted(series.ids, np.array(m, np.int64)))
                         for (k, source, value, _), m in zip(rows, members)], len(series))


def label_values(conn: sqlite3.Connection, series: SeriesSet, key: str, scope: str = "auto") -> list[str | None]:
    """Each series' label for `key` under `scope`, in `series.ids` order (None when it has none)."""
    codes, values = read_series_labels(conn, series, [key]).codes(key, scope)
    texts = values + [None]  # code -1 reads the last one
    return [texts[c] for c in codes.tolist()]


def series_label_key_counts(conn: sqlite3.Connection, series: SeriesSet) -> list[LabelKeyCount]:
    """Every label key the given series have, with how many series have it and how many distinct values,
    by key (SeriesLabels.key_counts)."""
    return read_series_labels(conn, series).key_counts()


def filter_mask(conn: sqlite3.Connection, series: SeriesSet, filters: tuple[LabelFilter, ...] | list[LabelFilter]
                ) -> np.ndarray:
    """AND of the filters over the series (a series without the key has the label "")."""
    mask = np.ones(len(series), dtype=bool)
    for f in filters:
        budget.check()
        if not mask.any():
            break
        mask &= f.mask(label_values(conn, series, f.key, f.scope))
    return mask


def series_labels(conn: sqlite3.Connection, series_ids: list[int]) -> dict[int, dict[str, str]]:
    """All labels (auto scope: point attributes win) of the given series; `service_name` added from the
    resource's service.name."""
    out: dict[int, dict[str, str]] = {sid: {} for sid in series_ids}
    if not series_ids:
        return out
    resource: dict[int, dict[str, str]] = {sid: {} for sid in series_ids}
    ids = list(series_ids)
    for i in range(0, len(ids), _CHUNK):
        budget.check()
        chunk = ids[i:i + _CHUNK]
        for sid, key, value, source in conn.execute(
                f"SELECT series_id, key, value, source FROM metric_series_labels WHERE series_id IN "
                f"({_marks(len(chunk))})", chunk):
            (out if source == "point" else resource)[sid][key] = value
    for sid, res in resource.items():
        labels = out[sid]
        for key, value in res.items():
            labels.setdefault(key, value)
        if "service.name" in res:
            labels.setdefault(SERVICE_NAME, res["service.name"])
    return out


# --- pickers and the catalog -------------------------------------------------------------------------------

def _metric_clause(name: str | None, metric_type: str | None) -> tuple[str, list]:
    """SQL restricting `s` (metric_series) to one metric, when asked."""
    sql, params = "", []
    if name is not None:
        sql += " AND s.name = ?"
        params.append(name)
    if metric_type is not None:
        sql += " AND s.type = ?"
        params.append(metric_type)
    return sql, params


def _seen_clause(seen_from_ns: int | None, seen_to_ns: int | None) -> tuple[str, list]:
    """SQL keeping series `s` that reported between the two times (first seen before the end, last seen
    at or after the start)."""
    sql, params = "", []
    if seen_from_ns is not None:
        # last_seen_ns lags by up to LAST_SEEN_LAG_NS (LAST_SEEN_SQL): its index narrows, the state decides.
        sql += (f" AND s.last_seen_ns >= ? - {LAST_SEEN_LAG_NS} AND max(s.last_seen_ns, ifnull((SELECT st.time_ns "
                "FROM metric_series_state AS st WHERE st.series_id = s.id), 0)) >= ?")
        params += [seen_from_ns, seen_from_ns]
    if seen_to_ns is not None:
        sql += " AND s.first_seen_ns < ?"
        params.append(seen_to_ns)
    return sql, params


def _label_scope_and_search(scope: str, search: str | None, column: str) -> tuple[str, list]:
    """` AND ...` terms over `metric_series_labels AS l`: the labels' source for `scope` (`attribute`:
    point attributes, `resource`, `auto`: both) and `search` as a case-insensitive substring of `column`."""
    sql, params = "", []
    if scope != "auto":
        sql += " AND l.source = ?"
        params.append("point" if scope == "attribute" else "resource")
    if search:
        sql += f" AND instr(lower({column}), ?) > 0"
        params.append(search.lower())
    return sql, params


def label_key_counts(conn: sqlite3.Connection, project_id: int, name: str | None = None,
                     metric_type: str | None = None, scope: str = "auto", search: str | None = None,
                     limit: int = 1000, *, keys: tuple[str, ...] | None = None, seen_from_ns: int | None = None,
                     seen_to_ns: int | None = None) -> list[tuple[str, int]]:
    """(key, number of series carrying it) for label keys (of one metric, or of every metric), by that
    number, then by key. `scope`: `attribute`/`resource` keys only, or both (`auto`). `search`:
    case-insensitive substring. `keys`: only these. `seen_*`: series that reported in that window."""
    metric_sql, params = _metric_clause(name, metric_type)
    seen_sql, seen_params = _seen_clause(seen_from_ns, seen_to_ns)
    sql = ("SELECT l.key, count(DISTINCT l.series_id) AS n FROM metric_series_labels AS l "
           "JOIN metric_series AS s ON s.id = l.series_id WHERE l.project_id = ? AND s.project_id = ?"
           + metric_sql + seen_sql)
    params = [project_id, project_id, *params, *seen_params]
    more, more_params = _label_scope_and_search(scope, search, "l.key")
    sql += more
    params += more_params
    if keys is not None:
        sql += f" AND l.key IN ({_marks(len(keys))})"
        params += keys
    sql += " GROUP BY l.key ORDER BY n DESC, l.key LIMIT ?"
    return [(r[0], r[1]) for r in conn.execute(sql, [*params, limit])]


def label_keys(conn: sqlite3.Connection, project_id: int, name: str | None = None, metric_type: str | None = None,
               scope: str = "auto", search: str | None = None, limit: int = 1000) -> list[str]:
    """Label keys (of one metric, or of every metric), by how many series carry them, then by key.
    `scope`: `attribute`/`resource` keys only, or both (`auto`). `search`: case-insensitive substring."""
    return [k for k, _ in label_key_counts(conn, project_id, name, metric_type, scope, search, limit)]


def label_value_counts(conn: sqlite3.Connection, project_id: int, keys: tuple[str, ...], name: str | None = None,
                       metric_type: str | None = None, scope: str = "auto", search: str | None = None,
                       limit: int = 1000, *, seen_from_ns: int | None = None, seen_to_ns: int | None = None
                       ) -> list[tuple[str, int]]:
    """(value, number of series carrying it under any of `keys`) for the distinct values of those label
    keys, by that number, then by value. `search`: case-insensitive substring."""
    metric_sql, params = _metric_clause(name, metric_type)
    seen_sql, seen_params = _seen_clause(seen_from_ns, seen_to_ns)
    sql = ("SELECT l.value, count(DISTINCT l.series_id) AS n FROM metric_series_labels AS l "
           f"JOIN metric_series AS s ON s.id = l.series_id WHERE l.project_id = ? AND l.key IN ({_marks(len(keys))}) "
           "AND s.project_id = ?" + metric_sql + seen_sql)
    params = [project_id, *keys, project_id, *params, *seen_params]
    more, more_params = _label_scope_and_search(scope, search, "l.value")
    sql += more
    params += more_params
    sql += " GROUP BY l.value ORDER BY n DESC, l.value LIMIT ?"
    return [(r[0], r[1]) for r in conn.execute(sql, [*params, limit])]


def label_key_values(conn: sqlite3.Connection, project_id: int, key: str, name: str | None = None,
                     metric_type: str | None = None, scope: str = "auto", search: str | None = None,
                     limit: int = 1000) -> list[str]:
    """Distinct values of label `key` (of one metric, or of every metric), by how many series carry them,
    then by value. `search`: case-insensitive substring."""
    return [v for v, _ in label_value_counts(conn, project_id, (key,), name, metric_type, scope, search, limit)]


@dataclass(frozen=True)
class MetricInfo:
    """One (name, type) of a project's metrics, as a catalog (Flux's list/get, LaunchDarkly) shows it."""

    name: str
    type: str
    unit: str
    description: str
    temporality: int  # of the most recently seen series: 1 delta, 2 cumulative, 0 unspecified
    monotonic: bool
    attribute_keys: tuple[str, ...]  # point attribute keys (tags), sorted
    resource_keys: tuple[str, ...]  # resource attribute keys, sorted
    first_seen_ns: int
    last_seen_ns: int
    series_count: int
    point_count: int | None  # None unless asked for (it sums chunk sizes and scans the head: points.py)


def metric_catalog(conn: sqlite3.Connection, project_id: int, name: str | None = None,
                   metric_type: str | None = None, *, with_point_counts: bool = False) -> list[MetricInfo]:
    """Every metric of the project (or the one named), by name then type. Unit, description, temporality
    and monotonicity are those of the most recently seen series of the metric."""
    metric_sql, params = _metric_clause(name, metric_type)
    # SQLite takes the bare columns of a query with one max() from the row holding it (the latest series).
    rows = conn.execute(
        "SELECT s.name, s.type, s.unit, s.description, s.temporality, s.is_monotonic, "
        f"max({LAST_SEEN_SQL}), count(*) FROM metric_series AS s {_STATE_JOIN} WHERE s.project_id = ?" + metric_sql
        + " GROUP BY s.name, s.type ORDER BY s.name, s.type", [project_id, *params]).fetchall()
    if not rows:
        return []
    first_seen = {(n, t): f for n, t, f in conn.execute(
        "SELECT s.name, s.type, min(s.first_seen_ns) FROM metric_series AS s WHERE s.project_id = ?" + metric_sql
        + " GROUP BY s.name, s.type", [project_id, *params])}
    keys: dict[tuple[str, str], tuple[set, set]] = {(r[0], r[1]): (set(), set()) for r in rows}
    for mname, mtype, key, source in conn.execute(
            "SELECT DISTINCT s.name, s.type, l.key, l.source FROM metric_series AS s JOIN metric_series_labels AS l "
            "ON l.series_id = s.id WHERE s.project_id = ?" + metric_sql, [project_id, *params]):
        entry = keys.get((mname, mtype))
        if entry is not None:
            entry[0 if source == "point" else 1].add(key)
    out = []
    counts = point_counts(conn, project_id, name, metric_type) if with_point_counts else {}
    for mname, mtype, unit, description, temporality, monotonic, last_seen, n in rows:
        count = counts.get((mname, mtype), 0) if with_point_counts else None
        point_keys, resource_keys = keys[(mname, mtype)]
        out.append(MetricInfo(mname, mtype, unit, description, temporality, bool(monotonic),
                              tuple(sorted(point_keys)), tuple(sorted(resource_keys)), first_seen[(mname, mtype)],
                              last_seen, n, count))
    return out


class MetricName(NamedTuple):
    name: str
    type: str  # the type it was last seen with


def has_metrics(conn: sqlite3.Connection, project_id: int) -> bool:
    return conn.execute("SELECT 1 FROM metric_series WHERE project_id = ? LIMIT 1", (project_id,)).fetchone() \
        is not None


def metric_names(conn: sqlite3.Connection, project_id: int, search: str = "", limit: int = 100,
                 services: tuple[str, ...] | None = None) -> list[MetricName]:
    """Distinct metric names, most recently active first (then by name); `search` is a case-insensitive
    substring. A name used with several types shows the type it was last seen with. `services`: only
    series whose service name (`service.name` or `service_name`) is one of them ("": series without one)."""
    service_sql, service_params = "", []
    if services is not None:
        named = [x for x in services if x]
        # The service name as the attribute pickers list it: `service.name` or `service_name`, either scope.
        has_name = ("SELECT 1 FROM metric_series_labels AS l WHERE l.series_id = s.id "
                    "AND l.project_id = s.project_id AND l.key IN ('service.name', 'service_name')")
        terms = [f"EXISTS ({has_name} AND l.value IN ({_marks(len(named))}))"] if named else []
        if "" in services:
            terms.append(f"NOT EXISTS ({has_name})")
        service_sql = f" AND ({' OR '.join(terms)})" if terms else " AND 0"
        service_params = named
    rows = conn.execute(
        f"SELECT s.name, s.type, max({LAST_SEEN_SQL}) AS seen FROM metric_series AS s {_STATE_JOIN} "
        f"WHERE s.project_id = ? AND (? = '' OR instr(lower(s.name), ?) > 0){service_sql} GROUP BY s.name "
        "ORDER BY seen DESC, s.name LIMIT ?", (project_id, search, search.lower(), *service_params, limit)).fetchall()
    return [MetricName(n, t) for n, t, _ in rows]


# --- latest state of live series (the Prometheus scrape, prometheus.md) -------------------------------------

# One row per live series: (series_id, time_ns, value, count, sum, flags, buckets, exemplars) — plain
# tuples, since a scrape compares each with the previous scrape's row and reads it by position.
LIVE_STATE_COLUMNS = ("series_id", "time_ns", "value", "count", "sum", "flags", "buckets", "exemplars")
LIVE_STATES_SQL = (
    "SELECT s.id, st.time_ns, st.value, st.count, st.sum, st.flags, st.buckets, st.exemplars "
    "FROM metric_series AS s JOIN metric_series_state AS st ON st.series_id = s.id "
    f"WHERE s.project_id = ?1 AND s.last_seen_ns >= ?2 - {LAST_SEEN_LAG_NS} "
    "AND max(s.last_seen_ns, st.time_ns) >= ?2")


def live_series_states(conn: sqlite3.Connection, project_id: int, seen_since_ns: int) -> list[tuple]:
    """The latest state (series_state.py) of every series of the project seen at or after
    `seen_since_ns`, found through the `metric_series_by_last_seen` index (which lags by at most
    LAST_SEEN_LAG_NS, so the range starts that much earlier and the exact newest time decides): the cost
    depends on the number of live series, never on history."""
    return conn.execute(LIVE_STATES_SQL, (project_id, seen_since_ns)).fetchall()


def recent_observations(conn: sqlite3.Connection, series_ids: list[int], since_ns: int) -> dict[int, list]:
    """series id → the `value` of each of its points at or after `since_ns` (numbers, or a set's member
    texts): what the scrape summarizes for Flux distributions and sets over their expiry window."""
    out: dict[int, list] = {sid: [] for sid in series_ids}
    # Chunks and head alike (issue 16): the exact stored values, a set's member texts included.
    for row in point_rows(conn, series_ids, since_ns):
        if row[4] is not None:
            out[row[1]].append(row[4])
    return out


class SeriesDefinition(NamedTuple):
    """What never changes about a series (it is part of its fingerprint)."""

    id: int
    name: str
    type: str
    unit: str
    description: str
    monotonic: bool
    resource_id: int
    scope_id: int
    attributes: dict[str, Any]  # point attributes


def series_definitions(conn: sqlite3.Connection, ids: list[int]) -> list[SeriesDefinition]:
    out = []
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        for sid, name, mtype, unit, description, monotonic, rid, scope_id, attributes in conn.execute(
                "SELECT id, name, type, unit, description, is_monotonic, resource_id, scope_id, attributes "
                f"FROM metric_series WHERE id IN ({_marks(len(chunk))})", chunk):
            out.append(SeriesDefinition(sid, name, mtype, unit, description, bool(monotonic), rid, scope_id,
                                        json.loads(attributes)))
    return out


def resource_attributes(conn: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """resource id → its attributes."""
    out = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        for rid, attrs in conn.execute(f"SELECT id, attributes FROM resources WHERE id IN ({_marks(len(chunk))})",
                                       chunk):
            out[rid] = json.loads(attrs)
    return out


def scope_names(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[str, str]]:
    """scope id → (name, version)."""
    out = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        for sid, name, version in conn.execute(
                f"SELECT id, name, version FROM scopes WHERE id IN ({_marks(len(chunk))})", chunk):
            out[sid] = (name, version)
    return out
