"""The latest state of every metric series, kept current by the writer (prometheus.md).

A Prometheus scrape must cost the same after a day as after a minute, so it reads one row per live series
from `metric_series_state` instead of the points table. The writer calls `SeriesStateUpdater.update`
inside the transaction that inserts the points, so the state always matches the committed points:

- gauges, cumulative sums and histograms, summaries: the newest point (by `time_ns`; a later commit wins a
  tie), replaced only when a newer one arrives;
- DELTA sums and DELTA (exponential) histograms: the exact running total of every delta the store was
  given, whatever their order (sums commute), so they read as cumulative series. prometheus.md asks to do
  better than the Collector's accumulation, which keeps only deltas that line up in time. Flux counters
  are DELTA sums (metrics.py), so their state is their exact running total.
- Flux distributions (one point per observation, metrics.py): `count`, `sum`, `min` and `max` of every
  observation ever stored (the summary's `_count` and `_sum` on the scrape), `value` the newest one.
- tallies (Trifle keys, metrics.py): every point applied in write order, a track adding to the total and
  an assert (records.TALLY_SET) replacing it, the same fold the engine's `tally` does per bucket.

Rows are tuples in `STATE_COLUMNS` order (the same values as `records.POINT_COLUMNS`, series id first).
In the table they lie in the order their series first arrived (`slot`, migration 0012), so the series
one exporter sends together share pages, and the statements here update rows in place, never moving them.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from typing import TYPE_CHECKING, Any

from otelite.collector.jsontext import dumps as _dumps
from otelite.collector.store.bulk import BulkInsert
from otelite.collector.store.records import INT64_MAX as _INT64_MAX, POINT_COLUMNS, TALLY_SET

if TYPE_CHECKING:
    from otelite.collector.store.series_cache import SeriesInfo

log = logging.getLogger("otelite.store")

DISTRIBUTION = "distribution"  # metrics.DISTRIBUTION (not imported: metrics.py reads this table)
STATE_COLUMNS = ("series_id", "project_id", "time_ns", "start_ns", "value", "count", "sum", "min", "max",
                 "flags", "buckets", "exemplars")
_ACCUMULATED_TYPES = frozenset(("sum", "histogram", "exponential_histogram", "tally"))
DELTA = 1  # AggregationTemporality.DELTA
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK
_EXP_MAX_BUCKETS = 160  # per sign, the SDK's default max_size: merged deltas are downscaled to fit
# How far behind the newest point `metric_series.last_seen_ns` may be (the writer, issue 16): the exact
# newest time is max(metric_series.last_seen_ns, metric_series_state.time_ns) (metrics.py reads it so).
LAST_SEEN_LAG_NS = 60 * 10**9

_COLS = ", ".join(STATE_COLUMNS)
_MARKS = ", ".join("?" * len(STATE_COLUMNS))
# Newest point wins; `>=` so that of two points with one timestamp the later commit is kept. A point
# without exemplars keeps the last ones seen: they still illustrate the cumulative value (an SDK sends an
# exemplar once, and Prometheus clients keep showing the last exemplar the same way). Its values are the
# point's own row: the columns named in `records.POINT_COLUMNS` order, so the writer passes its points as
# they are (a tuple rebuilt per point cost ~3% of the writer thread under the ingest benchmark, py-spy).
UPSERT_NEWEST = BulkInsert(
    f"INSERT INTO metric_series_state ({', '.join(POINT_COLUMNS)})", len(POINT_COLUMNS),
    " ON CONFLICT (series_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:-1])
    + ", exemplars = COALESCE(excluded.exemplars, metric_series_state.exemplars)"
    + " WHERE excluded.time_ns >= metric_series_state.time_ns")
# A state computed whole (a running total): every column set. An upsert, not INSERT OR REPLACE, which
# would delete the row and insert it again at the end of the table (migration 0012: rows keep their place).
SQL_SET = (f"INSERT INTO metric_series_state ({_COLS}) VALUES ({_MARKS}) ON CONFLICT (series_id) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS[1:]))


def is_accumulated(kind: str, temporality: int) -> bool:
    """True for series whose state is the running total of their points (delta sums and histograms)."""
    return temporality == DELTA and kind in _ACCUMULATED_TYPES


def state_row(point: tuple) -> tuple:
    """A `records.POINT_COLUMNS` tuple → a `STATE_COLUMNS` tuple."""
    return (point[1], point[0], point[3], point[2]) + point[4:]


class SeriesStateUpdater:
    """Owned by the writer; `update(conn, batch)` runs inside the batch's transaction."""

    def update(self, conn: sqlite3.Connection, batch: Any, series: "dict[int, SeriesInfo]"
               ) -> tuple[dict[int, int], set[int]]:
        """`series`: what is known of the batch's series (series_cache.py). Returns each series' newest
        point time in the batch, and the series whose state row does not carry that time (a delta series
        whose newest points had no recorded value)."""
        points = batch.points
        if not points:
            return {}, set()
        newest: dict[int, tuple] = {}
        deltas: dict[int, list[tuple]] = {}
        observations: dict[int, list[tuple]] = {}
        seen: dict[int, int] = {}  # newest time of every series in the batch
        seen_aside: dict[int, int] = {}  # newest time of points the state does not take (no value)
        for p in points:
            sid = p[1]
            info = series.get(sid)
            kind, temporality = (info.type, info.temporality) if info is not None else ("", 0)
            if temporality == DELTA and kind in _ACCUMULATED_TYPES:
                if not p[9] & _NO_RECORDED_VALUE:  # a delta without a value adds nothing
                    deltas.setdefault(sid, []).append(p)
                    if p[3] > seen.get(sid, -1):
                        seen[sid] = p[3]
                elif p[3] > seen_aside.get(sid, -1):
                    seen_aside[sid] = p[3]
            elif kind == DISTRIBUTION:
                if p[4] is not None:
                    observations.setdefault(sid, []).append(p)
                    if p[3] > seen.get(sid, -1):
                        seen[sid] = p[3]
                elif p[3] > seen_aside.get(sid, -1):
                    seen_aside[sid] = p[3]
            else:
                cur = newest.get(sid)
                if cur is None:
                    newest[sid] = p
                elif p[3] >= cur[3]:
                    newest[sid] = p if p[11] is not None or cur[11] is None else p[:11] + (cur[11],)
                elif cur[11] is None and p[11] is not None:
                    newest[sid] = cur[:11] + (p[11],)
        if newest:
            UPSERT_NEWEST.run(conn, list(newest.values()))  # (POINT_COLUMNS rows: the statement's order)
            for sid, p in newest.items():  # the state's time_ns is now at least this
                seen[sid] = p[3]
        behind = set()
        if deltas:
            current = _current_states(conn, list(deltas))
            rows = []
            for sid, pts in deltas.items():
                old = current.get(sid)
                row = accumulate(series[sid].type, old, pts)
                rows.append(row)
                if old is not None and row[2] < old[2]:
                    # A restarted total (changed bucket layout) older than the state it replaced: the
                    # newest time seen so far must then be written to metric_series itself.
                    seen[sid] = max(seen[sid], old[2])
                    behind.add(sid)
            conn.executemany(SQL_SET, rows)
        if observations:
            current = _current_states(conn, list(observations))
            conn.executemany(SQL_SET, [count_observations(current.get(sid), pts)
                                           for sid, pts in observations.items()])
        for sid, t in seen_aside.items():
            if t > seen.get(sid, -1):
                seen[sid] = t
                behind.add(sid)
        return seen, behind


def _current_states(conn: sqlite3.Connection, ids: list[int]) -> dict[int, tuple]:
    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for row in conn.execute(f"SELECT {_COLS} FROM metric_series_state WHERE series_id IN "
                                f"({','.join('?' * len(chunk))})", chunk):
            out[row[0]] = row
    return out


# --- accumulation of deltas -----------------------------------------------------------------------------

def accumulate(kind: str, state: tuple | None, points: list[tuple]) -> tuple:
    """Fold delta `points` (POINT_COLUMNS tuples of one series) into `state` (a STATE_COLUMNS tuple or
    None) and return the new state row."""
    acc = list(state) if state is not None else None
    parsed: Any = None  # the accumulator's buckets as Python objects, parsed once per fold
    for p in points:
        if acc is None:
            acc, parsed = list(state_row(p)), _parse(p[10])
            continue
        try:
            if kind == "sum":
                acc[4] = _add_values(acc[4], p[4])
            elif kind == "tally":
                acc[4] = p[4] if p[9] & TALLY_SET else _add_values(acc[4], p[4])
            else:
                pb = _parse(p[10])
                if parsed is None:
                    parsed = _parse(acc[10])
                merged = (_merge_explicit(parsed, pb) if kind == "histogram" else _merge_exponential(parsed, pb))
                if merged is None:
                    # Bucket layout changed (e.g. new explicit bounds): the running total restarts here,
                    # which Prometheus reads as a counter reset, rather than mixing incompatible buckets.
                    acc, parsed = list(state_row(p)), pb
                    continue
                parsed = merged
                acc[5] = (acc[5] or 0) + (p[5] or 0)
                acc[6] = None if acc[6] is None or p[6] is None else acc[6] + p[6]
                acc[7] = _combine(min, acc[7], p[7])
                acc[8] = _combine(max, acc[8], p[8])
        except (TypeError, ValueError, KeyError) as e:  # never fail the commit over one odd point
            log.warning("cannot accumulate a delta point of series %d (%s); restarting its total", p[1], e)
            acc, parsed = list(state_row(p)), _parse(p[10])
            continue
        acc[2] = max(acc[2], p[3])
        acc[3] = min(acc[3], p[2]) if acc[3] and p[2] else (acc[3] or p[2])
        acc[9] = p[9]
        if p[11] is not None:
            acc[11] = p[11]
    if kind not in ("sum", "tally") and parsed is not None:
        acc[10] = _dumps(parsed)
    if isinstance(acc[5], int) and abs(acc[5]) > _INT64_MAX:
        acc[5] = float(acc[5])
    return tuple(acc)


def count_observations(state: tuple | None, points: list[tuple]) -> tuple:
    """Fold a Flux distribution's observation `points` into its `state` (module docstring): running count,
    sum, min and max; the newest observation as `value` and its time as `time_ns`."""
    acc = list(state) if state is not None else None
    for p in points:
        v = p[4]
        if acc is None:
            acc = list(state_row(p))
            acc[5], acc[6], acc[7], acc[8] = 1, v, v, v
            continue
        acc[5] = (acc[5] or 0) + 1
        acc[6] = _add_values(acc[6], v)
        acc[7] = _combine(min, acc[7], v)
        acc[8] = _combine(max, acc[8], v)
        if p[3] >= acc[2]:
            acc[2], acc[4] = p[3], v
    return tuple(acc)


def _parse(text: str | None) -> Any:
    return json.loads(text) if text else None


def _num(v: Any) -> Any:
    return math.nan if v == "NaN" else v


def _add_values(a: Any, b: Any) -> Any:
    if b is None:
        return a
    if a is None:
        return b
    s = _num(a) + _num(b)
    if isinstance(s, int):
        return s if abs(s) <= _INT64_MAX else float(s)  # SQLite integers are 64-bit
    return "NaN" if s != s else s  # SQLite would store NaN as NULL (normalize/otlp.py keeps it as text)


def _combine(fn: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return fn(a, b)


def _merge_explicit(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return a or b
    if a["bounds"] != b["bounds"] or len(a["counts"]) != len(b["counts"]):
        return None
    return {"bounds": a["bounds"], "counts": [x + y for x, y in zip(a["counts"], b["counts"])]}


def _merge_exponential(a: dict | None, b: dict | None) -> dict | None:
    """Merge two exponential histograms' buckets at the coarser scale (exact counts, coarser resolution
    only when the scales differ or the merged range outgrows _EXP_MAX_BUCKETS)."""
    if a is None or b is None:
        return a or b
    scale = min(a["scale"], b["scale"])
    sides = {}
    for side in ("positive", "negative"):
        merged: dict[int, int] = {}
        for h in (a, b):
            shift = h["scale"] - scale
            offset = h[side]["offset"]
            for k, c in enumerate(h[side]["counts"]):
                if c:
                    idx = (offset + k) >> shift
                    merged[idx] = merged.get(idx, 0) + c
        sides[side] = merged
    # Downscale further while either side spans more buckets than the SDK would keep.
    while any(m and max(m) - min(m) + 1 > _EXP_MAX_BUCKETS for m in sides.values()):
        scale -= 1
        for side, m in sides.items():
            down: dict[int, int] = {}
            for idx, c in m.items():
                down[idx >> 1] = down.get(idx >> 1, 0) + c
            sides[side] = down
    out = {"scale": scale, "zero_count": a["zero_count"] + b["zero_count"],
           "zero_threshold": max(a["zero_threshold"], b["zero_threshold"])}
    for side, m in sides.items():
        if m:
            lo, hi = min(m), max(m)
            out[side] = {"offset": lo, "counts": [m.get(i, 0) for i in range(lo, hi + 1)]}
        else:
            out[side] = {"offset": 0, "counts": []}
    return out


# --- backfill (migration of a store written before the state table existed) -----------------------------

_ACCUMULATED_SQL = ", ".join(f"'{t}'" for t in sorted(_ACCUMULATED_TYPES))


def backfill(conn: sqlite3.Connection) -> None:
    """Build `metric_series_state` from the points already stored (run once by the migration)."""
    # Newest point per series: SQLite takes bare columns from the row that holds the MAX().
    conn.execute(
        f"INSERT OR REPLACE INTO metric_series_state ({_COLS}) "
        "SELECT p.series_id, p.project_id, MAX(p.time_ns), p.start_ns, p.value, p.count, p.sum, p.min, p.max, "
        "p.flags, p.buckets, p.exemplars FROM metric_points AS p JOIN metric_series AS s ON s.id = p.series_id "
        f"WHERE NOT (s.temporality = {DELTA} AND s.type IN ({_ACCUMULATED_SQL})) "
        "GROUP BY p.series_id")
    conn.execute(  # as the writer does: the newest point without exemplars keeps the last ones seen
        "UPDATE metric_series_state SET exemplars = (SELECT p.exemplars FROM metric_points AS p WHERE "
        "p.series_id = metric_series_state.series_id AND p.exemplars IS NOT NULL ORDER BY p.time_ns DESC "
        "LIMIT 1) WHERE exemplars IS NULL")
    backfill_distributions(conn)
    delta_series = conn.execute(
        f"SELECT id, type FROM metric_series WHERE temporality = {DELTA} "
        f"AND type IN ({_ACCUMULATED_SQL})").fetchall()
    for sid, kind in delta_series:
        points = [p for p in conn.execute(
            "SELECT project_id, series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, "
            "exemplars FROM metric_points WHERE series_id = ? ORDER BY "
            + ("id" if kind == "tally" else "time_ns, id"), (sid,))  # a tally folds in write order
            if not p[9] & _NO_RECORDED_VALUE]
        if points:
            conn.execute(SQL_SET, accumulate(kind, None, points))


def backfill_distributions(conn: sqlite3.Connection) -> None:
    """The running count, sum, min and max of every Flux distribution's observations (a store written
    before the writer kept them). Integer observations are added exactly; where a sum would pass int64
    (SQLite's sum() then raises "integer overflow", and the migration with it) they are added as doubles,
    as the writer does past int64 (`_add_values`)."""
    sql = ("UPDATE metric_series_state SET count = agg.n, sum = agg.total, min = agg.lo, max = agg.hi FROM "
           "(SELECT p.series_id AS sid, count(*) AS n, {sum}(p.value) AS total, min(p.value) AS lo, "
           "max(p.value) AS hi FROM metric_points AS p JOIN metric_series AS s ON s.id = p.series_id "
           f"WHERE s.type = '{DISTRIBUTION}' AND p.value IS NOT NULL GROUP BY p.series_id) AS agg "
           "WHERE metric_series_state.series_id = agg.sid")
    try:
        conn.execute(sql.format(sum="sum"))
    except sqlite3.OperationalError as e:
        if "integer overflow" not in str(e):
            raise
        conn.execute(sql.format(sum="total"))
