"""Metric points as numpy columns, and the store's incremental per-metric cache of them.

Why a cache: reading N points through Python's sqlite3 costs about 1 µs a row however the SQL is shaped
(GROUP BY sorts, text aggregation renders floats slowly), so a 24-hour query over a third of a million
points cannot come back in 250 ms from SQL alone. The cache keeps, per (project, metric, type), every
point since the earliest time asked for, in columns sorted by (series, time), and brings it up to date
on each use by reading only rows with a larger rowid than it has seen (rowids only grow: one writer,
INTEGER PRIMARY KEY). The snapshot is consistent because series, max(rowid) and the new rows are read
in one read transaction. When retention has deleted old points (`min(time_ns)` of the table moved up),
the cache drops its points older than that too; a database whose `max(id)` went down is reloaded.

There is one cache per store (`Store.point_cache`), shared by every dialect and bounded by
`exporters.sqlite.query_cache_mib`; least recently used metrics are dropped first.

Columns: `value` is the scalar reading (a number point's value; for histograms and summaries the mean
observation sum/count; for a `set` the member's code, see below), `counter` what increase/rate
difference (the value; the observation count of histograms and summaries), `total` the sum of the
observations of histograms and summaries (None for other kinds), `start` the point's OTel
start time (0 when the producer sent none), which tells increases where a cumulative series (re)started.
Points with no recorded value are not readings and are not loaded; `valid` stays for callers that build
Points themselves. Distribution payloads (explicit buckets, exponential buckets, summary quantiles) are
decoded by SQLite's json_extract and one json.loads per column, never a Python loop per point.

A `set` series (metrics.py) stores each member as text in `value`; here each distinct member gets an
integer code (`members[code]` is the text), in order of first appearance, so a distinct count per bucket
is numpy over integers. Codes are per `Points`: `concat` renumbers the second operand's members.

A `tally` series (metrics.py) also loads each row's id as `seq` (its write order) and whether it sets the
value (`sets`, records.TALLY_SET) rather than adding to it: the engine's `tally` applies them in that order.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

from otelite.collector.store.records import TALLY_SET

if TYPE_CHECKING:
    from otelite.collector.store.metrics import SeriesSet

_HOUR_NS = 3600 * 10**9
CACHE_MAX_BYTES = 256 * 2**20  # the default of exporters.sqlite.query_cache_mib


@dataclass
class Points:
    kind: str  # number | set | tally | histogram | exponential_histogram | summary
    series_id: np.ndarray  # int64
    time: np.ndarray  # int64 ns
    valid: np.ndarray  # bool
    value: np.ndarray  # float64
    counter: np.ndarray  # float64
    start: np.ndarray | None = None  # int64 ns, the OTel start time (0: none); None only in hand-built Points
    # sets: members[int(value)] is the member's text
    members: tuple = ()
    # tallies: the row id (write order) and whether the reading sets the value instead of adding to it
    seq: np.ndarray | None = None  # int64
    sets: np.ndarray | None = None  # bool
    # explicit histograms
    bounds_id: np.ndarray | None = None  # int32 index into `bounds`
    bounds: tuple | None = None  # tuple of tuples
    counts: np.ndarray | None = None  # (n, width) float64, zero padded
    # exponential histograms (ragged bucket counts in shared flat arrays)
    scale: np.ndarray | None = None
    zero_count: np.ndarray | None = None
    pos_offset: np.ndarray | None = None
    pos_start: np.ndarray | None = None
    pos_len: np.ndarray | None = None
    neg_offset: np.ndarray | None = None
    neg_start: np.ndarray | None = None
    neg_len: np.ndarray | None = None
    pos_flat: np.ndarray | None = None
    neg_flat: np.ndarray | None = None
    # summaries: quantile levels and values, NaN padded
    q_level: np.ndarray | None = None
    q_value: np.ndarray | None = None
    # histograms, exponential histograms and summaries: the sum of the observations (the point's `sum`)
    total: np.ndarray | None = None

    _ROW_FIELDS = ("series_id", "time", "valid", "value", "counter", "start", "seq", "sets", "total", "bounds_id",
                   "counts", "scale",
                   "zero_count", "pos_offset", "pos_start", "pos_len", "neg_offset", "neg_start", "neg_len",
                   "q_level", "q_value")

    def __len__(self) -> int:
        return len(self.time)

    def nbytes(self) -> int:
        distinct = {id(a): a for a in (getattr(self, f.name) for f in fields(self)) if isinstance(a, np.ndarray)}
        arrays = sum(a.nbytes for a in distinct.values())  # a column shared by two fields counts once
        return arrays + sum(len(m) + 56 for m in self.members)  # str object overhead

    def take(self, idx: np.ndarray) -> "Points":
        """The points at `idx` (an index array or boolean mask); flat bucket arrays are shared, and so are
        columns that are one array (a number's `value` is its `counter`): each is copied once."""
        taken: dict[int, np.ndarray] = {}
        changes = {}
        for name in self._ROW_FIELDS:
            column = getattr(self, name)
            if column is not None:
                if id(column) not in taken:
                    taken[id(column)] = column[idx]
                changes[name] = taken[id(column)]
        return replace(self, **changes)

    def sorted(self) -> "Points":
        return self.take(np.lexsort((self.time, self.series_id)))


def empty(kind: str) -> Points:
    z64, zf = np.zeros(0, np.int64), np.zeros(0, np.float64)
    p = Points(kind, z64, z64, np.zeros(0, bool), zf, zf, z64)
    if kind in ("histogram", "exponential_histogram", "summary"):
        p.total = zf
    if kind == "tally":
        p.seq, p.sets = z64, np.zeros(0, bool)
    elif kind == "histogram":
        p.bounds_id, p.bounds, p.counts = np.zeros(0, np.int32), (), np.zeros((0, 0))
    elif kind == "exponential_histogram":
        p.scale, p.zero_count = np.zeros(0, np.int32), zf
        p.pos_offset = p.pos_start = p.pos_len = p.neg_offset = p.neg_start = p.neg_len = z64
        p.pos_flat = p.neg_flat = zf
    elif kind == "summary":
        p.q_level = p.q_value = np.zeros((0, 0))
    return p


def kind_of(metric_type: str) -> str:
    """How a metric type's points are held: `number` for gauge, sum and distribution (one value per
    point), `set` for sets (one member per point), else the type itself (`tally`: a value, its write
    order and whether it sets)."""
    return "number" if metric_type in ("gauge", "sum", "distribution") else metric_type


# --- decoding ---------------------------------------------------------------------------------------------

# Points flagged as having no recorded value (NULL value, FLAG_NO_RECORDED_VALUE) are not readings: they
# are left out in SQL, so fewer rows cross into Python (the cost that matters; see the module docstring).
_COLUMNS = {
    "number": "value",
    "set": "value",
    "tally": "value, id, flags",
    "histogram": "count, sum, json_extract(buckets, '$.bounds'), ifnull(json_extract(buckets, '$.counts'), '[]')",
    "exponential_histogram": "count, sum, json_extract(buckets, '$.scale'), "
                             "json_extract(buckets, '$.zero_count'), json_extract(buckets, '$.positive.offset'), "
                             "ifnull(json_extract(buckets, '$.positive.counts'), '[]'), "
                             "json_extract(buckets, '$.negative.offset'), "
                             "ifnull(json_extract(buckets, '$.negative.counts'), '[]')",
    "summary": "count, sum, ifnull(json_extract(buckets, '$.quantiles'), '[]')",
}
# Readings: others are `(flags & 1) = 0`.
_READING = {"number": "value IS NOT NULL", "set": "value IS NOT NULL", "tally": "value IS NOT NULL"}
_SERIES = "SELECT id FROM metric_series WHERE project_id = ? AND name = ? AND type = ?"


def _floats(col) -> np.ndarray:
    """A column of numbers (None → NaN; 'NaN'/'Infinity' texts understood)."""
    return np.array(col, dtype=np.float64) if col else np.zeros(0)


def _json_lists(texts) -> list:
    """Many JSON arrays (as text, never NULL: the SQL says ifnull) decoded in one json.loads call."""
    return json.loads("[" + ",".join(texts) + "]")


def _ragged(lists: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged lists of numbers → (flat float64, start, length) without a Python loop per element."""
    lens = np.fromiter(map(len, lists), np.int64, len(lists))
    flat = np.array(list(itertools.chain.from_iterable(lists)), dtype=np.float64) if lens.sum() else np.zeros(0)
    starts = np.zeros(len(lists), np.int64)
    if len(lists):
        np.cumsum(lens[:-1], out=starts[1:])
    return flat, starts, lens


def _padded(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray, fill: float) -> np.ndarray:
    n = len(lens)
    width = int(lens.max()) if n else 0
    out = np.full((n, width), fill, dtype=np.float64)
    if flat.size:
        rows = np.repeat(np.arange(n), lens)
        cols = np.arange(flat.size) - np.repeat(starts, lens)
        out[rows, cols] = flat
    return out


def _member_codes(texts, table: dict[str, int]) -> np.ndarray:
    """Codes of set members, adding new members to `table` (text → code) in order of appearance."""
    setdefault = table.setdefault
    return np.fromiter((setdefault(m if m.__class__ is str else str(m), len(table)) for m in texts),
                       np.float64, len(texts))


def decode(kind: str, rows: list[tuple]) -> Points:
    """Rows of (series_id, time_ns, start_ns, *_COLUMNS[kind]) → Points."""
    if not rows:
        return empty(kind)
    cols = list(zip(*rows))
    n = len(rows)
    sid = np.array(cols[0], dtype=np.int64)
    t = np.array(cols[1], dtype=np.int64)
    start = np.array(cols[2], dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    cols = cols[2:]  # now the kind-specific columns start at 1
    if kind == "number":
        # Exact ints, doubles, and 'NaN' text all become float64 (NaN text → NaN reading); NULL is a
        # point with no recorded value: not a reading.
        value = _floats(cols[1])
        return Points(kind, sid, t, valid, value, value, start)
    if kind == "tally":
        value = _floats(cols[1])
        p = Points(kind, sid, t, valid, value, value, start)
        p.seq = np.array(cols[2], dtype=np.int64)
        p.sets = (np.array(cols[3], dtype=np.int64) & TALLY_SET) != 0
        return p
    if kind == "set":
        table: dict[str, int] = {}
        codes = _member_codes(cols[1], table)
        return Points(kind, sid, t, valid, codes, codes, start, members=tuple(table))
    count, total = _floats(cols[1]), _floats(cols[2])
    with np.errstate(all="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    p = Points(kind, sid, t, valid, mean, count, start, total=total)
    if kind == "histogram":
        # Bounds rarely change: intern the distinct texts (dict.fromkeys and map run in C).
        uniq = list(dict.fromkeys(cols[3]))
        p.bounds = tuple(tuple(json.loads(b)) if b else () for b in uniq)
        if len(uniq) == 1:
            p.bounds_id = np.zeros(n, np.int32)
        else:
            p.bounds_id = np.fromiter(map({b: i for i, b in enumerate(uniq)}.__getitem__, cols[3]), np.int32, n)
        flat, starts, lens = _ragged(_json_lists(cols[4]))
        p.counts = _padded(flat, starts, lens, 0.0)
    elif kind == "exponential_histogram":
        p.scale = np.array(cols[3], dtype=np.int32)
        p.zero_count = _floats(cols[4])
        p.pos_offset = np.array(cols[5], dtype=np.int64)
        p.pos_flat, p.pos_start, p.pos_len = _ragged(_json_lists(cols[6]))
        p.neg_offset = np.array(cols[7], dtype=np.int64)
        p.neg_flat, p.neg_start, p.neg_len = _ragged(_json_lists(cols[8]))
    elif kind == "summary":
        pairs = _json_lists(cols[3])
        lens = np.fromiter(map(len, pairs), np.int64, n)
        flat = np.array(list(itertools.chain.from_iterable(pairs)), dtype=np.float64).reshape(-1, 2)
        levels, values = flat[:, 0].copy(), flat[:, 1].copy()
        starts = np.zeros(n, np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        p.q_level = _padded(levels, starts, lens, np.nan)
        p.q_value = _padded(values, starts, lens, np.nan)
    return p


def concat(a: Points, b: Points) -> Points:
    """Rows of a then b (bounds and flat bucket arrays merged)."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    out = {}
    if a.kind == "set":  # renumber b's members into a's table
        table = {m: i for i, m in enumerate(a.members)}
        remap = _member_codes(b.members, table)
        b = replace(b, value=remap[b.value.astype(np.int64)], members=())
        b.counter = b.value
        members = tuple(table)
    joined: dict[tuple[int, int], np.ndarray] = {}  # columns that are one array stay one (take())
    for f in fields(Points):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name in ("kind", "bounds", "pos_flat", "neg_flat", "members") or x is None:
            continue
        pair = (id(x), id(y))
        if pair in joined:
            out[f.name] = joined[pair]
            continue
        if x.ndim == 2:
            width = max(x.shape[1], y.shape[1])
            fill = 0.0 if f.name == "counts" else np.nan
            x = np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=fill)
            y = np.pad(y, ((0, 0), (0, width - y.shape[1])), constant_values=fill)
        out[f.name] = joined[pair] = np.concatenate([x, y])
    merged = replace(a, **out)
    if a.kind == "set":
        merged.members = members
        merged.counter = merged.value
    if a.kind == "histogram":
        bounds = list(a.bounds)
        remap = np.array([bounds.index(bd) if bd in bounds else bounds.append(bd) or len(bounds) - 1
                          for bd in b.bounds], dtype=np.int32)
        merged.bounds = tuple(bounds)
        merged.bounds_id = np.concatenate([a.bounds_id, remap[b.bounds_id] if len(remap) else b.bounds_id])
    if a.kind == "exponential_histogram":
        merged.pos_flat = np.concatenate([a.pos_flat, b.pos_flat])
        merged.neg_flat = np.concatenate([a.neg_flat, b.neg_flat])
        merged.pos_start = np.concatenate([a.pos_start, b.pos_start + len(a.pos_flat)])
        merged.neg_start = np.concatenate([a.neg_start, b.neg_start + len(a.neg_flat)])
    return merged


def _load(conn: sqlite3.Connection, project_id: int, series: "SeriesSet", where: str, args: tuple) -> Points:
    kind = kind_of(series.type)
    sql = (f"SELECT series_id, time_ns, start_ns, {_COLUMNS[kind]} FROM metric_points "
           f"WHERE {where} AND {_READING.get(kind, '(flags & 1) = 0')} AND series_id IN ({_SERIES})")
    return decode(kind, conn.execute(sql, args + (project_id, series.name, series.type)).fetchall())


def _load_since(conn: sqlite3.Connection, project_id: int, series: "SeriesSet", t_from: int, max_id: int) -> Points:
    """All points with time >= t_from (and rowid <= max_id). When they are a large share of the table, a
    sequential table scan beats one random row look-up per point through the (series, time) index."""
    n = conn.execute(f"SELECT count(*) FROM metric_points WHERE time_ns >= ? AND series_id IN ({_SERIES})",
                     (t_from, project_id, series.name, series.type)).fetchone()[0]
    lo = conn.execute("SELECT min(id) FROM metric_points").fetchone()[0] or 0
    if n * 5 > max_id - lo + 1:
        kind = kind_of(series.type)
        sql = (f"SELECT series_id, time_ns, start_ns, {_COLUMNS[kind]} FROM metric_points NOT INDEXED "
               f"WHERE id <= ? AND time_ns >= ? AND {_READING.get(kind, '(flags & 1) = 0')} "
               f"AND +series_id IN ({_SERIES})")
        return decode(kind, conn.execute(sql, (max_id, t_from, project_id, series.name, series.type)).fetchall())
    return _load(conn, project_id, series, "time_ns >= ? AND id <= ?", (t_from, max_id))


# --- the cache --------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    points: Points
    t_from: int  # every point with time >= t_from up to max_id is held
    max_id: int
    min_time: int  # the oldest point time in the table when last looked


class PointCache:
    """Per (project, metric, type): all points since the earliest time asked for, kept current by rowid."""

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _entries and _key_locks
        self.max_bytes = max_bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def points(self, conn: sqlite3.Connection, series: "SeriesSet", t_from: int, t_to: int) -> Points:
        """Points of every series of the metric (`series.name`, `series.type`) with t_from <= time < t_to,
        sorted by (series, time): the caller keeps the series it selected. Call inside a read transaction
        together with the series look-up (see module docstring)."""
        if series.type is None or len(series) == 0:
            return empty(kind_of(series.type or "gauge"))
        project_id = series.project_id
        key = (project_id, series.name, series.type)
        # Two statements: SQLite answers a lone min() or max() from the b-tree edge, both together by a scan.
        max_id = conn.execute("SELECT max(id) FROM metric_points").fetchone()[0] or 0
        min_time = conn.execute("SELECT min(time_ns) FROM metric_points").fetchone()[0] or 0
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one loader per metric; other metrics are not held up by a slow first load
            with self._lock:
                entry = self._entries.get(key)
            # max(id) below what the entry has seen: the rowids started over (or an older snapshot).
            if entry is None or t_from < entry.t_from or max_id < entry.max_id:
                # Load a little more history than asked (a quarter of the span, whole hours), so the next
                # query whose start snaps to another grid or slides back a bit needs no reload.
                since = t_from - max(t_to - t_from, 0) // 4
                since -= since % _HOUR_NS
                pts = _load_since(conn, project_id, series, since, max_id).sorted()
                entry = _Entry(pts, since, max_id, min_time)
            else:
                if max_id > entry.max_id:
                    new = _load(conn, project_id, series, "id > ? AND id <= ? AND time_ns >= ?",
                                (entry.max_id, max_id, entry.t_from))
                    if len(new):
                        entry.points = concat(entry.points, new).sorted()
                    entry.max_id = max_id
                if min_time > entry.min_time:  # retention deleted old points: so does the cache
                    entry.points = entry.points.take(entry.points.time >= min_time)
                    entry.min_time = min_time
            pts = entry.points
            with self._lock:
                self._store(key, entry)
        mask = (pts.time >= t_from) & (pts.time < t_to)
        return pts.take(mask)

    def _store(self, key: tuple, entry: _Entry) -> None:
        if self.max_bytes <= 0:
            return  # query_cache_mib: 0 keeps nothing; every query reads SQLite
        self._entries[key] = entry
        self._entries.move_to_end(key)
        total = sum(e.points.nbytes() for e in self._entries.values())
        while total > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.points.nbytes()


class ReadTransaction:
    """`with ReadTransaction(conn):` — one consistent WAL snapshot for several SELECTs."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN")
            self._began = True
        else:
            self._began = False
        return self.conn

    def __exit__(self, *exc) -> None:
        if self._began:
            self.conn.execute("ROLLBACK")
