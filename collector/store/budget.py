"""Query budgets: how long one read may take (`api.query_timeout`), enforced where the time is spent.

`Store.read` gives every read a deadline (issue 10: "queries never block ingest or health"). It is kept
per thread, so any code running inside the read sees it without being passed it:

- inside SQLite, by the progress handler every read connection gets (`install`, called by
  db.connect_reader): every PROGRESS_STEPS virtual-machine steps it compares the clock with the
  deadline, and past it the statement stops with SQLITE_INTERRUPT;
- in Python loops over stored data (the metrics engine, label filters, self times, the scrape), by
  `check()`, which raises QueryTimeout past the deadline. A loop that can run long calls it every few
  thousand items; it costs a thread-local read and a clock read.

A dialect gets all of this by reading through `Store.read`; a QueryTimeout reaching api/errors.py is a
503 in the route's own error shape. Outside a read (no deadline) both checks never fire.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import Iterator

# SQLite virtual-machine steps between two looks at the clock: ~1 ms of work or less, so a statement
# stops within a few ms of its deadline, while the handler's own cost stays far below 1% (bench/).
PROGRESS_STEPS = 20_000

_local = threading.local()


class QueryTimeout(Exception):
    """A read ran past its budget and was stopped (503). `waited`: it never got a query worker in time."""

    def __init__(self, budget_s: float | None, *, waited: bool = False) -> None:
        limit = f"its time budget of {budget_s:g} s (api.query_timeout)" if budget_s else "its time budget"
        if waited:
            message = (f"the server is busy with other queries and this one did not start within {limit}; "
                       "retry shortly")
        else:
            message = (f"the query took longer than {limit} and was stopped; narrow its time range or "
                       "filters, or retry when the server is less busy")
        super().__init__(message)
        self.budget_s, self.waited = budget_s, waited


class QueriesBusy(QueryTimeout):
    """Too many reads are already waiting for a worker: refused at once (503 + Retry-After)."""

    def __init__(self, waiting: int) -> None:
        Exception.__init__(self, f"{waiting} queries are already waiting for a query worker; retry shortly")
        self.budget_s, self.waited = None, True


@contextlib.contextmanager
def deadline(at: float | None, budget_s: float | None = None) -> Iterator[None]:
    """Run the block under the deadline `at` (time.monotonic() seconds; None: no limit)."""
    saved = getattr(_local, "deadline", None), getattr(_local, "budget_s", None)
    _local.deadline, _local.budget_s = at, budget_s
    try:
        yield
    finally:
        _local.deadline, _local.budget_s = saved


def expired() -> bool:
    at = getattr(_local, "deadline", None)
    return at is not None and time.monotonic() > at


def check() -> None:
    """QueryTimeout when the current read is past its deadline; nothing outside a read."""
    if expired():
        raise QueryTimeout(getattr(_local, "budget_s", None))


def _progress() -> int:
    return 1 if expired() else 0  # non-zero: SQLite interrupts the running statement


def install(conn: sqlite3.Connection) -> None:
    """Let the thread's deadline interrupt statements of `conn` (a read connection)."""
    conn.set_progress_handler(_progress, PROGRESS_STEPS)


def is_interrupt(error: BaseException) -> bool:
    """Whether `error` is SQLite's answer to the progress handler (and not some other failure)."""
    return isinstance(error, sqlite3.OperationalError) and str(error) == "interrupted"
