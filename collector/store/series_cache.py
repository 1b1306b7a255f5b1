"""What the writer needs to know of each series a commit's points name, kept between commits.

Points carry only their series id; putting them in chunks needs the series' metric (appender.py) and
keeping its state needs its type and temporality (series_state.py). A batch carries the rows of the series
it uses (records.WriteBatch.series), or, for stored series a decode worker left the rows of out, their
temporalities (records.SeriesLeftOut); series written by earlier commits are looked up once.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

if TYPE_CHECKING:
    from otelite.collector.store.records import SeriesLeftOut


class SeriesInfo(NamedTuple):
    project_id: int
    name: str
    type: str
    temporality: int
    metric: int  # a number for (project_id, name, type), the same for every series of the metric (appender.py)


class SeriesCache:
    """series id → SeriesInfo. Never stale: what it holds is part of the series' fingerprint, except the
    temporality, which every batch carrying the series refreshes."""

    def __init__(self, max_ids: int = 1_000_000) -> None:
        self.max_ids = max_ids
        self._info: dict[int, SeriesInfo] = {}
        self._metrics: dict[tuple, int] = {}  # (project_id, name, type) → SeriesInfo.metric

    def _new(self, project_id: int, name: str, metric_type: str, temporality: int) -> SeriesInfo:
        metrics = self._metrics
        key = (project_id, name, metric_type)
        metric = metrics.get(key)
        if metric is None:
            metrics[key] = metric = len(metrics)
        return SeriesInfo(project_id, name, metric_type, temporality, metric)

    def _bounded(self) -> dict[int, SeriesInfo]:
        """The cache, emptied first once it holds more than max_ids series."""
        if len(self._info) > self.max_ids:
            self._info.clear()
            self._metrics.clear()
        return self._info

    def update(self, series: dict[int, tuple]) -> dict[int, SeriesInfo]:
        """The cache, holding `series` (SERIES_COLUMNS rows by id). A point may name a series its batch
        has no row for: `fetch` those."""
        info = self._bounded()
        get = info.get
        for sid, row in series.items():  # SERIES_COLUMNS: project_id 1, name 2, type 3, temporality 6
            known = get(sid)
            if known is None or known[3] != row[6]:  # (a new tuple per series and commit cost 3 µs a point)
                info[sid] = self._new(row[1], row[2], row[3], row[6])
        return info

    def fetch(self, conn: sqlite3.Connection, ids: Iterable[int]) -> None:
        """Add those of `ids` the database has (a point whose series row is missing stays missing: the
        caller decides)."""
        info = self._info
        for sid, *rest in _select(conn, "id, project_id, name, type, temporality", set(ids).difference(info)):
            info[sid] = self._new(*rest)

    def refresh(self, conn: sqlite3.Connection, left_out: "SeriesLeftOut") -> None:
        """Hold the series of a batch's `left_out` (records.SeriesLeftOut: stored series, their rows left
        out) with the temporality the batch gives them, as `update` does for the rows a batch has."""
        ids = left_out.ids.tolist()
        info = self._bounded()
        self.fetch(conn, ids)  # (only those it lacks: none, nearly always)
        get = info.get
        for sid, temporality in zip(ids, left_out.temporalities):
            known = get(sid)
            if known is not None and known[3] != temporality:
                info[sid] = known._replace(temporality=temporality)


def stored_series(conn: sqlite3.Connection, ids: Iterable[int]) -> set[int]:
    """Those of `ids` that have a row in metric_series."""
    return {sid for sid, in _select(conn, "id", set(ids))}


def _select(conn: sqlite3.Connection, columns: str, ids: set[int]) -> Iterator[tuple]:
    """metric_series `columns` of the series in `ids` (500 a statement: SQLite's limit on parameters)."""
    ids_list = list(ids)
    for i in range(0, len(ids_list), 500):
        part = ids_list[i:i + 500]
        yield from conn.execute(f"SELECT {columns} FROM metric_series WHERE id IN ({','.join('?' * len(part))})",
                                part)
