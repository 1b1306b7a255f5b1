"""Which series a clause reads, and their labels (store.md, "Series identity").

Series are found by (project, name[, type]) on metric_series; labels come from metric_series_labels one
key at a time, so filters and group-by never touch points. The label of a series for a key, per scope:
`attribute` → the point attribute, `resource` → the resource attribute, `auto` → the point attribute if
the series has one, else the resource attribute. `service_name` also reads the resource's
`service.name` when no label is literally called that (the name PostHog uses).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import numpy as np

from otelite.api.metrics_query.request import Filter

SERVICE_NAME = "service_name"


@dataclass
class SeriesSet:
    name: str
    type: str | None  # None: no such metric
    ids: np.ndarray  # int64, sorted
    temporality: np.ndarray  # int8: 1 delta, 2 cumulative, 0 unspecified (gauges)
    monotonic: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, mask: np.ndarray) -> "SeriesSet":
        return SeriesSet(self.name, self.type, self.ids[mask], self.temporality[mask], self.monotonic[mask])


def find_series(conn: sqlite3.Connection, project_id: int, name: str, metric_type: str | None) -> SeriesSet:
    """The series of metric `name`. Without `metric_type`, a name used with several types means the type
    seen most recently (mixing a gauge with a histogram has no meaning)."""
    sql = "SELECT id, type, temporality, is_monotonic, last_seen_ns FROM metric_series WHERE project_id = ? AND name = ?"
    args: tuple = (project_id, name)
    if metric_type is not None:
        sql += " AND type = ?"
        args += (metric_type,)
    rows = conn.execute(sql, args).fetchall()
    if not rows:
        return SeriesSet(name, metric_type, np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, bool))
    if metric_type is None:
        metric_type = max(rows, key=lambda r: (r[4], r[1]))[1]
        rows = [r for r in rows if r[1] == metric_type]
    rows.sort()
    ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    temporality = np.fromiter((r[2] for r in rows), np.int8, len(rows))
    monotonic = np.fromiter((bool(r[3]) for r in rows), bool, len(rows))
    return SeriesSet(name, metric_type, ids, temporality, monotonic)


def label_values(conn: sqlite3.Connection, project_id: int, series: SeriesSet, key: str,
                 scope: str = "auto") -> list[str | None]:
    """Each series' label for `key` under `scope` (None when it has none)."""
    point: dict[int, str] = {}
    resource: dict[int, str] = {}
    keys = [key] + (["service.name"] if key == SERVICE_NAME else [])
    for k in keys:
        for sid, value, source in conn.execute(
                "SELECT series_id, value, source FROM metric_series_labels WHERE project_id = ? AND key = ?",
                (project_id, k)):
            target = point if source == "point" else resource
            if k == key or sid not in target:
                target[sid] = value
    out: list[str | None] = []
    for sid in series.ids.tolist():
        if scope == "attribute":
            out.append(point.get(sid))
        elif scope == "resource":
            out.append(resource.get(sid))
        else:
            value = point.get(sid)
            out.append(value if value is not None else resource.get(sid))
    return out


def filter_mask(conn: sqlite3.Connection, project_id: int, series: SeriesSet, filters: list[Filter]) -> np.ndarray:
    """AND of the filters over the series. A series without the key has the label "" (as in PostHog)."""
    mask = np.ones(len(series), dtype=bool)
    for f in filters:
        if not mask.any():
            break
        values = label_values(conn, project_id, series, f.key, f.scope)
        if f.op in ("eq", "neq"):
            wanted = set(f.values)
            hit = np.fromiter(((v if v is not None else "") in wanted for v in values), bool, len(values))
            mask &= hit if f.op == "eq" else ~hit
        else:
            search = f.pattern.search
            hit = np.fromiter((search(v if v is not None else "") is not None for v in values), bool, len(values))
            mask &= hit if f.op == "regex" else ~hit
    return mask


def series_labels(conn: sqlite3.Connection, series_ids: list[int]) -> dict[int, dict[str, str]]:
    """All labels (auto scope: point attributes win) of the given series; `service_name` added from the
    resource's service.name."""
    out: dict[int, dict[str, str]] = {sid: {} for sid in series_ids}
    if not series_ids:
        return out
    resource: dict[int, dict[str, str]] = {sid: {} for sid in series_ids}
    ids = ",".join(str(int(s)) for s in series_ids)
    for sid, key, value, source in conn.execute(
            f"SELECT series_id, key, value, source FROM metric_series_labels WHERE series_id IN ({ids})"):
        (out if source == "point" else resource)[sid][key] = value
    for sid, res in resource.items():
        labels = out[sid]
        for key, value in res.items():
            labels.setdefault(key, value)
        if "service.name" in res:
            labels.setdefault(SERVICE_NAME, res["service.name"])
    return out
