"""Rows written straight into a real store through its writer, in the shapes collector/store/metrics.py
documents: what a dialect that keeps raw observations (Flux distributions and sets) writes, and OTel
series with exact start times. Shared by the engine and store-reader tests."""

from __future__ import annotations

import json

from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.exporters.sqlite.config import SqliteExporterConfig
from otelite.collector.normalize.otlp import fingerprint
from otelite.collector.store.records import WriteBatch
from otelite.collector.store.store import Store

CUMULATIVE, DELTA = 2, 1


def open_store(tmp_path, name: str = "engine.db", **overrides) -> Store:
    """A store with metric retention off: the tests' fixed timestamps lie months back, and points older
    than the retention are expired (never read) from the moment they arrive."""
    cfg = SqliteExporterConfig(path=str(tmp_path / name))
    cfg.retention.metrics = 0
    for k, v in overrides.items():
        setattr(cfg, k, v)
    store = Store(cfg, BatchProcessorConfig())
    store.start()
    return store


def batch(project_id: int, name: str, metric_type: str, points: list[tuple], *, temporality: int = 0,
          monotonic: bool = False, unit: str = "", description: str = "",
          resource: dict | None = None) -> WriteBatch:
    """points: (time_ns, value, tags) or (time_ns, value, tags, start_ns); for histograms `value` is
    (bounds, counts) or (bounds, counts, sum of the observations; default the sum of the counts). One series per distinct tags, as the OTLP walk does."""
    resource = {"service.name": "rows"} if resource is None else resource
    b = WriteBatch()
    r_json = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    rid = fingerprint(project_id, r_json, 0, "")
    b.resources[rid] = (rid, project_id, r_json, 0, "", resource.get("service.name", ""), None, None)
    sid = fingerprint(project_id, "scope", "", "{}", 0, "")
    b.scopes[sid] = (sid, project_id, "scope", "", "{}", 0, "")
    for t, value, tags, *start in points:
        a_json = json.dumps(tags, sort_keys=True, separators=(",", ":"))
        series_id = fingerprint(project_id, name, metric_type, rid, sid, a_json)
        if series_id not in b.series:
            b.series[series_id] = (series_id, project_id, name, metric_type, unit, description, temporality,
                                   int(monotonic), rid, sid, a_json, t, t)
        begin = start[0] if start else 0
        if metric_type == "histogram":  # (bounds, counts) or (bounds, counts, sum of the observations)
            bounds, counts, *total = value
            b.points.append((project_id, series_id, begin, t, None, sum(counts),
                             float(total[0] if total else sum(counts)), None, None, 0,
                             json.dumps({"bounds": bounds, "counts": counts}), None))
        else:
            b.points.append((project_id, series_id, begin, t, value, None, None, None, None, 0, None, None))
    return b


def write(store: Store, *batches: WriteBatch) -> None:
    for b in batches:
        store.writer.submit(b).result(timeout=10)
