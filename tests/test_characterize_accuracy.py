"""Characterize's accuracy on synthetic scenarios with known truth (issue 15; posthog-metrics.md,
"Characterize, second generation"). The generator, the truth, the reference algorithm and the scorer
are tests/characterize_scenarios.py (bench/characterize_accuracy.py prints the same figures by kind).

- In process, over several seeds: the functions characterize calls once the bucket series are loaded.
- Live: a few of the same cases sent over OTLP/HTTP protobuf to `otelite serve` and asked through
  POST metrics/characterize give the same answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from characterize_scenarios import (ANOMALY_BUCKETS, BASELINE_BUCKETS, KEY, KINDS, RAMP_BUCKETS, generate,
                                    gauge_points, live_answer, otelite_answer, reference_answer, score)
from conftest import start_server
from metrics_otlp import MIN, Api, base_ns, gauge, iso

SEEDS = (1, 2, 3)
CASES = 200


@pytest.fixture(scope="module")
def scored():
    out = {}
    for seed in SEEDS:
        cases = generate(seed, CASES)
        out[seed] = (score(cases, [otelite_answer(c) for c in cases]),
                     score(cases, [reference_answer(c) for c in cases]))
    return out


def test_generator_builds_what_its_truth_says():
    """The truth comes from construction; check it against the values (not against any algorithm)."""
    for sc in generate(4, 100):
        base = sc.values[:, :BASELINE_BUCKETS].mean(axis=1)
        anomaly = sc.values[:, BASELINE_BUCKETS:]
        assert 2 <= len(sc.labels) <= 12 and all(0.02 <= n <= 0.2 for n in sc.noise)
        for i, label in enumerate(sc.labels):
            noise = sc.noise[i] * base[i]
            if label != sc.mover:
                if sc.kind != "spike_then_step":  # (a spike may sit in a value that does not move)
                    assert abs(anomaly[i].mean() - base[i]) < 5 * noise / np.sqrt(ANOMALY_BUCKETS) * 2
                continue
            settled = anomaly[i, sc.onset + (RAMP_BUCKETS if sc.kind == "ramp" else 0):]
            assert abs(settled.mean() / base[i] - sc.factor) < 10 * sc.factor * sc.noise[i] / np.sqrt(settled.size)
            assert (sc.direction == "up") == (sc.factor > 1)
            if sc.kind == "ramp":  # the first ramp bucket is a tenth of the way
                assert abs(anomaly[i, sc.onset:sc.onset + RAMP_BUCKETS].mean() / base[i] - (1 + (sc.factor - 1) * 0.55)) \
                    < 10 * sc.noise[i] * max(sc.factor, 1) / np.sqrt(RAMP_BUCKETS)
        if sc.kind == "flat":
            assert sc.onset is None and sc.mover is None and sc.direction == "flat"
        else:
            assert 3 <= sc.onset <= 25
        if sc.kind == "spike_then_step":  # the spike sits before the change, × 3…10 of its value's level
            before = sc.values[:, BASELINE_BUCKETS:BASELINE_BUCKETS + sc.onset] / base[:, None]
            assert before.max() > 2.4


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_by_seed(scored, seed):
    ours, _ = scored[seed]
    onset, direction, mover = ours["all"].rates()
    assert ours["all"].cases == CASES
    assert onset >= 0.90 and direction >= 0.98 and mover >= 0.98
    for kind in KINDS:
        assert ours[kind].rates()[0] >= 0.80, kind


def test_beats_the_reference_where_it_is_weak(scored):
    """Same cases, the spec's reference algorithm: diluted movers and ramps defeat its onset and direction."""
    for seed in SEEDS:
        ours, ref = scored[seed]
        assert ref["all"].rates()[0] < 0.5 and ref["ramp"].rates()[0] < 0.2
        assert ref["all"].rates()[1] < 0.8
        assert ours["all"].onset > ref["all"].onset and ours["all"].direction > ref["all"].direction


# --- live -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("chzacc"))
    yield Api(srv)
    if srv.alive():
        srv.kill()


def test_live_answers_match_the_in_process_ones(api):
    start = base_ns(6)
    anomaly_from = start + BASELINE_BUCKETS * MIN
    window = {"anomalyFrom": iso(anomaly_from), "anomalyTo": iso(anomaly_from + ANOMALY_BUCKETS * MIN)}
    cases = generate(7, 10)  # two of each kind
    answers = []
    for sc in cases:
        api.send(gauge(sc.name, gauge_points(sc, start, MIN)))
        r = api.characterize(metricName=sc.name, candidateKeys=[KEY], **window)
        live = live_answer(r, anomaly_from, MIN)
        here = otelite_answer(sc)
        assert live.scored() == here.scored(), sc.name
        assert live.model == here.model
        assert (live.confidence is None) == (here.confidence is None)
        if here.confidence is not None:
            assert live.confidence == pytest.approx(here.confidence, abs=1e-6)
        assert r["direction_source"] in ("aggregate", "breakdown")
        assert r["top_movers"] == [] or {"magnitude", "significance", "significant"} <= set(r["top_movers"][0])
        answers.append(live)
    tally = score(cases, answers)["all"]
    assert tally.onset >= 9 and (tally.direction, tally.mover, tally.with_mover) == (10, 8, 8)
    # Automatic candidate keys (service_name comes first, the whole metric as one group): the moving
    # shard still leads.
    sc = next(c for c in cases if c.kind == "step_up")
    r = api.characterize(metricName=sc.name, **window)
    assert r["top_movers"][0]["key"] == KEY and r["top_movers"][0]["label"] == sc.mover
