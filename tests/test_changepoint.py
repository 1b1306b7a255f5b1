"""The pure characterize math: change models (api/posthog/metrics/changepoint.py) and the decisions over
the aggregate and its breakdown (api/posthog/metrics/diagnosis.py). Expected answers are built here from
how each series is made, not from the code."""

from __future__ import annotations

import numpy as np
import pytest

from otelite.api.posthog.metrics.changepoint import fit_change, measure_shift, spikes, threshold_onset
from otelite.api.posthog.metrics.diagnosis import Group, Mover, Windows, diagnose, rank_movers, z_threshold


def _windows(values: np.ndarray, baseline: int) -> Windows:
    return Windows(values[:baseline], values[baseline:], np.arange(values.size - baseline))


# --- change models ------------------------------------------------------------------------------------------

def test_spike_before_the_step_is_not_the_onset():
    """The case the first generation was built for (docs/characterize.md): baseline N(10, 1), a step of
    +5…+20 somewhere in the window and a +40 spike of one or two buckets before it."""
    rng = np.random.default_rng(5)
    ref_hits = hits = 0
    cases = 300
    for i in range(cases):
        base = rng.normal(10, 1, 60)
        anomaly = rng.normal(10, 1, 60)
        step = int(rng.integers(10, 50))
        anomaly[step:] += rng.uniform(5, 20)
        width = 1 + i % 2
        spike = int(rng.integers(0, step - width - 1))
        anomaly[spike:spike + width] += 40
        ref = threshold_onset(anomaly, base.mean(), base.std(), 1)
        fit = fit_change(base, anomaly, 1)
        ref_hits += ref is not None and abs(ref - step) <= 1
        hits += fit is not None and fit.start is not None and abs(fit.start - step) <= 1
    assert ref_hits < cases * 0.2  # the reference answers the spike
    assert hits >= cases * 0.99


def test_clean_changes_are_dated_exactly_with_their_model():
    base = np.full(20, 5.0)
    step = np.array([5.0] * 12 + [50.0] * 18)
    fit = fit_change(base, step, 1)
    assert (fit.model, fit.start, fit.end) == ("level_shift", 12, None)
    assert fit.before == pytest.approx(5.0) and fit.after == pytest.approx(50.0)
    assert fit.confidence == pytest.approx(1.0)
    down = fit_change(np.full(20, 50.0), step[::-1].copy(), -1)
    assert (down.model, down.start) == ("level_shift", 18)
    # A ramp: flat, then linear over 8 buckets, then flat; its first bucket is the onset.
    t = np.arange(40)
    ramp = 100 + 40 * np.clip((t - 15 + 1) / 8, 0, 1)
    fit = fit_change(np.full(30, 100.0), ramp, 1)
    assert (fit.model, fit.start, fit.end) == ("ramp", 15, 23)
    assert fit.after == pytest.approx(140.0)
    # A transient: up on [10, 20), back after.
    transient = np.where((t >= 10) & (t < 20), 30.0, 10.0)
    fit = fit_change(np.full(30, 10.0), transient, 1)
    assert (fit.model, fit.start, fit.end) == ("transient", 10, 20)
    assert fit.before == pytest.approx(10.0) and fit.after == pytest.approx(30.0)


def test_noisy_ramp_and_direction_constraint():
    rng = np.random.default_rng(8)
    t = np.arange(60)
    hits = 0
    for _ in range(40):
        start = int(rng.integers(5, 40))
        level = 200 - 120 * np.clip((t - start + 1) / 10, 0, 1)  # down by 60% over ten buckets
        fit = fit_change(rng.normal(200, 6, 60), level + rng.normal(0, 6, 60), -1)
        hits += fit.model == "ramp" and abs(fit.start - start) <= 1
    assert hits >= 36
    # Asked for an upward change where the series stepped down: no level shift up; whatever is fitted
    # goes up (here the old level's last buckets stand out as a transient over the mean of both levels).
    fit = fit_change(np.full(20, 10.0) + rng.normal(0, 0.1, 20), np.r_[np.full(10, 10.0), np.full(20, 2.0)], 1)
    assert fit.model != "level_shift" and (fit.model == "none" or fit.after > fit.before)
    assert fit_change(np.full(20, 10.0), np.r_[np.full(10, 10.0), np.full(20, 2.0)], -1).start == 10


def test_a_spike_then_a_bucket_at_the_old_level_then_the_step():
    """Within a running median's reach of the step, the spike and the bucket after it both look odd; the
    step is dated where the values settle at the new level."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(50):
        base = rng.normal(100, 3, 60)
        anomaly = rng.normal(100, 3, 40)
        anomaly[5:7] = 550.0  # spike
        anomaly[8:] += 300  # step after one normal bucket
        hits += fit_change(base, anomaly, 1).start in (7, 8, 9)
    assert hits >= 49


def test_pure_noise_is_rarely_significant_and_spikes_are_flagged():
    rng = np.random.default_rng(4)
    z = np.array([measure_shift(rng.normal(50, 5, 60), rng.normal(50, 5, 60)).z for _ in range(2000)])
    assert (z >= 3).mean() < 0.01
    assert np.median(z) < 1.0
    x = rng.normal(10, 1, 30)
    x[[4, 17, 18]] += 30
    assert np.flatnonzero(spikes(x, 1.0)).tolist() == [4, 17, 18]
    # A spike at the very first buckets is seen against the values after it.
    x = np.r_[[60.0, 60.0], rng.normal(10, 1, 20)]
    assert np.flatnonzero(spikes(x, 1.0)).tolist() == [0, 1]


def test_shift_significance_against_own_noise():
    rng = np.random.default_rng(6)
    quiet = measure_shift(rng.normal(10, 0.2, 60), rng.normal(13, 0.2, 60))  # ×1.3 in 2% noise
    noisy = measure_shift(rng.normal(1000, 200, 60), rng.normal(1060, 200, 60))  # +6% in 20% noise
    assert quiet.z > 50 and quiet.sign == 1
    assert noisy.z < 3
    # A spike moves the raw mean, not the despiked one.
    anomaly = rng.normal(10, 0.2, 60)
    anomaly[30] = 200.0
    spiky = measure_shift(rng.normal(10, 0.2, 60), anomaly)
    assert spiky.z < 3 < spiky.z_raw
    # No noise at all: finite, and very significant.
    flat = measure_shift(np.full(10, 7.5), np.r_[np.full(2, 7.5), np.full(18, 52.5)])
    assert 1e5 < flat.z < np.inf


def test_without_baseline_or_anomaly_values():
    assert fit_change(np.zeros(0), np.arange(10.0)) is None
    assert fit_change(np.arange(10.0), np.ones(2)) is None
    shift = measure_shift(np.zeros(0), np.zeros(0))
    assert (shift.z, shift.after) == (0.0, 0.0)
    shift = measure_shift(np.zeros(0), np.full(5, 3.0))  # the reference compares with 0
    assert shift.before == 0.0 and shift.after == 3.0 and shift.z > 3


# --- decisions over the aggregate and the breakdown ---------------------------------------------------------

def test_diluted_mover_sets_the_direction_and_the_onset():
    """One shard of twelve doubles: the aggregate (their mean) moves by under 5%, the shard by 100%."""
    rng = np.random.default_rng(9)
    levels = np.r_[10.0, np.full(11, 500.0)]
    values = levels[:, None] * (1 + 0.05 * rng.standard_normal((12, 120)))
    values[0, 60 + 17:] *= 2
    aggregate = values.mean(axis=0)
    assert abs(aggregate[60:].mean() / aggregate[:60].mean() - 1) < 0.05
    groups = [Group("shard", f"s{i}", _windows(row, 60)) for i, row in enumerate(values)]
    d = diagnose(_windows(aggregate, 60), groups)
    assert (d.direction, d.direction_source) == ("up", "breakdown")
    assert d.onset_series == ("shard", "s0") and d.onset_model == "level_shift" and d.onset_time == 17
    assert d.onset_confidence > 0.9
    assert d.movers[0].label == "s0" and d.movers[0].significant
    assert all(not m.significant for m in d.movers[1:])
    # The reference's view of the same data: flat, no onset.
    assert d.reference_onset_time is None


def test_flat_when_nothing_moved_significantly():
    rng = np.random.default_rng(10)
    values = np.array([100.0, 40.0])[:, None] * (1 + 0.2 * rng.standard_normal((2, 120)))
    groups = [Group("shard", f"s{i}", _windows(row, 60)) for i, row in enumerate(values)]
    d = diagnose(_windows(values.mean(axis=0), 60), groups)
    assert d.direction == "flat" and d.onset_time is None and d.onset_model is None
    assert all(not m.significant for m in d.movers)


def test_a_lone_spike_keeps_the_references_answer():
    """A one-bucket excursion that moves the mean significantly is no level shift, but it is what
    happened: the direction and onset are the reference's."""
    values = np.full(60, 10.0) + np.random.default_rng(1).normal(0, 0.1, 60)
    values[45] = 400.0
    d = diagnose(_windows(values, 30), [])
    assert d.direction == "up" and d.onset_model == "threshold" and d.onset_time == 15 == d.reference_onset_time


def test_small_series_that_tripled_outranks_a_large_one_that_wobbled():
    def mover(label, b, a, z, significant):
        return Mover("route", label, b, a, a / b, abs(np.log(a / b)) * max(a, b), z, significant, 1)

    small = mover("/small", 10.0, 30.0, 40.0, True)  # magnitude ln 3 · 30 ≈ 33
    large = mover("/large", 1000.0, 1070.0, 1.5, False)  # magnitude ln 1.07 · 1070 ≈ 72
    also = mover("/also", 100.0, 150.0, 20.0, True)  # magnitude ln 1.5 · 150 ≈ 61
    assert [m.label for m in rank_movers([large, small, also])] == ["/also", "/small", "/large"]


def test_z_threshold_grows_with_the_number_of_series():
    assert z_threshold(1) == pytest.approx(3.0)
    assert z_threshold(13) == pytest.approx(3.36, abs=0.01)
    assert z_threshold(201) == pytest.approx(4.06, abs=0.01)  # Φ⁻¹(1 − 0.01/402)


def test_any_small_or_degenerate_series_gets_an_answer():
    """Short, constant, negative, zero and mixed series: always an answer whose onset is a bucket of
    the anomaly window (or none), never an exception or a non-finite number."""
    rng = np.random.default_rng(12)
    shapes = [lambda n: np.zeros(n), lambda n: np.full(n, -3.0), lambda n: rng.normal(0, 1, n),
              lambda n: rng.integers(0, 3, n).astype(float), lambda n: rng.normal(-50, 5, n)]
    for _ in range(300):
        nb, na = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        base, anom = shapes[rng.integers(5)](nb), shapes[rng.integers(5)](na)
        times = np.arange(na) * 60
        groups = [Group("k", str(i), Windows(shapes[rng.integers(5)](nb), shapes[rng.integers(5)](na), times))
                  for i in range(int(rng.integers(0, 3)))]
        d = diagnose(Windows(base, anom, times), groups)
        assert d.direction in ("up", "down", "flat") and d.direction_source in ("aggregate", "breakdown")
        assert d.onset_time is None or d.onset_time in times
        assert d.onset_confidence is None or 0.0 <= d.onset_confidence <= 1.0
        assert np.isfinite(d.significance) and all(np.isfinite(m.significance) for m in d.movers)
        if d.direction == "flat":
            assert d.onset_time is None
