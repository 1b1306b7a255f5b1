"""Metric point chunks: many points of one metric and one time block packed into one row (issue 16).

A commit's points of a metric are packed into a chunk at once (appender.py), or, when there are few of
them, go to the head (`metric_points`, one row per point, no secondary index) until the compactor
(compactor.py) packs them; either way they end in `metric_chunks`, where a row holds
the points of one metric (project, name, type) in one hour-long block, sorted by (series, time), as numpy
columns. Prometheus does the same with its head and blocks: cheap appends, and reads that fetch a few
large rows instead of a third of a million small ones (reading one row through Python's sqlite3 costs
about 1 µs however the SQL looks, so a 24 h query of one metric cannot be fast row by row).

A chunk keeps two things about each point:

- **Every stored column, exactly** (`Exact` columns): what SQLite returned for `value`, `count`, `sum`,
  `min`, `max`, `buckets` and `exemplars` (NULL, a 64-bit integer, a double, a text, a blob), and the
  integers `series_id`, `start_ns`, `time_ns`, `flags`. `rows()` gives back the very tuples the head
  held, so nothing is lost in the move (tests compare them).
- **Its arrival number** (`hid`, the head rowid it had or would have had, appender.py): the order points
  arrived in. Points of one series with one timestamp keep
  that order; a tally applies its points in it (`Points.seq`); and the query cache (points.py) tells
  from it which points of a chunk written after its last look it already holds (those it read from
  the head before they moved).
- **The columns a query reads** (`points.Points`): values as float64, histogram buckets as a matrix with
  their bounds, exponential buckets as ragged arrays, summary quantiles, set members as integer codes.
  They are derived once, when the points are compacted, so no query parses bucket JSON again.

Payload format (`encode` / `decode`): b"OTC1", a 4-byte little-endian header length, a JSON header
naming each array (dtype, shape, codec, offset, size) and the JSON-able extras (bounds, members), then
the arrays' bytes. Codecs: `raw`, `const` (one value, kept in the header), `rle` (sorted series ids and
start times come in runs), `offset` (int64 columns within 2**32 of their smallest: arrival numbers,
flags, observation counts, as uint8/16/32 distances from it), `narrow` (bucket counts that are whole
numbers, as uint8/16/32: reading a day of float64 counts was most of a cold histogram query), `joined`
(the text columns, bucket and exemplar JSON, repetitive by nature: their lengths and their UTF-8 back to
back, zlib-compressed), `zlib` (a text column holding blobs too, and every text column written before
`joined`: a JSON list, zlib-compressed). Numbers are not compressed otherwise: decoding them is a
`frombuffer` (and a widening), which keeps a cold 24 h query cheap.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import threading
import zlib
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Iterable

import numpy as np

from otelite.collector.store.points import (Points, concat_all, empty, kind_of, narrow_dtype, narrowed, padded,
                                            ragged, row_indices)
from otelite.collector.store.records import TALLY_SET

BLOCK_NS = 3600 * 10**9  # a chunk's points lie in one hour [block_start, block_start + BLOCK_NS)
MAGIC = b"OTC1"
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK

# SQLite storage classes as tags of an Exact column.
NULL, INTEGER, REAL, TEXT, BLOB = 0, 1, 2, 3, 4
_TAG_OF_TYPE = {type(None): NULL, int: INTEGER, float: REAL, str: TEXT, bytes: BLOB, bool: INTEGER}
EXACT_COLUMNS = ("value", "count", "sum", "min", "max", "buckets", "exemplars")
_VALUE_KINDS = ("number", "set", "tally")  # a reading is a non-NULL `value` (points._READING)


def block_of(time_ns: int) -> int:
    return time_ns - time_ns % BLOCK_NS


# --- exact columns --------------------------------------------------------------------------------------

@dataclass
class Exact:
    """A column of SQLite values: a storage-class tag per point, and the value in the array of its class
    (`ints` int64, `reals` float64, `objs` object: texts and blobs). Arrays of a class no point has are None."""

    tags: np.ndarray  # uint8
    ints: np.ndarray | None = None
    reals: np.ndarray | None = None
    objs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.tags)

    @classmethod
    def from_values(cls, values: list | tuple) -> "Exact":
        n = len(values)
        kinds = set(map(type, values))
        if kinds <= {type(None)}:
            return cls(np.zeros(n, np.uint8))
        if kinds == {int}:
            return cls(np.full(n, INTEGER, np.uint8), ints=np.array(values, np.int64))
        if kinds == {float}:
            return cls(np.full(n, REAL, np.uint8), reals=np.array(values, np.float64))
        tags = np.fromiter(map(_TAG_OF_TYPE.__getitem__, map(type, values)), np.uint8, n)
        out = cls(tags)
        if int in kinds or bool in kinds:
            out.ints = np.array([v if t == INTEGER else 0 for v, t in zip(values, tags.tolist())], np.int64)
        if float in kinds:
            out.reals = np.array([v if t == REAL else 0.0 for v, t in zip(values, tags.tolist())], np.float64)
        if str in kinds or bytes in kinds:
            objs = np.empty(n, object)
            objs[:] = [v if t >= TEXT else None for v, t in zip(values, tags.tolist())]
            out.objs = objs
        return out

    def values(self) -> list:
        """The SQLite values back, as sqlite3 returns them."""
        tags = self.tags
        if not tags.size:
            return []
        first = int(tags[0])
        if (tags == first).all():
            if first == NULL:
                return [None] * len(tags)
            if first == INTEGER:
                return self.ints.tolist()
            if first == REAL:
                return self.reals.tolist()
            return self.objs.tolist()
        out: list = [None] * len(tags)
        for cls, arr in ((INTEGER, self.ints), (REAL, self.reals)):
            if arr is not None:
                for i in np.flatnonzero(tags == cls).tolist():
                    out[i] = arr[i].item()
        if self.objs is not None:
            for i in np.flatnonzero(tags >= TEXT).tolist():
                out[i] = self.objs[i]
        return out

    def take(self, idx: np.ndarray) -> "Exact":
        idx = row_indices(idx)
        return Exact(np.take(self.tags, idx), *(None if a is None else np.take(a, idx)
                                                for a in (self.ints, self.reals, self.objs)))

    @staticmethod
    def concat(columns: list["Exact"]) -> "Exact":
        out = Exact(np.concatenate([c.tags for c in columns]))
        for name, dtype, fill in (("ints", np.int64, 0), ("reals", np.float64, 0.0), ("objs", object, None)):
            if any(getattr(c, name) is not None for c in columns):
                parts = []
                for c in columns:
                    a = getattr(c, name)
                    if a is None:
                        a = np.full(len(c), fill, dtype)
                    parts.append(a)
                setattr(out, name, np.concatenate(parts))
        return out

    def as_float(self) -> np.ndarray:
        """float64 view of the column as a reading: integers and doubles as they are, texts parsed ('NaN',
        'Infinity' as OTLP/JSON writes them; anything else NaN), NULL as NaN."""
        out = np.full(len(self.tags), np.nan)
        if self.ints is not None:
            m = self.tags == INTEGER
            out[m] = self.ints[m]
        if self.reals is not None:
            m = self.tags == REAL
            out[m] = self.reals[m]
        if self.objs is not None:
            for i in np.flatnonzero(self.tags == TEXT).tolist():
                try:
                    out[i] = float(self.objs[i])
                except ValueError:
                    pass
        return out


# --- rows as SQLite stores them ---------------------------------------------------------------------------

# The head's declared column types (migrations.py, 0002): what a value becomes when SQLite stores it
# (https://sqlite.org/datatype3.html#type_affinity): `value` has none (a float NaN becomes NULL), `count`
# and the integer columns INTEGER, `sum`/`min`/`max` REAL, `buckets`/`exemplars` TEXT.
_HEAD_DDL = ("CREATE TABLE head (project_id INTEGER NOT NULL, series_id INTEGER NOT NULL, start_ns INTEGER NOT "
             "NULL, time_ns INTEGER NOT NULL, value, count INTEGER, sum REAL, min REAL, max REAL, flags INTEGER "
             "NOT NULL, buckets TEXT, exemplars TEXT)")
# Per records.POINT_COLUMNS position, the Python types SQLite stores unchanged in that column.
_AS_IS = ({int}, {int}, {int}, {int}, {int, float, str, type(None)}, {int, type(None)}, {float, type(None)},
          {float, type(None)}, {float, type(None)}, {int}, {str, type(None)}, {str, type(None)})
_COLUMN_OF = tuple(itemgetter(i) for i in range(len(_AS_IS)))
_mirror = threading.local()


def stored_columns(rows: list[tuple]) -> list[tuple]:
    """The columns of records.POINT_COLUMNS `rows` exactly as the head table would hold them after an
    INSERT (`block_from_columns` takes them), so a chunk written straight from a commit's rows equals one
    the compactor packs from head rows (tests compare). Columns, not rows: the caller transposes once.

    The normalizers give every column a type its column keeps as is; a NaN double (which SQLite stores as
    NULL) or any other type sends the rows through an in-memory SQLite table with the head's declared
    types instead, which is exact by construction and rare."""
    if not rows:
        return []
    # A column at a time: zip(*rows) steps one iterator per row for every column (0.7 against 0.55 µs a
    # point for a commit's group of 4,800 rows, the benchmark's).
    cols = [tuple(map(column, rows)) for column in _COLUMN_OF]
    for col, allowed in zip(cols, _AS_IS):
        kinds = set(map(type, col))
        if not kinds <= allowed or (float in kinds and _may_hold_nan(col, kinds)):
            return list(zip(*_through_sqlite(rows)))
    return cols


def _may_hold_nan(col: tuple, kinds: set) -> bool:
    """True if a float in `col` is NaN (or, rarely, if the sum of its numbers is: inf - inf). The sum runs
    in C, a per-value check in Python cost a fifth of packing a commit's points (cProfile)."""
    if str in kinds:
        return any(v != v for v in col if v.__class__ is float)
    try:
        total = sum(filter(None, col))  # None and zeros dropped; ints and floats add up
    except OverflowError:  # an int too large for a double
        return True
    return total != total


def _through_sqlite(rows: list[tuple]) -> list[tuple]:
    conn = getattr(_mirror, "conn", None)
    if conn is None:
        conn = _mirror.conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(_HEAD_DDL)
    try:
        conn.executemany(f"INSERT INTO head VALUES ({','.join('?' * 12)})", rows)
        return conn.execute("SELECT * FROM head ORDER BY rowid").fetchall()
    finally:
        conn.execute("DELETE FROM head")


# --- a block of points -------------------------------------------------------------------------------------

@dataclass
class PointBlock:
    """Points of one metric: the read columns (`points`; `points.valid` marks the readings) and every
    stored column exactly. Rows are in the order they were given (sort with `sorted()`)."""

    points: Points
    flags: np.ndarray  # int64
    exact: dict[str, Exact]  # EXACT_COLUMNS

    def __len__(self) -> int:
        return len(self.points)

    hid: np.ndarray  # int64 head rowid of each point (0: unknown, e.g. a bulk-loaded history)

    def take(self, idx: np.ndarray) -> "PointBlock":
        idx = row_indices(idx)
        return PointBlock(self.points.take(idx), np.take(self.flags, idx),
                          {k: c.take(idx) for k, c in self.exact.items()}, np.take(self.hid, idx))

    def sorted(self) -> "PointBlock":
        """By (series, time, arrival): points of equal series and time in the order they arrived."""
        p = self.points
        return self.take(np.lexsort((self.hid, p.time, p.series_id)))

    def rows(self, project_id: int) -> list[tuple]:
        """records.POINT_COLUMNS tuples, as the head held them."""
        p = self.points
        cols = [self.exact[c].values() for c in EXACT_COLUMNS]
        return list(zip([project_id] * len(p), p.series_id.tolist(), p.start.tolist(), p.time.tolist(),
                        cols[0], cols[1], cols[2], cols[3], cols[4], self.flags.tolist(), cols[5], cols[6]))


def concat_blocks(blocks: list[PointBlock]) -> PointBlock:
    """The points of `blocks` (at least one) in order; the first block when every one is empty."""
    nonempty = [b for b in blocks if len(b)]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else blocks[0]
    blocks = nonempty
    return PointBlock(concat_all([b.points for b in blocks]), np.concatenate([b.flags for b in blocks]),
                      {k: Exact.concat([b.exact[k] for b in blocks]) for k in EXACT_COLUMNS},
                      np.concatenate([b.hid for b in blocks]))


def block_from_rows(metric_type: str, rows: list[tuple], head_ids: list[int] | None = None) -> PointBlock:
    """A block from head rows in records.POINT_COLUMNS order (project_id first, ignored: one metric is one
    project). Derives the read columns the way points.decode reads them from SQL. `head_ids`: the rows'
    head rowids (their arrival order; a tally's write order, `Points.seq`); without them, 0."""
    return block_from_columns(metric_type, list(zip(*rows)) if rows else [], head_ids)


def block_from_columns(metric_type: str, cols: list[tuple], head_ids: list[int] | None = None,
                       bucket_counts: list[bytes | None] | None = None) -> PointBlock:
    """`block_from_rows` of the rows' columns (`stored_columns`; `[]` for no rows). `bucket_counts`: for a
    histogram, each row's counts as int64 bytes where the walk gave them (records.WriteBatch.bucket_counts),
    the same numbers as its `buckets` JSON, which is then not parsed."""
    kind = kind_of(metric_type)
    n = len(cols[0]) if cols else 0
    if not n:
        p = empty(kind)
        z = np.zeros(0, np.int64)
        return PointBlock(p, z, {k: Exact(np.zeros(0, np.uint8)) for k in EXACT_COLUMNS}, z)
    if kind == "tally" and (head_ids is None or len(head_ids) != n):
        raise ValueError("a tally block needs the head rowid of every row (its write order)")
    if head_ids is not None and len(head_ids) != n:
        raise ValueError("one head rowid per row")
    hid = np.array(head_ids, np.int64) if head_ids is not None else np.zeros(n, np.int64)
    sid = np.array(cols[1], np.int64)
    start = np.array(cols[2], np.int64)
    t = np.array(cols[3], np.int64)
    flags = np.array(cols[9], np.int64)
    exact = {name: Exact.from_values(cols[i]) for name, i in zip(EXACT_COLUMNS, (4, 5, 6, 7, 8, 10, 11))}
    value = exact["value"]
    if kind in _VALUE_KINDS:
        valid = value.tags != NULL
    else:
        valid = (flags & _NO_RECORDED_VALUE) == 0
    p = _derive(kind, sid, t, start, valid, exact, cols, bucket_counts)
    if kind == "tally":
        p.seq = hid
        p.sets = (flags & TALLY_SET) != 0
    return PointBlock(p, flags, exact, hid)


def _derive(kind: str, sid, t, start, valid, exact: dict[str, Exact], cols: list,
            bucket_counts: list[bytes | None] | None = None) -> Points:
    n = len(sid)
    if kind in ("number", "tally"):
        v = exact["value"].as_float()
        return Points(kind, sid, t, valid, v, v, start)
    if kind == "set":
        table: dict[str, int] = {}
        setdefault = table.setdefault
        codes = np.fromiter((setdefault(m if m.__class__ is str else str(m), len(table)) if m is not None else -1
                             for m in cols[4]), np.float64, n)
        return Points(kind, sid, t, valid, codes, codes, start, members=tuple(table))
    count, total = exact["count"].as_float(), exact["sum"].as_float()
    with np.errstate(all="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    p = Points(kind, sid, t, valid, mean, count, start, total=total)
    if kind == "histogram":
        fast = _histogram_buckets(cols[10], bucket_counts)
        if fast is not None:
            p.bounds, p.bounds_id, p.counts = fast
            return p
    docs = json.loads("[" + ",".join(b if b is not None else "null" for b in cols[10]) + "]")
    if kind == "histogram":
        bounds_of: dict[tuple, int] = {}
        ids = np.zeros(n, np.int32)
        lists = []
        for i, d in enumerate(docs):
            d = d if isinstance(d, dict) else {}
            b = d.get("bounds")
            ids[i] = bounds_of.setdefault(tuple(b) if isinstance(b, list) else (), len(bounds_of))
            c = d.get("counts")
            lists.append(c if isinstance(c, list) else [])
        p.bounds, p.bounds_id = tuple(bounds_of), ids
        flat, starts, lens = ragged(lists)
        p.counts = padded(flat, starts, lens, 0.0)
    elif kind == "exponential_histogram":
        scale, zero, pos_off, neg_off, pos, neg = [], [], [], [], [], []
        for d in docs:
            d = d if isinstance(d, dict) else {}
            scale.append(d.get("scale") or 0)
            zero.append(d.get("zero_count"))
            for side, offs, lists in (("positive", pos_off, pos), ("negative", neg_off, neg)):
                s = d.get(side) if isinstance(d.get(side), dict) else {}
                offs.append(s.get("offset") or 0)
                c = s.get("counts")
                lists.append(c if isinstance(c, list) else [])
        p.scale = np.array(scale, np.int32)
        p.zero_count = np.array([np.nan if z is None else z for z in zero], np.float64)
        p.pos_offset, p.neg_offset = np.array(pos_off, np.int64), np.array(neg_off, np.int64)
        p.pos_flat, p.pos_start, p.pos_len = ragged(pos)
        p.neg_flat, p.neg_start, p.neg_len = ragged(neg)
    elif kind == "summary":
        pairs = []
        for d in docs:
            q = d.get("quantiles") if isinstance(d, dict) else None
            pairs.append(q if isinstance(q, list) else [])
        lens = np.fromiter(map(len, pairs), np.int64, n)
        flat = np.array([x for pair_list in pairs for pair in pair_list for x in pair], dtype=np.float64).reshape(-1, 2)
        starts = np.zeros(n, np.int64)
        if n:
            np.cumsum(lens[:-1], out=starts[1:])
        p.q_level = padded(flat[:, 0].copy(), starts, lens, np.nan)
        p.q_value = padded(flat[:, 1].copy(), starts, lens, np.nan)
    return p


_BOUNDS_AT, _COUNTS_AT = '{"bounds":[', '],"counts":['


def _histogram_buckets(texts: tuple, bucket_counts: list[bytes | None] | None = None
                       ) -> tuple[tuple, np.ndarray, np.ndarray] | None:
    """The explicit-bucket JSON the normalizers write, `{"bounds":[...],"counts":[...]}`, parsed much faster
    than json.loads of every document. Returns (bounds, bounds_id, counts as a float64 row per point) as the
    general parse in `_derive` would, or None for anything else (that parse then runs)."""
    if not texts or set(map(type, texts)) != {str}:
        return None
    return _one_layout(texts, bucket_counts) or _many_layouts(texts)


def _one_layout(texts: tuple, bucket_counts: list[bytes | None] | None = None
                ) -> tuple[tuple, np.ndarray, np.ndarray] | None:
    """The usual commit: every point of the metric has the first one's bounds text and len(bounds) + 1
    counts (the normalizers refuse other lengths, but keep empty counts). Then the counts of all points are
    one flat json.loads, reshaped: no Python list per point (the writer spent 6.7 µs a histogram point
    packing a commit, most of it here, before); or, when the walk gave every point's counts as int64 bytes
    (`bucket_counts`, the same numbers as the texts), those bytes back to back, with no parse at all (the
    json.loads took 2.5–3.5 µs a point, 9% of the writer thread). None when any text differs from that
    form."""
    first = texts[0]
    at = first.find(_COUNTS_AT)
    if not first.startswith(_BOUNDS_AT) or at < 0:
        return None
    prefix = first[:at + len(_COUNTS_AT)]
    if not (all(map(str.startswith, texts, repeat(prefix))) and all(map(str.endswith, texts, repeat("]}")))):
        return None
    cut = len(prefix)
    try:
        bounds = json.loads("[" + first[len(_BOUNDS_AT):at] + "]")
        width = len(bounds) + 1
        if bucket_counts is not None and None not in bucket_counts \
                and set(map(len, bucket_counts)) == {width * 8}:
            flat = np.frombuffer(b"".join(bucket_counts), np.int64).astype(np.float64)
            return (tuple(bounds),), np.zeros(len(texts), np.int32), flat.reshape(len(texts), width)
        rows = [t[cut:-2] for t in texts]
        # A row of exactly `width` numbers has width - 1 commas; a row holding anything else (a list, a key
        # after the counts) either has another number of them or makes the flat list fail to parse or to
        # have n * width numbers, and the general parse decides.
        if list(map(str.count, rows, repeat(","))).count(width - 1) != len(rows):
            return None
        flat = np.array(json.loads("[" + ",".join(rows) + "]"), dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if flat.ndim != 1 or flat.size != len(texts) * width:
        return None
    return (tuple(bounds),), np.zeros(len(texts), np.int32), flat.reshape(len(texts), width)


def _many_layouts(texts: tuple) -> tuple[tuple, np.ndarray, np.ndarray] | None:
    """Several bounds texts (or counts of other lengths): a metric's points share their bounds text, which is
    parsed once, and the counts of all points are one json.loads (~4x faster than json.loads of every
    document)."""
    if not all(t.startswith(_BOUNDS_AT) and t.endswith("]}") for t in texts):
        return None
    start = len(_BOUNDS_AT)
    bounds_text: dict[str, int] = {}
    text_ids, counts_texts = [], []
    for t in texts:
        i = t.find(_COUNTS_AT)
        if i < 0:
            return None
        text_ids.append(bounds_text.setdefault(t[start:i], len(bounds_text)))
        counts_texts.append(t[i + len(_COUNTS_AT) - 1:-1])
    try:
        counts = json.loads("[" + ",".join(counts_texts) + "]")
        parsed = [json.loads("[" + b + "]") for b in bounds_text]
    except ValueError:
        return None  # another layout (a key after "counts", say): the general parse decides
    if len(counts) != len(texts) or not all(c.__class__ is list for c in counts):
        return None
    # Equal bounds written differently (1.0, 1.00) are one layout, as in the general parse.
    layout_of: dict[tuple, int] = {}
    remap = [layout_of.setdefault(tuple(b), len(layout_of)) for b in parsed]
    ids = np.array(remap, np.int32)[np.array(text_ids, np.int64)]
    flat, starts, lens = ragged(counts)
    return tuple(layout_of), ids, padded(flat, starts, lens, 0.0)


def _compact_ragged(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The slices flat[starts[i]:starts[i]+lens[i]] back to back (after a take/sort they are scattered)."""
    if not lens.sum():
        return np.zeros(0)
    idx = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
    return flat[idx]


# --- payload encoding ------------------------------------------------------------------------------------

class _Writer:
    def __init__(self) -> None:
        self.header: dict[str, Any] = {"arrays": {}, "extra": {}}
        self.parts: list[bytes] = []
        self.offset = 0

    def _bytes(self, name: str, data: bytes, spec: dict) -> None:
        spec.update(offset=self.offset, size=len(data))
        self.header["arrays"][name] = spec
        self.parts.append(data)
        self.offset += len(data)

    def array(self, name: str, a: np.ndarray, *, rle: bool = False) -> None:
        a = np.ascontiguousarray(a)
        spec: dict[str, Any] = {"dtype": a.dtype.str, "shape": list(a.shape)}
        if a.ndim == 1 and a.size and a.dtype != object and (a == a[0]).all() and not (
                a.dtype.kind == "f" and np.isnan(a[0])):
            spec.update(codec="const", value=a[0].item())
            self.header["arrays"][name] = spec
            return
        if rle and self._runs(name, a, spec):
            return
        spec["codec"] = "raw"
        self._bytes(name, a.tobytes(), spec)

    def _runs(self, name: str, a: np.ndarray, spec: dict) -> bool:
        """`a` as runs (value, length), if that takes fewer than half the values; False otherwise."""
        if a.ndim != 1 or not a.size:
            return False
        cuts = np.flatnonzero(a[1:] != a[:-1]) + 1
        if len(cuts) * 2 >= a.size:
            return False
        starts = np.concatenate([[0], cuts])
        lens = np.diff(np.concatenate([starts, [a.size]]))
        spec["codec"] = "rle"
        spec["runs"] = len(starts)
        self._bytes(name, a[starts].tobytes() + lens.astype(np.int64).tobytes(), spec)
        return True

    def offsets(self, name: str, a: np.ndarray, *, rle: bool = False) -> None:
        """int64s close together (head rowids, flags, counts) as their distance from the smallest, in the
        narrowest unsigned type that holds it: a rollup's flags and observation counts took 16 of its 64
        bytes a reading raw. Constant or (with `rle`) in runs: as `array`; spread over 2**32 or more: raw."""
        if not a.size or a.dtype != np.int64 or (a == a[0]).all():
            self.array(name, a, rle=rle)  # `const` (e.g. a bulk-loaded history's 0s)
            return
        spec: dict[str, Any] = {"dtype": a.dtype.str, "shape": [a.size]}
        if rle and self._runs(name, a, spec):
            return
        base, top = int(a.min()), int(a.max()) - int(a.min())  # (Python ints: no int64 overflow)
        if top >= 1 << 32:
            self.array(name, a)
            return
        dtype = np.uint8 if top < 1 << 8 else np.uint16 if top < 1 << 16 else np.uint32
        spec.update(codec="offset", base=base, stored=np.dtype(dtype).str)
        self._bytes(name, (a - base).astype(dtype).tobytes(), spec)

    def counts(self, name: str, a: np.ndarray) -> None:
        """Bucket counts (float64 holding integers) in the narrowest unsigned type that holds them all
        exactly: a day of histogram points is hundreds of MB of float64 counts, and a cold query's time
        goes into reading those bytes (issue 16). Anything else (fractions, negatives, -0.0, NaN, 2**32 and
        up) is stored as it is."""
        a = np.ascontiguousarray(a)
        dtype = narrow_dtype(a)
        if dtype is not None:  # the payload says float64 (what `decode(exact=True)` gives back), stored narrow
            spec: dict[str, Any] = {"dtype": "<f8", "shape": list(a.shape), "codec": "narrow",
                                    "stored": dtype.str}
            self._bytes(name, a.astype(dtype).tobytes(), spec)
            return
        self.array(name, a)

    def texts(self, name: str, objs: np.ndarray, tags: np.ndarray) -> None:
        """The texts (and blobs) of an exact column; `tags` say which points have one. Level 1 compression:
        most of level 6's gain on this repetitive JSON for a third of its time, and chunks are packed on the
        writer's thread at every commit (appender.py)."""
        present = objs[tags >= TEXT].tolist()
        if all(v.__class__ is str for v in present):
            # `joined`: no JSON escaping of the texts' own quotes, no JSON parse to read them back (a list of
            # bucket texts as JSON took 0.7 µs a text to write and 0.6 to read; joined 0.2 and 0.2).
            joined = "".join(present)
            ascii_only = joined.isascii()
            parts = joined.encode("ascii") if ascii_only else [v.encode() for v in present]
            lengths = np.fromiter(map(len, present if ascii_only else parts), np.uint32, len(present))
            data = lengths.tobytes() + (parts if ascii_only else b"".join(parts))
            self._bytes(name, zlib.compress(data, 1), {"codec": "joined", "count": len(present),
                                                        "ascii": ascii_only})
            return
        values = [v if v is None or isinstance(v, str) else {"b": v.hex()} for v in objs.tolist()]
        self._bytes(name, zlib.compress(json.dumps(values, ensure_ascii=False).encode(), 1), {"codec": "zlib"})

    def finish(self) -> bytes:
        head = json.dumps(self.header, separators=(",", ":")).encode()
        return MAGIC + struct.pack("<I", len(head)) + head + b"".join(self.parts)


def encode(block: PointBlock) -> bytes:
    """The chunk payload of `block` (sorted by the caller)."""
    w = _Writer()
    p = block.points
    w.header["n"] = len(p)
    w.header["kind"] = p.kind
    w.array("series_id", p.series_id, rle=True)
    w.array("time", p.time)
    w.array("start", p.start, rle=True)
    w.offsets("flags", block.flags, rle=True)
    w.offsets("hid", block.hid)
    for name, col in block.exact.items():
        w.array(f"{name}.tags", col.tags, rle=True)
        if col.ints is not None:
            w.offsets(f"{name}.ints", col.ints)
        if col.reals is not None:
            w.array(f"{name}.reals", col.reals)
        if col.objs is not None:
            w.texts(f"{name}.objs", col.objs, col.tags)
    # The read columns that are not plain functions of the exact ones.
    if p.kind == "set":
        w.array("codes", p.value.astype(np.int32), rle=True)
        w.header["extra"]["members"] = list(p.members)
    elif p.kind == "histogram":
        w.array("bounds_id", p.bounds_id, rle=True)
        w.counts("counts", p.counts)
        w.header["extra"]["bounds"] = [list(b) for b in p.bounds]
    elif p.kind == "exponential_histogram":
        for name in ("scale", "zero_count", "pos_offset", "pos_len", "neg_offset", "neg_len"):
            w.array(name, getattr(p, name))
        w.counts("pos_flat", _compact_ragged(p.pos_flat, p.pos_start, p.pos_len))
        w.counts("neg_flat", _compact_ragged(p.neg_flat, p.neg_start, p.neg_len))
    elif p.kind == "summary":
        w.array("q_level", p.q_level)
        w.array("q_value", p.q_value)
    return w.finish()


class _Reader:
    def __init__(self, payload: bytes) -> None:
        if payload[:4] != MAGIC:
            raise ValueError("not a metric chunk payload")
        (size,) = struct.unpack_from("<I", payload, 4)
        self.header = json.loads(payload[8:8 + size])
        self.data = memoryview(payload)[8 + size:]
        self.n = self.header["n"]

    def has(self, name: str) -> bool:
        return name in self.header["arrays"]

    def array(self, name: str, *, narrow: bool = False) -> np.ndarray:
        """Column `name` in its declared dtype; `narrow`: a narrow-coded column as stored (uint8/16/32)."""
        spec = self.header["arrays"][name]
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        codec = spec["codec"]
        if codec == "const":
            return np.full(shape, spec["value"], dtype)
        raw = self.data[spec["offset"]:spec["offset"] + spec["size"]]
        if codec == "narrow":
            stored = np.frombuffer(raw, np.dtype(spec["stored"])).reshape(shape)
            return stored if narrow else stored.astype(dtype)
        if codec == "offset":
            return np.frombuffer(raw, np.dtype(spec["stored"])).astype(np.int64) + spec["base"]
        if codec == "rle":
            runs = spec["runs"]
            values = np.frombuffer(raw, dtype, runs)
            lens = np.frombuffer(raw, np.int64, runs, offset=runs * dtype.itemsize)
            return np.repeat(values, lens)
        return np.frombuffer(raw, dtype).reshape(shape)

    def texts(self, name: str, tags: np.ndarray) -> np.ndarray:
        """An exact column's texts and blobs, None where `tags` (the column's) say a point has neither."""
        spec = self.header["arrays"][name]
        raw = zlib.decompress(self.data[spec["offset"]:spec["offset"] + spec["size"]])
        out = np.empty(len(tags), object)
        if spec["codec"] == "joined":
            count = spec["count"]
            ends = np.cumsum(np.frombuffer(raw, np.uint32, count), dtype=np.int64).tolist()
            starts = [0] + ends[:-1]
            body = raw[4 * count:]
            if spec["ascii"]:
                text = body.decode("ascii")
                values = list(map(text.__getitem__, map(slice, starts, ends)))
            else:
                values = [body[a:b].decode() for a, b in zip(starts, ends)]
            out[tags >= TEXT] = values
            return out
        values = json.loads(raw)
        out[:] = [bytes.fromhex(v["b"]) if isinstance(v, dict) else v for v in values]
        return out


def decode(payload: bytes, *, exact: bool = True) -> PointBlock:
    """A chunk payload back into a PointBlock. `exact=False` skips the exact columns a query never reads
    (texts are the costly part); such a block's `rows()` must not be called."""
    r = _Reader(payload)
    kind = r.header["kind"]
    n = r.n
    sid, t, start, flags = r.array("series_id"), r.array("time"), r.array("start"), r.array("flags")
    hid = r.array("hid")
    columns: dict[str, Exact] = {}
    wanted = EXACT_COLUMNS if exact else (("value",) if kind in _VALUE_KINDS else ("count", "sum", "value"))
    for name in wanted:
        col = Exact(r.array(f"{name}.tags"))
        if r.has(f"{name}.ints"):
            col.ints = r.array(f"{name}.ints")
        if r.has(f"{name}.reals"):
            col.reals = r.array(f"{name}.reals")
        if r.has(f"{name}.objs") and (exact or kind in ("number", "tally")):
            col.objs = r.texts(f"{name}.objs", col.tags)
        columns[name] = col
    value = columns["value"]
    valid = value.tags != NULL if kind in _VALUE_KINDS else (flags & _NO_RECORDED_VALUE) == 0
    if kind in ("number", "tally"):
        v = value.as_float()
        p = Points(kind, sid, t, valid, v, v, start)
        if kind == "tally":
            p.seq, p.sets = hid, (flags & TALLY_SET) != 0
    elif kind == "set":
        codes = r.array("codes").astype(np.float64)
        p = Points(kind, sid, t, valid, codes, codes, start, members=tuple(r.header["extra"]["members"]))
    else:
        count, total = columns["count"].as_float(), columns["sum"].as_float()
        with np.errstate(all="ignore"):
            mean = np.where(count > 0, total / count, np.nan)
        p = Points(kind, sid, t, valid, mean, count, start, total=total)
        if kind == "histogram":
            p.bounds_id = r.array("bounds_id")
            # A query's copy keeps whole-number counts narrow (points.narrowed); exact rows want float64.
            # Chunks written before the narrow codec (50ccc0c) are narrowed here, once per cold load.
            p.counts = r.array("counts") if exact else narrowed(r.array("counts", narrow=True))
            p.bounds = tuple(tuple(b) for b in r.header["extra"]["bounds"])
        elif kind == "exponential_histogram":
            for name in ("scale", "zero_count", "pos_offset", "pos_len", "neg_offset", "neg_len", "pos_flat",
                         "neg_flat"):
                setattr(p, name, r.array(name))
            for side in ("pos", "neg"):
                lens = getattr(p, f"{side}_len")
                starts = np.zeros(n, np.int64)
                if n:
                    np.cumsum(lens[:-1], out=starts[1:])
                setattr(p, f"{side}_start", starts)
        elif kind == "summary":
            p.q_level, p.q_value = r.array("q_level"), r.array("q_value")
    if not exact:
        columns = {k: columns.get(k, Exact(np.zeros(n, np.uint8))) for k in EXACT_COLUMNS}
    return PointBlock(p, flags, columns, hid)


def payload_times(payload: bytes) -> np.ndarray:
    """Only the time column of a payload (retention's exact point counts of a block it cuts through)."""
    return _Reader(payload).array("time")


def merge(payloads: Iterable[bytes]) -> PointBlock:
    """Blocks of one metric and time block into one, sorted by (series, time, arrival)."""
    return concat_blocks([decode(p) for p in payloads]).sorted()


