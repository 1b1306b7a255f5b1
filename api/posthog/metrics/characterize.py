"""POST metrics/characterize: compare an anomaly window with a baseline, find the onset, rank movers.

The reference algorithm of posthog-metrics.md is followed step by step (defaults, interval, windows,
means, direction, top movers). The onset is where it differs; see docs/characterize.md. In short: the
reference takes the first anomaly bucket whose deviation exceeds max(3σ, ½|μ|), so one noise spike
early in the window becomes the onset. Here the onset is the start of the anomaly-window segment that
best explains the shift as a sustained change: over deviations e_i = ±(x_i − median(baseline)), the
segment [k, l) maximizing S²/(l − k) with S = Σ e_i > 0 (the likelihood-ratio scan statistic for a
mean shift in Gaussian noise). A lone spike scores (height)², a shift lasting L buckets L·(height)², so
the sustained change wins; on a clean step the score is maximal exactly at the step. The segment must
also be significant (mean > 3·σ_robust/√L); the reference's onset is returned too, as
`reference_onset_time`.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import numpy as np

from otelite.api.posthog.metrics.intervals import approx_buckets, auto_interval, coarser
from otelite.api.posthog.metrics.query import check_aggregation, combine, groups_for, prepare
from otelite.api.posthog.metrics.request import CharacterizeQuery, Clause
from otelite.collector.store.metrics import SERVICE_NAME, SeriesSelection, select_series, series_labels
from otelite.collector.store.points import PointCache
from otelite.collector.times import iso, zone

DEFAULT_AGGREGATION = {"sum": "rate", "gauge": "avg", "histogram": "histogram_quantile",
                       "exponential_histogram": "p95", "summary": "avg"}
MAX_BUCKETS = 2000
MAX_KEYS = 4
MAX_VALUES = 50
MAX_MOVERS = 8
REL_TOL, ABS_TOL = 0.05, 1e-12


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def _ratio(anomaly: float, baseline: float) -> float:
    return anomaly / baseline if baseline != 0 else anomaly


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def reference_onset(anomaly: np.ndarray, times: np.ndarray, mean: float, std: float, sign: int) -> int | None:
    """Spec step 6: the first anomaly bucket whose deviation exceeds max(3σ, ½|μ|, 1e-9)."""
    threshold = max(3 * std, 0.5 * abs(mean), 1e-9)
    hit = np.flatnonzero(sign * (anomaly - mean) > threshold)
    return int(times[hit[0]]) if hit.size else None


def median_filter(x: np.ndarray) -> np.ndarray:
    """Running median over 5 buckets (3 for short series; edges repeated): removes spikes of one or two
    buckets and keeps the position of a step that lasts three buckets or more exactly."""
    width = 5 if x.size >= 10 else 3 if x.size >= 3 else 1
    if width == 1:
        return x
    padded = np.pad(x, width // 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def scan_onset(baseline: np.ndarray, anomaly: np.ndarray, times: np.ndarray, sign: int) -> int | None:
    """The start of the anomaly segment [k, l) maximizing S²/(l−k), S = Σ sign·(x − median(baseline)) > 0,
    if that segment's mean deviation is significant against the baseline's robust noise."""
    n = anomaly.size
    if n == 0:
        return None
    level = float(np.median(baseline)) if baseline.size else 0.0
    if baseline.size >= 2:
        noise = 1.4826 * float(np.median(np.abs(baseline - level)))
        if noise == 0:
            noise = float(baseline.std())
    else:
        noise = 0.0
    e = sign * (median_filter(anomaly) - level)
    prefix = np.concatenate(([0.0], np.cumsum(e)))
    k = np.arange(n)[:, None]
    ln = np.arange(1, n + 1)[None, :]
    length = ln - k
    s = prefix[ln] - prefix[k]
    with np.errstate(all="ignore"):
        score = np.where((length > 0) & (s > 0), s * s / length, -np.inf)
    best = np.unravel_index(int(np.argmax(score)), score.shape)
    if not np.isfinite(score[best]):
        return None
    start, size = int(best[0]), int(length[best])
    mean_shift = float(s[best]) / size
    if mean_shift <= max(3 * noise / math.sqrt(size), 1e-9):
        return None
    return int(times[start])


def characterize(conn: sqlite3.Connection, project_id: int, timezone: str, cq: CharacterizeQuery,
                 cache: PointCache) -> dict:
    tz = zone(timezone)
    metric = select_series(conn, SeriesSelection(project_id, cq.metric_name, cq.metric_type))
    # Step 1: the aggregation by metric type (unknown metric → avg).
    aggregation = cq.aggregation or DEFAULT_AGGREGATION.get(metric.type or "", "avg")
    quantile = cq.quantile if cq.quantile is not None else (0.95 if aggregation == "histogram_quantile" else None)
    clause = Clause("anomaly", cq.metric_name, aggregation, quantile, metric.type, cq.filters, [])
    check_aggregation(clause, metric.type)
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
        _, b, v = combine(prepared.cells, whole, aggregation, clause.q, prepared.nb)
    else:
        b, v = np.zeros(0, np.int64), np.zeros(0)
    ok = np.isfinite(v)
    base_vals = v[ok & in_baseline[b]]
    anom_idx = np.flatnonzero(ok & in_anomaly[b])
    anom_vals, anom_times = v[anom_idx], starts[b[anom_idx]]

    # Step 4: summary statistics.
    baseline_mean, anomaly_mean = _mean(base_vals), _mean(anom_vals)
    baseline_std = float(base_vals.std()) if base_vals.size >= 2 else 0.0
    anomaly_peak = float(anom_vals.max()) if anom_vals.size else 0.0
    # Step 5: direction.
    direction = "flat" if close(anomaly_mean, baseline_mean) else ("up" if anomaly_mean > baseline_mean else "down")
    # Step 6: onset (sturdier than the reference; the reference's answer is reported alongside).
    onset = reference = None
    if direction != "flat":
        sign = 1 if direction == "up" else -1
        reference = reference_onset(anom_vals, anom_times, baseline_mean, baseline_std, sign)
        onset = scan_onset(base_vals, anom_vals, anom_times, sign)
        if onset is None:
            onset = reference
    out.update({
        "baseline_mean": baseline_mean, "baseline_stddev": baseline_std, "anomaly_mean": anomaly_mean,
        "anomaly_peak": anomaly_peak, "change_ratio": _ratio(anomaly_mean, baseline_mean),
        "direction": direction,
        "onset_time": iso(onset, tz) if onset is not None else None,
        # Extra fields (clients ignore unknown keys): the reference's onset, and a change that keeps its
        # sign when the baseline mean is negative (change_ratio does not).
        "reference_onset_time": iso(reference, tz) if reference is not None else None,
        "absolute_change": anomaly_mean - baseline_mean,
        "relative_change": (anomaly_mean - baseline_mean) / abs(baseline_mean) if baseline_mean != 0 else None,
    })
    # Step 7: top movers.
    out["top_movers"] = _movers(conn, project_id, prepared, cq, in_baseline, in_anomaly, aggregation, clause.q) \
        if prepared.cells is not None else []
    # Step 8: the aggregated series.
    order = np.argsort(b, kind="stable")
    out["series"] = {"labels": {}, "points": [
        {"time": iso(int(starts[bi]), tz), "value": float(vi) if math.isfinite(vi) else None}
        for bi, vi in zip(b[order].tolist(), v[order].tolist())],
        "metric_name": cq.metric_name, "clause": "anomaly"}
    return _clean(out)


def candidate_keys(conn: sqlite3.Connection, prepared, anomaly_from_ns: int) -> list[str]:
    """service_name first, then the most common label keys of the series reporting in the anomaly window.
    Keys with a single value there are skipped (they cannot tell values apart: a deviation from the
    reference, which would spend slots on e.g. telemetry.sdk.language)."""
    active = np.unique(prepared.point_sidx[prepared.point_times >= anomaly_from_ns])
    ids = prepared.series.ids[active].tolist()
    labels = series_labels(conn, ids)
    counts: Counter = Counter()
    values: dict[str, set] = {}
    for lab in labels.values():
        for k, v in lab.items():
            counts[k] += 1
            values.setdefault(k, set()).add(v)
    keys = [SERVICE_NAME] if SERVICE_NAME in counts else []
    others = sorted((k for k in counts if k not in (SERVICE_NAME, "service.name") and len(values[k]) > 1),
                    key=lambda k: (-counts[k], k))
    return (keys + others)[:MAX_KEYS]


def _movers(conn, project_id, prepared, cq: CharacterizeQuery, in_baseline: np.ndarray, in_anomaly: np.ndarray,
            aggregation: str, q: float | None) -> list[dict]:
    keys = cq.candidate_keys if cq.candidate_keys is not None else candidate_keys(conn, prepared, cq.anomaly_from_ns)
    movers = []
    for key in keys[:MAX_KEYS]:
        group, labels = groups_for(conn, project_id, prepared.series, [(key, "auto")], limit=MAX_VALUES)
        if all(lab[key] == "" for lab in labels):
            continue  # no series has the key: its one group would only repeat the whole metric
        g, b, v = combine(prepared.cells, group, aggregation, q, prepared.nb)
        ok = np.isfinite(v)
        n = len(labels)
        sel_b, sel_a = ok & in_baseline[b], ok & in_anomaly[b]
        b_sum = np.bincount(g[sel_b], weights=v[sel_b], minlength=n)
        b_cnt = np.bincount(g[sel_b], minlength=n)
        a_sum = np.bincount(g[sel_a], weights=v[sel_a], minlength=n)
        a_cnt = np.bincount(g[sel_a], minlength=n)
        for i in range(n):
            base = float(b_sum[i] / b_cnt[i]) if b_cnt[i] else 0.0
            anom = float(a_sum[i] / a_cnt[i]) if a_cnt[i] else 0.0
            if close(anom, base):
                continue
            ratio = _ratio(anom, base)
            if base == 0 or ratio <= 0:
                magnitude = abs(anom - base)
            else:
                magnitude = abs(math.log(ratio)) * max(abs(anom), abs(base))
            movers.append((magnitude, key, labels[i][key], base, anom, ratio))
    movers.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [{"key": k, "label": lab, "baseline_value": base, "anomaly_value": anom, "change_ratio": ratio}
            for _, k, lab, base, anom, ratio in movers[:MAX_MOVERS]]


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
