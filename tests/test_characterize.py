"""POST metrics/characterize (issue 5, posthog-metrics.md "Reference algorithm") against a live server."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import start_server
from metrics_otlp import MIN, Api, base_ns, counter, gauge, histogram, iso

B = base_ns(8)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("chz"))
    yield Api(srv)
    if srv.alive():
        srv.kill()


def at(minute: float) -> int:
    return B + int(minute * MIN)


def test_reference_scenario(api):
    # shard=a steps from 10 to 100 at minute 12, shard=b is flat at 5; one point a minute.
    points = [(at(m) + 1, 10.0 if m < 12 else 100.0, {"shard": "a"}) for m in range(30)]
    points += [(at(m) + 1, 5.0, {"shard": "b"}) for m in range(30)]
    api.send(gauge("ref.load", points))
    r = api.characterize(metricName="ref.load", anomalyFrom=iso(at(10)), anomalyTo=iso(at(30)))
    assert r["aggregation"] == "avg" and r["interval"] == "minute"
    assert r["direction"] == "up"
    assert r["baseline_mean"] == 7.5 and r["baseline_stddev"] == 0.0
    assert r["anomaly_mean"] == (2 * 7.5 + 18 * 52.5) / 20
    assert r["change_ratio"] > 3 and r["change_ratio"] == pytest.approx(r["anomaly_mean"] / 7.5)
    assert r["onset_time"] == iso(at(12))
    assert r["anomaly_peak"] > 50
    documented = ("key", "label", "baseline_value", "anomaly_value", "change_ratio")
    assert {k: r["top_movers"][0][k] for k in documented} == {
        "key": "shard", "label": "a", "baseline_value": 10.0, "anomaly_value": (2 * 10 + 18 * 100) / 20,
        "change_ratio": 9.1}
    # Extra fields (second generation): the reference's magnitude, and the significance of a noiseless step.
    assert r["top_movers"][0]["magnitude"] == pytest.approx(math.log(9.1) * 91.0)
    assert r["top_movers"][0]["significant"] is True and r["top_movers"][0]["significance"] > 1000
    assert r["direction_source"] == "aggregate" and r["onset_model"] == "level_shift"
    assert r["onset_confidence"] == pytest.approx(1.0) and r["reference_onset_time"] == iso(at(12))
    assert all(m["label"] != "b" for m in r["top_movers"] if m["key"] == "shard")
    # Defaults: baselineTo = anomalyFrom, baselineFrom = baselineTo − the anomaly window's length.
    assert (r["baseline_from"], r["baseline_to"], r["anomaly_from"], r["anomaly_to"]) == (
        iso(at(-10)), iso(at(10)), iso(at(10)), iso(at(30)))
    series = r["series"]
    assert series["clause"] == "anomaly" and series["labels"] == {} and series["metric_name"] == "ref.load"
    assert [p["time"] for p in series["points"]] == [iso(at(m)) for m in range(30)]
    assert [p["value"] for p in series["points"]] == [7.5] * 12 + [52.5] * 18


def test_step_down(api):
    api.send(gauge("ref.down", [(at(m) + 1, 100.0 if m < 15 else 20.0, {"pod": f"p{m % 2}"}) for m in range(40)]))
    r = api.characterize(metricName="ref.down", anomalyFrom=iso(at(10)), anomalyTo=iso(at(40)),
                         baselineFrom=iso(at(0)))
    assert r["direction"] == "down"
    assert r["baseline_mean"] == 100.0
    assert r["anomaly_mean"] == pytest.approx((5 * 100 + 25 * 20) / 30)
    assert r["onset_time"] == iso(at(15)) == r["reference_onset_time"]
    assert r["anomaly_peak"] == 100.0


def test_noise_spike_before_the_real_step(api):
    rng = np.random.default_rng(3)
    values = 10 + rng.normal(0, 0.5, 60)
    values[33] = 60.0  # one noise spike at minute 33
    values[40:] += 90.0  # the real change at minute 40
    api.send(gauge("ref.spike", [(at(m) + 1, float(v), {}) for m, v in enumerate(values)]))
    r = api.characterize(metricName="ref.spike", anomalyFrom=iso(at(30)), anomalyTo=iso(at(60)))
    assert r["direction"] == "up"
    assert r["reference_onset_time"] == iso(at(33))  # what the reference algorithm says
    assert r["onset_time"] == iso(at(40))


def test_sustained_noisy_shift_found_within_one_bucket(api):
    rng = np.random.default_rng(11)
    for n, step in enumerate((37, 45, 52)):
        values = 50 + rng.normal(0, 3, 90)
        values[step:] += 15.0
        api.send(gauge(f"ref.shift{n}", [(at(m) + 1, float(v), {}) for m, v in enumerate(values)]))
        r = api.characterize(metricName=f"ref.shift{n}", anomalyFrom=iso(at(30)), anomalyTo=iso(at(90)),
                             baselineFrom=iso(at(0)))
        assert r["direction"] == "up"
        assert abs(np.datetime64(r["onset_time"][:-1]) - np.datetime64(iso(at(step))[:-1])) <= np.timedelta64(60, "s")


def test_one_shard_of_twelve_doubling(api):
    """Second generation: the change is diluted in the aggregate (under the 5% test), so the direction
    and the onset come from the shard's own series."""
    rng = np.random.default_rng(21)
    points = []
    for s in range(12):
        level = 20.0 if s == 7 else 400.0
        for m in range(60):
            v = level * (1 + 0.03 * rng.standard_normal()) * (2 if s == 7 and m >= 44 else 1)
            points.append((at(m) + 1, float(v), {"shard": f"s{s:02d}"}))
    api.send(gauge("gen2.shards", points))
    r = api.characterize(metricName="gen2.shards", anomalyFrom=iso(at(30)), anomalyTo=iso(at(60)))
    assert abs(r["change_ratio"] - 1) < 0.05  # the reference would say flat
    assert r["reference_onset_time"] is None
    assert (r["direction"], r["direction_source"]) == ("up", "breakdown")
    assert r["onset_time"] == iso(at(44)) and r["onset_model"] == "level_shift" and r["onset_confidence"] > 0.9
    assert r["onset_series"] == {"key": "shard", "label": "s07"}
    top = r["top_movers"][0]
    assert (top["key"], top["label"], top["significant"]) == ("shard", "s07", True)
    assert top["change_ratio"] == pytest.approx((14 * 1 + 16 * 2) / 30, rel=0.05)
    assert all(not m["significant"] for m in r["top_movers"][1:])


def test_ramp_onset_is_its_first_bucket(api):
    rng = np.random.default_rng(22)
    values = [100 * (1 + 0.02 * rng.standard_normal()) + 15 * min(max(m - 39, 0), 10) for m in range(80)]
    api.send(gauge("gen2.ramp", [(at(m) + 1, float(v), {}) for m, v in enumerate(values)]))
    r = api.characterize(metricName="gen2.ramp", anomalyFrom=iso(at(30)), anomalyTo=iso(at(80)),
                         baselineFrom=iso(at(0)))
    assert (r["direction"], r["direction_source"]) == ("up", "aggregate")
    assert r["onset_model"] == "ramp" and r["onset_series"] is None
    assert abs(np.datetime64(r["onset_time"][:-1]) - np.datetime64(iso(at(40))[:-1])) <= np.timedelta64(60, "s")
    # The reference dates it where the ramp first exceeds half the baseline mean: +60 at minute 43.
    assert r["reference_onset_time"] == iso(at(43))


def test_values_that_come_go_or_are_negative(api):
    """A shard that stops reporting, one that starts in the anomaly window, a negative gauge and a point
    without a value: a 200 with the documented shape, and the new shard's arrival as the change."""
    points = []
    for m in range(40):
        if m < 20:
            points.append((at(m) + 1, 50.0, {"shard": "gone"}))
        else:
            points.append((at(m) + 1, 80.0 + (m % 2), {"shard": "new"}))
        points.append((at(m) + 1, -10.0 - (m % 3) * 0.1, {"shard": "neg"}))
    points.append((at(25) + 2, None, {"shard": "neg"}))
    api.send(gauge("gen2.churn", points))
    r = api.characterize(metricName="gen2.churn", anomalyFrom=iso(at(20)), anomalyTo=iso(at(40)))
    assert r["direction"] in ("up", "down") and r["onset_time"] == iso(at(20))
    movers = {m["label"]: m for m in r["top_movers"]}
    assert movers["new"]["baseline_value"] == 0.0 and movers["new"]["significant"] is True
    assert movers["gone"]["anomaly_value"] == 0.0 and movers["gone"]["significant"] is False
    assert "neg" not in movers  # steady: its means are close
    assert all(isinstance(m["significance"], float) for m in r["top_movers"])


def test_nonexistent_metric_is_flat(api):
    r = api.characterize(metricName="does.not.exist", anomalyFrom=iso(at(10)), anomalyTo=iso(at(20)))
    assert r["direction"] == "flat" and r["onset_time"] is None and r["top_movers"] == []
    assert r["aggregation"] == "avg"
    assert (r["baseline_mean"], r["anomaly_mean"], r["anomaly_peak"], r["change_ratio"]) == (0.0, 0.0, 0.0, 0.0)
    assert r["series"] == {"labels": {}, "points": [], "metric_name": "does.not.exist", "clause": "anomaly"}


@pytest.mark.parametrize("query, attr", [
    ({"anomalyFrom": "2025-01-01T10:00:00", "anomalyTo": "2025-01-01T10:00:00"}, "anomalyTo"),
    ({"anomalyFrom": "2025-01-01T10:00:00", "anomalyTo": "2025-01-01T09:00:00"}, "anomalyTo"),
    ({"anomalyFrom": "2025-01-01T10:00:00", "anomalyTo": "2025-01-01T11:00:00",
      "baselineTo": "2025-01-01T10:30:00"}, "baselineTo"),
    ({"anomalyFrom": "2025-01-01T10:00:00", "anomalyTo": "2025-01-01T11:00:00",
      "baselineFrom": "2025-01-01T09:00:00", "baselineTo": "2025-01-01T09:00:00"}, "baselineFrom"),
    ({"anomalyFrom": "2025-01-01T10:00:00", "anomalyTo": "2025-01-01T11:00:00",
      "baselineFrom": "2025-01-01T09:30:00", "baselineTo": "2025-01-01T09:00:00"}, "baselineFrom"),
    ({"anomalyTo": "2025-01-01T11:00:00"}, "anomalyFrom"),
    ({"anomalyFrom": "2025-01-01T10:00:00", "aggregation": "median"}, "aggregation"),
])
def test_invalid_windows_are_400(api, query, attr):
    r = api.post("characterize", {"metricName": "ref.load", **query})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "validation_error" and r.json()["attr"] == attr
    r = api.post("characterize", {"anomalyFrom": "2025-01-01T10:00:00"})
    assert r.status_code == 400 and r.json()["attr"] == "metricName"


def test_explicit_disjoint_baseline_leaves_out_the_gap(api):
    values = [10.0] * 10 + [500.0] * 10 + [30.0] * 10
    api.send(gauge("ref.gap", [(at(m) + 1, v, {}) for m, v in enumerate(values)]))
    r = api.characterize(metricName="ref.gap", baselineFrom=iso(at(0)), baselineTo=iso(at(10)),
                         anomalyFrom=iso(at(20)), anomalyTo=iso(at(30)))
    assert r["baseline_mean"] == 10.0 and r["anomaly_mean"] == 30.0 and r["anomaly_peak"] == 30.0
    assert r["change_ratio"] == 3.0 and r["direction"] == "up"
    assert [p["value"] for p in r["series"]["points"]] == values  # the gap is plotted, not counted
    assert r["onset_time"] == iso(at(20))


def test_candidate_keys_and_automatic_keys(api):
    points = []
    for m in range(40):
        for region in ("eu", "us"):
            for shard in ("a", "b", "c"):
                v = 10.0
                if m >= 20 and region == "us" and shard == "c":
                    v = 70.0
                points.append((at(m) + 1, v, {"region": region, "shard": shard, "const": "x"}))
    api.send(gauge("ref.keys", points, resource={"service.name": "checkout", "host.arch": "amd64"}))
    window = {"metricName": "ref.keys", "anomalyFrom": iso(at(20)), "anomalyTo": iso(at(40))}
    r = api.characterize(**window, candidateKeys=["region"])
    assert [(m["key"], m["label"]) for m in r["top_movers"]] == [("region", "us")]
    assert r["top_movers"][0]["baseline_value"] == 10.0 and r["top_movers"][0]["anomaly_value"] == 30.0
    r = api.characterize(**window)
    # Automatic keys: service_name first, then the common keys with more than one value.
    movers = [(m["key"], m["label"]) for m in r["top_movers"]]
    assert movers[0] == ("shard", "c")  # 10 → 40 (avg of eu 10, us 70) beats region us 10 → 30
    assert set(movers) == {("shard", "c"), ("region", "us"), ("service_name", "checkout")}
    by = {(m["key"], m["label"]): m for m in r["top_movers"]}
    assert by[("service_name", "checkout")]["anomaly_value"] == pytest.approx(20.0)
    r = api.characterize(**window, candidateKeys=["shard", "nope"])  # a key no series has adds nothing
    assert [(m["key"], m["label"]) for m in r["top_movers"]] == [("shard", "c")]


def test_counter_gets_rate_and_histogram_gets_quantile(api):
    # 60 per minute (1/s) in the baseline, 300 per minute (5/s) from minute 20.
    total, points = 0, []
    for m in range(-2, 40):
        total += 60 if m < 20 else 300
        points.append((at(m) + 1, total, {}))
    api.send(counter("ref.requests", points))
    r = api.characterize(metricName="ref.requests", anomalyFrom=iso(at(20)), anomalyTo=iso(at(40)))
    assert r["aggregation"] == "rate"
    assert r["baseline_mean"] == pytest.approx(1.0) and r["anomaly_mean"] == pytest.approx(5.0)
    assert r["direction"] == "up" and r["onset_time"] == iso(at(20))
    api.send(histogram("ref.latency", [(at(m) + 1, [1.0, 2.0], [1, 1, 0], {}) for m in range(10)], temporality=1))
    r = api.characterize(metricName="ref.latency", anomalyFrom=iso(at(5)), anomalyTo=iso(at(10)))
    assert r["aggregation"] == "histogram_quantile" and r["direction"] == "flat" and r["onset_time"] is None
