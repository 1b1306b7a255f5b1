"""What changed, when and where: the statistics, direction, onset and movers of metrics/characterize.

Pure: the caller (characterize.py) loads the aggregate's and every breakdown value's bucket values; this
module decides (posthog-metrics.md, "POST metrics/characterize" steps 4–7 and "Characterize, second
generation"; the reasoning is in docs/characterize.md):

- the reference's statistics on the aggregate (means, stddev, peak, change ratio) and its onset, kept
  as `reference_onset_time`;
- significance: a series changed significantly when its level moved by at least 5% and by at least
  `z_threshold` standard errors of its own baseline noise (`changepoint.measure_shift`);
- `direction`: the aggregate's when it changed significantly, else the strongest significant breakdown
  value's (`direction_source`), else — for a one- or two-bucket excursion that moves the aggregate's raw
  mean significantly — the aggregate's again, else `flat`;
- the onset: the change model (`changepoint.fit_change`) fitted on the series where the change is most
  evident (highest z among the aggregate and the significant movers in that direction);
- movers ranked significant first, then by the reference's magnitude (`rank_movers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from otelite.api.posthog.metrics.changepoint import Shift, fit_change, measure_shift, threshold_onset

REL_TOL, ABS_TOL = 0.05, 1e-12  # spec step 5: "close" means
FAMILY_ERROR = 0.01  # chance that some series of a pure-noise request is called significant
MIN_Z = 3.0


@dataclass(frozen=True)
class Windows:
    """One series' bucket values: baseline and anomaly windows, in time order, nulls left out."""
    baseline: np.ndarray
    anomaly: np.ndarray
    anomaly_times: np.ndarray  # the start of each anomaly bucket (what onsets are reported in)


@dataclass(frozen=True)
class Group:
    """One breakdown value: the series whose label `key` is `label`, aggregated like the whole metric."""
    key: str
    label: str
    windows: Windows


@dataclass(frozen=True)
class Mover:
    key: str
    label: str
    baseline_value: float  # plain means, as the reference
    anomaly_value: float
    change_ratio: float
    magnitude: float  # the reference's: |ln ratio| · max(|a|, |b|), or |a − b|
    significance: float  # z of the shift against the value's own baseline noise
    significant: bool
    sign: int  # +1 up, −1 down (of the despiked means)


@dataclass
class Diagnosis:
    baseline_mean: float
    baseline_stddev: float
    anomaly_mean: float
    anomaly_peak: float
    change_ratio: float
    direction: str  # "up" | "down" | "flat"
    direction_source: str  # "aggregate" | "breakdown"
    significance: float  # the aggregate's z
    onset_time: int | None = None
    onset_model: str | None = None  # "level_shift" | "ramp" | "transient" | "threshold"
    onset_confidence: float | None = None
    onset_series: tuple[str, str] | None = None  # (key, label) of the breakdown value, None: the aggregate
    reference_onset_time: int | None = None
    movers: list[Mover] = field(default_factory=list)  # all of them, ranked


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def ratio(anomaly: float, baseline: float) -> float:
    return anomaly / baseline if baseline != 0 else anomaly


def magnitude(anomaly: float, baseline: float) -> float:
    """Spec step 7: |anomaly − baseline| when the baseline is 0 or the ratio ≤ 0, else |ln ratio| · max."""
    r = ratio(anomaly, baseline)
    if baseline == 0 or r <= 0:
        return abs(anomaly - baseline)
    return abs(math.log(r)) * max(abs(anomaly), abs(baseline))


def z_threshold(series_tested: int) -> float:
    """The z a shift needs to be significant when `series_tested` series are looked at: a two-sided
    Bonferroni bound for a family error of 1% (3.4 for 13 series, 4.1 for 201), and at least 3."""
    return max(MIN_Z, NormalDist().inv_cdf(1 - FAMILY_ERROR / (2 * max(series_tested, 1))))


def is_significant(shift: Shift, threshold: float) -> bool:
    return shift.z >= threshold and not close(shift.after, shift.before)


def rank_movers(movers: Sequence[Mover]) -> list[Mover]:
    """Significant values first (a small series that tripled is not outranked by a large one that wobbled),
    then by magnitude, then key and label (the reference's order within each tier)."""
    return sorted(movers, key=lambda m: (not m.significant, -m.magnitude, m.key, m.label))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def diagnose(aggregate: Windows, groups: Sequence[Group]) -> Diagnosis:
    base, anom = aggregate.baseline, aggregate.anomaly
    # Spec step 4 on the aggregate.
    baseline_mean, anomaly_mean = _mean(base), _mean(anom)
    baseline_std = float(base.std()) if base.size >= 2 else 0.0
    d = Diagnosis(baseline_mean=baseline_mean, baseline_stddev=baseline_std, anomaly_mean=anomaly_mean,
                  anomaly_peak=float(anom.max()) if anom.size else 0.0,
                  change_ratio=ratio(anomaly_mean, baseline_mean),
                  direction="flat", direction_source="aggregate", significance=0.0)
    # Spec steps 5–6 as the reference answers them: kept as reference_onset_time.
    reference_sign = 0 if close(anomaly_mean, baseline_mean) else (1 if anomaly_mean > baseline_mean else -1)
    if reference_sign:
        i = threshold_onset(anom, baseline_mean, baseline_std, reference_sign)
        d.reference_onset_time = None if i is None else int(aggregate.anomaly_times[i])

    threshold = z_threshold(1 + len(groups))
    agg_shift = measure_shift(base, anom)
    d.significance = agg_shift.z
    shifts = {(g.key, g.label): (measure_shift(g.windows.baseline, g.windows.anomaly), g.windows) for g in groups
              if not close(_mean(g.windows.anomaly), _mean(g.windows.baseline))}  # step 7: close → no mover
    d.movers = rank_movers([_mover(key, label, w, shift, threshold) for (key, label), (shift, w) in shifts.items()])

    # Direction: the aggregate's when it moved significantly, else the strongest breakdown value's.
    strongest = next((m for m in d.movers if m.significant), None)
    aggregate_moved = is_significant(agg_shift, threshold)
    if aggregate_moved:
        sign = agg_shift.sign
    elif strongest is not None:
        sign, d.direction_source = strongest.sign, "breakdown"
    elif reference_sign and agg_shift.z_raw >= threshold:
        sign = reference_sign  # a spike of one or two buckets that moved the mean: the reference's answer
    else:
        return d
    d.direction = "up" if sign > 0 else "down"

    # Onset: a change model on the series where the change is most evident (the highest z among the
    # aggregate and the significant movers in that direction; the aggregate on a tie).
    candidates = [(agg_shift.z, None, agg_shift, aggregate)] if aggregate_moved else []
    candidates += [(m.significance, (m.key, m.label), *shifts[(m.key, m.label)]) for m in d.movers
                   if m.significant and m.sign == sign]
    if not candidates:  # the spike case above: the reference's onset
        d.onset_time = d.reference_onset_time
        d.onset_model = "threshold" if d.reference_onset_time is not None else None
        return d
    _, d.onset_series, shift, w = max(candidates, key=lambda c: c[0])
    fit = fit_change(w.baseline, w.anomaly, sign, shift.noise)
    if fit is not None and fit.model != "none":
        d.onset_time, d.onset_model, d.onset_confidence = int(w.anomaly_times[fit.start]), fit.model, fit.confidence
        return d
    std = float(w.baseline.std()) if w.baseline.size >= 2 else 0.0
    i = threshold_onset(w.anomaly, _mean(w.baseline), std, sign)
    if i is not None:
        d.onset_time, d.onset_model = int(w.anomaly_times[i]), "threshold"
    return d


def _mover(key: str, label: str, w: Windows, shift: Shift, threshold: float) -> Mover:
    b, a = _mean(w.baseline), _mean(w.anomaly)
    return Mover(key, label, b, a, ratio(a, b), magnitude(a, b), shift.z, is_significant(shift, threshold),
                 shift.sign)
