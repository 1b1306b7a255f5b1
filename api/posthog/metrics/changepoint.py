"""What changed in one series, and when: noise, spikes, shift significance, change models.

Pure numpy over the bucket values of one series (no store, no HTTP): the baseline window's values and
the anomaly window's values, each in time order, nulls already left out. Used by `diagnosis` for the
aggregate and for every breakdown value (posthog-metrics.md, "Characterize, second generation").

- `noise_level`: the series' own noise, robustly (1.4826·MAD of the baseline: a spike does not move it).
- `spikes`: a Hampel test. A value further than 3σ from the median of the 5 buckets around it is a
  spike and is left out of every fit, so a spike of one or two buckets is ignored while steps and ramps
  keep their exact position (a running median leaves monotone runs unchanged).
- `measure_shift`: how far the anomaly window's level moved from the baseline's, in standard errors of
  the difference of the means, against the baseline's noise (inflated for autocorrelation).
- `fit_change`: change models over baseline + anomaly (the baseline gives the level before the change),
  the start k inside the anomaly window, each part with its own level and noise:
    level shift  old level before k, new level from k on                           (k)
    ramp         old level a before k, then a + c·(i − k + 1)/w for w ≥ 2 buckets,
                 then a + c: flat, linear, flat                                      (k, w)
    transient    new level on [k, l), old level before and after, l inside the window (k, l)
  and "no change". Gaussian likelihoods, solved in closed form for every (k, ·) at once from prefix
  sums, compared by BIC = −2·log-likelihood + p·ln N. The onset is k, the first bucket that differs
  from the old level (for a ramp, its first bucket). The confidence is the share of the BIC weights
  exp(−BIC/2) over all (model, start) cells and "no change" that falls within one bucket of the onset.
- `threshold_onset`: the reference's rule (spec step 6), the fallback when no model beats "no change".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # σ of a normal distribution = 1.4826 · its median absolute deviation
SPIKE_WINDOW = 5  # a running median of 5 ignores runs of up to two outlying buckets
SPIKE_SIGMAS = 3.0
MAX_AUTOCORRELATION = 0.9
# A series that does not vary at all still has a finite noise: a millionth of its level. A change is then
# "very significant" (z ≈ 1e6 · relative change) rather than infinitely so, which JSON can carry.
NOISE_FLOOR_REL, NOISE_FLOOR_ABS = 1e-6, 1e-12
MIN_SEGMENT = 3  # values after a start (inside a transient) to measure a level and a noise on
VAR_FLOOR_REL = 0.01  # no part fits perfectly: its noise is taken as at least 1% of the baseline's
RAMP_REFINE = 3  # buckets around the grid's ramp start searched again with a level-dependent noise
SHIFT_REDATE = 3  # buckets around the grid's level-shift start searched again when spikes are near it
REDATE_CAP = 5.0  # z-score beyond which a value counts as an outlier of fixed cost
# Parameters counted by BIC: level and variance; a change adds its size, start and second variance, a
# ramp its length, a transient its end.
MODEL_PARAMS = {"none": 2, "level_shift": 5, "ramp": 6, "transient": 6}


@dataclass(frozen=True)
class Shift:
    """The move of a series' level from the baseline window to the anomaly window."""
    before: float  # mean of the baseline without spikes (0 without baseline values, as the reference)
    after: float  # mean of the anomaly window without spikes
    noise: float  # σ of the series (baseline), before the floor
    z: float  # |after − before| / standard error of that difference
    z_raw: float  # the same with the raw anomaly mean, spikes included

    @property
    def sign(self) -> int:
        return 1 if self.after > self.before else -1 if self.after < self.before else 0


@dataclass(frozen=True)
class ChangeFit:
    """The change model that explains the series best. Indices are into the anomaly window's values."""
    model: str  # "level_shift" | "ramp" | "transient" | "none"
    start: int | None  # first bucket of the change
    end: int | None  # ramp: first bucket at the new level; transient: first bucket back; else None
    before: float  # fitted level before the change
    after: float  # fitted level after it (the ramp's top, the transient's plateau)
    confidence: float  # BIC weight of a start within one bucket of `start` (0 when model is "none")
    bic: dict[str, float]  # best BIC per model


def running_median(x: np.ndarray, width: int = SPIKE_WINDOW) -> np.ndarray:
    """Median of `width` consecutive buckets around each one (3 for series under 10 values). Near an end
    the window stays whole and shifts inwards, so a spike in the first or last two buckets is seen
    against the values next to it (a window padded by repeating the edge would keep it)."""
    width = width if x.size >= 10 else 3 if x.size >= 3 else 1
    if width == 1:
        return x.astype(float)
    windows = np.lib.stride_tricks.sliding_window_view(x, width)
    medians = np.partition(windows, width // 2, axis=1)[:, width // 2]  # the middle value: width is odd
    return medians[np.clip(np.arange(x.size) - width // 2, 0, x.size - width)]


def spikes(x: np.ndarray, noise: float) -> np.ndarray:
    """Which values are further than 3σ from their running median (with σ = 0: every value off it).

    Such a value is left out rather than replaced by the median: next to a step, a spike and the
    bucket between it and the step can both be flagged, and the step is then dated by the first
    bucket seen at the new level (fits prefer the latest of equally good starts)."""
    if x.size < 3:
        return np.zeros(x.size, bool)
    return np.abs(x - running_median(x)) > SPIKE_SIGMAS * noise


def noise_level(baseline: np.ndarray, anomaly: np.ndarray) -> float:
    """Robust σ of the baseline (1.4826·MAD, or its standard deviation when most values are equal). Without
    three baseline values: from the anomaly window's bucket-to-bucket differences (a step moves one)."""
    if baseline.size >= 3:
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(baseline - np.median(baseline))))
        return sigma if sigma > 0 else float(baseline.std())
    if anomaly.size >= 3:
        d = np.diff(anomaly)
        return MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    return 0.0


def variance_inflation(x: np.ndarray) -> float:
    """(1 + ρ)/(1 − ρ) for the lag-1 autocorrelation ρ of the values (clipped to [0, 0.9]): the factor by
    which a mean of correlated values is noisier than the same number of independent ones."""
    if x.size < 8:
        return 1.0
    d = x - x.mean()
    den = float(d @ d)
    if den == 0:
        return 1.0
    rho = min(max(float(d[1:] @ d[:-1]) / den, 0.0), MAX_AUTOCORRELATION)
    return (1 + rho) / (1 - rho)


def _floored(noise: float, *levels: float) -> float:
    return max(noise, NOISE_FLOOR_REL * max(abs(v) for v in levels), NOISE_FLOOR_ABS)


def measure_shift(baseline: np.ndarray, anomaly: np.ndarray) -> Shift:
    """z of the difference between the anomaly and baseline means (spikes left out), against the
    baseline's noise: |Δ| / (σ·√(VIF·(1/n_a + 1/n_b))). Without baseline values the baseline mean is 0
    (the reference's convention) and the anomaly window's own noise is used."""
    noise = noise_level(baseline, anomaly)
    if anomaly.size == 0:
        before = float(baseline.mean()) if baseline.size else 0.0
        return Shift(before, 0.0, noise, 0.0, 0.0)
    ok = ~spikes(np.concatenate([baseline, anomaly]), noise)  # one series: no edge between the windows
    clean_b, clean_a = baseline[ok[:baseline.size]], anomaly[ok[baseline.size:]]
    before = float(clean_b.mean()) if clean_b.size else 0.0
    after = float(clean_a.mean()) if clean_a.size else float(anomaly.mean())
    raw_after = float(anomaly.mean())
    inverse_n = 1 / max(clean_a.size, 1) + (1 / clean_b.size if clean_b.size else 0.0)
    vif = variance_inflation(clean_b if clean_b.size >= 3 else clean_a)
    error = _floored(noise, before, after) * math.sqrt(vif * inverse_n)
    return Shift(before, after, noise, abs(after - before) / error, abs(raw_after - before) / error)


def threshold_onset(anomaly: np.ndarray, mean: float, std: float, sign: int) -> int | None:
    """Spec step 6: the first anomaly bucket whose deviation from the baseline mean (negated for `down`)
    exceeds max(3σ, ½|μ|, 1e-9)."""
    threshold = max(3 * std, 0.5 * abs(mean), 1e-9)
    hit = np.flatnonzero(sign * (anomaly - mean) > threshold)
    return int(hit[0]) if hit.size else None


def fit_change(baseline: np.ndarray, anomaly: np.ndarray, sign: int = 0, noise: float | None = None
               ) -> ChangeFit | None:
    """The best change model for baseline + anomaly, its start inside the anomaly window. `sign` (+1/−1)
    keeps only changes in that direction (0: either). None without a baseline value or with fewer than
    three anomaly values (there is no "before" to change from, or no "after" to measure)."""
    nb, na = baseline.size, anomaly.size
    if nb == 0 or na < MIN_SEGMENT:
        return None
    if noise is None:
        noise = noise_level(baseline, anomaly)
    raw = np.concatenate([baseline, anomaly]).astype(float)
    n = raw.size
    spiky = spikes(raw, noise)
    y = np.where(spiky, running_median(raw), raw)  # spikes replaced by their running median
    mean = float(y.mean())
    yc = y - mean  # centred, for numerical stability; levels are shifted back at the end
    idx = np.arange(n, dtype=float)

    def prefix(v):
        return np.concatenate(([0.0], np.cumsum(v)))

    s0, s1, s2 = prefix(yc), prefix(idx * yc), prefix(yc * yc)  # Σ y, Σ i·y, Σ y²
    m0, m1, m2 = prefix(np.ones(n)), prefix(idx), prefix(idx * idx)  # Σ 1, Σ i, Σ i²
    var_floor = max((VAR_FLOOR_REL * noise) ** 2, (1e-9 * max(1.0, float(np.abs(y).max()))) ** 2)
    log_n = math.log(m0[n])

    def seg(sum_y, sum_y2, size):
        """Residual sum of squares of values around their own mean, from their sums."""
        return sum_y2 - sum_y * sum_y / np.maximum(size, 1)

    def cost(rss, size):
        """−2 · log-likelihood of a Gaussian part with its own variance (constants dropped)."""
        size = np.asarray(size, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(size > 0, size * np.log(np.maximum(rss, size * var_floor) / np.maximum(size, 1)), 0.0)

    def keep(c, values):
        return np.where(sign * c > 0, values, np.inf) if sign else values

    total_n = m0[n]
    ks = np.arange(nb, n)
    pre_n, pre_sum = m0[ks], s0[ks]
    pre_mean = pre_sum / np.maximum(pre_n, 1)
    pre_cost = cost(seg(pre_sum, s2[ks], pre_n), pre_n)
    # Level shift at k: its own level and variance on each side.
    post_n, post_sum = total_n - pre_n, s0[n] - pre_sum
    c_shift = post_sum / np.maximum(post_n, 1) - pre_mean
    bic_shift = np.where(post_n >= MIN_SEGMENT,
                         keep(c_shift, pre_cost + cost(seg(post_sum, s2[n] - s2[ks], post_n), post_n)), np.inf)
    # Transient [k, l): its own level and variance inside; the old ones outside (l ≤ n − 1: it ends
    # inside the window).
    kk, ll = np.meshgrid(ks, np.arange(nb, n), indexing="ij")
    in_n, in_sum, in_sq = m0[ll] - m0[kk], s0[ll] - s0[kk], s2[ll] - s2[kk]
    out_n, out_sum, out_sq = total_n - in_n, s0[n] - in_sum, s2[n] - in_sq
    valid_t = (ll > kk) & (in_n >= MIN_SEGMENT) & (m0[n] - m0[ll] >= 1) & (out_n > 0)
    c_tr = in_sum / np.maximum(in_n, 1) - out_sum / np.maximum(out_n, 1)
    bic_tr = np.where(valid_t, keep(c_tr, cost(seg(in_sum, in_sq, in_n), in_n)
                                    + cost(seg(out_sum, out_sq, out_n), out_n)), np.inf)
    # Ramp from k over w ≥ 2 buckets, then flat (e = k + w ≤ n), anchored at the old level a: from k on
    # the values are a + c·b, b = (i − k + 1)/w on the ramp and 1 after it, with their own variance.
    kw, ww = np.meshgrid(ks, np.arange(na + 1), indexing="ij")
    valid_r = (ww >= 2) & (kw + ww <= n)
    w = np.where(valid_r, ww, 2).astype(float)
    e = np.where(valid_r, kw + ww, kw)
    off = kw - 1.0  # b = (i − off)/w on the ramp
    r0, r1, r2 = m0[e] - m0[kw], m1[e] - m1[kw], m2[e] - m2[kw]
    tail_n = m0[n] - m0[e]
    sb = (r1 - off * r0) / w + tail_n
    sbb = (r2 - 2 * off * r1 + off * off * r0) / (w * w) + tail_n
    sby = ((s1[e] - s1[kw]) - off * (s0[e] - s0[kw])) / w + (s0[n] - s0[e])
    a = pre_mean[:, None]
    after_n = m0[n] - m0[kw]
    cross = sby - a * sb  # Σ b·(y − a) over the values from k on
    with np.errstate(divide="ignore", invalid="ignore"):
        c_ramp = np.where(sbb > 0, cross / sbb, 0.0)
        rss_after = (s2[n] - s2[kw]) - 2 * a * (s0[n] - s0[kw]) + a * a * after_n - np.where(
            sbb > 0, cross * cross / sbb, 0.0)
    valid_r &= after_n >= MIN_SEGMENT
    bic_ramp = np.where(valid_r, keep(c_ramp, pre_cost[:, None] + cost(rss_after, after_n)), np.inf)

    best_tr = np.argmin(bic_tr, axis=1)
    best_ramp = np.argmin(bic_ramp, axis=1)
    rows = np.arange(ks.size)
    bic_cells = {  # model → BIC of its best cell for each start k
        "level_shift": bic_shift + MODEL_PARAMS["level_shift"] * log_n,
        "ramp": bic_ramp[rows, best_ramp] + MODEL_PARAMS["ramp"] * log_n,
        "transient": bic_tr[rows, best_tr] + MODEL_PARAMS["transient"] * log_n,
    }
    bic_none = float(cost(seg(s0[n], s2[n], total_n), total_n)) + MODEL_PARAMS["none"] * log_n
    bic = {"none": bic_none, **{name: float(cells.min()) for name, cells in bic_cells.items()}}
    model = min(bic, key=lambda name: (bic[name], MODEL_PARAMS[name]))
    if model == "none":
        return ChangeFit("none", None, None, mean, mean, 0.0, bic)

    i = int(np.argmin(bic_cells[model]))
    # Confidence: BIC weights over every (model, start) cell and "no change", normalized.
    all_bic = np.concatenate(list(bic_cells.values()) + [np.array([bic_none])])
    weights = np.exp(-(all_bic - all_bic.min()) / 2)
    starts = np.concatenate([ks for _ in bic_cells] + [np.array([-10 * n])])

    def mass(lo, hi):
        return float(weights[(starts >= lo) & (starts <= hi)].sum() / weights.sum())

    k = int(ks[i])
    near_spike = spiky[max(k - SHIFT_REDATE - SPIKE_WINDOW, 0):k + SHIFT_REDATE + SPIKE_WINDOW].any()
    if model == "ramp" or (model == "level_shift" and near_spike):
        # Dated again near the grid's start with a finer likelihood; the confidence is then "the change
        # starts within that neighbourhood" (grid) times "within one bucket of the new start" (finer).
        if model == "ramp":
            rows, local, w_best = _refine_ramp(y, ks, i, pre_mean + mean, c_ramp, valid_r, var_floor)
        else:
            rows, local = _redate_shift(raw, ks, i, valid=post_n >= MIN_SEGMENT, var_floor=var_floor)
        pick = int(np.argmin(local))
        local_weights = np.exp(-(local - local[pick]) / 2)
        near = np.abs(rows - rows[pick]) <= 1
        confidence = mass(ks[rows[0]], ks[rows[-1]]) * float(local_weights[near].sum() / local_weights.sum())
        i = int(rows[pick])
    else:
        confidence = mass(k - 1, k + 1)
    k = int(ks[i])
    before = mean + float(pre_mean[i])
    if model == "level_shift":
        c, end = float(c_shift[i]), None
    elif model == "ramp":
        w = int(w_best[pick])
        c, end = float(c_ramp[i, w]), k + w
    else:
        j = best_tr[i]
        c, end = float(c_tr[i, j]), nb + int(j)
        before = mean + float(out_sum[i, j] / out_n[i, j])
    return ChangeFit(model, k - nb, None if end is None else end - nb, before, before + c, confidence, bic)


def _refine_ramp(y: np.ndarray, ks: np.ndarray, i: int, pre_level: np.ndarray, slope: np.ndarray,
                 valid: np.ndarray, var_floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ramp's start again, within RAMP_REFINE buckets of cell i, under a noise that moves with the
    level: σ goes from the old level's to the new level's along the ramp (relative noise makes σ
    proportional to the level, hence linear along a linear ramp; additive noise keeps it constant). The
    closed-form grid gives one variance to the whole ramp-and-plateau, which dates a ramp early or late
    when its two ends are not equally noisy. Returns the rows (cells) searched, the −2·log-likelihood of
    each (its best length) and that length. Memory: (lengths × values after k) per row."""
    rows = np.arange(max(i - RAMP_REFINE, 0), min(i + RAMP_REFINE + 1, ks.size))
    costs, lengths = np.full(rows.size, np.inf), np.zeros(rows.size, np.int64)
    w = np.arange(slope.shape[1])[:, None]
    for j, row in enumerate(rows):
        k, a = int(ks[row]), float(pre_level[row])
        before = y[:k] - a
        var_pre = max(float(before @ before) / k, var_floor)
        pre_cost = k * math.log(var_pre) + float(before @ before) / var_pre
        b = np.clip((np.arange(k, y.size)[None, :] - k + 1) / np.maximum(w, 1), 0.0, 1.0)
        r = y[None, k:] - a - slope[row][:, None] * b
        sq = r * r
        plateau = b == 1
        part = np.where((plateau.sum(1) >= MIN_SEGMENT)[:, None], plateau, True)
        var_post = np.maximum((sq * part).sum(1) / part.sum(1), var_floor)
        sigma = math.sqrt(var_pre) + (np.sqrt(var_post) - math.sqrt(var_pre))[:, None] * b
        cost = np.where(valid[row], pre_cost + (2 * np.log(sigma) + sq / (sigma * sigma)).sum(1), np.inf)
        lengths[j] = int(np.argmin(cost))
        costs[j] = cost[lengths[j]]
    return rows, costs, lengths


def _redate_shift(raw: np.ndarray, ks: np.ndarray, i: int, valid: np.ndarray, var_floor: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The level shift's start again, within SHIFT_REDATE buckets of cell i, on the raw values with a
    robust loss: each side's level is its median and its noise its MAD, and a value costs its squared
    z-score capped at REDATE_CAP² (an outlier costs the same wherever it is). The running median cannot
    tell a spike, a bucket at the old level and then the step ([1 1 5 5 1 4 4 4]) from a step at the
    spike; counting outliers can: dating the step at the spike makes three of them, after it two.
    Returns the rows (starts) searched and the cost of each."""
    rows = np.arange(max(i - SHIFT_REDATE, 0), min(i + SHIFT_REDATE + 1, ks.size))
    floor = math.sqrt(var_floor)
    costs = np.full(rows.size, np.inf)
    for n, j in enumerate(rows):
        if not valid[j]:
            continue
        total = 0.0
        for part in (raw[:ks[j]], raw[ks[j]:]):
            level = float(np.median(part))
            sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(part - level))), floor)
            z2 = np.minimum(((part - level) / sigma) ** 2, REDATE_CAP ** 2)
            total += float(z2.sum()) + 2 * part.size * math.log(sigma)
        costs[n] = total
    return rows, costs
