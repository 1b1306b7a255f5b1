"""Metric rollups: the readings of a closed hour that increases need, and nothing more (issue 16).

A day's `rate` or `histogram_quantile` over a busy metric reads millions of points (4.6M readings of 16
buckets for the bench's histogram), yet what it computes per series and bucket telescopes (reduce.py,
`_telescoped_parts`): the last reading of the bucket, minus the reading before its first, plus the reading
before each reset. So per closed hour of a counter or distribution metric the store keeps
(`metric_rollups`, migration 0011) only these readings of each series:

- the first and the last reading of every quarter hour (CELL_NS, aligned to UTC: every zone's offset is a
  whole number of quarter hours, so the cells of a PostHog `minute_15`, `hour` or `day` grid are whole);
- both readings of every pair that is not *plain*: a drop (a reset), a change of start time or of whether
  it is known (a restart, `reduce._restarts`), a value that is not finite, a change of histogram bounds;
- every reading of a delta series (each is its own increase).

**Why that is exact.** Take any bucket made of whole cells. Its last reading is the last of a cell, and the
reading before its first is the last of an earlier cell: both kept. A reset or restart is decided on a pair
of neighbours, and those pairs are kept whole. Between two kept readings that were not neighbours, every
pair was plain: no drop, the same known (or the same unknown) start, finite values; so the engine sees no
reset there either, and their difference is the sum of the differences it replaces. The first reading at or
after the query's look-back start is the first of its cell when that start is a cell boundary. Hence
`reduce.series_cells` gives the same cells from the kept readings as from all of them, for `rate` and
`increase` of sums and every increase-based function of histograms (`histogram_quantile`, `quantile`,
`observations`, `observation_sum`, `observation_mean`); with whole-number values the very same numbers,
with fractional ones up to the rounding of adding the differences in another order.

**When a reader uses one** (`parts`): for an hour whose cells lie each inside one bucket of the query's
grid (or wholly before its look-back start or after its end) and on the look-back start, whose chunks are
those it was built from (late points or a merge make it stale until it is built again), with no
point of that hour still in the head, and after the retention cutoff. The hour that holds the query's end
(a window ending now, or at the newest data) is answered by its rollup up to the quarter hour holding the
end, when its earlier cells are whole. Every other hour, and that last quarter hour, is read in full, the
trailing ones through the query cache, and collapsed as read to what a rollup would keep (`collapsed`; the
quarter hour holding the end, of whose readings none after the end is read, as a whole one); a mix is
exact as well, for every part keeps at least what the argument above needs of its cells.
**Plain firsts.** Of the first and last reading of a quarter hour, the first is needed only as the reading
before the quarter hour's increases when the reading before it is not read: it telescopes away whenever
its series' reading before it is read too and both pairs around it are plain. A rollup marks such
readings (PLAIN_FIRST: the first of its cell and not its last, not in a pair that is not plain, with a
reading of its cumulative series before it in the same hour), and a reader leaves them out of every
rolled hour that starts at or after its look-back start (`_read_rolled`); the hour that holds that start
keeps them. A rollup built before the mark existed has none and is read whole (exact, only larger); it
is not rebuilt for that, and is gone with the retention of its hour.

**Chunk rollups** (`metric_chunk_rollups`, migration 0013) do the same for the hours no hourly rollup
answers yet, the open one above all, one chunk at a time: the readings `kept` picks from one chunk's
readings alone. A busy open hour otherwise made a first query read and sort every one of its readings
(347,700 of the scale benchmark's histogram in 20 s of ingest; docs/benchmarks.md, 2026-12-04 10:30). A
reader takes a chunk's rollup where the chunk lies inside the stretch it reads, before the query's end,
with only whole cells (`_newest`), and everything else raw; that is exact for the reason above as long as
no reading of another part lies between a series' first and last reading in a chunk it takes the rollup
of (the readings the rollup leaves out then had that chunk's own readings on both sides). Readings that
came out of order can break that; it is checked on what was read, and then the stretch is read raw.

A thread of its own (`RollupBuilder`, started by the server's writer) builds them from a read snapshot,
newest hours first, once an hour is closed and its chunks merged, and hands each to the writer to store:
an upgraded store fills in the background, and ingest commits never wait for an hour being packed. With
every closed hour rolled, it builds the chunk rollups of the chunks the compactor merges no further (of
`small_points` or more) of the last CHUNK_HOURS hours, oldest chunk first; a merge deletes its chunks'
rollups with them. Retention deletes expired hourly rollups with the chunks.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from otelite.collector.osthread import NamedThread
from otelite.collector.store.chunks import BLOCK_NS, block_of, concat_blocks, decode, encode
from otelite.collector.store.db import connect_reader, passing_through
from otelite.collector.store.points import (_SERIES, Points, PointCache, ReadTransaction, _chunk_parts, _load,
                                            _sorted_parts, concat_all, empty, kind_of, retention_cutoff,
                                            series_time_order)

if TYPE_CHECKING:
    from otelite.collector.store.metrics import SeriesSet

log = logging.getLogger("otelite.store")

CELL_NS = 15 * 60 * 10**9  # a quarter hour: the finest bucket a rollup answers whole
# A flag bit of a rollup's readings (never of a chunk's; records.py has bits 0 and 1): a plain first
# (`_kept_and_plain_firsts`), which a query leaves out of every rolled hour it reads whole (`_read_rolled`).
PLAIN_FIRST = 1 << 8
PIECE_POINTS = 200_000  # readings of an hour a build decides on at once (memory: ~50 bytes each)
ROLLED_TYPES = ("sum", "histogram", "exponential_histogram")
INCREASE_FUNCTIONS = {"number": ("rate", "increase"),
                      "histogram": ("quantile", "histogram_quantile", "observations", "observation_sum",
                                    "observation_mean")}
INCREASE_FUNCTIONS["exponential_histogram"] = INCREASE_FUNCTIONS["histogram"]

_SQL_STALE = (  # closed hours whose rollup is missing or was built from other chunks; newest first
    "SELECT c.project_id, c.name, c.type, c.block_start, c.k, c.m FROM (SELECT project_id, name, type, "
    "block_start, count(*) AS k, max(id) AS m FROM metric_chunks "
    f"WHERE type IN ({','.join('?' * len(ROLLED_TYPES))}) AND block_start < ? AND block_start >= ? "
    "GROUP BY project_id, name, type, block_start HAVING sum(n < ?) < 2) AS c "
    "LEFT JOIN metric_rollups AS r ON r.project_id = c.project_id "
    "AND r.name = c.name AND r.type = c.type AND r.block_start = c.block_start "
    "WHERE r.chunks IS NOT c.k OR r.max_chunk_id IS NOT c.m ORDER BY c.block_start DESC")
_SQL_PUT = ("INSERT OR REPLACE INTO metric_rollups (project_id, name, type, block_start, chunks, max_chunk_id, n, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


# --- which readings are kept ------------------------------------------------------------------------------

def _plain_pairs(p: Points, order: np.ndarray | None) -> np.ndarray:
    """For each reading of `p` taken in `order` (None: as they are), whether it and the reading before it
    form a plain pair (module docstring); meaningful where both belong to one series."""
    def col(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    n = len(p) if order is None else order.size
    ok = np.ones(n, bool)
    if n < 2:
        return ok
    tail = ok[1:]  # (a view: the tests below narrow `ok` itself)
    with np.errstate(invalid="ignore"):
        c = col(p.counter)
        tail &= np.isfinite(c[1:]) & np.isfinite(c[:-1]) & (c[1:] >= c[:-1])
    if p.total is not None:
        finite = np.isfinite(col(p.total))
        tail &= finite[1:] & finite[:-1]
    if p.start is not None:
        start, time = col(p.start), col(p.time)
        known = (start > 0) & (start < time)
        tail &= (start[1:] == start[:-1]) & (known[1:] == known[:-1])
    if p.bounds_id is not None:
        bounds = col(p.bounds_id)
        tail &= bounds[1:] == bounds[:-1]
    if p.counts is not None and p.counts.dtype.kind == "f":  # (narrow integer counts are finite)
        finite = col(np.isfinite(p.counts).all(axis=1))
        tail &= finite[1:] & finite[:-1]
    return ok


def kept(p: Points, order: np.ndarray | None, delta_ids: np.ndarray, whole: np.ndarray | None = None) -> np.ndarray:
    """Which readings of `p` taken in `order` (None: as they are; one metric's readings by series, time and
    arrival) a rollup keeps: a boolean mask in that order (module docstring). `delta_ids`: the series whose
    every reading is kept; `whole` (in that order): False for a reading whose cell is not whole in a
    query's buckets, which is kept too."""
    return _kept_and_plain_firsts(p, order, delta_ids, whole)[0]


def _kept_and_plain_firsts(p: Points, order: np.ndarray | None, delta_ids: np.ndarray,
                           whole: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`kept`, and which of the kept readings are *plain firsts* (in the same order): the first reading of
    its cell that is not its last, not in a pair that is not plain, and has a reading of its series before
    it in `p` (a cumulative series). A query that reads that earlier reading too does not need it
    (PLAIN_FIRST)."""
    n = len(p) if order is None else order.size
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    sid = p.series_id if order is None else p.series_id[order]
    cell = (p.time if order is None else p.time[order]) // CELL_NS
    same_series = np.zeros(n, bool)
    same_series[1:] = sid[1:] == sid[:-1]
    first = np.ones(n, bool)
    first[1:] = ~same_series[1:] | (cell[1:] != cell[:-1])
    last = np.ones(n, bool)
    last[:-1] = first[1:]  # the last reading of each (series, cell)
    odd = same_series & ~_plain_pairs(p, order)  # the second reading of a pair that is not plain
    odd[:-1] |= odd[1:]  # and the first
    keep = first | last | odd
    plain_first = first & ~last & ~odd & same_series
    if delta_ids.size:
        delta = np.isin(sid, delta_ids)
        keep |= delta
        plain_first &= ~delta
    if whole is not None:
        keep |= ~whole
        plain_first &= whole
    return keep, plain_first


def read_order(p: Points) -> np.ndarray:
    """The order in which a query reads the readings of an hour's chunks concatenated in (seq, id) order:
    by series and time, equal ones in chunk order (as points._sorted_parts)."""
    readings = np.flatnonzero(p.valid)
    return readings[series_time_order(p.series_id[readings], p.time[readings])]


# --- building (a thread of its own; the writer only stores the result) -----------------------------------

def due(conn: sqlite3.Connection, now_ns: int, closed_after_ns: int, small_points: int,
        skip: "set[tuple] | frozenset[tuple]" = frozenset()) -> tuple | None:
    """(project_id, name, type, hour, chunks, max_chunk_id) of the newest closed hour whose rollup is
    missing or was built from other chunks, and which is not in `skip`, or None. An hour is closed
    `closed_after_ns` after its end (late points have arrived), and is left until its small chunks
    (< `small_points`) are merged (compactor.py): its rollup would be stale at once."""
    cutoff = retention_cutoff(conn)
    first_whole = block_of(cutoff) + (BLOCK_NS if cutoff % BLOCK_NS else 0)
    rows = conn.execute(_SQL_STALE, (*ROLLED_TYPES, now_ns - closed_after_ns - BLOCK_NS + 1, first_whole,
                                     small_points))
    try:
        return next((row for row in rows if row not in skip), None)
    finally:
        rows.close()


def build(conn: sqlite3.Connection, hour: tuple) -> tuple:
    """The metric_rollups row of `hour` (a `due` row), read in one snapshot of `conn`.

    Memory stays small whatever the hour holds: the hour's series are taken in groups of about
    PIECE_POINTS readings, and for each group what to keep is decided on the few columns that decide it
    (`_deciding`), then each chunk is read again for its kept rows. Chunks are fetched one at a time."""
    project_id, name, metric_type, block_start, _, _ = hour
    key = (project_id, name, metric_type, block_start)
    with ReadTransaction(conn):
        chunks = conn.execute("SELECT id, n FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? "
                              "AND block_start = ? ORDER BY seq, id", key).fetchall()
        series = np.array([r[0] for r in conn.execute(
            "SELECT id FROM metric_series WHERE project_id = ? AND name = ? AND type = ? ORDER BY id", key[:3])],
            np.int64)
        delta_ids = np.array([r[0] for r in conn.execute(
            "SELECT id FROM metric_series WHERE project_id = ? AND name = ? AND type = ? AND temporality = 1",
            key[:3])], np.int64)
        groups = max(1, -(-sum(n for _, n in chunks) // PIECE_POINTS))
        # Series id bounds of the groups (every series of the metric in one of them; ids are positive).
        bounds = [0] + [int(g[0]) for g in np.array_split(series, groups)[1:] if g.size] + [1 << 63]
        pieces = [_kept_block(conn, [cid for cid, _ in chunks], lo, hi, delta_ids)
                  for lo, hi in zip(bounds[:-1], bounds[1:])]
    block = concat_blocks(pieces)  # (an hour without a single reading has an empty rollup)
    # The stamp of the chunks read (the snapshot's): if they change before this is stored, readers see a
    # stale rollup and ignore it until it is built again.
    return (*key, len(chunks), max(cid for cid, _ in chunks), len(block), encode(block))


def _kept_block(conn: sqlite3.Connection, chunk_ids: list[int], lo: int, hi: int, delta_ids: np.ndarray):
    """The kept readings of the series lo <= id < hi in the chunks `chunk_ids` (one hour, in (seq, id)
    order), in query order: a PointBlock."""
    def points(cid: int) -> Points:
        payload = conn.execute("SELECT payload FROM metric_chunks WHERE id = ?", (cid,)).fetchone()[0]
        return decode(payload, exact=False)

    rows, deciding = [], []
    for cid in chunk_ids:
        p = points(cid).points
        inside = np.flatnonzero((p.series_id >= lo) & (p.series_id < hi))
        rows.append(inside)
        deciding.append(_deciding(p.take(inside)))
    starts = np.cumsum([0] + [r.size for r in rows[:-1]])
    whole = concat_all(deciding)
    order = read_order(whole)  # readings only: a query reads nothing else
    keep, plain_first = _kept_and_plain_firsts(whole, order, delta_ids)
    chosen = order[keep]  # rows of `deciding` one after the other, in query order
    plain_first = plain_first[keep]
    del deciding, whole
    chunk = np.searchsorted(starts, chosen, side="right") - 1
    by_chunk = np.argsort(chunk, kind="stable")
    taken = []
    for i, cid in enumerate(chunk_ids):
        mine = chosen[by_chunk][chunk[by_chunk] == i] - starts[i]
        if mine.size:
            taken.append(points(cid).take(rows[i][mine]))
    if not taken:
        return points(chunk_ids[0]).take(np.zeros(0, np.int64))
    place = np.empty(chosen.size, np.int64)  # from chunk order back to query order
    place[by_chunk] = np.arange(chosen.size)
    block = concat_blocks(taken).take(place)
    # (a client's point may carry any flag bit: OTLP's `flags` is a uint32 stored as sent)
    block.flags = (block.flags & ~PLAIN_FIRST) | np.where(plain_first, PLAIN_FIRST, 0)
    return block


def _deciding(p: Points) -> Points:
    """The columns of `p` that `kept` reads, without the bucket counts (for histograms a column that is
    NaN where a reading's counts are not all finite, and the bounds): a small part of the points."""
    light = Points("histogram" if p.kind == "histogram" else "number", p.series_id, p.time, p.valid, p.counter,
                   p.counter, p.start, total=p.total)
    if p.kind == "histogram":
        finite = np.isfinite(p.counts).all(axis=1) if p.counts.dtype.kind == "f" else np.ones(len(p), bool)
        light.bounds_id, light.bounds, light.counts = p.bounds_id, p.bounds, np.where(finite, 0.0, np.nan)[:, None]
    return light


def store(conn: sqlite3.Connection, row: tuple) -> None:
    """Write a rollup (`build`'s row); on the writer's connection."""
    conn.execute(_SQL_PUT, row)


# --- chunk rollups: the hours no hourly rollup answers yet ----------------------------------------------------

CHUNK_HOURS = 2  # chunks of the open hour and the one before it get one; older hours have their own rollup
_SQL_CHUNK_PUT = ("INSERT OR REPLACE INTO metric_chunk_rollups (chunk_id, block_start, n, payload) "
                  "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM metric_chunks WHERE id = ?)")


def chunk_due(conn: sqlite3.Connection, now_ns: int, after_id: int, min_points: int) -> int | None:
    """The id (> `after_id`) of the oldest chunk that should have a chunk rollup and has none: a counter or
    distribution metric's chunk of at least `min_points` points in the last CHUNK_HOURS hours. The
    builder's `min_points` is the size the compactor merges no further (compactor.TARGET_POINTS): smaller
    chunks are read raw, for a rollup of each would be built again at every merge level, taking ingest's
    CPU for what a query reads in a few ms. Chunk ids only grow and a chunk never changes: a chunk passed
    over once never becomes due."""
    row = conn.execute(
        "SELECT c.id FROM metric_chunks AS c WHERE c.id > ? "
        f"AND c.type IN ({','.join('?' * len(ROLLED_TYPES))}) AND c.n >= ? AND c.block_start >= ? "
        "AND NOT EXISTS (SELECT 1 FROM metric_chunk_rollups AS r WHERE r.chunk_id = c.id) ORDER BY c.id LIMIT 1",
        (after_id, *ROLLED_TYPES, min_points, block_of(now_ns) - (CHUNK_HOURS - 1) * BLOCK_NS)).fetchone()
    return row[0] if row else None


def build_chunk(conn: sqlite3.Connection, chunk_id: int) -> tuple | None:
    """The metric_chunk_rollups row of a chunk: what `kept` picks from its readings, in query order (the
    same rule as an hour's rollup, without plain firsts: a chunk's neighbours are not known). None once the
    chunk is gone."""
    with ReadTransaction(conn):
        row = conn.execute("SELECT project_id, name, type, block_start, payload FROM metric_chunks WHERE id = ?",
                           (chunk_id,)).fetchone()
        if row is None:
            return None
        delta_ids = np.array([r[0] for r in conn.execute(
            "SELECT id FROM metric_series WHERE project_id = ? AND name = ? AND type = ? AND temporality = 1",
            row[:3])], np.int64)
    block = decode(row[4], exact=False)
    order = read_order(block.points)  # readings only, as a query reads them
    block = block.take(order[kept(block.points, order, delta_ids)])
    return (chunk_id, row[3], len(block), encode(block))


def store_chunk(conn: sqlite3.Connection, row: tuple, now_ns: int) -> None:
    """Write a chunk rollup (`build_chunk`'s row) unless its chunk was merged away meanwhile, and delete
    those of hours that have their own rollup by now (the reader no longer asks for them); on the writer's
    connection. The rows of merged chunks go with them (compactor.merge_chunks)."""
    conn.execute(_SQL_CHUNK_PUT, (*row, row[0]))
    conn.execute("DELETE FROM metric_chunk_rollups WHERE block_start < ?",
                 (block_of(now_ns) - (CHUNK_HOURS + 1) * BLOCK_NS,))


def build_due_chunks(conn: sqlite3.Connection, now_ns: int, min_points: int) -> int:
    """Build and store every due chunk rollup on one writing connection (tests, benchmarks; RollupBuilder
    does it live). Returns how many."""
    n, after = 0, 0
    while (cid := chunk_due(conn, now_ns, after, min_points)) is not None:
        after = cid
        row = build_chunk(conn, cid)
        if row is not None:
            conn.execute("BEGIN IMMEDIATE")
            store_chunk(conn, row, now_ns)
            conn.execute("COMMIT")
            n += 1
    return n


class RollupBuilder:
    """Builds due rollups on a thread of its own with its own read connection, and hands each result to
    the writer (`submit_write`): the decoding and packing of an hour (up to a second for a busy metric)
    never holds up ingest commits. At most a third of its time busy while an upgraded store catches up
    (PAUSE), a look every IDLE_S otherwise, none while the writer's queue is more than half full. The
    first look is IDLE_S after the start too: a restarted sidecar is most likely to be flooded then (the
    SDKs retrying what they could not send), and the hours can wait (`wake` looks at once)."""

    PAUSE = 2.0  # seconds of pause per second of building
    IDLE_S = 30.0
    BUSY_S = 5.0  # the wait while ingest is busy (`busy()`): derived data never competes with acknowledgements

    def __init__(self, path: str, submit_write: Callable, closed_after_ns: int, small_points: int,
                 first_look_s: float | None = None, busy: Callable[[], bool] = lambda: False) -> None:
        self.path = path
        self._submit_write = submit_write
        self._busy = busy
        self._closed_after_ns = closed_after_ns
        self._small_points = small_points
        self._first_look_s = first_look_s
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop and wake: the wait ends
        self._thread: threading.Thread | None = None
        self.built = 0  # rollups stored (tests, telemetry)
        self.chunks_built = 0  # chunk rollups stored
        self._chunk_mark = 0  # chunks up to this id have been looked at (`chunk_due`)
        self._unbuildable: set[tuple] = set()  # `due` rows whose build raised, skipped until their stamp moves

    def wake(self) -> None:
        """Look for due hours now instead of at the end of the current wait."""
        self._wake.set()

    def _wait(self, seconds: float) -> bool:
        """Wait `seconds` or until woken; False once stopped."""
        self._wake.wait(seconds)
        self._wake.clear()
        return not self._stop.is_set()

    def start(self) -> None:
        self._thread = NamedThread(target=self._run, name="otelite-rollups", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _build_a_chunk(self, conn: sqlite3.Connection) -> bool:
        """Build and store the next due chunk rollup, if there is one (whether one was due)."""
        now = time.time_ns()
        with ReadTransaction(conn):  # (one snapshot: a chunk committed in between is looked at next time)
            cid = chunk_due(conn, now, self._chunk_mark, self._small_points)
            if cid is None:  # none after the mark now, and none of those will ever be due
                self._chunk_mark = conn.execute("SELECT max(id) FROM metric_chunks").fetchone()[0] or 0
                return False
        try:
            row = build_chunk(conn, cid)
        except sqlite3.Error:
            raise  # (busy, locked: the next look retries it)
        except Exception:  # noqa: BLE001 - a bug on one chunk must not hold up the others
            log.exception("the rollup of metric chunk %d cannot be built; queries read it raw", cid)
            row = None
        if row is not None and not self._stop.is_set():
            self._submit_write(lambda wconn: store_chunk(wconn, row, now)).result()  # (raises: looked at again)
            self.chunks_built += 1
        self._chunk_mark = cid
        return True

    def _run(self) -> None:
        conn = connect_reader(self.path)
        wait = self.IDLE_S if self._first_look_s is None else self._first_look_s
        try:
            while self._wait(wait):
                if self._busy():
                    wait = self.BUSY_S
                    continue
                began = time.monotonic()
                try:
                    hour = due(conn, time.time_ns(), self._closed_after_ns, self._small_points, self._unbuildable)
                    if hour is None:  # every closed hour has its rollup: the open hours' large chunks next
                        wait = self.PAUSE * (time.monotonic() - began) if self._build_a_chunk(conn) else self.IDLE_S
                        continue
                    try:
                        row = build(conn, hour)
                    except sqlite3.Error:
                        raise  # (busy, locked: the next look retries)
                    except Exception:  # noqa: BLE001 - a bug on this hour's data must not hold up the others
                        log.exception("the rollup of %r hour %d cannot be built; it is left out (queries read "
                                      "that hour in full) until its chunks change", hour[1], hour[3])
                        if len(self._unbuildable) >= 10_000:
                            self._unbuildable.clear()
                        self._unbuildable.add(hour)  # (with its chunks' stamp)
                        wait = self.PAUSE * (time.monotonic() - began)
                        continue
                    if self._stop.is_set():
                        break
                    self._submit_write(lambda wconn: store(wconn, row)).result()
                    self.built += 1
                    wait = self.PAUSE * (time.monotonic() - began)
                except Exception as e:  # a locked file, a writer that is closing: the next look retries
                    log.warning("building a metric rollup failed, will retry: %s", e)
                    wait = self.IDLE_S
        finally:
            conn.close()


def build_due(conn: sqlite3.Connection, now_ns: int, closed_after_ns: int, small_points: int) -> int:
    """Build and store every due rollup on one writing connection (tests; RollupBuilder does it live).
    Returns how many."""
    n = 0
    while (hour := due(conn, now_ns, closed_after_ns, small_points)) is not None:
        row = build(conn, hour)
        conn.execute("BEGIN IMMEDIATE")
        store(conn, row)
        conn.execute("COMMIT")
        n += 1
    return n


def expire(conn: sqlite3.Connection, cutoff_ns: int) -> None:
    """Retention: the rollups of hours that have expired entirely (a few rows a metric and hour)."""
    conn.execute("DELETE FROM metric_rollups WHERE block_start <= ?", (cutoff_ns - BLOCK_NS,))


# --- reading (the query engine) ----------------------------------------------------------------------------

def applies(fn: str, series: "SeriesSet") -> bool:
    """Whether a query of `fn` over `series` may read rollups: an increase-based function of a counter or
    distribution metric none of whose selected series is delta now (a series that turned delta since a
    rollup was built has only some of its readings there)."""
    return (series.type in ROLLED_TYPES and fn in INCREASE_FUNCTIONS.get(kind_of(series.type), ())
            and not (series.temporality == 1).any())


def _whole_cells(lo: int, hi: int, edges: np.ndarray, *, read_to_hi: bool = False) -> tuple[int, np.ndarray]:
    """(the first cell, from the hour of `lo`) and for each cell up to `hi`, whether a query of [lo, hi) on
    the buckets `edges` may collapse it: it lies wholly before `lo` or at or after `hi` (its readings are
    not read at all), or inside [lo, hi) and inside one bucket ([lo, edges[0]) counting as one: the
    look-back). `read_to_hi`: the readings are those read, none from `hi` on, so the cell that holds `hi`
    is taken as it is read, up to `hi` (`collapsed`); a rollup's cell holds its readings after `hi` too."""
    first = block_of(lo)
    cells = np.arange(first, hi, CELL_NS, dtype=np.int64)
    ends = np.minimum(cells + CELL_NS, hi) if read_to_hi else cells + CELL_NS
    bounds = np.concatenate(([lo], edges))
    same = np.searchsorted(bounds, cells, "right") == np.searchsorted(bounds, ends - 1, "right")
    return first, ((cells >= lo) & (ends <= hi) & same) | (ends <= lo) | (cells >= hi)


def _whole_hours(lo: int, hi: int, edges: np.ndarray) -> np.ndarray:
    """The hours in [lo, hi) whose every cell a query may collapse (`_whole_cells`), and the hour that holds
    `hi` when every cell of it before the one holding `hi` may be collapsed and there is one: its rollup
    answers up to that cell, whose readings before `hi` are read in full (`parts`). (Exact as a mix of
    hours is: the rollup keeps the last reading of every cell, and both readings of every pair that is not
    plain, module docstring.)"""
    first, whole = _whole_cells(lo, hi, edges)
    per_hour = BLOCK_NS // CELL_NS
    if hi % CELL_NS and (hi - first) % BLOCK_NS >= CELL_NS:
        whole = whole.copy()
        whole[-1] = True  # the cell holding hi (the last one): read in full from its start
    whole = np.concatenate((whole, np.ones(-whole.size % per_hour, bool))).reshape(-1, per_hour)
    return first + BLOCK_NS * np.flatnonzero(whole.all(axis=1))


def collapsed(p: Points, lo: int, hi: int, edges: np.ndarray) -> Points:
    """The readings of [lo, hi) in `p` (sorted, complete: every reading of its series in that range) that
    the query needs: those of its whole cells a rollup would keep, and every reading of the others. The
    hours no rollup answers (the open one, above all) are collapsed so at query time.

    The quarter hour that holds `hi` counts as whole here when [its start, hi) lies inside one bucket
    (`read_to_hi`): `p` holds none of its readings from `hi` on, so its first and last reading before `hi`
    are what the query needs of it, as of any whole cell (module docstring). A rollup cannot answer it
    (its last reading may lie after `hi`: `_whole_hours`), but a query that ends inside a busy quarter
    hour (a window ending now) reads it raw and keeps only these."""
    if len(p) < 3:
        return p
    first, whole_cells = _whole_cells(lo, hi, edges, read_to_hi=True)
    index = (p.time - first) // CELL_NS
    whole = whole_cells[np.clip(index, 0, whole_cells.size - 1)] & (index >= 0) & (index < whole_cells.size)
    keep = kept(p, None, np.zeros(0, np.int64), whole)
    return p if keep.all() else p.take(keep)


def _range_points(conn: sqlite3.Connection, series: "SeriesSet", lo: int, hi: int, cutoff: int) -> Points:
    """Every reading of the metric with max(lo, cutoff) <= time < hi, sorted, read from chunks and head
    without the cache (a leading stretch of hours a rollup does not cover)."""
    lo = max(lo, cutoff)
    kind = kind_of(series.type)
    with passing_through(conn):
        parts = _chunk_parts(conn, series, lo, until=hi)
    parts.append(_load(conn, series.project_id, series, "time_ns >= ? AND time_ns < ?", (lo, hi)).sorted())
    return _sorted_parts(parts, kind, consume=True)


def parts(conn: sqlite3.Connection, cache: PointCache, series: "SeriesSet", lo: int, hi: int,
          edges: np.ndarray) -> tuple[Points, Points, tuple | None]:
    """The readings of `cache.points(conn, series, lo, hi)` that the query needs (module docstring), as two
    sorted parts, every reading of the second later than those of its series in the first: the earlier
    hours (those a rollup answers hold only its readings; the others are collapsed as read, `collapsed`)
    and the newest hours, which no rollup answers yet (read through the cache, which keeps them current;
    collapsed too). Two parts, because the first is the same for every query of the day (kept in the
    cache) and the engine works them out one after the other rather than copying both into one (engine.py).
    Third: the first part's cache key when the first part is the cached one (it never changes under that
    key, so what the engine derives from it can be kept under it too), else None.
    Call inside the query's read transaction."""
    kind = kind_of(series.type)
    cutoff = retention_cutoff(conn)
    rolled = _rolled_hours(conn, series, lo, hi, edges, cutoff)
    if not rolled:
        return empty(kind), _newest(conn, cache, series, lo, lo, hi, edges, cutoff, margin=True), None
    # What the rolled part answers ends with the last rolled hour, or before the quarter hour that holds
    # the query's end when that hour is rolled (`_rolled_hours`).
    until = min(hi - hi % CELL_NS, rolled[-1][0] + BLOCK_NS)
    # The rolled hours' readings together, kept in the cache: a rollup never changes under its stamp.
    key = (series.project_id, series.name, series.type, lo, until if until < rolled[-1][0] + BLOCK_NS else None,
           tuple(rolled))
    earlier = [cache.derived(key, lambda: _read_rolled(conn, series, [b for b, _ in rolled], lo, until))]
    at, rolled_hours = lo, {b for b, _ in rolled}
    for b in range(block_of(lo), hi, BLOCK_NS):  # the stretches no rollup answers, collapsed as read
        if b in rolled_hours:
            if b > at:
                stretch = _range_points(conn, series, at, b, cutoff)
                if len(stretch):  # (an hour without data, e.g. while the app was down, is no stretch)
                    earlier.append(collapsed(stretch, lo, hi, edges))
            at = min(b + BLOCK_NS, until)
    first = earlier[0] if len(earlier) == 1 else _sorted_parts(earlier, kind)
    newest = _newest(conn, cache, series, lo, at, hi, edges, cutoff) if at < hi else empty(kind)
    return first, newest, (key if len(earlier) == 1 else None)


def _newest(conn: sqlite3.Connection, cache: PointCache, series: "SeriesSet", lo: int, at: int, hi: int,
            edges: np.ndarray, cutoff: int, *, margin: bool = False) -> Points:
    """The readings of [at, hi) (hours no hourly rollup answers) that a query of [lo, hi) on `edges` needs,
    collapsed (`collapsed`). A chunk of those hours that has a chunk rollup (`build_chunk`), lies inside
    [at, hi) and has only whole cells in the query's buckets is read from it; the others and the head raw.
    That is exact as an hourly rollup is, provided no other reading of a series lies between the first and
    last reading of that series in a chunk read from its rollup (the readings it leaves out had its own
    readings on both sides): checked on the readings read, and where a series' readings of two chunks
    interleave (points that came out of order), everything is read through the cache instead, as without
    chunk rollups (`margin`: as `PointCache.points`). Each chunk's part is kept in the cache under its id
    (a chunk never changes under it)."""
    since = max(at, cutoff)
    chunks = conn.execute(
        "SELECT c.id, c.t_min, c.t_max, r.chunk_id IS NOT NULL FROM metric_chunks AS c "
        "LEFT JOIN metric_chunk_rollups AS r ON r.chunk_id = c.id WHERE c.project_id = ? AND c.name = ? "
        "AND c.type = ? AND c.block_start >= ? AND c.block_start < ? AND c.t_max >= ? "
        "ORDER BY c.block_start, c.seq, c.id",
        (series.project_id, series.name, series.type, block_of(since), hi, since)).fetchall()
    first, whole = _whole_cells(lo, hi, edges, read_to_hi=True)
    rolled = [bool(has) and since <= t_min and t_max < hi
              and bool(whole[(t_min - first) // CELL_NS:(t_max - first) // CELL_NS + 1].all())
              for _, t_min, t_max, has in chunks]
    if not any(rolled):
        return collapsed(cache.points(conn, series, at, hi, margin=margin), lo, hi, edges)
    kind = kind_of(series.type)
    metric, current = (series.project_id, series.name, series.type), {c[0] for c in chunks}
    # The parts of this stretch's chunks that were merged away since, before the byte budget drops them.
    cache.forget_derived(lambda k: k[0] in ("chunk rollup", "chunk readings") and k[1] == metric
                         and block_of(since) <= k[2] < hi and k[3] not in current)
    parts = []
    for (cid, t_min, _, _), use in zip(chunks, rolled):
        key = (metric, block_of(t_min), cid)
        if use:
            parts.append(cache.derived(("chunk rollup", *key), lambda cid=cid: _chunk_payload_points(
                conn, "SELECT payload FROM metric_chunk_rollups WHERE chunk_id = ?", cid)))
        else:
            p = cache.derived(("chunk readings", *key), lambda cid=cid: _chunk_payload_points(
                conn, "SELECT payload FROM metric_chunks WHERE id = ?", cid))
            inside = (p.time >= since) & (p.time < hi)
            parts.append(p if inside.all() else p.take(inside))
    rolled.append(False)
    parts.append(_load(conn, series.project_id, series, "time_ns >= ? AND time_ns < ?", (since, hi)).sorted())
    joined = joined_if_exact(parts, rolled, kind)
    if joined is None:  # a chunk rollup's series has another part's reading among its readings
        return collapsed(cache.points(conn, series, at, hi, margin=margin), lo, hi, edges)
    return collapsed(joined, lo, hi, edges)


def joined_if_exact(parts: list[Points], rolled: list[bool], kind: str) -> Points | None:
    """The readings of `parts` (in the order the raw parts are read; `rolled`: which are chunk rollups, in
    query order) sorted by series and time, equal ones in part order, as `points._sorted_parts` sorts the
    raw parts; None when a reading of another part lies among the readings of one series in a chunk
    rollup (`_newest`): in that order, each (series, rolled part) must be one run."""
    nonempty = [(p, use) for p, use in zip(parts, rolled) if len(p)]
    if not nonempty:
        return empty(kind)
    sid = np.concatenate([p.series_id for p, _ in nonempty])
    order = series_time_order(sid, np.concatenate([p.time for p, _ in nonempty]))
    sid = sid[order]
    part = np.repeat(np.arange(len(nonempty)), [len(p) for p, _ in nonempty])[order]
    run_starts = np.ones(len(sid), bool)
    run_starts[1:] = (sid[1:] != sid[:-1]) | (part[1:] != part[:-1])
    runs = int(np.count_nonzero(run_starts & np.array([use for _, use in nonempty])[part]))
    series_runs = sum(1 + int(np.count_nonzero(p.series_id[1:] != p.series_id[:-1])) for p, use in nonempty if use)
    if runs != series_runs:
        return None
    return concat_all([p for p, _ in nonempty], kind, rows=order)


def _chunk_payload_points(conn: sqlite3.Connection, sql: str, chunk_id: int) -> Points:
    """The readings of one payload (a chunk's, in its order, or a chunk rollup's, in query order)."""
    with passing_through(conn):
        (payload,) = conn.execute(sql, (chunk_id,)).fetchone()
    p = decode(payload, exact=False).points
    return p if p.valid.all() else p.take(p.valid)


def _read_rolled(conn: sqlite3.Connection, series: "SeriesSet", hours: list[int], lo: int, hi: int) -> Points:
    """The readings of the rollups of `hours` in [lo, hi), sorted by series and time; of an hour that starts
    at or after `lo`, without its plain firsts (PLAIN_FIRST): their series' reading before them, in an
    earlier cell of the same hour, is read too, and the pairs on either side of them are plain, so the
    engine's increases telescope past them (module docstring). For a series read more often than twice a
    quarter hour that is 3 of the 8 readings its rollup keeps of an hour, and the day's concatenation, its
    sort and the engine's passes work on that many fewer (470,400 readings → 300,000 for the scale
    benchmark's 24 h histogram_quantile: docs/benchmarks.md, 2026-12-02 21:18). An hour that holds `lo`
    keeps them: the reading before one may lie before `lo`, unread."""
    marks = ",".join("?" * len(hours))
    parts = []
    with passing_through(conn):
        for block_start, payload in conn.execute(
                f"SELECT block_start, payload FROM metric_rollups WHERE project_id = ? AND name = ? AND type = ? "
                f"AND block_start IN ({marks}) ORDER BY block_start",
                (series.project_id, series.name, series.type, *hours)):
            block = decode(payload, exact=False)
            p = block.points
            inside = (p.time >= lo) & (p.time < hi)
            if block_start >= lo:
                inside &= (block.flags & PLAIN_FIRST) == 0
            parts.append(p if inside.all() else p.take(inside))
    return _sorted_parts(parts, kind_of(series.type), consume=True)


def _rolled_hours(conn: sqlite3.Connection, series: "SeriesSet", lo: int, hi: int, edges: np.ndarray,
                  cutoff: int) -> list[int]:
    """The hours of [lo, hi) a rollup answers (module docstring), in order, each with the stamp of the
    chunks its rollup was built from."""
    candidates = _whole_hours(lo, hi, edges)
    candidates = candidates[candidates >= cutoff]
    if not candidates.size:
        return []
    key = (series.project_id, series.name, series.type)
    first, last = int(candidates[0]), int(candidates[-1])
    chunks = {b: (k, m) for b, k, m in conn.execute(
        "SELECT block_start, count(*), max(id) FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? "
        "AND block_start >= ? AND block_start <= ? GROUP BY block_start", (*key, first, last))}
    built = {b: (k, m) for b, k, m in conn.execute(
        "SELECT block_start, chunks, max_chunk_id FROM metric_rollups WHERE project_id = ? AND name = ? "
        "AND type = ? AND block_start >= ? AND block_start <= ?", (*key, first, last))}
    in_head = {b for (b,) in conn.execute(  # a late point not yet in a chunk: that hour is read in full
        f"SELECT DISTINCT time_ns - time_ns % {BLOCK_NS} FROM metric_points WHERE time_ns >= ? AND time_ns < ? "
        f"AND series_id IN ({_SERIES})", (first, last + BLOCK_NS, *key))}
    return [(b, built[b]) for b in candidates.tolist()
            if b in built and built[b] == chunks.get(b) and b not in in_head]
