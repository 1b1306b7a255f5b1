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
from typing import TYPE_CHECKING, Callable

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
        groups: dict[tuple, list[int]] = {}
        info_of = series.get
        unknown: list[int] = []
        for i, p in enumerate(points):
            # (project, name, type) of the point's metric and its hour.
            info = info_of(p[1])
            if info is None:
                unknown.append(i)
                continue
            t = p[3]
            key = (info[0], info[1], info[2], t - t % BLOCK_NS)
            group = groups.get(key)
            if group is None:
                groups[key] = group = []
            group.append(i)
        if unknown:
            # Looked up here, in the pass that meets them, rather than in a pass of its own over every point
            # of the commit (the set of a 16,000-point commit's ids and its difference with the cache took
            # 3.5-4 ms, timed in process; the whole commit ~160). A
            # point whose series row is missing (never written by the writer) keeps its project, as the
            # compactor's head pass does.
            if fetch is not None:
                fetch({points[i][1] for i in unknown})
            for i in unknown:
                p, t = points[i], points[i][3]
                info = info_of(p[1])
                key = (info[0], info[1], info[2], t - t % BLOCK_NS) if info is not None else (p[0], "", "", t - t % BLOCK_NS)
                groups.setdefault(key, []).append(i)
            for group in groups.values():
                group.sort()  # arrival order: a chunk's seq is its first point's hid
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

