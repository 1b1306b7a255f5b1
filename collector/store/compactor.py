"""The compactor: moves metric points from the head into chunks, merges chunks, expires old points.

It runs on the writer's thread, between ingest commits, one small transaction per step (store.md: nothing
may stall ingest), like Prometheus' head compaction. Most points skip the head: the writer packs a
commit's points of a metric into a level-0 chunk at once (appender.py), and only merges are left to do.

1. **Head pass.** Points whose commit is older than `head_max_age`, or the oldest ones while the head holds
   more than `head_max_points`, are read in rowid order (at most PASS_ROWS per step), grouped by metric and
   hour, packed (chunks.py) into one level-0 chunk per group, and deleted from the head, in one
   transaction: a reader's snapshot sees every point exactly once, before or after, and a kill -9 leaves
   either state.
2. **Merges.** FANIN chunks of one level, metric and hour become one chunk of the next level (each point
   is rewritten a few times, not once per pass); once an hour is over (CLOSE_AFTER past its end, so late
   points have arrived), its small chunks are merged into as few as possible. No chunk grows past
   MAX_POINTS, which bounds a step's work.
3. **Retention** (`expire_metrics`, called by the writer's retention pass): the cutoff is recorded in
   `retention_cutoffs` first, so readers hide expired points at once and exactly, then whole expired
   chunks and head rows are deleted a few at a time. A chunk the cutoff cuts through stays until all of
   it has expired (at most an hour later); its expired points are never shown or counted. Expired hours'
   rollups (rollups.py, built on a thread of their own once an hour is closed and merged) go too.
4. **Migration.** A database written before chunks existed has every point in the head, still indexed by
   the old `metric_points_by_series_time` / `metric_points_by_time`: head passes drain it step by step
   while the server runs (reads use the old indexes meanwhile), and the pass that finds the backlog gone
   drops the indexes. Each step commits on its own, so a restart resumes where it stopped.

Ties: points of one series with one timestamp keep the order they arrived in: every chunk keeps each
point's head rowid (chunks.py), and sorts by it after series and time (a chunk's `seq` is the smallest
head rowid it holds).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from typing import Callable

from otelite.collector.store import rollups
from otelite.collector.store.chunks import BLOCK_NS, block_from_rows, encode, merge

log = logging.getLogger("otelite.store")

PASS_ROWS = 20_000  # head rows per head pass by default (one transaction: tens of milliseconds)
FANIN = 8  # chunks of one level merged into one of the next
TARGET_POINTS = 32_000  # chunks smaller than this are merged further
MAX_POINTS = 2 * TARGET_POINTS  # no merge writes a larger chunk (two small ones always fit)
FINAL_LEVEL = 9  # the level of a closed hour's merged chunks
CLOSE_AFTER_NS = 10 * 60 * 10**9  # an hour is closed this long after its end (late points have arrived)
EXPIRE_CHUNKS = 16  # chunk rows deleted per retention transaction
LEGACY_INDEXES = ("metric_points_by_series_time", "metric_points_by_time")

_SQL_HEAD_ROWS = (
    "SELECT p.id, p.project_id, p.series_id, p.start_ns, p.time_ns, p.value, p.count, p.sum, p.min, p.max, "
    "p.flags, p.buckets, p.exemplars, s.project_id, s.name, s.type FROM metric_points AS p "
    "LEFT JOIN metric_series AS s ON s.id = p.series_id WHERE p.id <= ? ORDER BY p.id LIMIT ?")
SQL_INSERT_CHUNK = (
    "INSERT INTO metric_chunks (project_id, name, type, block_start, level, seq, n, t_min, t_max, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
SQL_MOVED_TO = ("INSERT INTO metric_head_marks (name, value) VALUES ('moved_to', ?1) "
                 "ON CONFLICT (name) DO UPDATE SET value = max(value, ?1)")
_SQL_TIER_CANDIDATE = (
    "SELECT project_id, name, type, block_start, level FROM metric_chunks WHERE n < ? AND level < ? "
    "GROUP BY project_id, name, type, block_start, level HAVING count(*) >= ? LIMIT 1")
_SQL_CLOSED_CANDIDATE = (
    "SELECT project_id, name, type, block_start FROM metric_chunks WHERE n < ? AND block_start < ? "
    "GROUP BY project_id, name, type, block_start HAVING count(*) >= 2 LIMIT 1")


def legacy_indexes(conn: sqlite3.Connection) -> list[str]:
    """The head's indexes of the layout before chunks that still exist (a migration in progress)."""
    return [r[0] for r in conn.execute(
        f"SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ({','.join('?' * len(LEGACY_INDEXES))})",
        LEGACY_INDEXES)]


def last_head_id(conn: sqlite3.Connection) -> int:
    """The largest head rowid ever used: the head's, or the largest the compactor moved out of it."""
    row = conn.execute("SELECT value FROM metric_head_marks WHERE name = 'moved_to'").fetchone()
    return max(head_edges(conn)[1], row[0] if row else 0)


def head_edges(conn: sqlite3.Connection) -> tuple[int, int]:
    """(smallest, largest) head rowid; (0, 0) when the head is empty. Two b-tree edge look-ups."""
    lo = conn.execute("SELECT min(id) FROM metric_points").fetchone()[0]
    hi = conn.execute("SELECT max(id) FROM metric_points").fetchone()[0]
    return (lo or 0, hi or 0)


class Compactor:
    """Owned by the writer: `note_commit` after each commit that added points, `step` when `due`."""

    def __init__(self, head_max_age: float, head_max_points: int, pass_rows: int = PASS_ROWS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.head_max_age = head_max_age
        self.head_max_points = max(int(head_max_points), 1)
        self.pass_rows = max(int(pass_rows), 1)
        self._clock = clock
        self._commits: deque[tuple[float, int]] = deque()  # (commit time, largest head rowid then)
        self._old_hi = 0  # head rows up to this rowid are old enough to compact
        self._head = (0, 0)  # the head's (min, max) rowid as last seen
        self._merges_pending = True  # look for merges at the next idle step
        self._next_merge_look = 0.0
        self._legacy = False
        self.steps = 0  # work done, for tests and telemetry
        self.moved_to = 0  # every head row with id <= this has been moved (committed head passes)
        self._moving = 0
        self.compacted_points = 0

    def start(self, conn: sqlite3.Connection) -> None:
        """Everything in the head when the writer starts is old (its commit time is unknown)."""
        self._head = head_edges(conn)
        self._old_hi = self._head[1]
        self._legacy = bool(legacy_indexes(conn))

    def note_commit(self, conn: sqlite3.Connection, head_hi: int) -> None:
        """After a commit that stored points: `head_hi`, the largest head rowid it inserted (0 when its
        points all went straight into chunks, appender.py, which only need merging)."""
        self._merges_pending = True
        if not head_hi:
            return
        self._commits.append((self._clock(), head_hi))
        lo = self._head[0] or conn.execute("SELECT min(id) FROM metric_points").fetchone()[0] or head_hi
        self._head = (lo, head_hi)

    def _eligible_hi(self) -> int:
        """The largest head rowid a pass may take now."""
        limit = self._clock() - self.head_max_age
        while self._commits and self._commits[0][0] <= limit:
            self._old_hi = max(self._old_hi, self._commits.popleft()[1])
        lo, hi = self._head
        over = (hi - lo + 1) - self.head_max_points if hi else 0
        if over > 0:  # the head outgrew its bound: the oldest rows go, keeping it at half the bound
            return max(self._old_hi, lo + over + self.head_max_points // 2 - 1)
        return self._old_hi

    def head_due(self) -> bool:
        lo, hi = self._head
        return bool(hi) and self._eligible_hi() >= lo

    def due(self) -> bool:
        return self.head_due() or self._merges_pending or self._clock() >= self._next_merge_look

    def next_due_in(self) -> float:
        """Seconds until a step may be due with nothing else happening (the writer's idle wait)."""
        waits = [max(0.0, self._next_merge_look - self._clock())]
        if self._commits:
            waits.append(max(0.0, self._commits[0][0] + self.head_max_age - self._clock()))
        return min(waits)

    def step(self, conn: sqlite3.Connection, now_ns: int | None = None) -> bool:
        """One unit of work in its own transaction; False when there was nothing to do."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            conn.execute("BEGIN IMMEDIATE")
            if self.head_due():
                did = self._head_pass(conn, self._eligible_hi())
            else:
                did = self._merge(conn, now_ns)
                if not did:
                    self._merges_pending = False
                    self._next_merge_look = self._clock() + 30.0
            conn.execute("COMMIT")
            self.moved_to = max(self.moved_to, self._moving)
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("compaction step failed, will retry: %s", e)
            self._next_merge_look = self._clock() + 5.0
            self._merges_pending = False
            return False
        if did:
            self.steps += 1
        return did

    # -- head → level-0 chunks -------------------------------------------------------------------------------
    def _head_pass(self, conn: sqlite3.Connection, hi: int) -> bool:
        from otelite.collector.store.points import retention_cutoff
        rows = conn.execute(_SQL_HEAD_ROWS, (hi, self.pass_rows)).fetchall()
        if not rows:
            self._head = head_edges(conn)
            return False
        cutoff = retention_cutoff(conn)
        groups: dict[tuple, list] = {}
        for r in rows:
            t = r[4]
            if t < cutoff:
                continue  # expired already: readers hide it, so it is not worth moving
            # A point whose series row is missing (never written by the writer) keeps its project.
            key = (r[13] if r[13] is not None else r[1], r[14] or "", r[15] or "", t - t % BLOCK_NS)
            group = groups.get(key)
            if group is None:
                groups[key] = group = []
            group.append(r)
        for (project_id, name, metric_type, block_start), group in groups.items():
            block = block_from_rows(metric_type or "gauge", [r[1:13] for r in group], [r[0] for r in group]).sorted()
            times = block.points.time
            conn.execute(SQL_INSERT_CHUNK, (project_id, name, metric_type, block_start, 0, group[0][0], len(block),
                                             int(times.min()), int(times.max()), encode(block)))
        last = rows[-1][0]
        self._moving = last
        conn.execute("DELETE FROM metric_points WHERE id <= ?", (last,))
        conn.execute(SQL_MOVED_TO, (last,))
        self.compacted_points += len(rows)
        self._merges_pending = True
        self._head = head_edges(conn)
        if self._legacy and (len(rows) < self.pass_rows or not self._head[1]):
            # The backlog of a migrated database is gone: the head no longer needs the old indexes, and
            # every later insert is cheaper without them.
            for name in legacy_indexes(conn):
                conn.execute(f"DROP INDEX {name}")
            self._legacy = False
            log.info("metric points migrated to chunks; the head's old indexes are dropped")
        return True

    # -- merges --------------------------------------------------------------------------------------------
    def _merge(self, conn: sqlite3.Connection, now_ns: int) -> bool:
        cand = conn.execute(_SQL_TIER_CANDIDATE, (TARGET_POINTS, FINAL_LEVEL, FANIN)).fetchone()
        if cand is not None:
            project_id, name, metric_type, block_start, level = cand
            rows = conn.execute(
                "SELECT id, seq, n FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? "
                "AND block_start = ? AND level = ? AND n < ? ORDER BY seq, id",
                (project_id, name, metric_type, block_start, level, TARGET_POINTS)).fetchall()
            out_level = level + 1
        else:
            closed_before = now_ns - CLOSE_AFTER_NS - BLOCK_NS + 1  # the hour ended CLOSE_AFTER ago
            cand = conn.execute(_SQL_CLOSED_CANDIDATE, (TARGET_POINTS, closed_before)).fetchone()
            if cand is None:
                return False
            project_id, name, metric_type, block_start = cand
            rows = conn.execute(
                "SELECT id, seq, n FROM metric_chunks WHERE project_id = ? AND name = ? AND type = ? "
                "AND block_start = ? AND n < ? ORDER BY seq, id",
                (project_id, name, metric_type, block_start, TARGET_POINTS)).fetchall()
            out_level = FINAL_LEVEL
        taken, total = [], 0
        for cid, _seq, n in rows:
            if len(taken) >= 2 and total + n > MAX_POINTS:
                break
            taken.append(cid)
            total += n
        if len(taken) < 2:
            return False
        self.merge_chunks(conn, taken, out_level)
        self._merges_pending = True
        return True

    @staticmethod
    def merge_chunks(conn: sqlite3.Connection, ids: list[int], level: int) -> int:
        """Replace the chunks `ids` (one metric and hour) by one chunk of `level`; returns its id."""
        from otelite.collector.store.points import retention_cutoff
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT project_id, name, type, block_start, seq, payload FROM metric_chunks "
                            f"WHERE id IN ({marks}) ORDER BY seq, id", ids).fetchall()
        block = merge(r[5] for r in rows)
        cutoff = retention_cutoff(conn)
        times = block.points.time
        if len(times) and times.min() < cutoff:
            block = block.take(times >= cutoff)
            times = block.points.time
        conn.execute(f"DELETE FROM metric_chunks WHERE id IN ({marks})", ids)
        conn.execute(f"DELETE FROM metric_chunk_rollups WHERE chunk_id IN ({marks})", ids)  # (rollups.py)
        if not len(block):
            return 0
        project_id, name, metric_type, block_start, seq, _ = rows[0]
        cur = conn.execute(SQL_INSERT_CHUNK, (project_id, name, metric_type, block_start, level, seq, len(block),
                                               int(times.min()), int(times.max()), encode(block)))
        return cur.lastrowid


def expire_metrics(conn: sqlite3.Connection, cutoff_ns: int, head_rows: int) -> bool:
    """One retention step for metric points older than `cutoff_ns`, inside the caller's transaction:
    records the cutoff (readers hide older points from now on), deletes up to EXPIRE_CHUNKS whole expired
    chunks and `head_rows` expired head rows. Returns True when more may remain."""
    conn.execute("INSERT INTO retention_cutoffs (signal, before_ns) VALUES ('metrics', ?) ON CONFLICT (signal) "
                 "DO UPDATE SET before_ns = max(before_ns, excluded.before_ns)", (cutoff_ns,))
    chunks = conn.execute(
        "DELETE FROM metric_chunks WHERE id IN (SELECT id FROM metric_chunks WHERE t_max < ? LIMIT ?)",
        (cutoff_ns, EXPIRE_CHUNKS)).rowcount
    rollups.expire(conn, cutoff_ns)
    head = conn.execute(
        "DELETE FROM metric_points WHERE id IN (SELECT id FROM metric_points WHERE time_ns < ? LIMIT ?)",
        (cutoff_ns, head_rows)).rowcount
    return chunks >= EXPIRE_CHUNKS or head >= head_rows
