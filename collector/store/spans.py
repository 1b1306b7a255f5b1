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
_SQL_RUN = "INSERT INTO span_trace_runs (trace_id, lo, hi) VALUES (?, ?, ?)"
BACKFILL_TASK = "span_trace_runs"
LEGACY_INDEX = "spans_by_trace"


def next_span_id(conn: sqlite3.Connection) -> int:
    a = conn.execute("SELECT max(id) FROM spans").fetchone()[0] or 0
    b = conn.execute("SELECT max(hi) FROM span_trace_runs").fetchone()[0] or 0
    return max(a, b) + 1


def insert_spans(conn: sqlite3.Connection, spans: list[tuple]) -> None:
    """Insert records.SPAN_COLUMNS rows grouped by (project, trace) in order of first appearance, and one
    run per group. Within the transaction of the caller."""
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


def expire_runs(conn: sqlite3.Connection, limit: int) -> bool:
    """Delete up to `limit` runs that end before the oldest remaining span; True when more may remain."""
    oldest = conn.execute("SELECT min(id) FROM spans").fetchone()[0]
    if oldest is None:
        oldest = next_span_id(conn)
    deleted = conn.execute(
        "DELETE FROM span_trace_runs WHERE (trace_id, lo) IN (SELECT trace_id, lo FROM span_trace_runs "
        "WHERE hi < ? ORDER BY hi LIMIT ?)", (oldest, limit)).rowcount
    return deleted >= limit


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
