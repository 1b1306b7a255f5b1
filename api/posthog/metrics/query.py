"""POST metrics/query on the neutral engine (collector/query): clauses → engine queries → ranked,
zero-filled PostHog JSON.

posthog-metrics.md, "Computation" and the response rules: the time grid is the union of the buckets
any clause has data in; a series missing a bucket gets 0.0 there; non-finite values are null; series are
ranked by the sum of |value| (descending, then by labels) and cut at 100 per clause; a clause with no
data is one series with no labels and no points; with a formula only the formula's series come back.

PostHog's aggregation names are translated here (`aggregation_of`): a per-series value in each bucket,
then a reduction across series (`sum` = the last reading of each series, summed).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, replace

import numpy as np

from otelite.api.errors import bad_request
from otelite.api.posthog.metrics import formula as formula_mod
from otelite.api.posthog.metrics.intervals import INTERVALS, approx_buckets, auto_interval, grid_for
from otelite.api.posthog.metrics.request import PERCENTILES, Clause, MetricsQuery
from otelite.collector.query import engine, reduce
from otelite.collector.query.engine import Prepared
from otelite.collector.query.model import (MIN_LOOKBACK_NS, OBSERVED_TYPES, Aggregation, BoundsMismatch, GroupKey, Query,
                                           TooManyBuckets, UnsupportedAggregation)
from otelite.collector.query.reduce import Cells
from otelite.collector.store.metrics import TALLY, SeriesSelection, SeriesSet, metric_type
from otelite.collector.store.points import PointCache
from otelite.collector.times import NS, iso, zone

MAX_ROWS = 10_000  # (bucket, group) rows per clause
MAX_SERIES = 100  # per clause in the response


# On metrics whose points carry a count and a sum of observations (histograms, exponential histograms,
# summaries) sum, count and avg describe the observations recorded in each bucket: their sum, their
# number and their mean (sum / number over every series of the group), with cumulative points read as
# increases over the previous reading (README, "Histogram semantics"). min and max have no per-bucket
# meaning there and are refused.
OBSERVATION_AGGREGATIONS = {"sum": Aggregation("observation_sum", across="sum"),
                            "count": Aggregation("observations", across="sum"),
                            "avg": Aggregation("observation_mean")}


TALLY_ACROSS = {"sum": "sum", "count": "count", "avg": "avg", "min": "min", "max": "max",
                **{p: "quantile" for p in PERCENTILES}}


def aggregation_of(name: str, q: float | None, metric_type: str | None = None) -> Aggregation:
    """A PostHog aggregation (and its quantile) as the engine's two-stage Aggregation, for a metric of
    `metric_type`."""
    if metric_type in OBSERVED_TYPES and name in OBSERVATION_AGGREGATIONS:
        return OBSERVATION_AGGREGATIONS[name]
    if metric_type == TALLY and name in TALLY_ACROSS:
        # A Trifle key's series (api/trifle/) holds a bucket's value as its tracks with an assert replacing
        # them: its reading in a bucket is that tally (what Trifle and /metrics show), not its last raw point.
        return Aggregation("tally", q=PERCENTILES.get(name), across=TALLY_ACROSS[name])
    if name in ("sum", "count"):
        return Aggregation("last", across=name)
    if name in ("avg", "min", "max"):
        return Aggregation(name, across=name)
    if name in PERCENTILES:
        return Aggregation("quantile", q=PERCENTILES[name], across="quantile")
    if name in ("rate", "increase"):
        return Aggregation(name, across="sum")
    return Aggregation("histogram_quantile", q=q)


def check_aggregation(clause: Clause, metric_type: str | None) -> None:
    if clause.aggregation in ("min", "max") and metric_type in OBSERVED_TYPES:
        raise bad_request(f"{clause.metric_name!r} is a {metric_type}: {clause.aggregation} of its observations "
                          f"in a bucket is not recorded (a point's min/max covers its whole collection "
                          f"period); use p50..p99 or histogram_quantile", attr="aggregation")
    try:
        engine.check_aggregation(clause.aggregation, metric_type)
    except UnsupportedAggregation as e:
        raise bad_request(f"{clause.metric_name!r}: {e}", attr="aggregation") from None


def resolve_type(conn: sqlite3.Connection, project_id: int, clause: Clause) -> Clause:
    """The clause with its metric type pinned (the latest type of the name when it gives none), since
    what sum, count and avg mean depends on it."""
    if clause.metric_type is not None:
        return clause
    return replace(clause, metric_type=metric_type(conn, project_id, clause.metric_name))


def engine_query(project_id: int, clause: Clause, start_ns: int, end_ns: int, interval: str,
                 tz: dt.tzinfo) -> Query:
    """The engine query of one clause. Increases look back max(interval, 5 min) for a predecessor
    (spec step 4), whatever the bucket lengths of `day`/`week` grids are."""
    return Query(
        selection=SeriesSelection(project_id, clause.metric_name, clause.metric_type, tuple(clause.filters)),
        start_ns=start_ns, end_ns=end_ns, grid=grid_for(interval, tz),
        aggregation=aggregation_of(clause.aggregation, clause.q, clause.metric_type),
        group_by=tuple(GroupKey(k.key, k.scope) for k in clause.group_by),
        lookback_ns=max(INTERVALS[interval] * NS, MIN_LOOKBACK_NS), max_buckets=MAX_ROWS)


def prepare(conn: sqlite3.Connection, cache: PointCache, project_id: int, clause: Clause, start_ns: int,
            end_ns: int, interval: str, tz: dt.tzinfo, keep_points: bool = False) -> Prepared:
    """The clause's series and per-series cells (engine.prepare), with PostHog's 400s."""
    clause = resolve_type(conn, project_id, clause)
    check_aggregation(clause, clause.metric_type)
    try:
        return engine.prepare(conn, cache, engine_query(project_id, clause, start_ns, end_ns, interval, tz),
                              keep_points=keep_points)
    except (UnsupportedAggregation, BoundsMismatch) as e:
        raise bad_request(f"{clause.metric_name!r}: {e}", attr="aggregation") from None
    except TooManyBuckets:
        raise bad_request(f"the range holds more than {MAX_ROWS} {interval} buckets; choose a coarser interval",
                          attr="interval") from None


def groups_for(conn: sqlite3.Connection, project_id: int, series: SeriesSet, keys: list[tuple[str, str]],
               limit: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Group of each series for group-by keys [(key, scope)] and each group's labels (engine.group_index)."""
    return engine.group_index(conn, series, keys, limit)


def combine(cells: Cells, group: np.ndarray, aggregation: str, q: float | None, nb: int,
            metric_type: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells reduced per (group, bucket) for a PostHog aggregation name → (group, bucket, value)."""
    return reduce.combine(cells, group, aggregation_of(aggregation, q, metric_type), nb)


@dataclass
class ClauseResult:
    clause: Clause
    labels: list[dict]  # per group
    g: np.ndarray
    b: np.ndarray
    v: np.ndarray


def run_clause(conn: sqlite3.Connection, cache: PointCache, project_id: int, clause: Clause, start_ns: int,
               end_ns: int, interval: str, tz: dt.tzinfo) -> ClauseResult:
    p = prepare(conn, cache, project_id, clause, start_ns, end_ns, interval, tz)
    result = engine.group(conn, p)
    labels = [s.labels for s in result.series]
    if not labels:
        return ClauseResult(clause, [], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    g = np.concatenate([np.full(len(s.buckets), i, np.int64) for i, s in enumerate(result.series)])
    b = np.concatenate([s.buckets for s in result.series])
    v = np.concatenate([s.values for s in result.series])
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


def run_query(conn: sqlite3.Connection, cache: PointCache, project_id: int, timezone: str,
              query: MetricsQuery) -> dict:
    tz = zone(timezone)
    interval = query.interval or auto_interval(query.date_to_ns - query.date_from_ns)
    if approx_buckets(query.date_from_ns, query.date_to_ns, interval) > 2 * MAX_ROWS:
        # without building a huge grid first
        raise bad_request(f"the range holds more than {MAX_ROWS} {interval} buckets; choose a coarser interval",
                          attr="interval")
    results = [run_clause(conn, cache, project_id, c, query.date_from_ns, query.date_to_ns, interval, tz)
               for c in query.clauses]
    edges = grid_for(interval, tz).edges(query.date_from_ns, query.date_to_ns)
    for r in results:
        rows = len(r.labels) * np.unique(r.b).size
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
        if not r.labels:
            out.append({"labels": {}, "points": [], "metric_name": r.clause.metric_name, "clause": r.clause.name})
            continue
        for i in _rank(m, r.labels):
            out.append({"labels": r.labels[i], "points": _points(m[i], times),
                        "metric_name": r.clause.metric_name, "clause": r.clause.name})
    return {"results": out}


def _formula(query: MetricsQuery, results: list[ClauseResult], matrices: list[np.ndarray], width: int,
             times: list[str]) -> list[dict]:
    """Series matched by identical label sets; an ungrouped clause applies to every label set; a label
    set a grouped clause lacks reads 0 there (the zero-fill rule)."""
    label_sets: dict[str, dict] = {}
    for r in results:
        if r.clause.group_by:
            for labels in r.labels:
                label_sets.setdefault(_labels_key(labels), labels)
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
