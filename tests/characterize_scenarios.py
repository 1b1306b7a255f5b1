"""Synthetic characterize scenarios with known truth, the reference algorithm, and the scorer.

One implementation, used by tests/test_characterize_accuracy.py and bench/characterize_accuracy.py
(posthog-metrics.md, "Characterize, second generation": "Measure it").

A scenario is one gauge with a label `shard` of 2–12 values, one series per value, one reading per
bucket: 60 baseline buckets, then a 60-bucket anomaly window (what characterize's interval choice gives
for a window of 60 intervals). Each value has its own level (log-uniform over 1…1000, so a small value
among large ones is diluted in the aggregate) and its own relative noise (2–20%, multiplicative). In
every kind but `flat` exactly one value, the mover, changes, 3–25 buckets into the anomaly window:

- `step_up`: its level × 2…5 from the change on;
- `step_down`: × 0.1…0.4;
- `spike_then_step`: a step up or down as above, and before it a spike of one or two buckets (× 3…10 of
  that series' level) in the mover or in another value;
- `ramp`: up (× 2…5) or down (× 0.1…0.4) linearly over ten buckets, then flat: the first ramp bucket
  is one tenth of the way;
- `flat`: nothing changes.

The truth comes only from how a case is built: the onset is the first anomaly-window bucket whose
expected value differs from the baseline level, the direction is the mover's (`flat` when there is
none), the mover is its label. Scoring: onset within one bucket (for `flat`: no onset), direction
exact, top mover = the first of `top_movers` (scored on the kinds that have a mover).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

KINDS = ("step_up", "step_down", "spike_then_step", "ramp", "flat")
KEY = "shard"
BASELINE_BUCKETS = ANOMALY_BUCKETS = 60
LEAD = (3, 25)  # the change comes this many buckets after the anomaly window starts
UP, DOWN = (2.0, 5.0), (0.1, 0.4)
RAMP_BUCKETS = 10


@dataclass(frozen=True)
class Scenario:
    kind: str
    seed: int
    index: int
    labels: tuple[str, ...]
    values: np.ndarray  # (value, bucket): buckets [0, 60) baseline, [60, 120) anomaly window
    noise: tuple[float, ...]  # relative noise of each value
    factor: float | None  # the mover's new level / old level
    # The truth:
    onset: int | None  # bucket of the anomaly window (0-based) where the change starts
    direction: str
    mover: str | None

    @property
    def name(self) -> str:
        return f"chz.{self.kind}.s{self.seed}.c{self.index}"


@dataclass(frozen=True)
class Answer:
    direction: str
    onset: int | None  # bucket of the anomaly window (0-based)
    top_mover: str | None  # label of top_movers[0] under KEY
    # Reported alongside (otelite's `onset_model` and `onset_confidence`); not scored.
    model: str | None = None
    confidence: float | None = None

    def scored(self) -> tuple:
        return self.direction, self.onset, self.top_mover


def generate(seed: int, count: int) -> list[Scenario]:
    """`count` scenarios, the kinds in turn, from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [_scenario(rng, KINDS[i % len(KINDS)], seed, i) for i in range(count)]


def _scenario(rng: np.random.Generator, kind: str, seed: int, index: int) -> Scenario:
    n = int(rng.integers(2, 13))
    labels = tuple(f"s{i:02d}" for i in range(n))
    levels = 10 ** rng.uniform(0, 3, n)
    noise = rng.uniform(0.02, 0.20, n)
    total = BASELINE_BUCKETS + ANOMALY_BUCKETS
    expected = np.repeat(levels[:, None], total, axis=1)
    mover = int(rng.integers(n))
    lead = int(rng.integers(LEAD[0], LEAD[1] + 1))
    change = BASELINE_BUCKETS + lead
    up = kind == "step_up" or (kind in ("spike_then_step", "ramp") and rng.random() < 0.5)
    factor = None
    if kind != "flat":
        factor = float(rng.uniform(*(UP if up else DOWN)))
        t = np.arange(total)
        if kind == "ramp":
            profile = np.clip((t - change + 1) / RAMP_BUCKETS, 0.0, 1.0)
        else:
            profile = (t >= change).astype(float)
        expected[mover] = levels[mover] * (1 + (factor - 1) * profile)
    values = expected * (1 + noise[:, None] * rng.standard_normal(expected.shape))
    if kind == "spike_then_step":
        width = int(rng.integers(1, 3))
        start = BASELINE_BUCKETS + int(rng.integers(0, lead - width))  # ends at least a bucket before the change
        where = mover if rng.random() < 0.5 else int(rng.choice([i for i in range(n) if i != mover]))
        values[where, start:start + width] = levels[where] * rng.uniform(3, 10)
    truth_direction = "flat" if factor is None else ("up" if factor > 1 else "down")
    return Scenario(kind, seed, index, labels, values, tuple(noise.tolist()), factor,
                    None if factor is None else lead, truth_direction, None if factor is None else labels[mover])


# --- the reference algorithm (posthog-metrics.md, "Reference algorithm" steps 4–7), gauge → avg ------------

def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.05, abs_tol=1e-12)


def reference_answer(sc: Scenario) -> Answer:
    aggregate = sc.values.mean(axis=0)
    base, anom = aggregate[:BASELINE_BUCKETS], aggregate[BASELINE_BUCKETS:]
    b_mean, a_mean = float(base.mean()), float(anom.mean())
    if _close(a_mean, b_mean):
        direction, onset = "flat", None
    else:
        sign = 1 if a_mean > b_mean else -1
        direction = "up" if sign > 0 else "down"
        threshold = max(3 * float(base.std()), 0.5 * abs(b_mean), 1e-9)
        over = np.flatnonzero(sign * (anom - b_mean) > threshold)
        onset = int(over[0]) if over.size else None
    movers = []
    for label, row in zip(sc.labels, sc.values):
        b, a = float(row[:BASELINE_BUCKETS].mean()), float(row[BASELINE_BUCKETS:].mean())
        if _close(a, b):
            continue
        ratio = a / b if b != 0 else a
        magnitude = abs(a - b) if b == 0 or ratio <= 0 else abs(math.log(ratio)) * max(abs(a), abs(b))
        movers.append((-magnitude, KEY, label))
    movers.sort()
    return Answer(direction, onset, movers[0][2] if movers else None)


# --- scoring -----------------------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    onset: int = 0
    direction: int = 0
    with_mover: int = 0
    mover: int = 0

    def add(self, sc: Scenario, answer: Answer) -> None:
        self.cases += 1
        self.onset += onset_hit(sc, answer)
        self.direction += answer.direction == sc.direction
        if sc.mover is not None:
            self.with_mover += 1
            self.mover += answer.top_mover == sc.mover

    def rates(self) -> tuple[float, float, float | None]:
        return (self.onset / self.cases, self.direction / self.cases,
                self.mover / self.with_mover if self.with_mover else None)


def onset_hit(sc: Scenario, answer: Answer) -> bool:
    if sc.onset is None:
        return answer.onset is None
    return answer.onset is not None and abs(answer.onset - sc.onset) <= 1


def score(cases: list[Scenario], answers: list[Answer]) -> dict[str, Tally]:
    """Tallies by kind and under "all"."""
    out: dict[str, Tally] = defaultdict(Tally)
    for sc, answer in zip(cases, answers):
        out[sc.kind].add(sc, answer)
        out["all"].add(sc, answer)
    return dict(out)


# --- the same cases through otelite -------------------------------------------------------------------------

def otelite_answer(sc: Scenario) -> Answer:
    """What characterize answers, through the very functions it calls once the per-value bucket series are
    loaded (gauge → avg across series; one series per value, so each value's group series is its row)."""
    from otelite.api.posthog.metrics.diagnosis import Group, Windows, diagnose

    times = np.arange(ANOMALY_BUCKETS)
    agg = sc.values.mean(axis=0)
    groups = [Group(KEY, label, Windows(row[:BASELINE_BUCKETS], row[BASELINE_BUCKETS:], times))
              for label, row in zip(sc.labels, sc.values)]
    d = diagnose(Windows(agg[:BASELINE_BUCKETS], agg[BASELINE_BUCKETS:], times), groups)
    top = d.movers[0].label if d.movers else None
    return Answer(d.direction, d.onset_time, top, d.onset_model, d.onset_confidence)


def gauge_points(sc: Scenario, start_ns: int, bucket_ns: int) -> list[tuple[int, float, dict]]:
    """(time, value, attributes) of every reading, one a bucket, a second after the bucket starts."""
    return [(start_ns + b * bucket_ns + 10**9, float(v), {KEY: label})
            for label, row in zip(sc.labels, sc.values) for b, v in enumerate(row)]


def live_answer(response: dict, anomaly_from_ns: int, bucket_ns: int) -> Answer:
    """An Answer read from a POST metrics/characterize response."""
    import datetime as dt

    onset = None
    if response["onset_time"] is not None:
        t = dt.datetime.fromisoformat(response["onset_time"].replace("Z", "+00:00"))
        onset = (int(t.timestamp()) * 10**9 - anomaly_from_ns) // bucket_ns
    top = next((m["label"] for m in response["top_movers"][:1] if m["key"] == KEY), None)
    return Answer(response["direction"], onset, top, response.get("onset_model"), response.get("onset_confidence"))
