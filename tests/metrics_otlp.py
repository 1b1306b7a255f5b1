"""Hand-built OTLP metric requests (exact timestamps and values) and a small client for the PostHog
metrics API, shared by test_posthog_metrics.py and test_characterize.py."""

from __future__ import annotations

import datetime as dt
import time

import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

MIN = 60 * 10**9
HOUR = 60 * MIN
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def base_ns(hours_ago: int = 6) -> int:
    """A whole hour some hours ago (inside retention, away from "now")."""
    return (time.time_ns() // HOUR - hours_ago) * HOUR


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kvs(attrs: dict) -> list:
    out = []
    for k, v in attrs.items():
        any_value = common_pb2.AnyValue()
        if isinstance(v, bool):
            any_value.bool_value = v
        elif isinstance(v, int):
            any_value.int_value = v
        else:
            any_value.string_value = str(v)
        out.append(common_pb2.KeyValue(key=k, value=any_value))
    return out


def request(resource: dict | None = None) -> tuple[ExportMetricsServiceRequest, metrics_pb2.ScopeMetrics]:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(_kvs(resource if resource is not None else {"service.name": "svc"}))
    return req, rm.scope_metrics.add()


def gauge(name: str, points: list[tuple], resource: dict | None = None) -> ExportMetricsServiceRequest:
    """points: (time_ns, value, attrs); value None → a point flagged as having no recorded value."""
    req, sm = request(resource)
    m = sm.metrics.add(name=name)
    for t, v, attrs in points:
        dp = m.gauge.data_points.add(time_unix_nano=t, attributes=_kvs(attrs))
        if v is None:
            dp.flags = 1
        elif isinstance(v, int):
            dp.as_int = v
        else:
            dp.as_double = v
    return req


def counter(name: str, points: list[tuple], temporality: int = CUMULATIVE, monotonic: bool = True,
            resource: dict | None = None, start: int | None = None) -> ExportMetricsServiceRequest:
    """points: (time_ns, value, attrs) or (time_ns, value, attrs, start_ns). The start time, as an SDK
    sends it: for cumulative points one start per series (`start`, default a day before the request's
    first point: a process that started long ago); for delta points the minute before each point."""
    req, sm = request(resource)
    m = sm.metrics.add(name=name)
    m.sum.aggregation_temporality = temporality
    m.sum.is_monotonic = monotonic
    since = start if start is not None else min((p[0] for p in points), default=0) - 24 * HOUR
    for t, v, attrs, *explicit in points:
        begin = explicit[0] if explicit else (since if temporality == CUMULATIVE else t - MIN)
        dp = m.sum.data_points.add(time_unix_nano=t, start_time_unix_nano=begin, attributes=_kvs(attrs))
        if isinstance(v, int):
            dp.as_int = v
        else:
            dp.as_double = v
    return req


def histogram(name: str, points: list[tuple], temporality: int = CUMULATIVE,
              resource: dict | None = None) -> ExportMetricsServiceRequest:
    """points: (time_ns, bounds, counts, attrs)."""
    req, sm = request(resource)
    m = sm.metrics.add(name=name)
    m.histogram.aggregation_temporality = temporality
    for t, bounds, counts, attrs in points:
        m.histogram.data_points.add(time_unix_nano=t, attributes=_kvs(attrs), explicit_bounds=bounds,
                                    bucket_counts=counts, count=sum(counts), sum=float(sum(counts)))
    return req


def exp_histogram(name: str, points: list[tuple], temporality: int = DELTA,
                  resource: dict | None = None) -> ExportMetricsServiceRequest:
    """points: (time_ns, scale, offset, positive counts, zero_count, attrs)."""
    req, sm = request(resource)
    m = sm.metrics.add(name=name)
    m.exponential_histogram.aggregation_temporality = temporality
    for t, scale, offset, counts, zero, attrs in points:
        dp = m.exponential_histogram.data_points.add(time_unix_nano=t, attributes=_kvs(attrs), scale=scale,
                                                     zero_count=zero, count=sum(counts) + zero)
        dp.positive.offset = offset
        dp.positive.bucket_counts.extend(counts)
    return req


def summary(name: str, points: list[tuple], resource: dict | None = None) -> ExportMetricsServiceRequest:
    """points: (time_ns, count, sum, [(quantile, value)], attrs)."""
    req, sm = request(resource)
    m = sm.metrics.add(name=name)
    for t, count, total, quantiles, attrs in points:
        dp = m.summary.data_points.add(time_unix_nano=t, attributes=_kvs(attrs), count=count, sum=total)
        for q, v in quantiles:
            dp.quantile_values.add(quantile=q, value=v)
    return req


class Api:
    """The PostHog metrics routes of one server, with its admin key."""

    def __init__(self, server, key: str | None = None, prefix: str = "/api/projects/1") -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {key or server.admin_key()}"}
        self.prefix = prefix

    def send(self, req: ExportMetricsServiceRequest) -> None:
        r = httpx.post(self.server.http_url + "/v1/metrics", content=req.SerializeToString(),
                       headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert r.status_code == 200, r.text

    def post(self, route: str, query: dict, prefix: str | None = None) -> httpx.Response:
        return httpx.post(f"{self.server.http_url}{prefix or self.prefix}/metrics/{route}", json={"query": query},
                          headers=self.headers, timeout=20)

    def query(self, **query) -> dict:
        r = self.post("query", query)
        assert r.status_code == 200, r.text
        return r.json()

    def characterize(self, **query) -> dict:
        r = self.post("characterize", query)
        assert r.status_code == 200, r.text
        return r.json()

    def get(self, route: str, **params) -> httpx.Response:
        return httpx.get(f"{self.server.http_url}{self.prefix}/metrics/{route}", params=params,
                         headers=self.headers, timeout=10)


def series_by(results: dict, key: str | None = None) -> dict:
    """{label value (or clause name): {time: value}} of a query response."""
    out = {}
    for s in results["results"]:
        name = s["labels"].get(key) if key else s["clause"]
        out[name] = {p["time"]: p["value"] for p in s["points"]}
    return out
