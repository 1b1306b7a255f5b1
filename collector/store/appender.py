"""Where a commit's metric points go: straight into chunks, or the head (issue 16).

Writing a point to the head and moving it later costs an index-free insert, the compactor reading it back
and a delete (py-spy on the writer thread: 40% of its time on points). So the writer packs the points it
already holds: each (metric, hour) group of a commit with at least `compaction.direct_min_points` points
becomes one level-0 chunk (chunks.py) in the transaction that acknowledges them, and the compactor's merges
(compactor.py) grow those into the hour's large chunks, as Prometheus' head appends and compacts in
memory. Small groups (a metric with a handful of series) go to the head as before: a chunk per commit
for each of them would cost more than the rows and leave the store full of tiny chunks, which the head
pass packs in bulk.

Every point gets an arrival number (`hid`, the head rowid it has or would have had) from one counter that
only grows, persisted with the commit (`metric_head_marks.moved_to`); the query cache (points.py) and the
order of points with one series and timestamp (a tally's write order) rest on it. The order of ties also
needs every chunk point of a metric and hour to have arrived before its head points of that hour (points.py
reads chunks, then the head; points with one timestamp share their hour), so a metric and hour with points
in the head keeps going to the head until the compactor has moved them.
"""

from __future__ import annotations

import sqlite3
from operator import itemgetter
from typing import TYPE_CHECKING, Callable

import numpy as np

from otelite.collector.store.chunks import BLOCK_NS, block_from_columns, encode, stored_columns
from otelite.collector.store.compactor import SQL_INSERT_CHUNK, SQL_MOVED_TO

if TYPE_CHECKING:
    from otelite.collector.store.series_cache import SeriesInfo

_SQL_HEAD_ROW = ("INSERT INTO metric_points (id, project_id, series_id, start_ns, time_ns, value, count, sum, min, "
                 "max, flags, buckets, exemplars) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class PointAppender:
    """Owned by the writer. `append` inside the commit's transaction; `moved(hi)` after the compactor has
    committed a head pass that moved every head row with id <= hi."""

    def __init__(self, direct_min: int) -> None:
        self.direct_min = max(int(direct_min), 1)
        # Metrics and hours with points in the head: (project, name, type, hour) → the largest hid written
        # there. An entry left by a commit that rolled back only sends them to the head a little longer.
        self._in_head: dict[tuple, int] = {}
        self._backlog_hi = 0  # head rows present at start (metrics unknown): all points go to the head

    def start(self, conn: sqlite3.Connection) -> None:
        self._backlog_hi = conn.execute("SELECT max(id) FROM metric_points").fetchone()[0] or 0

    def moved(self, hi: int) -> None:
        if hi >= self._backlog_hi:
            self._backlog_hi = 0
        self._in_head = {k: v for k, v in self._in_head.items() if v > hi}

    def append(self, conn: sqlite3.Connection, points: list[tuple], series: "dict[int, SeriesInfo]",
               first_hid: int, bucket_counts: dict[int, bytes] | None = None,
               fetch: Callable[[set[int]], None] | None = None) -> tuple[int, int]:
        """Store `points` (records.POINT_COLUMNS rows, in arrival order) with hids first_hid, first_hid + 1,
        ...; `series`: what is known of their series (series_cache.py), which `fetch(ids)` completes from the
        database for the series it lacks (a batch carries the rows of its series, so this is rare; the
        state updater after this reads the same dict); `bucket_counts`: the histogram points' counts the
        walk gave (records.WriteBatch.bucket_counts). Returns (the largest hid used, the largest head rowid
        written or 0)."""
        info_of = series.get
        infos = list(map(info_of, map(_SERIES_ID, points)))
        if fetch is not None and None in infos:
            # Looked up here, where they are met, rather than in a pass of its own over every point of the
            # commit (the set of a 16,000-point commit's ids and its difference with the cache took
            # 3.5-4 ms, timed in process; the whole commit ~160).
            fetch({p[1] for p, info in zip(points, infos) if info is None})
            infos = list(map(info_of, map(_SERIES_ID, points)))
        groups = _groups(points, infos)
        head: list[int] = []
        in_head: list[tuple] = []
        for key, idx in groups.items():
            if len(idx) < self.direct_min or self._backlog_hi or key in self._in_head:
                head += idx
                in_head.append(key)
                continue
            project_id, name, metric_type, block_start = key
            cols = stored_columns([points[i] for i in idx])
            hids = [first_hid + i for i in idx]
            counts = list(map(bucket_counts.get, idx)) if bucket_counts and metric_type == "histogram" else None
            block = block_from_columns(metric_type or "gauge", cols, hids, counts).sorted()
            times = block.points.time
            conn.execute(SQL_INSERT_CHUNK, (project_id, name, metric_type, block_start, 0, hids[0], len(block),
                                            int(times.min()), int(times.max()), encode(block)))
        last = first_hid + len(points) - 1
        head_hi = 0
        if head:
            head.sort()  # arrival order
            conn.executemany(_SQL_HEAD_ROW, [(first_hid + i,) + tuple(points[i]) for i in head])
            head_hi = first_hid + head[-1]
            self._in_head.update(dict.fromkeys(in_head, head_hi))
        conn.execute(SQL_MOVED_TO, (last,))
        return last, head_hi



_SERIES_ID, _TIME, _METRIC = itemgetter(1), itemgetter(3), itemgetter(4)


def _groups(points: list[tuple], infos: "list[SeriesInfo | None]") -> dict[tuple, list[int]]:
    """(project, name, type, hour) → the indexes of `points` of that metric and hour, in arrival order.
    `infos`: each point's series (SeriesInfo), or None: such a point (its series row was never written)
    keeps its project under no metric name, as the compactor's head pass does.

    Sorted in numpy by (metric number, hour), stable: a Python step per point making and looking up its
    key took 1.2 µs a point, a tenth of the writer thread's time (timed alone on a 16,000-point commit,
    0.55 µs this way)."""
    n = len(points)
    times = list(map(_TIME, points))
    t = None
    if None not in infos:
        try:
            t = np.array(times)
        except OverflowError:
            pass
    if t is None or t.dtype != np.int64 or t.shape != (n,):
        groups: dict[tuple, list[int]] = {}
        for i, (p, info, ti) in enumerate(zip(points, infos, times)):
            hour = ti - ti % BLOCK_NS
            key = (info[0], info[1], info[2], hour) if info is not None else (p[0], "", "", hour)
            groups.setdefault(key, []).append(i)
        return groups
    metric = np.fromiter(map(_METRIC, infos), np.int64, n)
    hour = t - t % BLOCK_NS  # numpy's % of integers is Python's (floored), for times before 1970 too
    order = np.lexsort((hour, metric))
    m, h = metric[order], hour[order]
    starts = np.flatnonzero(np.concatenate(([True], (m[1:] != m[:-1]) | (h[1:] != h[:-1]))))
    groups = {}
    for at, idx in zip(starts.tolist(), np.split(order, starts[1:])):
        info = infos[int(order[at])]
        groups[(info[0], info[1], info[2], int(h[at]))] = idx.tolist()
    return groups
