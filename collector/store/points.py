"""Metric points as numpy columns, read from the store's two point layouts (issue 16).

Where points live (chunks.py, appender.py, compactor.py): in `metric_chunks`, rows of one metric and hour
holding the points as numpy columns, written at commit for a metric with many points in it, later merged;
and in the head, `metric_points`, which has no secondary index so that the few points of the other
metrics append cheaply, until the writer's compactor moves them, within a minute, into chunks.
`PointCache.points` reads both in one snapshot: the chunks of the metric whose hour overlaps the range
(a handful of large rows, decoded with `frombuffer`) and the head rows of the metric's series (a scan of
the small head). Points older than the metric retention's cutoff (`retention_cutoffs`) are never
returned, whether or not the chunk that holds them has been deleted yet.

Why numpy columns: reading N points through Python's sqlite3 costs about 1 µs a row however the SQL is
shaped, so a 24-hour query over a third of a million points cannot come back in 250 ms row by row; a
chunk row carries tens of thousands of points for the cost of one.

There is one `PointCache` per store (`Store.point_cache`), shared by every dialect and bounded by
`exporters.sqlite.query_cache_mib`: per metric, every point since the earliest time asked for, decoded
and sorted by (series, time), least recently used metric first out. A later query reads only what is
new: head rows past the largest arrival number (head rowid) it saw, and the points of chunks written
since that arrived later (a point keeps its arrival number in its chunk). Warm queries so pay for the new points, not
for the day; cold ones decode the metric's chunks, which are already sorted, hour after hour.

Columns: `value` is the scalar reading (a number point's value; for histograms and summaries the mean
observation sum/count; for a `set` the member's code, see below), `counter` what increase/rate
difference (the value; the observation count of histograms and summaries), `total` the sum of the
observations of histograms and summaries (None for other kinds), `start` the point's OTel
start time (0 when the producer sent none), which tells increases where a cumulative series (re)started.
Points with no recorded value are not readings and are not returned. Distribution payloads (explicit
buckets, exponential buckets, summary quantiles) are decoded by SQLite's json_extract and one json.loads
per column for head rows, and were decoded once at compaction for chunk rows.

A `set` series (metrics.py) stores each member as text in `value`; here each distinct member gets an
integer code (`members[code]` is the text), in order of first appearance, so a distinct count per bucket
is numpy over integers. Codes are per `Points`: `concat_all` renumbers the members of the later parts.

A `tally` series (metrics.py) also reads each row's head rowid as `seq` (its write order; chunks keep it per
point) and whether it sets the value (`sets`, records.TALLY_SET) rather than adding to it: the engine's
`tally` applies them in that order.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Callable

import numpy as np
# np.unique (NumPy 2) imports numpy.ma on its first call, 12-21 ms on the reference machine: paid at start
# instead of by the first query after it (issue 16 measures that query cold).
import numpy.ma  # noqa: F401,E402

from otelite.collector.store.db import passing_through
from otelite.collector.store.records import TALLY_SET

if TYPE_CHECKING:
    from otelite.collector.store.metrics import SeriesSet

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
    # (n, width) zero padded: uint8/16/32 when every count is a whole number (narrowed()), else float64
    counts: np.ndarray | None = None
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
        idx = row_indices(idx)
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


def row_indices(idx: np.ndarray) -> np.ndarray:
    """`idx` as an index array, for `np.take(column, idx, axis=0)` on each column: a boolean mask indexes
    a column by finding its True positions again every time, and a 2-D column (bucket counts) is gathered
    by fancy indexing several times slower than by np.take. For 23 hours of a histogram's rollups, 9
    columns each: 42 ms by mask, 8 ms so (docs/benchmarks.md, 2026-12-02 21:18)."""
    return np.flatnonzero(idx) if idx.dtype == bool else idx


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


def ragged(lists: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged lists of numbers → (flat float64, start, length) without a Python loop per element."""
    lens = np.fromiter(map(len, lists), np.int64, len(lists))
    flat = np.array(list(itertools.chain.from_iterable(lists)), dtype=np.float64) if lens.sum() else np.zeros(0)
    starts = np.zeros(len(lists), np.int64)
    if len(lists):
        np.cumsum(lens[:-1], out=starts[1:])
    return flat, starts, lens


def padded(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray, fill: float) -> np.ndarray:
    n = len(lens)
    width = int(lens.max()) if n else 0
    out = np.full((n, width), fill, dtype=np.float64)
    if flat.size:
        rows = np.repeat(np.arange(n), lens)
        cols = np.arange(flat.size) - np.repeat(starts, lens)
        out[rows, cols] = flat
    return out


def narrow_dtype(a: np.ndarray) -> np.dtype | None:
    """The narrowest unsigned integer type that holds every element of float array `a` exactly, or None
    (fractions, negatives, -0.0, NaN, infinities, 2**32 and up). Bucket counts are whole numbers nearly
    always: chunks store them this way, and the point cache keeps them so (a day of a histogram metric is
    hundreds of MB as float64; issue 16)."""
    if a.dtype.kind == "u":
        return a.dtype
    if a.dtype != np.float64 or not a.size or not np.isfinite(a).all() or a.min() < 0 or a.max() >= 1 << 32 \
            or np.signbit(a).any() or not (a == np.floor(a)).all():
        return None
    top = a.max()
    return np.dtype(np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.uint32)


def narrowed(a: np.ndarray) -> np.ndarray:
    """`a` in its narrow_dtype when it has one (the same numbers), else `a` itself."""
    dtype = narrow_dtype(a)
    return a if dtype is None or dtype == a.dtype else a.astype(dtype)


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
        flat, starts, lens = ragged(_json_lists(cols[4]))
        p.counts = narrowed(padded(flat, starts, lens, 0.0))
    elif kind == "exponential_histogram":
        p.scale = np.array(cols[3], dtype=np.int32)
        p.zero_count = _floats(cols[4])
        p.pos_offset = np.array(cols[5], dtype=np.int64)
        p.pos_flat, p.pos_start, p.pos_len = ragged(_json_lists(cols[6]))
        p.neg_offset = np.array(cols[7], dtype=np.int64)
        p.neg_flat, p.neg_start, p.neg_len = ragged(_json_lists(cols[8]))
    elif kind == "summary":
        pairs = _json_lists(cols[3])
        lens = np.fromiter(map(len, pairs), np.int64, n)
        flat = np.array(list(itertools.chain.from_iterable(pairs)), dtype=np.float64).reshape(-1, 2)
        levels, values = flat[:, 0].copy(), flat[:, 1].copy()
        starts = np.zeros(n, np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        p.q_level = padded(levels, starts, lens, np.nan)
        p.q_value = padded(values, starts, lens, np.nan)
    return p


# Columns concat_all reads again after the loop over columns (renumbered or offset per part).
_NEEDED_AFTER_THE_COLUMNS = {"set": ("value", "counter"), "histogram": ("bounds_id",),
                             "exponential_histogram": ("pos_start", "neg_start")}


def concat_all(parts: list[Points], kind: str | None = None, rows: np.ndarray | None = None, *,
               consume: bool = False) -> Points:
    """The rows of every part, in order (bounds, set members and flat bucket arrays merged); with `rows`,
    only those rows of that concatenation, in that order: `concat_all(parts).take(rows)` with one column
    of the concatenation alive at a time instead of all of them. `consume`: the caller hands the parts
    over (nothing else holds them): each part's column is dropped once it is gathered, so the parts'
    memory goes as the result's grows, and the parts are left without their columns.

    A query's first read of a day's rollups concatenates and sorts ~20 MB of readings; in a fresh process
    every byte of its temporaries is memory the kernel zeroes on first touch, the larger part of that
    query's time (docs/benchmarks.md, 2026-12-04)."""
    nonempty = [p for p in parts if len(p)]
    if not nonempty:
        return parts[0] if parts else empty(kind or "number")
    if len(nonempty) == 1:
        return nonempty[0] if rows is None else nonempty[0].take(rows)
    if rows is not None:
        rows = row_indices(rows)

    def joined_rows(arrays: list[np.ndarray]) -> np.ndarray:
        whole = np.concatenate(arrays)
        return whole if rows is None else np.take(whole, rows, axis=0)

    a = nonempty[0]
    out: dict = {}
    joined: dict[tuple, np.ndarray] = {}  # columns that are one array in every part stay one (take())
    for f in fields(Points):
        if f.name in ("kind", "bounds", "pos_flat", "neg_flat", "members") or getattr(a, f.name) is None:
            continue
        arrays = [getattr(p, f.name) for p in nonempty]
        same = tuple(map(id, arrays))
        if same not in joined:
            if arrays[0].ndim == 2:
                width = max(x.shape[1] for x in arrays)
                fill = 0.0 if f.name == "counts" else np.nan
                arrays = [x if x.shape[1] == width else
                          np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=fill)
                          for x in arrays]  # a copy only where the width differs
            joined[same] = joined_rows(arrays)
        out[f.name] = joined[same]
        arrays = None
        if consume and f.name not in _NEEDED_AFTER_THE_COLUMNS.get(a.kind, ()):
            for p in nonempty:
                setattr(p, f.name, None)
    merged = replace(a, **out)
    if a.kind == "set":  # one member table; every part's codes renumbered into it (-1: no member)
        table: dict[str, int] = {}
        codes = []
        for p in nonempty:
            remap = np.array([table.setdefault(m, len(table)) for m in p.members] + [-1], np.float64)
            c = p.value.astype(np.int64)
            codes.append(remap[np.where(c < 0, len(p.members), c)])
        merged.value = merged.counter = joined_rows(codes)
        merged.members = tuple(table)
    elif a.kind == "histogram":
        table_b: dict[tuple, int] = {}
        ids = []
        for p in nonempty:
            remap = np.array([table_b.setdefault(tuple(b), len(table_b)) for b in p.bounds], np.int32)
            ids.append(remap[p.bounds_id] if len(remap) else p.bounds_id)
        merged.bounds = tuple(table_b)
        merged.bounds_id = joined_rows(ids)
    elif a.kind == "exponential_histogram":
        for side in ("pos", "neg"):
            flats = [getattr(p, f"{side}_flat") for p in nonempty]
            offsets = np.cumsum([0] + [len(x) for x in flats[:-1]])
            setattr(merged, f"{side}_flat", np.concatenate(flats))  # (shared by the rows, as by take())
            setattr(merged, f"{side}_start", joined_rows(
                [getattr(p, f"{side}_start") + off for p, off in zip(nonempty, offsets)]))
    return merged


def concat(a: Points, b: Points) -> Points:
    """Rows of a then b."""
    return concat_all([a, b], a.kind)


def _load(conn: sqlite3.Connection, project_id: int, series: "SeriesSet", where: str, args: tuple) -> Points:
    kind = kind_of(series.type)
    sql = (f"SELECT series_id, time_ns, start_ns, {_COLUMNS[kind]} FROM metric_points "
           f"WHERE {where} AND {_READING.get(kind, '(flags & 1) = 0')} AND series_id IN ({_SERIES})")
    return decode(kind, conn.execute(sql, args + (project_id, series.name, series.type)).fetchall())


# --- chunks and the cache -----------------------------------------------------------------------------------

_HOUR_NS = 3600 * 10**9


def retention_cutoff(conn: sqlite3.Connection, signal: str = "metrics") -> int:
    """Points (or spans) older than this are expired: never returned, deleted in the background."""
    row = conn.execute("SELECT before_ns FROM retention_cutoffs WHERE signal = ?", (signal,)).fetchone()
    return row[0] if row else 0


def _marks(conn: sqlite3.Connection) -> tuple[int, int]:
    """(the largest head rowid ever used, the largest chunk id) in this snapshot. Head rowids only grow
    (the writer continues past the compactor's `moved_to` mark), and so do chunk ids (AUTOINCREMENT): a
    point that arrives later has a larger head rowid, and a chunk written later a larger id."""
    head = conn.execute("SELECT max(id) FROM metric_points").fetchone()[0] or 0
    row = conn.execute("SELECT value FROM metric_head_marks WHERE name = 'moved_to'").fetchone()
    chunk = conn.execute("SELECT max(id) FROM metric_chunks").fetchone()[0] or 0
    return max(head, row[0] if row else 0), chunk


def _chunk_parts(conn: sqlite3.Connection, series: "SeriesSet", since: int, after_chunk: int = 0,
                 after_head: int = 0, until: int | None = None) -> list[Points]:
    """The readings of the metric's chunks with id > after_chunk and since <= time (< until), one part per
    chunk, in time order of their hours (and arrival order within one); with `after_head`, only points whose
    head rowid is larger (the others were read before, from the head or from an older chunk)."""
    from otelite.collector.store.chunks import block_of, decode
    until = (1 << 63) - 1 if until is None else until
    rows = conn.execute(
        "SELECT payload FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? AND block_start >= ? "
        "AND block_start < ? AND t_max >= ? AND id > ? ORDER BY block_start, seq, id",
        (series.project_id, series.name, series.type, block_of(since), until, since, after_chunk))
    parts = []
    for (payload,) in rows:
        block = decode(payload, exact=False)
        p = block.points
        keep = p.valid & (p.time >= since) & (p.time < until)
        if after_head:
            keep &= block.hid > after_head
        if keep.any():
            parts.append(p if keep.all() else p.take(keep))
    return parts


def _sorted_parts(parts: list[Points], kind: str, *, consume: bool = False) -> Points:
    """Parts concatenated and sorted by (series, time), equal ones in part order. Parts in time order per
    series (closed hours: one chunk each, their hours in order) need only a stable sort by series, about
    5x cheaper than the two-key sort, which is the fallback when hours overlap. The order is worked out
    on the series and time columns alone, then each column gathered in it (`concat_all`'s rows);
    `consume`: parts read for this alone (decoded payloads), dropped column by column (`concat_all`)."""
    nonempty = [p for p in parts if len(p)]
    if not nonempty:
        return empty(kind)
    if len(nonempty) == 1:
        return nonempty[0]  # every part is sorted
    sid = np.concatenate([p.series_id for p in nonempty])
    t = np.concatenate([p.time for p in nonempty])
    order = series_time_order(sid, t)
    sid = t = None
    return concat_all(nonempty, kind, rows=order, consume=consume)


def series_time_order(series_id: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The stable order by (series, time) of rows that come in runs sorted by it (parts in time order: a
    stable sort by series is all it takes; overlapping parts: `_by_series_then_time`)."""
    order = np.argsort(series_id, kind="stable")
    sid, t = series_id[order], time[order]
    if ((sid[1:] == sid[:-1]) & (t[1:] < t[:-1])).any():
        order = order[_by_series_then_time(sid, t)]
    return order


def _by_series_then_time(sid: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The stable order of (sid, t) given sorted by sid: per series, a few sorted runs (one per part) that
    overlap in time (points of a series that arrived out of order). One int64 key (series rank, time) and
    numpy's stable sort, which is timsort and so cheap on such runs: ~10x faster than np.lexsort of both
    columns (0.7 s for a 24 h metric of 2.5M points). lexsort when the key would not fit."""
    span = int(t.max()) - int(t.min()) + 1
    rank = np.zeros(len(sid), np.int64)
    np.cumsum(sid[1:] != sid[:-1], out=rank[1:])
    if (int(rank[-1]) + 1) * span >= 1 << 62:
        return np.lexsort((t, sid))
    return np.argsort(rank * span + (t - t.min()), kind="stable")


def _merge_sorted(old: Points, new: Points, kind: str) -> Points:
    """Two sorted Points as one, `new` after `old` among equal (series, time). The usual case, every new
    point at or after the last old point of its series, costs one pass instead of a sort."""
    if not len(new):
        return old
    if not len(old):
        return new
    pos = np.searchsorted(old.series_id, new.series_id, side="right")
    prev = np.maximum(pos - 1, 0)
    after = (pos == 0) | (old.series_id[prev] != new.series_id) | (old.time[prev] <= new.time)
    both = concat_all([old, new], kind)
    if not after.all():
        return both.take(np.lexsort((both.time, both.series_id)))
    n, m = len(old), len(new)
    slots = pos + np.arange(m)  # where each new point lands (pos is non-decreasing: new is sorted)
    is_new = np.zeros(n + m, bool)
    is_new[slots] = True
    order = np.empty(n + m, np.int64)
    order[slots] = np.arange(n, n + m)
    order[~is_new] = np.arange(n)
    return both.take(order)


@dataclass
class _Entry:
    points: Points  # every reading of the metric with time >= since, sorted by (series, time, arrival)
    since: int
    head_mark: int  # every point with a head rowid up to this is held, whether still in the head or moved
    chunk_mark: int  # the largest chunk id when last looked
    cutoff: int  # the retention cutoff applied


class PointCache:
    """Per (project, metric, type): every point since the earliest time asked for, sorted, kept current
    by head rowid and chunk id (a point is in the head or in one chunk; the compactor moves it without
    changing its head rowid, chunks.py)."""

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _entries and _key_locks
        self.max_bytes = max_bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def points(self, conn: sqlite3.Connection, series: "SeriesSet", t_from: int, t_to: int, *,
               margin: bool = True) -> Points:
        """Points of every series of the metric (`series.name`, `series.type`) with t_from <= time < t_to,
        sorted by (series, time): the caller keeps the series it selected. Call inside a read transaction
        together with the series look-up (ReadTransaction), so chunks and head come from one snapshot.
        `margin=False`: a load reads from `t_from` only (the rollups' trailing stretch, whose start is where
        the rollups before it stop answering: an hour, or the quarter hour that holds a query's end,
        rollups.py)."""
        kind = kind_of(series.type or "gauge")
        if series.type is None or len(series) == 0 or t_from >= t_to:
            return empty(kind)
        key = (series.project_id, series.name, series.type)
        head_mark, chunk_mark = _marks(conn)
        cutoff = retention_cutoff(conn)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one loader per metric; other metrics are not held up by a slow first load
            with self._lock:
                entry = self._entries.get(key)
            if (entry is None or t_from < entry.since or head_mark < entry.head_mark
                    or chunk_mark < entry.chunk_mark):  # smaller marks: another database file
                # A little more history than asked (a quarter of the span, whole hours), so the next query
                # whose start snaps to another grid or slides back a bit needs no reload.
                if margin:
                    since = t_from - max(t_to - t_from, 0) // 4
                    since -= since % _HOUR_NS
                else:  # (chunks whose points all lie before it are not read: `_chunk_parts`)
                    since = t_from
                with passing_through(conn):
                    parts = _chunk_parts(conn, series, max(since, cutoff))
                parts.append(_load(conn, series.project_id, series, "time_ns >= ?", (max(since, cutoff),)).sorted())
                entry = _Entry(_sorted_parts(parts, kind, consume=True), since, head_mark, chunk_mark, cutoff)
            else:
                if head_mark > entry.head_mark:
                    new = []
                    if chunk_mark > entry.chunk_mark:  # some new points may have moved on already
                        moved = _chunk_parts(conn, series, max(entry.since, cutoff), entry.chunk_mark,
                                             entry.head_mark)
                        if moved:
                            new.append(_sorted_parts(moved, kind, consume=True))
                    new.append(_load(conn, series.project_id, series, "id > ? AND time_ns >= ?",
                                     (entry.head_mark, max(entry.since, cutoff))))
                    new = [p for p in new if len(p)]
                    if new:
                        both = concat_all(new, kind)  # moved points arrived before those still in the head
                        entry.points = _merge_sorted(entry.points, both.take(np.lexsort((both.time, both.series_id))),
                                                     kind)
                entry.head_mark, entry.chunk_mark = head_mark, chunk_mark
                if cutoff > entry.cutoff:  # retention: expired points go from the cache too
                    entry.points = entry.points.take(entry.points.time >= cutoff)
                    entry.cutoff = cutoff
            pts = entry.points
            with self._lock:
                self._store(key, entry)
        # Expired points were left out above, in chunks and head alike: a point older than the cutoff is
        # never read, whether it is in a chunk, in the head, or arrived after the cutoff passed it.
        mask = (pts.time >= t_from) & (pts.time < t_to)
        return pts if mask.all() else pts.take(mask)

    def derived(self, key: tuple, build: Callable[[], Points]) -> Points:
        """Points computed from stored data that does not change under `key` (rollups.py: the decoded
        rollups of some hours, named with the chunks each was built from), kept under the same byte budget
        and least-recently-used order as the metrics' points. Anything else with an `nbytes()` may be kept
        so too (the engine: the cells of such points for one grid and function); the caller must not change
        what it gets back."""
        key = ("derived",) + key
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(build(), 0, 0, 0, 0)
        with self._lock:
            self._store(key, entry)
        return entry.points

    def forget_derived(self, stale: Callable[[tuple], bool]) -> None:
        """Drop the derived entries whose key (as given to `derived`) `stale` says will not be asked for
        again (rollups.py: the parts of chunks merged away), before the byte budget would."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == "derived" and stale(k[1:])]:
                del self._entries[key]

    def _store(self, key: tuple, entry: _Entry) -> None:
        if self.max_bytes <= 0:
            return  # query_cache_mib: 0 keeps nothing; every query reads SQLite
        self._entries[key] = entry
        self._entries.move_to_end(key)
        total = sum(e.points.nbytes() for e in self._entries.values())
        while total > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.points.nbytes()


# --- exact rows and counts ------------------------------------------------------------------------------------

def point_rows(conn: sqlite3.Connection, series_ids: list[int], t_from: int | None = None,
               t_to: int | None = None) -> list[tuple]:
    """Every stored point of the series (records.POINT_COLUMNS tuples, exactly as written), sorted by
    (series, time, arrival), with t_from <= time < t_to when given. Chunks and head alike; for tests, the
    CLI and exports. Call inside a ReadTransaction for one snapshot."""
    from otelite.collector.store.chunks import concat_blocks, decode
    if not series_ids:
        return []
    lo = t_from if t_from is not None else -(1 << 63)
    c_lo = max(lo, retention_cutoff(conn))  # expired points are hidden (PointCache.points)
    hi = t_to if t_to is not None else (1 << 63) - 1
    from otelite.collector.store.chunks import block_of
    ids = sorted(set(series_ids))
    metrics: set[tuple] = set()
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        metrics.update(conn.execute(
            f"SELECT DISTINCT project_id, name, type FROM metric_series WHERE id IN ({','.join('?' * len(part))})",
            part).fetchall())
    out: list[tuple] = []
    wanted = np.array(ids, np.int64)
    for project_id, name, metric_type in sorted(metrics):
        payloads = [r[0] for r in conn.execute(
            "SELECT payload FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? AND block_start >= ? "
            "AND t_max >= ? AND t_min < ? ORDER BY seq, id",
            (project_id, name, metric_type, block_of(max(c_lo, 0)) if c_lo > 0 else -(1 << 63), c_lo, hi))]
        if not payloads:
            continue
        block = concat_blocks([decode(p) for p in payloads])
        p = block.points
        keep = np.isin(p.series_id, wanted) & (p.time >= c_lo) & (p.time < hi)
        out += block.take(keep).rows(project_id)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        out += conn.execute(
            f"SELECT project_id, series_id, start_ns, time_ns, value, count, sum, min, max, flags, buckets, exemplars "
            f"FROM metric_points WHERE series_id IN ({','.join('?' * len(part))}) AND time_ns >= ? AND time_ns < ? "
            "ORDER BY id", [*part, c_lo, hi]).fetchall()
    # Chunks hold earlier arrivals than the head; a stable sort keeps that order among equal times.
    out.sort(key=lambda r: (r[1], r[3]))
    return out


def point_counts(conn: sqlite3.Connection, project_id: int, name: str | None = None,
                 metric_type: str | None = None) -> dict[tuple[str, str], int]:
    """(name, type) → number of stored points (readings or not) of the project's metrics, exactly as reads
    see them: chunk sizes, minus the expired points of a chunk the retention cutoff cuts through, plus the
    head's points that have not expired."""
    from otelite.collector.store.chunks import payload_times
    cutoff = retention_cutoff(conn)

    def metric_where(prefix: str) -> tuple[str, list]:
        text, args = f"{prefix}project_id = ?", [project_id]
        for column, value in (("name", name), ("type", metric_type)):
            if value is not None:
                text += f" AND {prefix}{column} = ?"
                args.append(value)
        return text, args

    where, params = metric_where("")
    counts: dict[tuple[str, str], int] = {}
    for n, t, total in conn.execute(
            f"SELECT name, type, sum(n) FROM metric_chunks WHERE {where} AND t_min >= ? GROUP BY name, type",
            [*params, cutoff]):
        counts[(n, t)] = total
    for n, t, payload in conn.execute(
            f"SELECT name, type, payload FROM metric_chunks WHERE {where} AND t_min < ? AND t_max >= ?",
            [*params, cutoff, cutoff]):
        counts[(n, t)] = counts.get((n, t), 0) + int((payload_times(payload) >= cutoff).sum())
    s_where, _ = metric_where("s.")
    for n, t, total in conn.execute(
            f"SELECT s.name, s.type, count(*) FROM metric_points AS p JOIN metric_series AS s ON s.id = p.series_id "
            f"WHERE {s_where} AND p.time_ns >= ? GROUP BY s.name, s.type", [*params, cutoff]):
        counts[(n, t)] = counts.get((n, t), 0) + total
    return counts


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
