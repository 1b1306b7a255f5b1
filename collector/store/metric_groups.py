"""Metric groups (LaunchDarkly's metric groups API, metric-groups.md): rows, typed list selections, and the
metrics they name as the store's catalog knows them.

Reads take the connection first so they run through `Store.read(fn, *args)`; the write functions
(`insert_group`, `update_group`, `delete_group`) take the writer's connection and run inside a function
given to `Store.write`, so a read-check-write (the PATCH compare-and-set on `version`) is atomic. Every
statement is constrained by project (store.md, project isolation); nothing a client sends is spliced into
SQL text.

A group keeps, for each of its metrics, the catalog entry the metric had when the group was last written
(`GroupMetric.snapshot`). Retention may later delete the metric's series; the group then still renders
the metric from that snapshot instead of losing it or failing (issue 13, item 6).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Iterable

KINDS = ("funnel", "standard")
# List orders a caller may ask for (LaunchDarkly's `sort` fields map onto these).
SORT_FIELDS = ("name", "created", "connections")

_COLUMNS = ("uuid, key, name, kind, description, maintainer_id, tags, metrics, version, created_ms, "
            "modified_ms")


class MetricGroupExists(Exception):
    """A group with this key already exists in the project."""


@dataclass(frozen=True, slots=True)
class MetricSnapshot:
    """What the store's catalog (metrics.metric_catalog) says of one metric name: its most recently seen
    type, with that series' unit, description, temporality and monotonicity, and when it was first and
    last seen."""

    name: str
    type: str
    unit: str
    description: str
    temporality: int
    monotonic: bool
    first_seen_ns: int
    last_seen_ns: int

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "unit": self.unit, "description": self.description,
                "temporality": self.temporality, "monotonic": self.monotonic,
                "first_seen_ns": self.first_seen_ns, "last_seen_ns": self.last_seen_ns}

    @classmethod
    def from_json(cls, doc: dict) -> "MetricSnapshot":
        return cls(doc["name"], doc["type"], doc.get("unit", ""), doc.get("description", ""),
                   int(doc.get("temporality", 0)), bool(doc.get("monotonic", False)),
                   int(doc.get("first_seen_ns", 0)), int(doc.get("last_seen_ns", 0)))


@dataclass(frozen=True, slots=True)
class GroupMetric:
    key: str  # the metric's name in the store
    name_in_group: str | None
    snapshot: MetricSnapshot | None  # last-known catalog entry (None only if never known)


@dataclass(frozen=True, slots=True)
class MetricGroup:
    uuid: str
    key: str
    name: str
    kind: str  # one of KINDS
    description: str | None
    maintainer_id: str
    tags: tuple[str, ...]
    metrics: tuple[GroupMetric, ...]
    version: int  # 1 at creation, +1 per change
    created_ms: int  # epoch milliseconds
    modified_ms: int


@dataclass(frozen=True, slots=True)
class GroupSelection:
    """Which groups of a project a list shows. Every condition must hold.

    `queries`: each clause is a tuple of alternatives (any may match); an alternative is a tuple of
    case-folded terms that must all occur in the group's key or name. `kinds` / `maintainer_ids`: the
    allowed values, or None for any. `nothing`: a condition no group can meet (e.g. an experiment status:
    otelite runs no experiments).
    """

    project_id: int
    queries: tuple[tuple[tuple[str, ...], ...], ...] = ()
    kinds: tuple[str, ...] | None = None
    maintainer_ids: tuple[str, ...] | None = None
    nothing: bool = False


@dataclass(frozen=True, slots=True)
class GroupOrder:
    field: str  # one of SORT_FIELDS
    descending: bool = False


def search_text(key: str, name: str) -> str:
    """What the fuzzy `query` filter searches: key and name, case-folded (Unicode-aware, unlike SQL lower())."""
    return f"{key}\n{name}".casefold()


def _metrics_json(metrics: Iterable[GroupMetric]) -> str:
    return json.dumps([{"key": m.key, "nameInGroup": m.name_in_group,
                        "snapshot": m.snapshot.to_json() if m.snapshot else None} for m in metrics])


def _group(row: tuple) -> MetricGroup:
    uuid, key, name, kind, description, maintainer_id, tags, metrics, version, created, modified = row
    return MetricGroup(uuid, key, name, kind, description, maintainer_id, tuple(json.loads(tags)),
                       tuple(GroupMetric(m["key"], m.get("nameInGroup"),
                                         MetricSnapshot.from_json(m["snapshot"]) if m.get("snapshot") else None)
                             for m in json.loads(metrics)),
                       version, created, modified)


# --- reads ------------------------------------------------------------------------------------------------

def find_group(conn: sqlite3.Connection, project_id: int, key: str) -> MetricGroup | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM metric_groups WHERE project_id = ? AND key = ?",
                       (project_id, key)).fetchone()
    return _group(row) if row else None


def _where(selection: GroupSelection) -> tuple[str, list]:
    sql, params = ["project_id = ?"], [selection.project_id]
    if selection.nothing:
        sql.append("0")
    for alternatives in selection.queries:
        ors = []
        for terms in alternatives:
            ors.append("(" + " AND ".join(["instr(search_text, ?) > 0"] * len(terms) or ["1"]) + ")")
            params.extend(terms)
        sql.append("(" + " OR ".join(ors or ["0"]) + ")")
    for column, allowed in (("kind", selection.kinds), ("maintainer_id", selection.maintainer_ids)):
        if allowed is not None:
            sql.append(f"{column} IN ({','.join('?' * len(allowed))})" if allowed else "0")
            params.extend(allowed)
    return " AND ".join(sql), params


# Creation time is (created_ms, id): groups created within one millisecond keep their creation order, in the
# direction asked for (newest first means the later of two such groups first).
_ORDER_SQL = {"name": ("name COLLATE NOCASE",), "created": ("created_ms", "id"), "connections": ()}


def list_groups(conn: sqlite3.Connection, selection: GroupSelection, order: tuple[GroupOrder, ...],
                limit: int, offset: int) -> tuple[list[MetricGroup], int]:
    """One page of the selected groups in `order` (then creation order), and how many are selected."""
    where, params = _where(selection)
    total = conn.execute(f"SELECT count(*) FROM metric_groups WHERE {where}", params).fetchone()[0]
    terms = []
    for o in order:
        # (no group has connections, having no experiments: every count is 0, nothing to order by)
        terms += [f"{column} {'DESC' if o.descending else 'ASC'}" for column in _ORDER_SQL[o.field]]
    terms += ["created_ms ASC", "id ASC"]
    rows = conn.execute(f"SELECT {_COLUMNS} FROM metric_groups WHERE {where} ORDER BY {', '.join(terms)} "
                        "LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
    return [_group(r) for r in rows], total


def metric_snapshots(conn: sqlite3.Connection, project_id: int, names: Iterable[str]) -> dict[str, MetricSnapshot]:
    """The catalog entry of each name the project's store knows now (names it does not know are absent).
    A name stored with several types reads as the type it was most recently seen with, with that series'
    unit, description, temporality and monotonicity (as metrics.metric_catalog tells them), and first seen
    when its first series was. Only metric_series is read, through its (project_id, name) index, never the
    labels: patches run this on the writer's thread, for up to request.MAX_METRICS names."""
    out: dict[str, MetricSnapshot] = {}
    for name in dict.fromkeys(names):
        # SQLite takes the bare columns of a query with one max() from the row holding it (the latest series).
        row = conn.execute(
            "SELECT type, unit, description, temporality, is_monotonic, max(last_seen_ns), "
            "(SELECT min(first_seen_ns) FROM metric_series WHERE project_id = ? AND name = ?) "
            "FROM metric_series WHERE project_id = ? AND name = ?", (project_id, name, project_id, name)).fetchone()
        if row[0] is None:  # no series: an aggregate over no rows is one row of NULLs
            continue
        metric_type, unit, description, temporality, monotonic, last_seen, first_seen = row
        out[name] = MetricSnapshot(name, metric_type, unit, description, temporality, bool(monotonic), first_seen,
                                   last_seen)
    return out


# --- writes (inside Store.write) ----------------------------------------------------------------------------

def insert_group(conn: sqlite3.Connection, project_id: int, group: MetricGroup) -> None:
    """Raises MetricGroupExists when the project already has a group with this key."""
    try:
        conn.execute(
            "INSERT INTO metric_groups (project_id, key, uuid, name, kind, description, maintainer_id, tags, "
            "metrics, version, created_ms, modified_ms, search_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (project_id, group.key, group.uuid, group.name, group.kind, group.description, group.maintainer_id,
             json.dumps(list(group.tags)), _metrics_json(group.metrics), group.version, group.created_ms,
             group.modified_ms, search_text(group.key, group.name)))
    except sqlite3.IntegrityError as e:
        if "metric_groups.key" not in str(e):  # UNIQUE (project_id, key); anything else is not a duplicate
            raise
        raise MetricGroupExists(group.key) from None


def update_group(conn: sqlite3.Connection, project_id: int, group: MetricGroup, expected_version: int) -> bool:
    """Replace the group `group.key` if its stored version is still `expected_version` (compare-and-set);
    False when it is not (changed or deleted meanwhile). The key and _id never change."""
    cur = conn.execute(
        "UPDATE metric_groups SET name = ?, kind = ?, description = ?, maintainer_id = ?, tags = ?, metrics = ?, "
        "version = ?, modified_ms = ?, search_text = ? WHERE project_id = ? AND key = ? AND version = ?",
        (group.name, group.kind, group.description, group.maintainer_id, json.dumps(list(group.tags)),
         _metrics_json(group.metrics), group.version, group.modified_ms, search_text(group.key, group.name),
         project_id, group.key, expected_version))
    return cur.rowcount == 1


def delete_group(conn: sqlite3.Connection, project_id: int, key: str) -> bool:
    return conn.execute("DELETE FROM metric_groups WHERE project_id = ? AND key = ?",
                        (project_id, key)).rowcount == 1
