"""Flux events (flux.md, "Ingest"): rows written by `Store.write` and listed newest first.

    await store.write(partial(insert_events, rows=[EventRow(...), ...]))
    page = await store.read(list_events, EventSelection(project_id, name="order.*", limit=100))

An event keeps every field BrainzLab's SDK sends: name, time, value, properties (any JSON object), tags
(a flat map of strings), user_id, session_id, environment and service; any of the optional ones may be
NULL. Retention deletes events with the metric points (exporters.sqlite.retention.metrics, writer.py).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, NamedTuple

from otelite.collector.jsontext import dumps_sorted as _dumps

EVENT_COLUMNS = ("project_id", "name", "time_ns", "value", "properties", "tags", "user_id", "session_id",
                 "environment", "service")
_INSERT = f"INSERT INTO flux_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
_PREFIX_END = "\U0010ffff"  # sorts after every character a name can continue with


class EventRow(NamedTuple):
    """One event to store (EVENT_COLUMNS order; properties and tags as Python objects)."""

    project_id: int
    name: str
    time_ns: int
    value: float | None
    properties: dict[str, Any] | None
    tags: dict[str, str] | None
    user_id: str | None
    session_id: str | None
    environment: str | None
    service: str | None


def insert_events(conn: sqlite3.Connection, rows: list[EventRow]) -> int:
    """A `Store.write` function: insert the events, return how many."""
    conn.executemany(_INSERT, [r[:4] + (None if r.properties is None else _dumps(r.properties),
                                        None if r.tags is None else _dumps(r.tags)) + r[6:] for r in rows])
    return len(rows)


@dataclass(frozen=True)
class EventSelection:
    """Which events of a project, newest first. `name` ending in `*` is a prefix; the rest are exact."""

    project_id: int
    name: str | None = None
    start_ns: int | None = None  # inclusive
    end_ns: int | None = None  # inclusive
    user_id: str | None = None
    session_id: str | None = None
    environment: str | None = None
    service: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # every (key, value) must match
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class StoredEvent:
    id: int
    name: str
    time_ns: int
    value: float | None
    properties: dict[str, Any] | None
    tags: dict[str, str] | None
    user_id: str | None
    session_id: str | None
    environment: str | None
    service: str | None


def list_events(conn: sqlite3.Connection, selection: EventSelection) -> list[StoredEvent]:
    """The selected events, newest first (ties: the later stored first), `limit` from `offset`."""
    s = selection
    sql = ["SELECT id, name, time_ns, value, properties, tags, user_id, session_id, environment, service "
           "FROM flux_events WHERE project_id = ?"]
    args: list[Any] = [s.project_id]
    if s.name is not None:
        if s.name.endswith("*"):
            prefix = s.name[:-1]
            if prefix:  # a range on the (project, name, time) index instead of a LIKE pattern to escape
                sql.append("AND name >= ? AND name < ?")
                args += [prefix, prefix + _PREFIX_END]
        else:
            sql.append("AND name = ?")
            args.append(s.name)
    for column, value in (("user_id", s.user_id), ("session_id", s.session_id),
                          ("environment", s.environment), ("service", s.service)):
        if value is not None:
            sql.append(f"AND {column} = ?")
            args.append(value)
    if s.start_ns is not None:
        sql.append("AND time_ns >= ?")
        args.append(s.start_ns)
    if s.end_ns is not None:
        sql.append("AND time_ns <= ?")
        args.append(s.end_ns)
    for key, value in s.tags:
        sql.append("AND EXISTS (SELECT 1 FROM json_each(flux_events.tags) AS t WHERE t.key = ? AND t.value = ?)")
        args += [key, value]
    sql.append("ORDER BY time_ns DESC, id DESC LIMIT ? OFFSET ?")
    args += [s.limit, s.offset]
    out = []
    for row in conn.execute(" ".join(sql), args):
        out.append(StoredEvent(row[0], row[1], row[2], row[3], _loads(row[4]), _loads(row[5]), *row[6:]))
    return out


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def delete_events_before(conn: sqlite3.Connection, project_id: int, cutoff_ns: int, limit: int) -> int:
    """Retention: delete at most `limit` of the project's events older than `cutoff_ns` (through the
    (project, time) index); returns how many."""
    return conn.execute("DELETE FROM flux_events WHERE id IN (SELECT id FROM flux_events WHERE project_id = ? "
                        "AND time_ns < ? LIMIT ?)", (project_id, cutoff_ns, limit)).rowcount
