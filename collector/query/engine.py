"""One metrics query end to end: series → points → cells → groups, for any dialect.

    result = await store.read(evaluate, store.point_cache, query)

`evaluate` = `prepare` (select the series, read the points through the store's point cache in one read
transaction, or for increases over whole quarter hours partly from the hourly rollups (store/rollups.py),
compute the per-series cells) then `group` (group the series by label keys and combine the
cells of each group and bucket). A dialect that groups the same cells several ways (PostHog's
characterize: one grouping per candidate key) calls `prepare` once and `group` per grouping.

The result holds only buckets with data, NaN where a value is undefined (a quantile of no observations);
zero-filling, ranking and rendering are the dialect's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace

import numpy as np

from otelite.collector.query.model import (DISTRIBUTION_TYPES, MIN_LOOKBACK_NS, OBSERVATION_FUNCTIONS,
                                           OBSERVED_TYPES, GroupKey, Query, Result,
                                           SeriesResult, TooManyBuckets, UnsupportedAggregation)
from otelite.collector.query.reduce import Cells, added_cells, bucket_of, combine, series_cells
from otelite.collector.store import budget, rollups
from otelite.collector.store.metrics import SeriesLabels, SeriesSet, read_series_labels, select_series
from otelite.collector.store.points import PointCache, Points, ReadTransaction, _merge_sorted, concat_all


@dataclass
class Prepared:
    """A query's series (after filters), grid and per-series cells, ready to be grouped."""

    query: Query
    series: SeriesSet
    edges: np.ndarray
    cells: Cells | None  # None: no series matched
    # With keep_points: time and series index of every reading in the range (which series reported when).
    point_times: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    point_sidx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def nb(self) -> int:
        return len(self.edges) - 1


def check_aggregation(fn: str, metric_type: str | None) -> None:
    """UnsupportedAggregation when `fn` has no meaning for the metric type (None: no such metric)."""
    if fn == "histogram_quantile" and metric_type is not None and metric_type not in DISTRIBUTION_TYPES:
        raise UnsupportedAggregation(f"histogram_quantile needs a histogram or exponential_histogram metric; "
                                     f"this one is a {metric_type}")
    if fn in OBSERVATION_FUNCTIONS and metric_type is not None and metric_type not in OBSERVED_TYPES:
        raise UnsupportedAggregation(f"{fn} needs a histogram, exponential_histogram or summary metric; "
                                     f"this one is a {metric_type}")


def grid_edges(query: Query) -> np.ndarray:
    """The query's bucket edges, or TooManyBuckets (checked on an upper bound first, so a huge grid is
    never built)."""
    grid, start, end = query.grid, query.start_ns, query.end_ns
    if grid.approx_buckets(start, end) > 2 * query.max_buckets + 16:
        raise TooManyBuckets(f"the range holds more than {query.max_buckets} buckets")
    edges = grid.edges(start, end)
    if len(edges) - 1 > query.max_buckets:
        raise TooManyBuckets(f"the range holds more than {query.max_buckets} buckets")
    return edges


def _lookback(query: Query, metric_type: str | None) -> int:
    agg = query.aggregation
    cumulative_buckets = metric_type in DISTRIBUTION_TYPES and agg.fn in ("quantile", "histogram_quantile")
    if not (agg.differences or cumulative_buckets):
        return 0
    if query.lookback_ns is not None:
        return query.lookback_ns
    return max(query.grid.nominal_ns, MIN_LOOKBACK_NS)


def prepare(conn: sqlite3.Connection, cache: PointCache, query: Query, *, keep_points: bool = False) -> Prepared:
    edges = grid_edges(query)
    with ReadTransaction(conn):  # series and points from one snapshot (points.py)
        series = select_series(conn, query.selection)
        check_aggregation(query.aggregation.fn, series.type)
        if len(series) == 0:
            return Prepared(query, series, edges, None)
        loaded_from = int(edges[0]) - _lookback(query, series.type)
        budget.check()  # the read's deadline (collector/store/budget.py), between the engine's passes
        earlier = rolled_key = None
        if not keep_points and rollups.applies(query.aggregation.fn, series):
            earlier, pts, rolled_key = rollups.parts(conn, cache, series, loaded_from, query.end_ns, edges)
            if series.type == "exponential_histogram":  # (its cells are rows of one Points: one whole)
                earlier, pts = None, _merge_sorted(earlier, pts, earlier.kind)
        else:
            pts = cache.points(conn, series, loaded_from, query.end_ns)
    budget.check()
    if earlier is not None and len(earlier):
        return Prepared(query, series, edges, _two_part_cells(earlier, pts, series, edges, query.aggregation,
                                                              loaded_from, cache, rolled_key))
    pts, sidx = _selected(pts, series)
    b = bucket_of(pts.time, edges)
    cells = series_cells(pts, sidx, b, query.aggregation, series.temporality, series.monotonic, edges, loaded_from)
    prepared = Prepared(query, series, edges, cells)
    if keep_points:
        inside = pts.valid & (b >= 0)
        if inside.all():
            prepared.point_times, prepared.point_sidx = pts.time, sidx
        else:
            prepared.point_times, prepared.point_sidx = pts.time[inside], sidx[inside]
    return prepared


def _two_part_cells(earlier: Points, newest: Points, series: SeriesSet, edges: np.ndarray, agg, loaded_from: int,
                    cache: PointCache | None = None, rolled_key: tuple | None = None) -> Cells:
    """The cells of readings given as two sorted parts, every reading of `newest` later than those of its
    series in `earlier` (rollups.parts): each part's cells, `newest`'s worked out with each series' last
    reading of `earlier` before its own (a look-back row, bucket -1: it gives the pair's increase and none
    of its own), and a series' cells of one bucket in both parts (a bucket across their boundary) added.
    The increase-based functions rollups serve are sums over readings, so this equals the cells of one
    sorted whole, without copying the large first part into it.

    `rolled_key`: the cache key under which `earlier` never changes (rollups.parts); its cells are then
    kept in `cache` too, under everything else they depend on, so that a repeated query (a dashboard's
    refresh) works out only the newest hours. Kept cells are never changed here: `added_cells` and the
    division of a rate make new ones."""
    per_second = agg.fn == "rate"  # increases are added, then divided once: as one whole would
    if per_second:
        agg = replace(agg, fn="increase")
    pts, sidx = _selected(earlier, series)

    def earlier_cells() -> Cells:
        return series_cells(pts, sidx, bucket_of(pts.time, edges), agg, series.temporality, series.monotonic,
                            edges, loaded_from)

    if cache is None or rolled_key is None:
        cells = earlier_cells()
    else:
        cells = cache.derived(("cells", rolled_key, agg, edges.tobytes(), loaded_from, series.ids.tobytes(),
                               series.temporality.tobytes(), series.monotonic.tobytes()), earlier_cells)
    new, new_sidx = _selected(newest, series)
    if len(new):
        cells = _with_newest(cells, pts, sidx, new, new_sidx, series, edges, agg, loaded_from)
    if per_second:  # (series_cells' rate: per second of each bucket)
        cells = replace(cells, value=cells.value / (np.diff(edges) / 1e9)[cells.b])
    return cells


def _with_newest(cells: Cells, pts: Points, sidx: np.ndarray, new: Points, new_sidx: np.ndarray, series: SeriesSet,
                 edges: np.ndarray, agg, loaded_from: int) -> Cells:
    """`cells` (of `pts`) with those of `new` added, each series' last reading of `pts` before its own."""
    last = np.flatnonzero(np.append(sidx[1:] != sidx[:-1], True)) if len(pts) else np.zeros(0, np.int64)
    both = concat_all([pts.take(last), new], pts.kind)
    both_sidx = np.concatenate((sidx[last], new_sidx))
    order = np.argsort(both_sidx, kind="stable")  # each series' predecessor, then its newest readings
    b = np.concatenate((np.full(last.size, -1, np.int64), bucket_of(new.time, edges)))
    later = series_cells(both.take(order), both_sidx[order], b[order], agg, series.temporality, series.monotonic,
                         edges, loaded_from)
    return added_cells(cells, later, len(edges) - 1)


def _selected(pts: Points, series: SeriesSet) -> tuple[Points, np.ndarray]:
    """The points of the selected series and each one's index in `series.ids`. A series' points are
    adjacent (points.py sorts them by series and time), so both are worked out once per run of a series,
    not per point."""
    n = len(pts)
    if n == 0:
        return pts, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], pts.series_id[1:] != pts.series_id[:-1])))
    lengths = np.diff(np.append(starts, n))
    run_ids = pts.series_id[starts]
    run_index = np.searchsorted(series.ids, run_ids)
    if not series.complete:
        found = run_index < len(series.ids)
        found[found] = series.ids[run_index[found]] == run_ids[found]
        if not found.all():
            pts = pts.take(np.repeat(found, lengths))
            run_index, lengths = run_index[found], lengths[found]
    return pts, np.repeat(run_index, lengths)


def group_index(conn: sqlite3.Connection, series: SeriesSet, keys: tuple[GroupKey, ...] | list,
                limit: int | None = None, labels_read: SeriesLabels | None = None
                ) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The group of each series for group-by keys and each group's labels (a series without a key has
    the label ""). `limit` keeps the groups with the most series (ties by labels); the others get -1.
    `labels_read`: the series' labels when the caller has read them already (holding these keys)."""
    if not keys:
        return np.zeros(len(series), np.int64), [{}]
    keys = [GroupKey(*k) for k in keys]
    if labels_read is None:
        labels_read = read_series_labels(conn, series, [k.key for k in keys])
    group, labels = combine_codes([labels_read.codes(k.key, k.scope) for k in keys], [k.key for k in keys])
    if limit is not None and len(labels) > limit:
        sizes = np.bincount(group, minlength=len(labels))
        order = sorted(range(len(labels)), key=lambda i: (-sizes[i], tuple(labels[i].values())))[:limit]
        remap = np.full(len(labels), -1, np.int64)
        remap[order] = np.arange(len(order))
        group = remap[group]
        labels = [labels[i] for i in order]
    return group, labels


def combine_codes(coded: list[tuple[np.ndarray, list[str]]], names: list[str]
                  ) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Series grouped by their labels of several keys (`names`), each key given as codes into its
    values (-1: the series lacks the key, which reads as "", like a literal ""): the group of each
    series, numbered in order of first appearance, and each group's labels."""
    n = coded[0][0].size
    columns, texts = [], []
    combo = np.zeros(n, np.int64)
    for codes, values in coded:
        values = list(values)
        if "" not in values:
            values.append("")
        codes = np.where(codes >= 0, codes, values.index(""))
        columns.append(codes)
        texts.append(values)
        # Renumbered after each key, so the combined code stays below the number of series.
        combo = np.unique(combo * len(values) + codes, return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # groups numbered by their first series
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    labels = [{name: values[int(codes[i])] for name, codes, values in zip(names, columns, texts)}
              for i in first[order].tolist()]
    return rank[inverse.reshape(-1)], labels


def group(conn: sqlite3.Connection, prepared: Prepared, keys: tuple[GroupKey, ...] | None = None,
          limit: int | None = None) -> Result:
    """Combine the prepared cells per group (default: the query's group_by and group_limit)."""
    query = prepared.query
    result = Result(prepared.series.type, prepared.edges)
    if prepared.cells is None:
        return result
    keys = query.group_by if keys is None else keys
    limit = query.group_limit if limit is None else limit
    group_of, labels = group_index(conn, prepared.series, keys, limit)
    budget.check()
    g, b, v = combine(prepared.cells, group_of, query.aggregation, prepared.nb)
    if g.size == 0:
        return result
    order = np.lexsort((b, g))
    g, b, v = g[order], b[order], v[order]
    cuts = np.flatnonzero(np.diff(g)) + 1
    for gb, bb, vb in zip(np.split(g, cuts), np.split(b, cuts), np.split(v, cuts)):
        result.series.append(SeriesResult(labels[int(gb[0])], bb, vb))
    return result


def evaluate(conn: sqlite3.Connection, cache: PointCache, query: Query) -> Result:
    """Run `query` (module docstring). Raises TooManyBuckets, UnsupportedAggregation, BoundsMismatch."""
    return group(conn, prepare(conn, cache, query))
