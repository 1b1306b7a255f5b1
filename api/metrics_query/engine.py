"""One metrics/query end to end: series → points → cells → groups → ranked, zero-filled JSON.

posthog-metrics.md, "Computation" and the response rules: the time grid is the union of the buckets
any clause has data in; a series missing a bucket gets 0.0 there; non-finite values are null; series are
ranked by the sum of |value| (descending, then by labels) and cut at 100 per clause; a clause with no
data is one series with no labels and no points; with a formula only the formula's series come back.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

import numpy as np

from otelite.api.errors import bad_request
from otelite.api.metrics_query import formula as formula_mod
from otelite.api.metrics_query.aggregate import BoundsMismatch, Cells, bucket_of, combine, series_cells
from otelite.api.metrics_query.points import PointCache, ReadTransaction
from otelite.api.metrics_query.request import Clause, MetricsQuery
from otelite.api.metrics_query.series import SeriesSet, filter_mask, find_series, label_values
from otelite.api.metrics_query.timeutil import INTERVALS, NS, approx_buckets, auto_interval, grid, iso, zone

MAX_ROWS = 10_000  # (bucket, group) rows per clause
MAX_SERIES = 100  # per clause in the response
MIN_LOOKBACK_NS = 300 * NS
DISTRIBUTIONS = ("histogram", "exponential_histogram")


@dataclass
class Prepared:
    """A clause's series (after filters) and their per-bucket cells, ready to be grouped."""
    clause: Clause
    series: SeriesSet
    cells: Cells | None
    nb: int
    point_times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    point_sidx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class ClauseResult:
    clause: Clause
    labels: list[dict]  # per group
    g: np.ndarray
    b: np.ndarray
    v: np.ndarray


def check_aggregation(clause: Clause, metric_type: str | None) -> None:
    if clause.aggregation == "histogram_quantile" and metric_type is not None and metric_type not in DISTRIBUTIONS:
        raise bad_request(f"histogram_quantile needs a histogram or exponential_histogram metric; "
                          f"{clause.metric_name!r} is a {metric_type}", attr="aggregation")


def prepare(conn: sqlite3.Connection, project_id: int, clause: Clause, edges: np.ndarray, t_to: int,
            interval: str, cache: PointCache, keep_points: bool = False) -> Prepared:
    nb = len(edges) - 1
    q = clause.q
    with ReadTransaction(conn):
        metric = find_series(conn, project_id, clause.metric_name, clause.metric_type)
        check_aggregation(clause, metric.type)
        if len(metric) == 0:
            return Prepared(clause, metric, None, nb)
        series = metric.subset(filter_mask(conn, project_id, metric, clause.filters))
        if len(series) == 0:
            return Prepared(clause, series, None, nb)
        # Increases need the reading before the range (spec step 4: look back max(interval, 5 min)).
        differences = clause.aggregation in ("rate", "increase") or (metric.type in DISTRIBUTIONS and q is not None)
        lookback = max(INTERVALS[interval] * NS, MIN_LOOKBACK_NS) if differences else 0
        pts = cache.points(conn, project_id, metric, int(edges[0]) - lookback, t_to)
    if len(series) < len(metric):
        pts = pts.take(np.isin(pts.series_id, series.ids))
    sidx = np.searchsorted(series.ids, pts.series_id)
    b = bucket_of(pts.time, edges)
    try:
        cells = series_cells(pts, sidx, b, clause.aggregation, q, series.temporality, series.monotonic, edges)
    except BoundsMismatch as e:
        raise bad_request(f"{clause.metric_name!r}: {e}", attr="aggregation") from None
    prepared = Prepared(clause, series, cells, nb)
    if keep_points:
        prepared.point_times, prepared.point_sidx = pts.time[pts.valid], sidx[pts.valid]
    return prepared


def groups_for(conn: sqlite3.Connection, project_id: int, series: SeriesSet, keys: list[tuple[str, str]],
               limit: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Group of each series for group-by keys [(key, scope)] and each group's labels. A series without
    a key has the label "". `limit` keeps the groups with the most series (others get -1)."""
    if not keys:
        return np.zeros(len(series), np.int64), [{}]
    columns = []
    for key, scope in keys:
        columns.append([v if v is not None else "" for v in label_values(conn, project_id, series, key, scope)])
    combos = list(zip(*columns))
    index: dict[tuple, int] = {}
    group = np.fromiter((index.setdefault(c, len(index)) for c in combos), np.int64, len(combos))
    labels = [dict(zip((k for k, _ in keys), c)) for c in index]
    if limit is not None and len(labels) > limit:
        sizes = np.bincount(group, minlength=len(labels))
        order = sorted(range(len(labels)), key=lambda i: (-sizes[i], tuple(labels[i].values())))[:limit]
        remap = np.full(len(labels), -1, np.int64)
        remap[order] = np.arange(len(order))
        group = remap[group]
        labels = [labels[i] for i in order]
    return group, labels


def run_clause(conn: sqlite3.Connection, project_id: int, clause: Clause, edges: np.ndarray, t_to: int,
               interval: str, cache: PointCache) -> ClauseResult:
    p = prepare(conn, project_id, clause, edges, t_to, interval, cache)
    if p.cells is None:
        return ClauseResult(clause, [], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    group, labels = groups_for(conn, project_id, p.series, [(k.key, k.scope) for k in clause.group_by])
    g, b, v = combine(p.cells, group, clause.aggregation, clause.q, p.nb)
    return ClauseResult(clause, labels, g, b, v)


def _labels_key(labels: dict) -> str:
    return json.dumps(labels, sort_keys=True)


def _rank(matrix: np.ndarray, labels: list[dict]) -> list[int]:
    score = np.nansum(np.abs(np.where(np.isfinite(matrix), matrix, np.nan)), axis=1) if matrix.size else \
        np.zeros(len(labels))
    return sorted(range(len(labels)), key=lambda i: (-score[i], _labels_key(labels[i])))[:MAX_SERIES]


def _points(row: np.ndarray, times: list[str]) -> list[dict]:
    values = row.tolist()
    finite = np.isfinite(row).tolist()
    return [{"time": t, "value": v if ok else None} for t, v, ok in zip(times, values, finite)]


def run_query(conn: sqlite3.Connection, project_id: int, timezone: str, query: MetricsQuery,
              cache: PointCache) -> dict:
    tz = zone(timezone)
    interval = query.interval or auto_interval(query.date_to_ns - query.date_from_ns)
    too_many = bad_request(f"the range holds more than {MAX_ROWS} {interval} buckets; choose a coarser interval",
                           attr="interval")
    if approx_buckets(query.date_from_ns, query.date_to_ns, interval) > 2 * MAX_ROWS:
        raise too_many  # without building a huge grid first
    edges = grid(query.date_from_ns, query.date_to_ns, interval, tz)
    if len(edges) - 1 > MAX_ROWS:
        raise too_many
    results = [run_clause(conn, project_id, c, edges, query.date_to_ns, interval, cache) for c in query.clauses]
    for r in results:
        rows = np.unique(r.g).size * np.unique(r.b).size
        if rows > MAX_ROWS:
            raise bad_request(f"clause {r.clause.name!r} gives {rows} (bucket, group) rows, over the limit of "
                              f"{MAX_ROWS}; narrow the filters, group by fewer keys or use a coarser interval",
                              attr="groupBy")
    used = np.unique(np.concatenate([r.b for r in results])) if results else np.zeros(0, np.int64)
    times = [iso(int(edges[i]), tz) for i in used.tolist()]
    matrices = []
    for r in results:
        m = np.zeros((len(r.labels), used.size))
        if r.g.size:
            m[r.g, np.searchsorted(used, r.b)] = r.v
        matrices.append(m)

    if query.formula is not None:
        return {"results": _formula(query, results, matrices, used.size, times)}
    out = []
    for r, m in zip(results, matrices):
        if not r.labels or r.g.size == 0:
            out.append({"labels": {}, "points": [], "metric_name": r.clause.metric_name, "clause": r.clause.name})
            continue
        present = np.unique(r.g)
        for i in _rank(m[present], [r.labels[k] for k in present]):
            gi = int(present[i])
            out.append({"labels": r.labels[gi], "points": _points(m[gi], times),
                        "metric_name": r.clause.metric_name, "clause": r.clause.name})
    return {"results": out}


def _formula(query: MetricsQuery, results: list[ClauseResult], matrices: list[np.ndarray], width: int,
             times: list[str]) -> list[dict]:
    """Series matched by identical label sets; an ungrouped clause applies to every label set; a label
    set a grouped clause lacks reads 0 there (the zero-fill rule)."""
    label_sets: dict[str, dict] = {}
    for r in results:
        if r.clause.group_by:
            for gi in np.unique(r.g).tolist():
                label_sets.setdefault(_labels_key(r.labels[gi]), r.labels[gi])
    if not label_sets:
        label_sets = {_labels_key({}): {}}
    keys = list(label_sets)
    env = {}
    for r, m in zip(results, matrices):
        if not r.clause.group_by:
            env[r.clause.name] = m[0][None, :] if m.shape[0] else np.zeros((1, width))
            continue
        rows = np.zeros((len(keys), width))
        where = {_labels_key(lab): i for i, lab in enumerate(r.labels)}
        for j, k in enumerate(keys):
            if k in where:
                rows[j] = m[where[k]]
        env[r.clause.name] = rows
    values = np.broadcast_to(formula_mod.evaluate(query.formula, env), (len(keys), width))
    if width == 0:
        return [{"labels": {}, "points": [], "metric_name": None, "clause": "formula"}]
    labels = [label_sets[k] for k in keys]
    return [{"labels": labels[i], "points": _points(values[i], times), "metric_name": None, "clause": "formula"}
            for i in _rank(values, labels)]
