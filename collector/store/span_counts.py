"""Span counts by service and time: what the sparkline and the service picker read (issue 16).

They used to read the index `spans_by_service (project_id, service_name, start_ns)`: one entry per span,
inserted at one of as many places as there are services, each a text compare at every level. Dropping
it raised acknowledged ingest by 17% over OTLP/HTTP and 22% over gRPC (docs/benchmarks.md, 2026-12-04
15:57). In its place the writer keeps, in the transaction that stores the spans, how many spans each
service started in each second and in each minute (`span_service_seconds`, `span_service_minutes`, both
keyed time first so that a commit's upserts land in the table's last pages and retention deletes one
range). A commit upserts one row per (service, second) its spans start in, not one per span.

Counts over [start_ns, end_ns] add up three parts (`window_parts`): the whole minutes inside the window
(when the buckets are whole minutes), the whole seconds around them, and the spans of the partial
seconds at the two ends, counted from `spans_by_time`. So the answer is exact to the nanosecond and reads
at most two seconds of spans.

A database written before this keeps `spans_by_service` while `CountBackfill` counts its spans, a rowid
range per step; readers keep the old SQL as long as that index exists (tracing.py checks), and the step
that finishes drops it. Spans the current writer stores lie past the backfill's last rowid and are
counted by the writer, so none is counted twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass

from otelite.collector.store.bulk import BulkInsert
from otelite.collector.store.records import SPAN_COLUMNS

log = logging.getLogger("otelite.store")

NS = 1_000_000_000
MINUTE_S = 60
LEGACY_INDEX = "spans_by_service"
BACKFILL_TASK = "span_service_counts"
BACKFILL_ROWS = 50_000  # span rowids counted per step by default

_PROJECT, _START, _SERVICE = (SPAN_COLUMNS.index(c) for c in ("project_id", "start_ns", "service_name"))
_UPSERT = {table: BulkInsert(f"INSERT INTO {table} (project_id, {slot}, service_name, count)", 4,
                             " ON CONFLICT DO UPDATE SET count = count + excluded.count")
           for table, slot in (("span_service_seconds", "second"), ("span_service_minutes", "minute"))}


def _second_of(span: tuple) -> tuple:
    return span[_PROJECT], span[_START] // NS, span[_SERVICE]


def count_spans(conn: sqlite3.Connection, spans: list[tuple]) -> None:
    """Add records.SPAN_COLUMNS rows to the counts. Within the transaction that stores them."""
    add_counts(conn, Counter(map(_second_of, spans)))


def add_counts(conn: sqlite3.Connection, seconds: dict[tuple, int]) -> None:
    """Upsert {(project, second, service): spans} and the minutes they make up, in key order (each
    upsert lands next to the one before)."""
    minutes: Counter = Counter()
    for (project, second, service), n in seconds.items():
        minutes[(project, second // MINUTE_S, service)] += n
    _UPSERT["span_service_seconds"].run(conn, sorted(k + (n,) for k, n in seconds.items()))
    _UPSERT["span_service_minutes"].run(conn, sorted(k + (n,) for k, n in minutes.items()))


def expire_counts(conn: sqlite3.Connection, project_id: int, cutoff_ns: int, limit: int) -> bool:
    """Delete up to `limit` rows of each table whose whole second or minute lies before `cutoff_ns` (those
    spans are deleted by retention too); True when more may remain."""
    more = False
    for table, slot, bound in (("span_service_seconds", "second", cutoff_ns // NS),
                               ("span_service_minutes", "minute", cutoff_ns // NS // MINUTE_S)):
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE (project_id, {slot}, service_name) IN (SELECT project_id, {slot}, "
            f"service_name FROM {table} WHERE project_id = ? AND {slot} < ? LIMIT ?)",
            (project_id, bound, limit)).rowcount
        more = more or deleted >= limit
    return more


# --- reads ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WindowParts:
    """[start_ns, end_ns] cut into what each source counts: whole minutes [lo, hi) of
    span_service_minutes, whole seconds [lo, hi) of span_service_seconds, and inclusive ns ranges of
    spans (the partial seconds at the ends)."""
    minutes: tuple[tuple[int, int], ...]
    seconds: tuple[tuple[int, int], ...]
    spans: tuple[tuple[int, int], ...]


def window_parts(start_ns: int, end_ns: int, use_minutes: bool) -> WindowParts:
    first_s = -(-start_ns // NS)  # the first whole second
    end_s = (end_ns + 1) // NS  # whole seconds are [first_s, end_s)
    if first_s >= end_s:
        return WindowParts((), (), ((start_ns, end_ns),) if start_ns <= end_ns else ())
    spans = []
    if start_ns < first_s * NS:
        spans.append((start_ns, first_s * NS - 1))
    if end_s * NS <= end_ns:
        spans.append((end_s * NS, end_ns))
    first_m, end_m = -(-first_s // MINUTE_S), end_s // MINUTE_S
    if not use_minutes or first_m >= end_m:
        return WindowParts((), ((first_s, end_s),), tuple(spans))
    seconds = [r for r in ((first_s, first_m * MINUTE_S), (end_m * MINUTE_S, end_s)) if r[0] < r[1]]
    return WindowParts(((first_m, end_m),), tuple(seconds), tuple(spans))


def service_counts(conn: sqlite3.Connection, project_id: int, start_ns: int, end_ns: int, bucket_ns: int,
                   services: tuple[str, ...] = ()) -> dict[tuple[int, str], int]:
    """(bucket index, service) → how many spans of the project started in [start_ns, end_ns], of
    `services` only when given. Buckets are multiples of `bucket_ns` since the epoch, a whole number of
    seconds (whole minutes are read from the minutes when it is a whole number of minutes)."""
    if bucket_ns <= 0 or bucket_ns % NS:
        raise ValueError("bucket_ns must be a positive whole number of seconds")
    bucket_s = bucket_ns // NS
    parts = window_parts(start_ns, end_ns, bucket_s % MINUTE_S == 0)
    only, only_params = "", list(services)
    if services:
        only = f" AND service_name IN ({', '.join('?' * len(services))})"
    out: dict[tuple[int, str], int] = {}

    def add(sql: str, params: list) -> None:
        for b, service, n in conn.execute(sql, params):
            key = (b, service)
            out[key] = out.get(key, 0) + n

    for table, slot, ranges, per in (("span_service_minutes", "minute", parts.minutes, bucket_s // MINUTE_S),
                                     ("span_service_seconds", "second", parts.seconds, bucket_s)):
        for lo, hi in ranges:
            add(f"SELECT {slot} / ?, service_name, sum(count) FROM {table} WHERE project_id = ? AND {slot} >= ? "
                f"AND {slot} < ?{only} GROUP BY 1, 2", [per, project_id, lo, hi, *only_params])
    for lo, hi in parts.spans:
        add(f"SELECT start_ns / ?, service_name, count(*) FROM spans WHERE project_id = ? AND start_ns >= ? "
            f"AND start_ns <= ?{only} GROUP BY 1, 2", [bucket_ns, project_id, lo, hi, *only_params])
    return out


def service_present_sql(project_id: int, start_ns: int, end_ns: int, service: str) -> tuple[str, list]:
    """An SQL condition, true when the service that the SQL expression `service` names has a span of the
    project starting in [start_ns, end_ns]: an EXISTS per part of the window (`window_parts`), in the
    order of their cost. A service present in the window's first minute is found in its rows (a few per
    service); only an absent one reads the whole range of counts."""
    parts = window_parts(start_ns, end_ns, True)
    terms, params = [], []
    for table, slot, ranges in (("span_service_minutes", "minute", parts.minutes),
                                ("span_service_seconds", "second", parts.seconds)):
        for lo, hi in ranges:
            terms.append(f"EXISTS (SELECT 1 FROM {table} WHERE project_id = ? AND {slot} >= ? AND {slot} < ? "
                         f"AND service_name = {service})")
            params += [project_id, lo, hi]
    for lo, hi in parts.spans:
        terms.append(f"EXISTS (SELECT 1 FROM spans WHERE project_id = ? AND start_ns >= ? AND start_ns <= ? "
                     f"AND service_name = {service})")
        params += [project_id, lo, hi]
    return ("(" + " OR ".join(terms) + ")", params) if terms else ("0", [])


# --- a store written with spans_by_service -------------------------------------------------------------

def legacy_service_index(conn: sqlite3.Connection) -> bool:
    """Whether the old per-span service index still exists (the counts of older spans are not complete)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?",
                        (LEGACY_INDEX,)).fetchone() is not None


class CountBackfill:
    """Counts the spans a store held before the counts existed, a rowid range per step (each step one
    transaction; resumable), and drops the legacy index when done."""

    def __init__(self, step_rows: int = BACKFILL_ROWS) -> None:
        self.active = True  # until a look at the database says there is nothing to do
        self.step_rows = max(int(step_rows), 1)

    def start(self, conn: sqlite3.Connection) -> None:
        self.active = _task(conn) is not None

    def step(self, conn: sqlite3.Connection) -> bool:
        try:
            conn.execute("BEGIN IMMEDIATE")
            did = self._step(conn)
            conn.execute("COMMIT")
            return did
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            log.warning("span count backfill step failed, will retry: %s", e)
            return False

    def _step(self, conn: sqlite3.Connection) -> bool:
        state = _task(conn)
        if state is None:
            self.active = False
            return False
        after, legacy_max = state["id"], state["legacy_max"]
        upto = min(after + self.step_rows, legacy_max)
        add_counts(conn, {(p, s, svc): n for p, s, svc, n in conn.execute(
            "SELECT project_id, start_ns / ?, service_name, count(*) FROM spans WHERE id > ? AND id <= ? "
            "GROUP BY 1, 2, 3", (NS, after, upto))})
        if upto >= legacy_max:
            conn.execute(f"DROP INDEX IF EXISTS {LEGACY_INDEX}")
            conn.execute("DELETE FROM background_migrations WHERE name = ?", (BACKFILL_TASK,))
            self.active = False
            log.info("span counts by service filled in; %s dropped", LEGACY_INDEX)
        else:
            state["id"] = upto
            conn.execute("UPDATE background_migrations SET state = ? WHERE name = ?",
                         (json.dumps(state), BACKFILL_TASK))
        return True


def _task(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT state FROM background_migrations WHERE name = ?", (BACKFILL_TASK,)).fetchone()
    return json.loads(row[0]) if row else None


def start_backfill(conn: sqlite3.Connection) -> None:
    """The migration's part: schedule the counting (or drop the index at once when there are no spans)."""
    legacy_max = conn.execute("SELECT max(id) FROM spans").fetchone()[0]
    if legacy_max is None:
        conn.execute(f"DROP INDEX IF EXISTS {LEGACY_INDEX}")
        return
    conn.execute("INSERT OR REPLACE INTO background_migrations (name, state) VALUES (?, ?)",
                 (BACKFILL_TASK, json.dumps({"legacy_max": legacy_max, "id": 0})))
