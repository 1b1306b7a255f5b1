"""Spans on the write side: rowids chosen by the writer, and the trace index as runs (issue 16).

Finding a trace's spans by its id used to take an index on `spans.trace_id`: one entry per span, at a
random place of a b-tree that outgrows the page cache, so every span cost a random page write (and its
copy in the WAL) and ingest slowed down as the database filled (store.md measured it). Now the writer
stores the spans of a commit grouped by trace, under rowids it assigns itself, and writes one row per
trace and commit into `span_trace_runs`: (trace id, first rowid, last rowid). Spans of a trace that
arrive in one commit cost one index entry together (ten in the benchmark's load, several in an SDK's
batch); a trace's spans are found with one probe per commit that carried it and one rowid range read
each (tracing.py, `TRACE_IDS_SQL`).

Rowids only grow: the next one is past both the largest span rowid and the largest run end, read inside
the transaction, so they are right after a rollback and never reuse the rowid of a span retention deleted
(a stale run could otherwise point at someone else's spans; reads check the trace id anyway).

New runs go to a small table first, `span_trace_runs_head`, and `RunMerge` moves them into
`span_trace_runs` in key order, a slice of the key space a background step, once the head holds
`MERGE_AT` runs (an LSM tree's two levels, or Prometheus' head and blocks, for the trace index). On a
full store the runs table has millions of rows and outgrows the page cache: inserting a commit's runs
at their random places read and wrote one page a run (9 µs a span of the writer's time on the 25M-span
file against 1.6 on an empty store; docs/benchmarks.md, 2026-12-04 17:55). The head stays as small as
an empty store's runs table, and a merge writes each page of the big table once for all the head's
runs that fall in it. Readers look in both tables (tracing.py, `trace_span_ids`); a step moves its runs
in one transaction, so a reader sees every run exactly once.

A database written before runs existed keeps its `spans_by_trace` index while `RunBackfill` copies it,
in index order and a few tens of thousands of entries per step, into runs of one span; readers keep using
the index as long as it exists (tracing.py checks), and the step that finishes drops it.
"""

from __future__ import annotations

import logging
import sqlite3

from otelite.collector.store.backfill import Backfill, index_exists, schedule_over_spans
from otelite.collector.store.records import SPAN_COLUMNS

log = logging.getLogger("otelite.store")

_SQL_SPAN = (f"INSERT INTO spans (id, {', '.join(SPAN_COLUMNS)}) "
             f"VALUES ({', '.join('?' * (len(SPAN_COLUMNS) + 1))})")
RUNS = "span_trace_runs"
HEAD = "span_trace_runs_head"
_SQL_RUN = f"INSERT INTO {HEAD} (trace_id, lo, hi) VALUES (?, ?, ?)"
BACKFILL_TASK = "span_trace_runs"
LEGACY_INDEX = "spans_by_trace"
# Runs the head holds before a merge starts: about a million spans of the benchmark's load (ten spans a
# trace a commit), 4 MB of table, inside the writer's 16 MiB page cache. A larger head makes a merge
# write fewer pages a run, but its own inserts read pages from outside the cache.
MERGE_AT = 100_000


def next_span_id(conn: sqlite3.Connection) -> int:
    ends = [conn.execute("SELECT max(id) FROM spans").fetchone()[0] or 0]
    ends += [conn.execute(f"SELECT max(hi) FROM {table}").fetchone()[0] or 0 for table in (RUNS, HEAD)]
    return max(ends) + 1


def insert_spans(conn: sqlite3.Connection, spans: list[tuple]) -> int:
    """Insert records.SPAN_COLUMNS rows grouped by (project, trace) in order of first appearance, and one
    run per group into the head. Within the transaction of the caller. Returns the number of runs."""
    by_trace: dict[tuple, list] = {}
    for s in spans:
        key = (s[0], s[1])
        group = by_trace.get(key)
        if group is None:
            by_trace[key] = group = []
        group.append(s)
    i = next_span_id(conn)
    rows, runs = [], []
    for (_project, trace_id), group in by_trace.items():
        lo = i
        for s in group:
            rows.append((i,) + s)
            i += 1
        runs.append((trace_id, lo, i - 1))
    conn.executemany(_SQL_SPAN, rows)
    conn.executemany(_SQL_RUN, runs)
    return len(runs)


def expire_runs(conn: sqlite3.Connection, limit: int) -> bool:
    """Delete up to `limit` runs of each table that end before the oldest remaining span; True when more
    may remain."""
    oldest = conn.execute("SELECT min(id) FROM spans").fetchone()[0]
    if oldest is None:
        oldest = next_span_id(conn)
    more = False
    for table in (RUNS, HEAD):
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE (trace_id, lo) IN (SELECT trace_id, lo FROM {table} "
            "WHERE hi < ? ORDER BY hi LIMIT ?)", (oldest, limit)).rowcount
        more = more or deleted >= limit
    return more


class RunMerge:
    """Moves the head's runs into `span_trace_runs` (module docstring): once the head holds `merge_at`
    runs, a pass over it in key order, `step_rows` runs a step, each step its own transaction. Nothing
    of a pass is saved: after a restart the next pass starts from the lowest key, and the runs already
    moved are no longer in the head."""

    def __init__(self, step_rows: int, merge_at: int = MERGE_AT) -> None:
        self.step_rows = max(int(step_rows), 1)
        self.merge_at = max(int(merge_at), 1)
        self.head_runs = 0  # in the head, as counted at start and kept by `added` and the steps
        self._cursor: tuple[bytes, int] | None = None  # the last key a pass in progress moved
        self.steps = 0

    def start(self, conn: sqlite3.Connection) -> None:
        # A file of a schema before the head (a test writes metrics into one as an older release would)
        # has nothing to merge.
        self.head_runs = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0] if index_exists(
            conn, f"{HEAD}_by_hi") else 0

    def added(self, runs: int) -> None:
        """The writer committed `runs` more runs into the head."""
        self.head_runs += runs

    @property
    def in_pass(self) -> bool:
        return self._cursor is not None

    def due(self) -> bool:
        return self.in_pass or self.head_runs >= self.merge_at

    def step(self, conn: sqlite3.Connection) -> bool:
        """Move the next `step_rows` runs of the head (in key order) in one transaction; False when there
        was nothing to move. An error propagates with the transaction open: the writer rolls it back and
        pauses its background work, and the same slice is tried again."""
        lower = self._cursor if self._cursor is not None else (b"", -1)
        conn.execute("BEGIN IMMEDIATE")
        end = conn.execute(f"SELECT trace_id, lo FROM {HEAD} WHERE (trace_id, lo) > (?, ?) "
                           "ORDER BY trace_id, lo LIMIT 1 OFFSET ?", (*lower, self.step_rows - 1)).fetchone()
        upper, params = ("", lower) if end is None else (" AND (trace_id, lo) <= (?, ?)", (*lower, *end))
        # In key order, so each page of the big table is read and written once for all of this slice's
        # runs that fall in it.
        conn.execute(f"INSERT OR IGNORE INTO {RUNS} (trace_id, lo, hi) SELECT trace_id, lo, hi FROM {HEAD} "
                     f"WHERE (trace_id, lo) > (?, ?){upper} ORDER BY trace_id, lo", params)
        moved = conn.execute(f"DELETE FROM {HEAD} WHERE (trace_id, lo) > (?, ?){upper}", params).rowcount
        conn.execute("COMMIT")
        self.head_runs = max(self.head_runs - moved, 0)
        self._cursor = None if end is None else (bytes(end[0]), end[1])
        if end is None:  # the pass is over; what arrived behind it waits for the next one
            self.head_runs = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0]
        self.steps += 1
        return moved > 0


def legacy_trace_index(conn: sqlite3.Connection) -> bool:
    """Whether the old per-span trace index still exists (its backfill into runs is not finished)."""
    return index_exists(conn, LEGACY_INDEX)


class RunBackfill(Backfill):
    """Copies the legacy index into runs, in index order, step by step, and drops it when done."""
    name = BACKFILL_TASK

    def advance(self, conn: sqlite3.Connection, state: dict) -> bool:
        legacy_max = state["legacy_max"]
        cursor = (bytes.fromhex(state["trace_id"]), state["id"])
        rows = conn.execute(
            f"SELECT trace_id, id FROM spans INDEXED BY {LEGACY_INDEX} WHERE (trace_id, id) > (?, ?) "
            "ORDER BY trace_id, id LIMIT ?", (*cursor, self.step_rows)).fetchall()
        runs: list[list] = []
        for trace_id, span_id in rows:
            if span_id > legacy_max:
                continue  # written with its run by the current writer
            last = runs[-1] if runs else None
            if last is not None and last[0] == trace_id and last[2] == span_id - 1:
                last[2] = span_id
            else:
                runs.append([trace_id, span_id, span_id])
        conn.executemany("INSERT OR IGNORE INTO span_trace_runs (trace_id, lo, hi) VALUES (?, ?, ?)", runs)
        if len(rows) < self.step_rows:
            conn.execute(f"DROP INDEX IF EXISTS {LEGACY_INDEX}")
            log.info("trace index migrated to runs; %s dropped", LEGACY_INDEX)
            return True
        state["trace_id"], state["id"] = rows[-1][0].hex(), rows[-1][1]
        return False


def start_backfill(conn: sqlite3.Connection) -> None:
    """The migration's part: schedule the copy (or drop the index at once when there are no spans)."""
    schedule_over_spans(conn, BACKFILL_TASK, LEGACY_INDEX, {"trace_id": "", "id": 0})
