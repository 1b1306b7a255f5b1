"""What the writer needs to know of each series a commit's points name, kept between commits.

Points carry only their series id; putting them in chunks needs the series' metric (appender.py) and
keeping its state needs its type and temporality (series_state.py). A batch carries the rows of the series
it uses (records.WriteBatch.series); series written by earlier commits are looked up once.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable, NamedTuple


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

    def update(self, series: dict[int, tuple]) -> dict[int, SeriesInfo]:
        """The cache, holding `series` (SERIES_COLUMNS rows by id). A point may name a series its batch
        has no row for: `fetch` those."""
        info = self._info
        if len(info) > self.max_ids:
            info.clear()
            self._metrics.clear()
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
        missing = list(set(ids).difference(info))
        for i in range(0, len(missing), 500):
            part = missing[i:i + 500]
            for sid, *rest in conn.execute(
                    f"SELECT id, project_id, name, type, temporality FROM metric_series "
                    f"WHERE id IN ({','.join('?' * len(part))})", part):
                info[sid] = self._new(*rest)
