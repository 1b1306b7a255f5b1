"""Span counts by service and time: what the sparkline and the service picker read (issue 16).

They used to read the index `spans_by_service (project_id, service_name, start_ns)`: one entry per span,
inserted at one of as many places as there are services, each a text compare at every level. Dropping
it raised acknowledged ingest by 17% over OTLP/HTTP and 22% over gRPC (docs/benchmarks.md, 2026-12-04
15:57). In its place the writer keeps, in the transaction that stores the spans, how many spans each
service started in each 10-second slot and in each minute (`span_service_10s`, `span_service_1m`, both
keyed time first so that a commit's upserts land in the table's last pages and retention deletes one
range). A commit upserts one row per service and slot its spans start in, not one per span: about 140
for a commit of spans started over the last minute by 20 services (one-second slots took 1,000 upserts
for the same commit and 10-15% of the rate; docs/benchmarks.md, 2026-12-04 17:55).

Counts over [start_ns, end_ns] add up the parts `window_parts` cuts it into: the whole minutes inside
the window, the whole 10-second slots around them, and the spans of what is left at the two ends
(less than 10 s each), counted from `spans_by_time`; only the levels whose slots lie whole in a bucket
are used (a 5-second bucket counts spans). So the answer is exact to the nanosecond.

A database written before this keeps `spans_by_service` while `CountBackfill` counts its spans, a rowid
range per step; readers keep the old SQL as long as that index exists (tracing.py checks), and the step
that finishes drops it. Spans the current writer stores lie past the backfill's last rowid and are
counted by the writer, so none is counted twice.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter

from otelite.collector.store.backfill import Backfill, index_exists, schedule_over_spans
from otelite.collector.store.bulk import BulkInsert
from otelite.collector.store.records import SPAN_COLUMNS

log = logging.getLogger("otelite.store")

NS = 1_000_000_000
SLOT_S = 10  # the finer level's slot; the coarser one's is a minute
LEVELS = ((60, "span_service_1m"), (SLOT_S, "span_service_10s"))  # (slot width in seconds, table), coarsest first
SPANS = 0  # the width window_parts gives a range of spans
LEGACY_INDEX = "spans_by_service"
BACKFILL_TASK = "span_service_counts"

_PROJECT, _START, _SERVICE = (SPAN_COLUMNS.index(c) for c in ("project_id", "start_ns", "service_name"))
_SLOT_NS = SLOT_S * NS
_UPSERT = {table: BulkInsert(f"INSERT INTO {table} (project_id, slot, service_name, count)", 4,
                             " ON CONFLICT DO UPDATE SET count = count + excluded.count") for _, table in LEVELS}


def _slot_of(span: tuple) -> tuple:
    return span[_PROJECT], span[_START] // _SLOT_NS, span[_SERVICE]


def count_spans(conn: sqlite3.Connection, spans: list[tuple]) -> None:
    """Add records.SPAN_COLUMNS rows to the counts. Within the transaction that stores them."""
    add_counts(conn, Counter(map(_slot_of, spans)))


def add_counts(conn: sqlite3.Connection, slots: dict[tuple, int]) -> None:
    """Upsert {(project, 10-second slot, service): spans} and the minutes they make up, in key order (each
    upsert lands next to the one before)."""
    minutes: Counter = Counter()
    per_minute = 60 // SLOT_S
    for (project, slot, service), n in slots.items():
        minutes[(project, slot // per_minute, service)] += n
    _UPSERT["span_service_10s"].run(conn, sorted(k + (n,) for k, n in slots.items()))
    _UPSERT["span_service_1m"].run(conn, sorted(k + (n,) for k, n in minutes.items()))


def expire_counts(conn: sqlite3.Connection, project_id: int, cutoff_ns: int, limit: int) -> bool:
    """Delete up to `limit` rows of each level whose whole slot lies before `cutoff_ns` (those spans are
    deleted by retention too); True when more may remain."""
    more = False
    for width, table in LEVELS:
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE (project_id, slot, service_name) IN (SELECT project_id, slot, "
            f"service_name FROM {table} WHERE project_id = ? AND slot < ? LIMIT ?)",
            (project_id, cutoff_ns // (width * NS), limit)).rowcount
        more = more or deleted >= limit
    return more


# --- reads ---------------------------------------------------------------------------------------------

def window_parts(start_ns: int, end_ns: int, widths: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """[start_ns, end_ns] cut into (width, lo, hi): the whole slots [lo, hi) of the level `width` seconds
    wide, coarsest first, and (SPANS, lo, hi) inclusive ns ranges of spans for what is left at the ends.
    `widths`: the levels that may be used, coarsest first."""
    if start_ns > end_ns:
        return []
    if not widths:
        return [(SPANS, start_ns, end_ns)]
    width_ns = widths[0] * NS
    first, end = -(-start_ns // width_ns), (end_ns + 1) // width_ns  # whole slots are [first, end)
    if first >= end:
        return window_parts(start_ns, end_ns, widths[1:])
    return [(widths[0], first, end), *window_parts(start_ns, first * width_ns - 1, widths[1:]),
            *window_parts(end * width_ns, end_ns, widths[1:])]


def _table(width: int) -> str:
    return next(table for w, table in LEVELS if w == width)


def service_counts(conn: sqlite3.Connection, project_id: int, start_ns: int, end_ns: int, bucket_ns: int,
                   services: tuple[str, ...] = ()) -> dict[tuple[int, str], int]:
    """(bucket index, service) → how many spans of the project started in [start_ns, end_ns], of
    `services` only when given. Buckets are multiples of `bucket_ns` since the epoch; the levels whose
    slots each lie whole in one bucket are used."""
    if bucket_ns <= 0:
        raise ValueError("bucket_ns must be positive")
    widths = tuple(w for w, _ in LEVELS if bucket_ns % (w * NS) == 0)
    only, only_params = "", list(services)
    if services:
        only = f" AND service_name IN ({', '.join('?' * len(services))})"
    out: dict[tuple[int, str], int] = {}
    for width, lo, hi in window_parts(start_ns, end_ns, widths):
        if width == SPANS:
            sql = (f"SELECT start_ns / ?, service_name, count(*) FROM spans WHERE project_id = ? AND start_ns >= ? "
                   f"AND start_ns <= ?{only} GROUP BY 1, 2")
            params = [bucket_ns, project_id, lo, hi, *only_params]
        else:
            sql = (f"SELECT slot / ?, service_name, sum(count) FROM {_table(width)} WHERE project_id = ? "
                   f"AND slot >= ? AND slot < ?{only} GROUP BY 1, 2")
            params = [bucket_ns // (width * NS), project_id, lo, hi, *only_params]
        for b, service, n in conn.execute(sql, params):
            out[(b, service)] = out.get((b, service), 0) + n
    return out


def service_present_sql(project_id: int, start_ns: int, end_ns: int, service: str) -> tuple[str, list]:
    """An SQL condition, true when the service that the SQL expression `service` names has a span of the
    project starting in [start_ns, end_ns]: an EXISTS per part of the window (`window_parts`), coarsest
    first. A service present in the window's first minute is found among its rows (a few per service);
    only an absent one reads the whole range of counts."""
    terms, params = [], []
    for width, lo, hi in window_parts(start_ns, end_ns, tuple(w for w, _ in LEVELS)):
        if width == SPANS:
            terms.append(f"EXISTS (SELECT 1 FROM spans WHERE project_id = ? AND start_ns >= ? AND start_ns <= ? "
                         f"AND service_name = {service})")
        else:
            terms.append(f"EXISTS (SELECT 1 FROM {_table(width)} WHERE project_id = ? AND slot >= ? AND slot < ? "
                         f"AND service_name = {service})")
        params += [project_id, lo, hi]
    return ("(" + " OR ".join(terms) + ")", params) if terms else ("0", [])


# --- a store written with spans_by_service -------------------------------------------------------------

def legacy_service_index(conn: sqlite3.Connection) -> bool:
    """Whether the old per-span service index still exists (the counts of older spans are not complete)."""
    return index_exists(conn, LEGACY_INDEX)


class CountBackfill(Backfill):
    """Counts the spans a store held before the counts existed, a rowid range per step, and drops the
    legacy index when done."""
    name = BACKFILL_TASK

    def advance(self, conn: sqlite3.Connection, state: dict) -> bool:
        after, legacy_max = state["id"], state["legacy_max"]
        upto = min(after + self.step_rows, legacy_max)
        add_counts(conn, {(p, s, svc): n for p, s, svc, n in conn.execute(
            "SELECT project_id, start_ns / ?, service_name, count(*) FROM spans WHERE id > ? AND id <= ? "
            "GROUP BY 1, 2, 3", (_SLOT_NS, after, upto))})
        if upto >= legacy_max:
            conn.execute(f"DROP INDEX IF EXISTS {LEGACY_INDEX}")
            log.info("span counts by service filled in; %s dropped", LEGACY_INDEX)
            return True
        state["id"] = upto
        return False


def start_backfill(conn: sqlite3.Connection) -> None:
    """The migration's part: schedule the counting (or drop the index at once when there are no spans)."""
    schedule_over_spans(conn, BACKFILL_TASK, LEGACY_INDEX, {"id": 0})
