"""POST metrics/characterize: compare an anomaly window with a baseline, find the onset, rank movers.

This module loads the data as the reference algorithm of posthog-metrics.md says (defaults, interval,
one query over both windows, the aggregate and each candidate key's values grouped like the metric)
and shapes the response; what changed, when and where is decided by the pure `diagnosis` module (the
reference's statistics, then per-breakdown significance, a change model for the onset, and
significance-aware movers: "Characterize, second generation"; docs/characterize.md). The reference's own
onset is returned too, as `reference_onset_time`.
"""

from __future__ import annotations

import math
import sqlite3

import numpy as np

from otelite.api.posthog.metrics.intervals import approx_buckets, auto_interval, coarser
from otelite.api.posthog.metrics.query import check_aggregation, combine, prepare
from otelite.api.posthog.metrics.diagnosis import Group, Windows, diagnose
from otelite.api.posthog.metrics.request import CharacterizeQuery, Clause
from otelite.collector.query.engine import group_index
from otelite.collector.store.metrics import SERVICE_NAME, SeriesLabels, metric_type, read_series_labels
from otelite.collector.store.points import PointCache
from otelite.collector.times import iso, zone

DEFAULT_AGGREGATION = {"sum": "rate", "gauge": "avg", "histogram": "histogram_quantile",
                       "exponential_histogram": "p95", "summary": "avg"}
MAX_BUCKETS = 2000
MAX_KEYS = 4
MAX_VALUES = 50
MAX_MOVERS = 8


def characterize(conn: sqlite3.Connection, project_id: int, timezone: str, cq: CharacterizeQuery,
                 cache: PointCache) -> dict:
    tz = zone(timezone)
    # The type only (prepare selects the series): the one asked for, else the latest of the name.
    mtype = cq.metric_type if cq.metric_type is not None else metric_type(conn, project_id, cq.metric_name)
    # Step 1: the aggregation by metric type (unknown metric → avg).
    aggregation = cq.aggregation or DEFAULT_AGGREGATION.get(mtype or "", "avg")
    quantile = cq.quantile if cq.quantile is not None else (0.95 if aggregation == "histogram_quantile" else None)
    clause = Clause("anomaly", cq.metric_name, aggregation, quantile, mtype, cq.filters, [])
    check_aggregation(clause, mtype)
    # Step 2: about 60 buckets over the anomaly window, coarser while the whole span exceeds 2,000.
    interval = auto_interval(cq.anomaly_to_ns - cq.anomaly_from_ns)
    while approx_buckets(cq.baseline_from_ns, cq.anomaly_to_ns, interval) - 1 > MAX_BUCKETS and coarser(interval):
        interval = coarser(interval)
    # Step 3: one query over [baselineFrom, anomalyTo).
    prepared = prepare(conn, cache, project_id, clause, cq.baseline_from_ns, cq.anomaly_to_ns, interval, tz,
                       keep_points=True)
    edges = prepared.edges
    out = {
        "metric_name": cq.metric_name, "aggregation": aggregation, "interval": interval,
        "baseline_from": iso(cq.baseline_from_ns, tz), "baseline_to": iso(cq.baseline_to_ns, tz),
        "anomaly_from": iso(cq.anomaly_from_ns, tz), "anomaly_to": iso(cq.anomaly_to_ns, tz),
    }
    starts = edges[:-1]
    in_baseline = (starts >= cq.baseline_from_ns) & (starts < cq.baseline_to_ns)
    in_anomaly = starts >= cq.anomaly_from_ns

    if prepared.cells is not None:
        whole = np.zeros(len(prepared.series), np.int64)
        _, b, v = combine(prepared.cells, whole, aggregation, clause.q, prepared.nb, prepared.series.type)
        groups = _groups(conn, project_id, prepared, cq, starts, in_baseline, in_anomaly, aggregation, clause.q)
    else:
        b, v, groups = np.zeros(0, np.int64), np.zeros(0), []
    order = np.argsort(b, kind="stable")
    b, v = b[order], v[order]
    # Steps 3–7: the statistics, direction, onset and movers (diagnosis.py).
    d = diagnose(_windows(b, v, starts, in_baseline, in_anomaly), groups)
    out.update({
        "baseline_mean": d.baseline_mean, "baseline_stddev": d.baseline_stddev, "anomaly_mean": d.anomaly_mean,
        "anomaly_peak": d.anomaly_peak, "change_ratio": d.change_ratio, "direction": d.direction,
        "onset_time": iso(d.onset_time, tz) if d.onset_time is not None else None,
        # Extra fields (clients ignore unknown keys). Where the direction and the onset come from:
        "direction_source": d.direction_source, "significance": d.significance,
        "onset_model": d.onset_model, "onset_confidence": d.onset_confidence,
        "onset_series": {"key": d.onset_series[0], "label": d.onset_series[1]} if d.onset_series else None,
        # The reference's onset, and a change that keeps its sign when the baseline mean is negative
        # (change_ratio does not).
        "reference_onset_time": iso(d.reference_onset_time, tz) if d.reference_onset_time is not None else None,
        "absolute_change": d.anomaly_mean - d.baseline_mean,
        "relative_change": (d.anomaly_mean - d.baseline_mean) / abs(d.baseline_mean) if d.baseline_mean != 0 else None,
    })
    out["top_movers"] = [{"key": m.key, "label": m.label, "baseline_value": m.baseline_value,
                          "anomaly_value": m.anomaly_value, "change_ratio": m.change_ratio,
                          "magnitude": m.magnitude, "significance": m.significance, "significant": m.significant}
                         for m in d.movers[:MAX_MOVERS]]
    # Step 8: the aggregated series.
    out["series"] = {"labels": {}, "points": [
        {"time": iso(int(starts[bi]), tz), "value": float(vi) if math.isfinite(vi) else None}
        for bi, vi in zip(b.tolist(), v.tolist())],
        "metric_name": cq.metric_name, "clause": "anomaly"}
    return _clean(out)


def _windows(b: np.ndarray, v: np.ndarray, starts: np.ndarray, in_baseline: np.ndarray,
             in_anomaly: np.ndarray) -> Windows:
    """One series' (bucket, value) pairs, sorted by bucket, as its baseline and anomaly values (step 3:
    buckets in a gap between the windows count in neither; nulls are skipped)."""
    ok = np.isfinite(v)
    base = ok & in_baseline[b]
    anom = ok & in_anomaly[b]
    return Windows(v[base], v[anom], starts[b[anom]])


def candidate_keys(labels: SeriesLabels, prepared, anomaly_from_ns: int) -> list[str]:
    """service_name first, then the most common label keys of the series reporting in the anomaly window.
    Keys with a single value there are skipped (they cannot tell values apart: a deviation from the
    reference, which would spend slots on e.g. telemetry.sdk.language)."""
    active = np.zeros(len(prepared.series), bool)
    active[prepared.point_sidx[prepared.point_times >= anomaly_from_ns]] = True
    counts = labels.key_counts(active)
    keys = [SERVICE_NAME] if any(c.key == SERVICE_NAME for c in counts) else []
    others = sorted((c for c in counts if c.key not in (SERVICE_NAME, "service.name") and c.values > 1),
                    key=lambda c: (-c.series, c.key))
    return (keys + [c.key for c in others])[:MAX_KEYS]


def _groups(conn, project_id, prepared, cq: CharacterizeQuery, starts: np.ndarray, in_baseline: np.ndarray,
            in_anomaly: np.ndarray, aggregation: str, q: float | None) -> list[Group]:
    """Step 7's breakdown: for each key of `candidateKeys` (at most 4) or the automatic ones, the series
    grouped by the key's value (the 50 values held by the most series), each group aggregated like the
    whole metric."""
    # One read of the series' labels serves the choice of keys and every key's groups.
    given = cq.candidate_keys[:MAX_KEYS] if cq.candidate_keys is not None else None
    labels_read = read_series_labels(conn, prepared.series, given)
    keys = given if given is not None else candidate_keys(labels_read, prepared, cq.anomaly_from_ns)
    out = []
    for key in keys[:MAX_KEYS]:
        group, labels = group_index(conn, prepared.series, [(key, "auto")], MAX_VALUES, labels_read)
        if all(lab[key] == "" for lab in labels):
            continue  # no series has the key: its one group would only repeat the whole metric
        g, b, v = combine(prepared.cells, group, aggregation, q, prepared.nb, prepared.series.type)
        order = np.lexsort((b, g))
        g, b, v = g[order], b[order], v[order]
        bounds = np.searchsorted(g, np.arange(len(labels) + 1))
        for i, lab in enumerate(labels):
            lo, hi = bounds[i], bounds[i + 1]
            out.append(Group(key, lab[key], _windows(b[lo:hi], v[lo:hi], starts, in_baseline, in_anomaly)))
    return out


def _clean(out: dict) -> dict:
    """JSON has no NaN/Infinity: such numbers become null."""
    for k, v in out.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
    for m in out.get("top_movers", []):
        for k, v in m.items():
            if isinstance(v, float) and not math.isfinite(v):
                m[k] = None
    return out
