"""A key's buckets from the one store, through the neutral engine (collector/query) and its CalendarGrid.

    table = await store.read(fetch, store.point_cache, project_id, key, from_ns, to_ns, grid)
    table.starts, table.columns["country.US"], table.available_paths()

The buckets are every bucket of `grid` from the one holding `from` to the one holding `to` (trifle.md);
each column holds a path's value per bucket, NaN where that bucket has none. A bucket's points count
whatever part of it lies outside [from, to], as Trifle's stored buckets do.

What a key reads as depends on the metric's type (the one it was last seen with; spec README, "One
store": any metric can be read through Trifle):

| type | paths | value of a bucket |
|---|---|---|
| `tally` (Trifle's own writes) | each dot path written | the last assert plus the tracks written after it |
| `sum`, monotonic (OTel Counter, Flux counter) | `value` | the increase over the bucket, summed over the series |
| `sum` non-monotonic, `gauge` | `value` | each series' last reading in the bucket, summed |
| `histogram`, `exponential_histogram`, `summary` | `count` | the increase of the observation count, summed |
| `distribution` (Flux) | `count`, `sum` | the observations in the bucket: how many, their sum |
| `set` (Flux) | `count` | distinct members in the bucket |

A path that is a leaf in one write and a map in another (`a` and `a.b`) reads, in a bucket holding both,
as the map (values.unflatten): the leaf is dropped from that bucket here too, so the nested values, the
available paths and every formatter agree.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from otelite.api.trifle.rows import PATH_LABEL
from otelite.collector.query.engine import evaluate, grid_edges
from otelite.collector.query.grid import Grid
from otelite.collector.query.model import Aggregation, GroupKey, Query, TooManyBuckets
from otelite.collector.store.metrics import DISTRIBUTION, SET, TALLY, SeriesSelection, SeriesSet, select_series
from otelite.collector.store.points import PointCache

MAX_BUCKETS = 100_000  # per request; more → TooManyBuckets (the resource answers 400)


class GridRangeError(ValueError):
    """A bucket of the granularity would start or end beyond the years a date can hold (e.g. 5000y)."""


@dataclass
class BucketTable:
    starts: np.ndarray  # int64 ns: the start of every bucket, ascending
    columns: dict[str, np.ndarray]  # path → float64 per bucket, NaN where the bucket has no value

    def __len__(self) -> int:
        return len(self.starts)

    def available_paths(self) -> list[str]:
        """Trifle's `available_paths`: every numeric leaf path of any bucket, sorted."""
        return sorted(self.columns)

    def bucket_maps(self) -> list[dict[str, float]]:
        """Each bucket's {path: value} (paths with no value left out)."""
        out: list[dict[str, float]] = [{} for _ in range(len(self.starts))]
        for path, column in self.columns.items():
            for i in np.flatnonzero(~np.isnan(column)).tolist():
                out[i][path] = float(column[i])
        return out


def readings(series: SeriesSet) -> list[tuple[str | None, Aggregation]]:
    """(path, aggregation) per column a metric of this type reads as (module docstring's table); path
    None: a tally's paths come from its series' `path` label."""
    kind = series.type
    if kind == TALLY:
        return [(None, Aggregation("tally"))]
    if kind == "sum" and bool(series.monotonic.any()):
        return [("value", Aggregation("increase", across="sum"))]
    if kind in ("sum", "gauge"):
        return [("value", Aggregation("last", across="sum"))]
    if kind in ("histogram", "exponential_histogram", "summary"):
        return [("count", Aggregation("increase", across="sum"))]
    if kind == DISTRIBUTION:
        return [("count", Aggregation("count")), ("sum", Aggregation("sum"))]
    if kind == SET:
        return [("count", Aggregation("distinct"))]
    return []


def bucket_edges(grid: Grid, from_ns: int, to_ns: int, max_buckets: int = MAX_BUCKETS) -> np.ndarray:
    """The start of every bucket from floor(from) to floor(to), then the end of the last (nothing when
    to < from); TooManyBuckets beyond `max_buckets` (checked on an upper bound before the grid is built)."""
    if to_ns < from_ns:
        return np.zeros(0, np.int64)
    probe = Query(SeriesSelection(0, ""), from_ns, to_ns + 1, grid, Aggregation("tally"), max_buckets=max_buckets)
    try:
        return grid_edges(probe)
    except (OverflowError, ValueError) as e:
        if isinstance(e, TooManyBuckets):
            raise
        raise GridRangeError(str(e)) from None


def fetch(conn: sqlite3.Connection, cache: PointCache, project_id: int, key: str, from_ns: int, to_ns: int,
          grid: Grid, max_buckets: int = MAX_BUCKETS) -> BucketTable:
    """The key's buckets (module docstring). Raises the engine's TooManyBuckets."""
    edges = bucket_edges(grid, from_ns, to_ns, max_buckets)
    starts, end_ns = edges[:-1], int(edges[-1]) if len(edges) else 0
    table = BucketTable(starts, {})
    if len(starts) == 0:
        return table
    series = select_series(conn, SeriesSelection(project_id, key))
    for path, aggregation in readings(series):
        query = Query(SeriesSelection(project_id, key, series.type), int(starts[0]), end_ns, grid, aggregation,
                      group_by=(GroupKey(PATH_LABEL, "attribute"),) if path is None else (),
                      max_buckets=max_buckets)
        result = evaluate(conn, cache, query)
        index = np.searchsorted(starts, result.edges[:-1])  # the same grid: the same starts
        for s in result.series:
            name = s.labels.get(PATH_LABEL) if path is None else path
            if not name:
                continue
            column = np.full(len(starts), np.nan)
            column[index[s.buckets]] = s.values
            table.columns[name] = column
    _drop_shadowed_leaves(table)
    return table


def _drop_shadowed_leaves(table: BucketTable) -> None:
    """A leaf is not a value in a bucket where it is also a map (module docstring); then keep only
    columns with some value left."""
    columns = table.columns
    paths = sorted(columns)
    for i, path in enumerate(paths):
        prefix = path + "."
        j = bisect_left(paths, prefix, i + 1)
        descendants = []
        while j < len(paths) and paths[j].startswith(prefix):
            descendants.append(columns[paths[j]])
            j += 1
        if descendants:
            is_map = np.any(~np.isnan(np.vstack(descendants)), axis=0)
            columns[path] = np.where(is_map, np.nan, columns[path])
    for path in paths:
        if np.isnan(columns[path]).all():
            del columns[path]
