"""Metrics a REST dialect wrote (Flux, Trifle: export-log entries holding rows) → an OTLP request, for the
otlp and otlphttp exporters.

A series the store keeps as an OpenTelemetry type is sent as that type, exactly as stored: a Flux gauge as
a Gauge point, a Flux counter as a DELTA, non-monotonic Sum point (the SDK's decrement is a negative delta),
with the series' name, unit, description, resource, scope (`otelite.flux`) and attributes (the tags).
otelite's own types have no OTLP data point with their meaning, so their points are left out and counted
(reason `no_otlp_type`): a Flux distribution (one observation per point, summarized by exact percentiles),
a Flux set (a member's text) and a Trifle tally (a track adds, an assert replaces the total).
prometheusremotewrite sends those too, as the scrape shows them.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otelite.collector.store.records import WriteBatch

NO_OTLP_TYPE = "no_otlp_type"  # otelite_exporter_dropped_* reason
_OTLP_TYPES = ("gauge", "sum")
_INT64 = 1 << 63


def rows_request(batch: WriteBatch) -> tuple[bytes, int]:
    """The serialized ExportMetricsServiceRequest of `batch`'s points of an OTLP type, and how many points
    were left out."""
    request = ExportMetricsServiceRequest()
    resources: dict[int, Any] = {}
    scopes: dict[tuple[int, int], Any] = {}
    metrics: dict[int, Any] = {}
    left_out = 0
    for p in batch.points:
        # POINT_COLUMNS: series 1, start 2, time 3, value 4, flags 9; SERIES_COLUMNS: name 2, type 3, unit 4,
        # description 5, temporality 6, monotonic 7, resource 8, scope 9, attributes 10
        series = batch.series[p[1]]
        kind = series[3]
        if kind not in _OTLP_TYPES or p[4] is None:
            left_out += 1
            continue
        metric = metrics.get(p[1])
        if metric is None:
            rid, sid = series[8], series[9]
            rm = resources.get(rid)
            if rm is None:
                rm = resources[rid] = request.resource_metrics.add()
                row = batch.resources[rid]  # RESOURCE_COLUMNS: attributes 2, dropped 3, schema_url 4
                _attributes(rm.resource.attributes, row[2])
                rm.resource.dropped_attributes_count = row[3] or 0
                rm.schema_url = row[4] or ""
            sm = scopes.get((rid, sid))
            if sm is None:
                sm = scopes[(rid, sid)] = rm.scope_metrics.add()
                row = batch.scopes[sid]  # SCOPE_COLUMNS: name 2, version 3, attributes 4, dropped 5, schema_url 6
                sm.scope.name, sm.scope.version = row[2] or "", row[3] or ""
                _attributes(sm.scope.attributes, row[4])
                sm.scope.dropped_attributes_count = row[5] or 0
                sm.schema_url = row[6] or ""
            metric = metrics[p[1]] = sm.metrics.add(name=series[2], unit=series[4] or "",
                                                    description=series[5] or "")
            if kind == "sum":
                metric.sum.aggregation_temporality = series[6]
                metric.sum.is_monotonic = bool(series[7])
        point = (metric.sum if kind == "sum" else metric.gauge).data_points.add()
        _attributes(point.attributes, series[10])
        point.start_time_unix_nano, point.time_unix_nano, point.flags = p[2] or 0, p[3], p[9] or 0
        value = p[4]
        if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
            point.as_int = value
        else:
            point.as_double = float(value)  # "NaN" as the store keeps it reads as float('nan')
    return request.SerializeToString(), left_out


def _attributes(target, attributes_json: str | None) -> None:
    for key, value in json.loads(attributes_json or "{}").items():
        target.append(KeyValue(key=key, value=_any_value(value)))


def _any_value(v: Any) -> AnyValue:
    """normalize/otlp.py's any_value in reverse (JSON as the store keeps attribute values)."""
    out = AnyValue()
    if isinstance(v, str):
        out.string_value = v
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, list):
        out.array_value.values.extend(_any_value(x) for x in v)
    elif isinstance(v, dict):
        out.kvlist_value.values.extend(KeyValue(key=k, value=_any_value(x)) for k, x in v.items())
    return out
