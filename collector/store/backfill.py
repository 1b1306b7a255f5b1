"""Work a migration leaves to the writer's background steps (issue 16): online and resumable.

A migration that must not hold up the start of a large store schedules a task instead: a row of
`background_migrations` (its name → its state as JSON, a cursor). Between commits the writer runs one
step at a time, each in its own transaction that also moves the cursor, so after a kill -9 the work goes
on from the last step committed. A subclass says what a step does (`advance`): spans.RunBackfill,
span_counts.CountBackfill.
"""

from __future__ import annotations

import json
import logging
import sqlite3

log = logging.getLogger("otelite.store")

STEP_ROWS = 50_000  # rows a step handles by default (exporters.sqlite.compaction.step_rows)


class Backfill:
    name = ""  # the task's row in background_migrations

    def __init__(self, step_rows: int = STEP_ROWS) -> None:
        self.active = True  # until a look at the database says there is nothing to do
        self.step_rows = max(int(step_rows), 1)

    def start(self, conn: sqlite3.Connection) -> None:
        self.active = self._state(conn) is not None

    def step(self, conn: sqlite3.Connection) -> bool:
        """One step in its own transaction; False when there was nothing to do or it failed (retried)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            state = self._state(conn)
            if state is None:
                self.active = False
            elif self.advance(conn, state):
                conn.execute("DELETE FROM background_migrations WHERE name = ?", (self.name,))
                self.active = False
            else:
                conn.execute("UPDATE background_migrations SET state = ? WHERE name = ?",
                             (json.dumps(state), self.name))
            conn.execute("COMMIT")
            return state is not None
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("background migration %s: a step failed, will retry: %s", self.name, e)
            return False

    def advance(self, conn: sqlite3.Connection, state: dict) -> bool:
        """Do one step's work and move `state` (saved with it); True when the task is finished."""
        raise NotImplementedError

    def _state(self, conn: sqlite3.Connection) -> dict | None:
        row = conn.execute("SELECT state FROM background_migrations WHERE name = ?", (self.name,)).fetchone()
        return json.loads(row[0]) if row else None


def schedule_over_spans(conn: sqlite3.Connection, name: str, legacy_index: str, cursor: dict) -> None:
    """A migration's part for work over the spans stored so far (rowids up to the largest now, the state's
    `legacy_max`; later ones are the current writer's) that ends by dropping `legacy_index`: record the
    task and its starting cursor, or, with no spans, drop the index at once."""
    legacy_max = conn.execute("SELECT max(id) FROM spans").fetchone()[0]
    if legacy_max is None:
        conn.execute(f"DROP INDEX IF EXISTS {legacy_index}")
        return
    conn.execute("INSERT OR REPLACE INTO background_migrations (name, state) VALUES (?, ?)",
                 (name, json.dumps({"legacy_max": legacy_max, **cursor})))


def index_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)).fetchone() is not None
