"""The export log: the durable queue of the forwarding exporters (otlp, otlphttp, prometheusremotewrite).

When at least one forwarding exporter takes a signal, the writer appends the OTLP request of every batch
of that signal to `export_log` in the very transaction that stores the batch's rows (writer.py), so what
was acknowledged to an application is exactly what is queued for the upstream, and survives `kill -9`
the same way. Each forwarder keeps a cursor per signal (`export_cursors`) that it advances through the
writer after the upstream acknowledged; entries every cursor has passed are trimmed in that same write.

Why a log of the requests and not a cursor over `spans` / `metric_points`: the upstream must receive the
ids, attributes, resources and timestamps exactly as sent (the request's own bytes are that), the cursor
must not depend on how points and spans are physically stored (their rowids may be re-packed), and
appending a few hundred bytes per request costs far less than the rows themselves.

    log = ExportLog()
    log.subscribe("otlp/up", {"traces"})            # before the pipelines start
    await store.write(log.reconcile)                 # cursors for new subscribers, forget removed ones
    cursor = await store.read(read_cursor, "otlp/up", "traces")
    entries = await store.read(read_entries, "traces", cursor.seq, cursor.end_bytes + 4 << 20, 1000)
    await store.write(lambda c: advance(c, "otlp/up", "traces", entries[-1].position()))

Metrics a REST dialect built itself (Flux, Trifle: `Ingest.export_metric_rows`) have no OTLP request: their
rows are appended instead, encoded by `encode_rows` behind ROWS_PREFIX (a zero byte, which never starts an
OTLP request: protobuf has no field number 0), in the same commit and the same order as everything else.
`Entry.holds_rows()` tells the two apart and `decode_rows` gives the WriteBatch back.

Positions carry the running totals (`end_items`, `end_bytes`) of the signal up to an entry, so a backlog
in items or bytes is a subtraction and never a scan.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from otelite.collector.jsontext import dumps as _dumps
from otelite.collector.store.points import point_rows
from otelite.collector.store.records import WriteBatch
from otelite.collector.store.series_state import DELTA, DISTRIBUTION, STATE_COLUMNS

_TRIM_CHUNK = 5000  # entries deleted per write, so trimming after a long outage never stalls the writer
_STATE_CHUNK = 500
_dumps_ascii = json.JSONEncoder(separators=(",", ":")).encode  # any text, lone surrogates too, round-trips

# export_state kinds
TOTALS = "totals"  # series id → the running total (STATE_COLUMNS) of a delta series
LAST_SENT = "last_sent"  # label-set key → the newest sample timestamp sent (ms)


# Starts a payload of dialect rows; an OTLP request never starts with a zero byte (field number 0 is invalid).
ROWS_PREFIX = b"\x00otelite-rows/1\n"


def encode_rows(batch: WriteBatch) -> bytes:
    """The rows the forwarders need of a dialect's metrics batch: resources, scopes, series, points."""
    return ROWS_PREFIX + _dumps_ascii([list(batch.resources.values()), list(batch.scopes.values()),
                                 list(batch.series.values()), batch.points]).encode()


def decode_rows(payload: bytes) -> WriteBatch:
    resources, scopes, series, points = json.loads(payload[len(ROWS_PREFIX):])
    return WriteBatch(resources={r[0]: tuple(r) for r in resources}, scopes={s[0]: tuple(s) for s in scopes},
                      series={s[0]: tuple(s) for s in series}, points=[tuple(p) for p in points])


class Position(NamedTuple):
    """A place in one signal's log: entries with seq <= `seq` are behind it."""

    seq: int
    end_items: int
    end_bytes: int


class Cursor(NamedTuple):
    position: Position
    in_flight_to: int  # entries after the position, up to this seq, may have reached the upstream


class Entry(NamedTuple):
    seq: int
    project_id: int
    committed_ns: int
    items: int
    end_items: int
    end_bytes: int
    payload: bytes

    def position(self) -> Position:
        return Position(self.seq, self.end_items, self.end_bytes)

    def holds_rows(self) -> bool:
        """True for rows a REST dialect built (decode_rows), False for an OTLP request."""
        return self.payload.startswith(ROWS_PREFIX)

    def before(self) -> Position:
        """The position just before this entry."""
        return Position(self.seq - 1, self.end_items - self.items, self.end_bytes - len(self.payload))


class Backlog(NamedTuple):
    items: int
    bytes: int
    oldest_ns: int | None  # commit time of the oldest entry not yet delivered; None: nothing pending


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """What the sqlite exporter hands the writer with a batch of a forwarded signal."""

    signal: str
    project_id: int
    items: int
    payload: bytes


class ExportLog:
    """Which exporters forward which signals (known once the pipelines are built, before anything is
    received). The writer asks `forwards(signal)` for every batch; nothing is appended for a signal no
    forwarder takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, frozenset[str]] = {}
        self._totals: set[str] = set()  # exporters that keep running totals of delta series
        self._signals: frozenset[str] = frozenset()

    def subscribe(self, exporter: str, signals: Iterable[str], *, keeps_totals: bool = False) -> None:
        with self._lock:
            self._subscribers[exporter] = frozenset(signals)
            if keeps_totals:
                self._totals.add(exporter)
            self._signals = frozenset(s for sig in self._subscribers.values() for s in sig)

    def forwards(self, signal: str) -> bool:
        return signal in self._signals

    @property
    def subscribers(self) -> dict[str, frozenset[str]]:
        return dict(self._subscribers)

    def reconcile(self, conn: sqlite3.Connection) -> int:
        """A write function: a cursor at the head of the log for every new (exporter, signal), and the
        cursors (and state) of exporters no longer configured forgotten, their entries trimmed. Returns how
        many entries were deleted (call again while it is _TRIM_CHUNK: trimming goes by chunks).

        A new prometheusremotewrite cursor starts with the store's running totals of every delta series
        (metric_series_state), read in the same transaction that fixes its position: its totals then equal
        the scrape's at that position, and folding each later entry in commit order keeps them equal."""
        wanted = {(e, s) for e, sigs in self._subscribers.items() for s in sigs}
        existing = set(conn.execute("SELECT exporter, signal FROM export_cursors").fetchall())
        for exporter, signal in existing - wanted:
            conn.execute("DELETE FROM export_cursors WHERE exporter = ? AND signal = ?", (exporter, signal))
        configured = {e for e, _ in wanted}
        for (exporter,) in conn.execute("SELECT DISTINCT exporter FROM export_state").fetchall():
            if exporter not in configured:
                conn.execute("DELETE FROM export_state WHERE exporter = ?", (exporter,))
        for exporter, signal in sorted(wanted - existing):
            head = head_position(conn, signal)
            conn.execute("INSERT INTO export_cursors (exporter, signal, seq, end_items, end_bytes, in_flight_to) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (exporter, signal, *head, head.seq))
            if signal == "metrics" and exporter in self._totals:
                conn.execute("DELETE FROM export_state WHERE exporter = ?", (exporter,))
                _snapshot_totals(conn, exporter)
        deleted = 0
        for signal in ("traces", "metrics"):
            deleted += _trim(conn, signal)
        return deleted


# --- the writer's side: appending in the commit that stores the batch ------------------------------------

def append(conn: sqlite3.Connection, records: list[ExportRecord], committed_ns: int) -> None:
    """Append `records` in order (their commit order); runs inside the writer's transaction."""
    heads: dict[str, list[int]] = {}
    rows = []
    for r in records:
        head = heads.get(r.signal)
        if head is None:
            found = conn.execute("SELECT end_items, end_bytes FROM export_log_heads WHERE signal = ?",
                                 (r.signal,)).fetchone()
            head = heads[r.signal] = list(found) if found else [0, 0]
        head[0] += r.items
        head[1] += len(r.payload)
        rows.append((r.signal, r.project_id, committed_ns, r.items, head[0], head[1], r.payload))
    conn.executemany("INSERT INTO export_log (signal, project_id, committed_ns, items, end_items, end_bytes, "
                     "payload) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany("INSERT INTO export_log_heads (signal, end_items, end_bytes) VALUES (?, ?, ?) "
                     "ON CONFLICT (signal) DO UPDATE SET end_items = excluded.end_items, "
                     "end_bytes = excluded.end_bytes", [(s, *h) for s, h in heads.items()])


# --- the forwarders' reads ------------------------------------------------------------------------------

def head_position(conn: sqlite3.Connection, signal: str) -> Position:
    """After the newest entry of `signal` (the running totals never go back, even when all was trimmed)."""
    totals = conn.execute("SELECT end_items, end_bytes FROM export_log_heads WHERE signal = ?",
                          (signal,)).fetchone() or (0, 0)
    seq = conn.execute("SELECT max(seq) FROM export_log WHERE signal = ?", (signal,)).fetchone()[0]
    if seq is None:  # nothing left in the log: past every seq ever handed out
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'export_log'").fetchone()
        seq = seq[0] if seq else 0
    return Position(seq, *totals)


def read_cursor(conn: sqlite3.Connection, exporter: str, signal: str) -> Cursor | None:
    row = conn.execute("SELECT seq, end_items, end_bytes, in_flight_to FROM export_cursors "
                       "WHERE exporter = ? AND signal = ?", (exporter, signal)).fetchone()
    return None if row is None else Cursor(Position(*row[:3]), row[3])


def read_entries(conn: sqlite3.Connection, signal: str, after: Position, max_bytes: int,
                 max_entries: int) -> list[Entry]:
    """The entries after `after`, in order, at most `max_bytes` of payload together (but always at least
    one) and at most `max_entries`."""
    cols = "seq, project_id, committed_ns, items, end_items, end_bytes, payload"
    rows = conn.execute(f"SELECT {cols} FROM export_log WHERE signal = ? AND seq > ? AND end_bytes <= ? "
                        "ORDER BY seq LIMIT ?", (signal, after.seq, after.end_bytes + max_bytes,
                                                 max_entries)).fetchall()
    if not rows:
        rows = conn.execute(f"SELECT {cols} FROM export_log WHERE signal = ? AND seq > ? ORDER BY seq LIMIT 1",
                            (signal, after.seq)).fetchall()
    return [Entry(*r) for r in rows]


def backlog(conn: sqlite3.Connection, signal: str, after: Position) -> Backlog:
    """What is committed after `after` and not yet delivered."""
    head = conn.execute("SELECT end_items, end_bytes FROM export_log_heads WHERE signal = ?",
                        (signal,)).fetchone() or (after.end_items, after.end_bytes)
    oldest = conn.execute("SELECT committed_ns FROM export_log WHERE signal = ? AND seq > ? ORDER BY seq LIMIT 1",
                          (signal, after.seq)).fetchone()
    return Backlog(head[0] - after.end_items, head[1] - after.end_bytes, oldest[0] if oldest else None)


def first_kept(conn: sqlite3.Connection, signal: str, after: Position, *, min_end_items: int | None = None,
               min_end_bytes: int | None = None, min_committed_ns: int | None = None) -> Position:
    """Where a cursor at `after` must move so that its backlog fits a bound: the position before the first
    entry that starts at or beyond the minimum running totals given (so what follows it fits) and was
    committed no earlier than `min_committed_ns`; the head when no entry qualifies."""
    where, args = ["signal = ?", "seq > ?"], [signal, after.seq]
    for condition, minimum in (("end_items - items >= ?", min_end_items),
                               ("end_bytes - length(payload) >= ?", min_end_bytes),
                               ("committed_ns >= ?", min_committed_ns)):
        if minimum is not None:
            where.append(condition)
            args.append(minimum)
    row = conn.execute("SELECT seq, items, end_items, end_bytes, length(payload) FROM export_log WHERE "
                       f"{' AND '.join(where)} ORDER BY seq LIMIT 1", args).fetchone()
    if row is None:
        return head_position(conn, signal)
    seq, items, end_items, end_bytes, size = row
    return Position(seq - 1, end_items - items, end_bytes - size)


def window_values(conn: sqlite3.Connection, windows: dict[int, tuple[int, int]]) -> dict[int, list]:
    """series id → the values of its points with `since <= time_ns <= until` (windows: id → (since, until)):
    the observations a Flux distribution's quantiles and a set's distinct members are computed over."""
    out: dict[int, list] = {sid: [] for sid in windows}
    if not windows:
        return out
    # Chunks and head alike (issue 16: points.point_rows), in (series, time, arrival) order.
    lo = min(w[0] for w in windows.values())
    hi = max(w[1] for w in windows.values())
    for row in point_rows(conn, list(windows), lo, hi + 1):
        since, until = windows[row[1]]
        if row[4] is not None and since <= row[3] <= until:
            out[row[1]].append(row[4])
    return out


def load_state(conn: sqlite3.Connection, exporter: str, kind: str, keys: list[int]) -> dict[int, tuple]:
    """(time_ms, state) of `keys`, decoded (state: a tuple, or None)."""
    out = {}
    for i in range(0, len(keys), _STATE_CHUNK):
        chunk = keys[i:i + _STATE_CHUNK]
        for key, time_ms, state in conn.execute(
                f"SELECT key, time_ms, state FROM export_state WHERE exporter = ? AND kind = ? AND key IN "
                f"({','.join('?' * len(chunk))})", [exporter, kind, *chunk]):
            out[key] = (time_ms, tuple(json.loads(state)) if state is not None else None)
    return out


# --- the forwarders' writes (functions for Store.write) ---------------------------------------------------

def mark_in_flight(conn: sqlite3.Connection, exporter: str, signal: str, upto_seq: int) -> None:
    """Before a request leaves: its entries may reach the upstream from now on (after a crash they are
    sent again, and counted as possibly duplicated)."""
    conn.execute("UPDATE export_cursors SET in_flight_to = max(in_flight_to, ?) WHERE exporter = ? AND signal = ?",
                 (upto_seq, exporter, signal))


def advance(conn: sqlite3.Connection, exporter: str, signal: str, to: Position,
            state: dict[str, dict[int, tuple]] | None = None) -> bool:
    """Move the cursor to `to` (never back) with the forwarder's state of that position
    (kind → key → (time_ms, state tuple | None)), in one transaction; then trim what every cursor of the
    signal has passed. Returns False when the cursor was already past `to` (nothing changed)."""
    moved = conn.execute("UPDATE export_cursors SET seq = ?, end_items = ?, end_bytes = ? WHERE exporter = ? "
                         "AND signal = ? AND seq < ?", (*to, exporter, signal, to.seq)).rowcount
    if not moved:
        return False
    for kind, rows in (state or {}).items():
        conn.executemany(
            "INSERT INTO export_state (exporter, kind, key, time_ms, state) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (exporter, kind, key) DO UPDATE SET time_ms = excluded.time_ms, state = excluded.state",
            [(exporter, kind, key, time_ms, None if s is None else _dumps(list(s)))
             for key, (time_ms, s) in rows.items()])
    _trim(conn, signal)
    return True


def _trim(conn: sqlite3.Connection, signal: str) -> int:
    """Delete (a chunk of) the entries of `signal` every cursor has passed; all of them when none is left."""
    low = conn.execute("SELECT min(seq), count(*) FROM export_cursors WHERE signal = ?", (signal,)).fetchone()
    upto = low[0] if low[1] else (1 << 62)
    return conn.execute("DELETE FROM export_log WHERE seq IN (SELECT seq FROM export_log WHERE signal = ? AND "
                        "seq <= ? ORDER BY seq LIMIT ?)", (signal, upto, _TRIM_CHUNK)).rowcount


def _snapshot_totals(conn: sqlite3.Connection, exporter: str) -> None:
    cols = ", ".join(f"st.{c}" for c in STATE_COLUMNS)
    rows = conn.execute(
        f"SELECT {cols} FROM metric_series_state AS st JOIN metric_series AS s ON s.id = st.series_id "
        # the series whose remote-write samples are running totals: delta sums, histograms and tallies
        # (series_state.is_accumulated) and Flux distributions (their `_count` and `_sum`)
        f"WHERE (s.temporality = {DELTA} AND s.type IN ('sum', 'histogram', 'exponential_histogram', 'tally')) "
        f"OR s.type = '{DISTRIBUTION}'").fetchall()
    conn.executemany("INSERT INTO export_state (exporter, kind, key, time_ms, state) VALUES (?, ?, ?, NULL, ?)",
                     [(exporter, TOTALS, r[0], _dumps(list(r[:-1]) + [None])) for r in rows])
