"""Name, unit and label translation (prometheus.md, "Translation") and the exact bytes of the exposition.

Pure functions: no server. The live surface is in test_prometheus_scrape.py and test_prometheus_server.py.
"""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from otelite.api.prometheus import accepts_gzip, wants_openmetrics
from otelite.exporters.prometheus import translation as tr
from otelite.exporters.prometheus.collect import _clashes, exponential_buckets
from otelite.exporters.prometheus.exposition import (COUNTER, GAUGE, HISTOGRAM, INFO, SUMMARY, Family, float_label,
                                             format_value, generate_latest)


# --- metric names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, unit, kind, expected", [
    # characters outside [a-zA-Z0-9_:] → _, runs collapsed, leading/trailing _ dropped
    ("http.server.duration", "", "", "http_server_duration"),
    ("my-metric name!", "", "", "my_metric_name"),
    ("a..b__c", "", "", "a_b_c"),
    ("ns:rule.x", "", "", "ns:rule_x"),
    ("(lambda).function.executions(#)", "", "", "lambda_function_executions"),
    # leading digit
    ("2xx.responses", "", "", "_2xx_responses"),
    ("404", "", "counter", "_404_total"),
    # UCUM units
    ("http.server.duration", "s", "", "http_server_duration_seconds"),
    ("http.server.duration", "ms", "", "http_server_duration_milliseconds"),
    ("net.io", "By", "counter", "net_io_bytes_total"),
    ("heap", "KiBy", "", "heap_kibibytes"),
    ("disk.free", "%", "", "disk_free_percent"),
    ("speed", "m/s", "", "speed_meters_per_second"),
    ("temperature", "Cel", "gauge", "temperature_celsius"),
    ("rate", "1/s", "", "rate_per_second"),
    ("drops", "{packets}/s", "", "drops_per_second"),
    ("packets.in", "packets", "counter", "packets_in_packets_total"),
    # annotations dropped
    ("http.requests", "{request}", "counter", "http_requests_total"),
    ("queue.items", "{item}", "", "queue_items"),
    # `1` → _ratio for OpenTelemetry gauges only
    ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
    ("cpu.utilization", "1", "", "cpu_utilization"),
    ("errors", "1", "counter", "errors_total"),
    ("cpu_ratio", "1", "gauge", "cpu_ratio"),
    # the unit is not repeated when the name already ends with it; _total is not doubled and comes last
    ("process.cpu.time_seconds", "s", "counter", "process_cpu_time_seconds_total"),
    ("response_bytes", "By", "", "response_bytes"),
    ("speed_meters", "m/s", "", "speed_meters_per_second"),
    ("speed_meters_per_second", "m/s", "", "speed_meters_per_second"),
    ("requests_total", "", "counter", "requests_total"),
    ("requests.total", "", "counter", "requests_total"),
    ("requests_total", "By", "counter", "requests_bytes_total"),
    ("requests_total", "", "", "requests_total"),  # a gauge keeps what it was called
])
def test_metric_names(name, unit, kind, expected):
    assert tr.metric_name(name, unit, counter=kind == "counter", gauge=kind == "gauge") == expected


def test_family_unit_only_when_the_name_ends_with_it():
    assert tr.family_unit("http_server_duration_seconds", "s") == "seconds"
    assert tr.family_unit("speed_meters_per_second", "m/s") == "meters_per_second"
    assert tr.family_unit("cpu_ratio", "1", gauge=True) == "ratio"
    assert tr.family_unit("cpu", "1") == ""
    assert tr.family_unit("queue_items", "{item}") == ""


# --- labels ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, expected", [
    ("http.method", "http_method"),
    ("net.peer-name", "net_peer_name"),
    ("2xx", "key_2xx"),
    ("9", "key_9"),
    ("_private", "_private"),
    ("__name__", "key__name__"),
    ("ok", "ok"),
    ("", "key_"),
    ("ünïcode", "_n_code"),
])
def test_label_names(key, expected):
    assert tr.label_name(key) == expected


def test_colliding_attributes_are_joined_in_the_order_of_the_original_keys():
    attrs = {"http_method": "POST", "http.method": "GET", "http-method": "PUT", "other": "x"}
    # sorted original keys: "http-method" < "http.method" < "http_method"
    assert tr.label_pairs(attrs) == [("http_method", "PUT;GET;POST"), ("other", "x")]


def test_label_values_of_other_types_read_as_json():
    pairs = dict(tr.label_pairs({"b": True, "i": 3, "f": 2.5, "l": [1, "a"], "m": {"z": 1, "a": 2}}))
    assert pairs == {"b": "true", "i": "3", "f": "2.5", "l": '[1,"a"]', "m": '{"a":2,"z":1}'}


def test_attributes_that_map_onto_labels_otelite_sets_are_exported_():
    assert tr.label_pairs({"job": "a", "instance": "b", "le": "c", "otel.scope.name": "d"},
                          tr.reserved_labels(HISTOGRAM)) == [
        ("exported_instance", "b"), ("exported_job", "a"), ("exported_le", "c"), ("exported_otel_scope_name", "d")]
    assert tr.label_pairs({"quantile": "x", "le": "y"}, tr.reserved_labels(SUMMARY)) == [
        ("exported_quantile", "x"), ("le", "y")]
    assert tr.label_pairs({"le": "y"}, tr.reserved_labels(GAUGE)) == [("le", "y")]


def test_job_and_instance_from_the_resource():
    assert tr.job_instance({"service.name": "api", "service.namespace": "shop", "service.instance.id": "p1"}) \
        == [("job", "shop/api"), ("instance", "p1")]
    assert tr.job_instance({"service.name": "api"}) == [("job", "api")]
    assert tr.job_instance({"service.name": "api", "service.namespace": ""}) == [("job", "api")]
    assert tr.job_instance({"host.name": "h"}) == []


def test_target_info_labels_hold_the_other_resource_attributes():
    resource = {"service.name": "api", "service.instance.id": "p1", "host.name": "h1", "k8s.pod.uid": "u",
                "job": "clash"}
    assert tr.target_info_labels(resource) == [
        ("exported_job", "clash"), ("host_name", "h1"), ("instance", "p1"), ("job", "api"), ("k8s_pod_uid", "u")]


def test_label_values_are_escaped():
    assert tr.render_labels([("a", 'say "hi"\\n\nnext'), ("b", "plain")]) == \
        'a="say \\"hi\\"\\\\n\\nnext",b="plain"'


# --- content negotiation --------------------------------------------------------------------------------

@pytest.mark.parametrize("accept, openmetrics", [
    (None, False),
    ("", False),
    ("*/*", False),
    ("text/plain", False),
    ("application/json", False),
    ("application/openmetrics-text", True),
    ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
    # Prometheus 2.x
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
    ("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5", False),
    ("application/openmetrics-text;version=2.0.0", False),  # a version we cannot produce
    ("application/openmetrics-text;q=0", False),
])
def test_negotiation(accept, openmetrics):
    assert wants_openmetrics(accept) is openmetrics


@pytest.mark.parametrize("header, gz", [
    (None, False), ("identity", False), ("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False),
    ("br, GZIP", True)])
def test_accept_encoding(header, gz):
    assert accepts_gzip(header) is gz


# --- exposition -----------------------------------------------------------------------------------------

L = 'code="200",job="shop/api"'
EXEMPLAR = ('trace_id="4bf92f3577b34da6a3ce929d0e0e4736",span_id="00f067aa0ba902b7"', 0.25,
            1_700_000_000_123_456_789)


def _families() -> list[Family]:
    return [
        Family("http_requests", COUNTER, "Requests.\nServed \\ \"ok\"", "", [(L, 7, EXEMPLAR), ("", 1.5, None)]),
        Family("queue_depth", GAUGE, "", "", [('q="a"', -2, None), ('q="b"', float("nan"), None)]),
        Family("latency_seconds", HISTOGRAM, "Latency.", "seconds", [
            (L, ["0.1", "1.0"], [1, 3], 4, 2.5, {1: EXEMPLAR}),
            ('code="500"', [], [], 0, None, None)]),
        Family("rpc_seconds", SUMMARY, "", "seconds", [(L, [("0.5", 0.2), ("0.99", 1.0)], 10, 3.25)]),
        Family("target", INFO, "Target metadata", "", [('host_name="h1",job="shop/api"', 1, None)]),
    ]


def test_text_format_exact_bytes():
    assert generate_latest(_families()).decode() == """\
# HELP http_requests_total Requests.\\nServed \\\\ "ok"
# TYPE http_requests_total counter
http_requests_total{code="200",job="shop/api"} 7
http_requests_total 1.5
# TYPE queue_depth gauge
queue_depth{q="a"} -2
queue_depth{q="b"} NaN
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{code="200",job="shop/api",le="0.1"} 1
latency_seconds_bucket{code="200",job="shop/api",le="1.0"} 3
latency_seconds_bucket{code="200",job="shop/api",le="+Inf"} 4
latency_seconds_sum{code="200",job="shop/api"} 2.5
latency_seconds_count{code="200",job="shop/api"} 4
latency_seconds_bucket{code="500",le="+Inf"} 0
latency_seconds_count{code="500"} 0
# TYPE rpc_seconds summary
rpc_seconds{code="200",job="shop/api",quantile="0.5"} 0.2
rpc_seconds{code="200",job="shop/api",quantile="0.99"} 1.0
rpc_seconds_sum{code="200",job="shop/api"} 3.25
rpc_seconds_count{code="200",job="shop/api"} 10
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{host_name="h1",job="shop/api"} 1
"""
    families = {f.name: f for f in parse_text(generate_latest(_families()).decode())}
    assert set(families) == {"http_requests", "queue_depth", "latency_seconds", "rpc_seconds", "target_info"}


def test_openmetrics_exact_bytes_and_parse():
    text = generate_latest(_families(), openmetrics=True).decode()
    assert text == """\
# HELP http_requests Requests.\\nServed \\\\ \\"ok\\"
# TYPE http_requests counter
http_requests_total{code="200",job="shop/api"} 7 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",\
span_id="00f067aa0ba902b7"} 0.25 1700000000.123456789
http_requests_total 1.5
# TYPE queue_depth gauge
queue_depth{q="a"} -2
queue_depth{q="b"} NaN
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
# UNIT latency_seconds seconds
latency_seconds_bucket{code="200",job="shop/api",le="0.1"} 1
latency_seconds_bucket{code="200",job="shop/api",le="1.0"} 3 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",\
span_id="00f067aa0ba902b7"} 0.25 1700000000.123456789
latency_seconds_bucket{code="200",job="shop/api",le="+Inf"} 4
latency_seconds_sum{code="200",job="shop/api"} 2.5
latency_seconds_count{code="200",job="shop/api"} 4
latency_seconds_bucket{code="500",le="+Inf"} 0
# TYPE rpc_seconds summary
# UNIT rpc_seconds seconds
rpc_seconds{code="200",job="shop/api",quantile="0.5"} 0.2
rpc_seconds{code="200",job="shop/api",quantile="0.99"} 1.0
rpc_seconds_sum{code="200",job="shop/api"} 3.25
rpc_seconds_count{code="200",job="shop/api"} 10
# HELP target Target metadata
# TYPE target info
target_info{host_name="h1",job="shop/api"} 1
# EOF
"""
    parsed = {f.name: f for f in parse_openmetrics(text)}
    assert [s.value for s in parsed["http_requests"].samples] == [7, 1.5]
    ex = parsed["http_requests"].samples[0].exemplar
    assert ex.labels == {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    assert ex.value == 0.25
    assert parsed["latency_seconds"].unit == "seconds"
    assert parsed["target"].type == "info"


def test_openmetrics_leaves_out_what_the_format_forbids():
    families = [
        Family("bad", COUNTER, "", "", [('a="nan"', float("nan"), None), ('a="neg"', -1, None), ('a="ok"', 2, None)]),
        # negative bucket bounds: no _sum/_count in OpenMetrics (the sum would not be a counter)
        Family("temp", HISTOGRAM, "", "", [("", ["-10.0", "0.0"], [1, 2], 3, -4.0, None)]),
        # negative sum with positive bounds: the same
        Family("delta", HISTOGRAM, "", "", [("", ["0.0"], [2], 2, -3.0, None)]),
        Family("q", SUMMARY, "", "", [("", [("0.5", -1.0), ("0.9", 2.0)], 2, -1.0)]),
    ]
    text = generate_latest(families, openmetrics=True).decode()
    assert 'bad_total{a="ok"} 2\n' in text and "nan" not in text and "neg" not in text
    assert "temp_sum" not in text and "temp_count" not in text and "delta_sum" not in text
    assert 'q{quantile="0.5"}' not in text and "q_sum" not in text
    assert text.endswith("# EOF\n")
    list(parse_openmetrics(text))  # valid
    # text 0.0.4 has no such rules: everything is shown
    plain = generate_latest(families).decode()
    assert 'bad_total{a="neg"} -1' in plain and "temp_sum -4.0" in plain and 'q{quantile="0.5"} -1.0' in plain


def test_empty_exposition():
    assert generate_latest([]) == b""
    assert generate_latest([], openmetrics=True) == b"# EOF\n"


@pytest.mark.parametrize("value, text", [
    (3, "3"), (-7, "-7"), (2**62, "4611686018427387904"), (0.25, "0.25"), (1e20, "1e+20"),
    (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"), (1.0, "1.0")])
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("bound, text", [
    (0, "0.0"), (1, "1.0"), (0.005, "0.005"), (2.5, "2.5"), (1000000, "1e+06"), (10000, "10000.0"),
    (float("inf"), "+Inf"), (-5, "-5.0")])
def test_le_labels_are_canonical(bound, text):
    assert float_label(bound) == text


# --- exponential histograms as explicit buckets ---------------------------------------------------------

def test_exponential_buckets_scale_0():
    # scale 0: base 2, bucket i holds (2**i, 2**(i+1)]
    b = {"scale": 0, "zero_count": 1, "zero_threshold": 0.0,
         "positive": {"offset": 0, "counts": [2, 0, 3]}, "negative": {"offset": 1, "counts": [4]}}
    assert exponential_buckets(b) == [(-2.0, 4), (0.0, 1), (2.0, 2), (4.0, 0), (8.0, 3)]


def test_exponential_buckets_fractional_and_negative_scales():
    b = {"scale": 1, "zero_count": 0, "zero_threshold": 0.0,
         "positive": {"offset": -1, "counts": [1, 1]}, "negative": {"offset": 0, "counts": []}}
    assert exponential_buckets(b) == [(1.0, 1), (2 ** 0.5, 1)]
    b = {"scale": -1, "zero_count": 0, "zero_threshold": 0.0,
         "positive": {"offset": 1, "counts": [5]}, "negative": {"offset": 0, "counts": []}}
    assert exponential_buckets(b) == [(16.0, 5)]  # base 4: bucket 1 holds (4, 16]


def test_exponential_buckets_of_scales_a_store_written_before_the_scale_check_may_hold():
    """The receivers now refuse a scale outside [-10, 20]; an older store may hold one. Its bounds are
    worked out without a 2^31-bit shift (the scrape stalled on it): off the doubles, they are 0 or inf."""
    for scale, expected in ((-2**31, [(-0.0, 1), (0.0, 0), (1.0, 2), (math.inf, 3)]),
                            (2**31 - 1, [(-1.0, 1), (0.0, 0), (1.0, 5)])):
        b = {"scale": scale, "zero_count": 0, "zero_threshold": 0.0,
             "positive": {"offset": -1, "counts": [2, 3]}, "negative": {"offset": -1, "counts": [1]}}
        started = time.perf_counter()
        assert exponential_buckets(b) == expected
        assert time.perf_counter() - started < 0.1


# --- families that cannot coexist -----------------------------------------------------------------------

def test_clashing_sample_names_drop_every_family_involved():
    fams = {"x": [HISTOGRAM], "x_count": [GAUGE], "y": [COUNTER], "y_total": [GAUGE], "z": [GAUGE],
            "target": [INFO], "target_info": [GAUGE]}
    assert _clashes(fams) == {"x", "x_count", "y", "y_total", "target_info"}


@pytest.mark.parametrize("b", [
    {"scale": 0, "zero_count": 1, "zero_threshold": 0.0, "positive": {"offset": 0, "counts": [2, 0, 3]},
     "negative": {"offset": 1, "counts": [4, 0, 0]}},
    {"scale": 3, "zero_count": 0, "zero_threshold": 0.0, "positive": {"offset": -5, "counts": [1, 2, 3]},
     "negative": {"offset": 0, "counts": [0, 0]}},
    # a zero threshold above the first positive bounds: those buckets fold into the zero bucket
    {"scale": 0, "zero_count": 2, "zero_threshold": 3.0, "positive": {"offset": 0, "counts": [1, 1, 1]},
     "negative": {"offset": 0, "counts": []}},
])
def test_exponential_samples_use_the_cached_layout_exactly(b):
    import json
    from otelite.exporters.prometheus.collect import StoreCollector
    expected = exponential_buckets(b)
    collector = StoreCollector()
    for _ in range(2):  # the second time from the layout cache
        labels, les, cumulative, count, total, ex = collector._exponential("a=\"1\"", 9, 1.0, json.dumps(b), None)
        assert les == [float_label(x) for x, _ in expected]
        assert cumulative == [sum(c for _, c in expected[:i + 1]) for i in range(len(expected))]


def test_the_memo_reuses_text_only_for_the_very_same_samples():
    memo: dict = {}
    families = _families()
    plain = generate_latest(families)
    assert generate_latest(families, memo=memo) == plain
    assert len(memo) == 3  # two histogram samples and one summary sample
    assert generate_latest(families, memo=memo) == plain
    # A changed series arrives as a new sample object: rendered afresh, never from the memo.
    families[2].samples[0] = (L, ["0.1", "1.0"], [2, 5], 6, 3.5, None)
    again = generate_latest(families, memo=memo).decode()
    assert 'latency_seconds_bucket{code="200",job="shop/api",le="+Inf"} 6\n' in again
    assert again == generate_latest(families).decode()
    om_memo: dict = {}
    assert generate_latest(families, True, om_memo) == generate_latest(families, True)
