"""Many rows of an upsert in one statement: `INSERT ... VALUES (...), (...), ... ON CONFLICT ...` (issue 16).

sqlite3's `executemany` steps and resets its statement once a row, and that costs about a microsecond
whatever the row holds (`INSERT INTO t (a) VALUES (1)`: 1.0–1.5 µs a row on the 2-vCPU machine of
docs/benchmarks.md). A statement of ROWS rows pays it once for all of them. Measured on the writer's own
statements and rows, interleaved in one process: the series state upserts 5.1 µs a row against 5.8, the
span attribute value upserts 5.1 against 7.4; but plain INSERTs of spans and trace runs were no faster
(5–9% slower), so those keep `executemany`: use this where rows meet a conflict clause.

SQLite inserts the rows of a VALUES list one after the other, each as its own INSERT would be run
(https://sqlite.org/lang_insert.html), so an upsert's ON CONFLICT clause sees the rows before it in the
same statement exactly as it sees those of earlier `executemany` steps: same rows stored, same order.
"""

from __future__ import annotations

import sqlite3
from itertools import chain
from typing import Sequence

ROWS = 64  # rows per statement (16 gave about as much); 768 parameters for the state's 12 columns, far
# below SQLite's limit of 32,766


class BulkInsert:
    """`INSERT ...` of `width` values a row. `head`: the statement up to VALUES; `tail`: what follows the
    values (an upsert's ON CONFLICT clause, which may name `excluded.` columns but no numbered `?NNN`)."""

    def __init__(self, head: str, width: int, tail: str = "", rows: int = ROWS) -> None:
        group = "(" + ", ".join("?" * width) + ")"
        self.sql = f"{head} VALUES {group}{tail}"  # one row: what executemany would run
        self._many = f"{head} VALUES {', '.join([group] * rows)}{tail}"
        self._rows, self._width = rows, width

    def run(self, conn: sqlite3.Connection, rows: Sequence[Sequence]) -> None:
        """Insert `rows` (tuples or lists of `width` values) in order."""
        if not rows:
            return
        # Flattened, a row of the wrong width would shift the values of every row after it into the wrong
        # columns, where executemany would have refused it.
        if set(map(len, rows)) != {self._width}:
            raise sqlite3.ProgrammingError(f"every row must have {self._width} values")
        per = self._rows
        whole = len(rows) - len(rows) % per
        for i in range(0, whole, per):
            conn.execute(self._many, list(chain.from_iterable(rows[i:i + per])))
        if whole < len(rows):
            conn.executemany(self.sql, rows[whole:])
