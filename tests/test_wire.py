"""Requests parsed with their data point and span attributes as bytes (collector/normalize/wire.py) and
walked through the memos (normalize/otlp.py) give exactly what the attributes' plain reading gives (the
KeyValue messages, `attributes()`, their JSON, the fingerprint: worked out here, from the real messages):
series ids are the store's identity, so one difference would split series after an upgrade. The same
whether the memos know the attributes or not, and whether the request comes as bytes or as a message."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings, strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from otelite.collector.normalize import otlp
from otelite.collector.jsontext import dumps, dumps_sorted
from otelite.collector.normalize.otlp import (_POINT_WALKERS, KeyValueMemo, SeriesMemo, _resource_row, _scope_row,
                                              attributes, fingerprint, label_text, metrics_to_batch,
                                              traces_to_batch)
from otelite.collector.normalize.wire import RawAttributesMetricsRequest, RawAttributesTraceRequest
from otelite.collector.pipeline.decode import OtlpDecodeError, walk_metrics, walk_traces
from otelite.collector.store.records import ROLLUP_VALUE_MAX

_text = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ["x" * ROLLUP_VALUE_MAX, "y" * (ROLLUP_VALUE_MAX + 1), "true", "1", "0.0", "-0.0", "NaN"])
_scalar = (st.builds(lambda s: common_pb2.AnyValue(string_value=s), _text)
           | st.builds(lambda i: common_pb2.AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1))
           | st.builds(lambda b: common_pb2.AnyValue(bool_value=b), st.booleans())
           | st.builds(lambda d: common_pb2.AnyValue(double_value=d), st.floats())
           | st.builds(lambda b: common_pb2.AnyValue(bytes_value=b), st.binary(max_size=4))
           | st.just(common_pb2.AnyValue()))
_any = st.recursive(_scalar, lambda inner: st.builds(
    lambda vs: common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=vs)), st.lists(inner, max_size=3))
    | st.builds(lambda kvs: common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(
        values=[common_pb2.KeyValue(key=k, value=v) for k, v in kvs])), st.lists(st.tuples(_text, inner), max_size=3)),
    max_leaves=6)
# Few distinct keys, so that attribute lists repeat (the memo's hits) and keys repeat within a list.
_attributes = st.lists(st.builds(lambda k, v: common_pb2.KeyValue(key=k, value=v), st.sampled_from("abc"), _any),
                       max_size=3)
_bounds = st.lists(st.sampled_from([0.0, -0.0, 0.5, 1.0, -2.5, float("inf"), float("nan"), 1e-300]), max_size=3)


def _drawn_scopes(draw, resources, scope_field: str):
    """One or two resources with drawn attributes added to `resources`, and a scope in each: yields the
    scope messages (`scope_field`: scope_metrics or scope_spans) to fill."""
    for _ in range(draw(st.integers(1, 2))):
        resource = resources.add()
        resource.resource.attributes.extend(draw(_attributes))
        yield getattr(resource, scope_field).add()


@st.composite
def _requests(draw) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for sm in _drawn_scopes(draw, req.resource_metrics, "scope_metrics"):
        for name in draw(st.lists(st.sampled_from(["m1", "m2"]), min_size=1, max_size=3)):
            kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary"]))
            m = sm.metrics.add(name=name)
            data = getattr(m, kind)
            for attrs in draw(st.lists(_attributes, min_size=1, max_size=4)):
                dp = data.data_points.add(time_unix_nano=draw(st.integers(0, 2**40)))
                dp.attributes.extend(attrs)
                if kind in ("gauge", "sum"):
                    if draw(st.booleans()):
                        dp.as_int = draw(st.integers(-(2**63), 2**63 - 1))
                    else:
                        dp.as_double = draw(st.floats())
                elif kind == "histogram":
                    bounds = draw(_bounds)
                    dp.explicit_bounds.extend(bounds)
                    dp.bucket_counts.extend(draw(st.lists(st.integers(0, 2**64 - 1), min_size=len(bounds) + 1,
                                                          max_size=len(bounds) + 1)))
                    dp.count = sum(dp.bucket_counts) % 2**64  # (past 2^64: not the sum, so rejected)
                elif kind == "exponential_histogram":
                    dp.scale = draw(st.integers(-2, 4))
                    dp.positive.bucket_counts.extend(draw(st.lists(st.integers(0, 9), max_size=3)))
                else:
                    dp.quantile_values.add(quantile=0.5, value=draw(st.floats()))
    return req


def _batches_equal(a, b) -> None:
    """Every field of two WriteBatches. NaN is kept as the text "NaN" (normalize/otlp.py), so rows compare
    with ==; their repr also tells -0.0 from 0.0."""
    assert (repr(a.points), repr(a.spans)) == (repr(b.points), repr(b.spans))
    assert (a.series, dict(a.span_attribute_keys), dict(a.span_attribute_values)) == \
           (b.series, dict(b.span_attribute_keys), dict(b.span_attribute_values))
    assert (a.resources, a.scopes, a.rejected, a.errors) == (b.resources, b.scopes, b.rejected, b.errors)


def _plain_series(req: ExportMetricsServiceRequest, project_id: int) -> list[tuple[int, str]]:
    """(series id, attribute JSON) of every data point with a value, in order, from the KeyValue messages."""
    out = []
    for rm in req.resource_metrics:
        rid = _resource_row(project_id, rm.resource, rm.schema_url)[0]
        for sm in rm.scope_metrics:
            sid = _scope_row(project_id, sm.scope, sm.schema_url)[0]
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                for dp in getattr(m, kind).data_points:
                    point = _POINT_WALKERS[kind](dp)  # a tuple, else why it is rejected
                    # (times and counts past int64 are rejected too: SQLite's INTEGER)
                    if isinstance(point, tuple) and max(dp.time_unix_nano, dp.start_time_unix_nano,
                                                        point[1] or 0) < 2**63:
                        text = dumps_sorted(attributes(dp.attributes))
                        out.append((fingerprint(project_id, m.name, kind, rid, sid, text), text))
    return out


def _walks_alike(req, project_id: int, walk, to_batch):
    """One batch from the request's bytes (attributes new to the memos, or some of them), its bytes again
    (every one known) and the message itself (OTLP/JSON's way in)."""
    data = req.SerializeToString()
    first = walk(data, project_id)
    _batches_equal(walk(data, project_id), first)
    _batches_equal(to_batch(req, project_id), first)
    return first


def _check_metrics(req: ExportMetricsServiceRequest, project_id: int):
    batch = _walks_alike(req, project_id, walk_metrics, metrics_to_batch)
    assert [(p[1], batch.series[p[1]][10]) for p in batch.points] == _plain_series(req, project_id)
    return batch


@settings(max_examples=300, deadline=None)
@given(_requests())
def test_raw_attribute_walk_gives_the_plain_series(req):
    batch = _check_metrics(req, 7)
    assert walk_metrics(req.SerializeToString(), 8).series.keys().isdisjoint(batch.series)  # another project's


def _service_metrics(variant: int) -> ExportMetricsServiceRequest:
    """Like a sidecar's export: services with a counter and a histogram of the same 30 label sets."""
    req = ExportMetricsServiceRequest()
    for service in ("cart", "checkout", "search"):
        rm = req.resource_metrics.add()
        rm.resource.attributes.add(key="service.name").value.string_value = f"{service}-{variant}"
        sm = rm.scope_metrics.add()
        counter = sm.metrics.add(name="http.server.request.count").sum
        hist = sm.metrics.add(name="http.server.request.duration").histogram
        for method in ("GET", "POST", "PUT"):
            for route in range(10):
                labels = [common_pb2.KeyValue(key="http.request.method", value=common_pb2.AnyValue(string_value=method)),
                          common_pb2.KeyValue(key="http.route", value=common_pb2.AnyValue(string_value=f"/r/{route}")),
                          common_pb2.KeyValue(key="http.response.status_code", value=common_pb2.AnyValue(int_value=200))]
                counter.data_points.add(attributes=labels, as_int=route, time_unix_nano=10**18 + route)
                hist.data_points.add(attributes=labels, count=3, bucket_counts=[1, 2, 0], explicit_bounds=[0.1, 1.0],
                                     time_unix_nano=10**18 + route)
    return req


def test_a_sidecars_export_walks_alike_and_hits_the_memo_the_second_time():
    req = _service_metrics(0)
    batch = _check_metrics(req, 1)
    size = len(otlp._SERIES_MEMO)
    walk_metrics(req.SerializeToString(), 1)
    assert len(batch.series) == 180 and len(otlp._SERIES_MEMO) == size  # the second walk found every list


def test_bad_attribute_bytes_fail_the_request_as_the_plain_parse_does():
    req = ExportMetricsServiceRequest()
    dp = req.resource_metrics.add().scope_metrics.add().metrics.add(name="g").gauge.data_points.add(as_int=1)
    dp.attributes.add(key="ok").value.string_value = "fine"
    data = bytearray(req.SerializeToString())
    at = data.index(b"ok")
    data[at:at + 2] = b"\xff\xfe"  # the key is no longer UTF-8
    with pytest.raises(DecodeError):
        ExportMetricsServiceRequest.FromString(bytes(data))
    RawAttributesMetricsRequest.FromString(bytes(data))  # the bytes are not looked at here...
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf ExportMetricsServiceRequest"):
        walk_metrics(bytes(data), 1)  # ...but when the walk meets them
    with pytest.raises(OtlpDecodeError):
        walk_metrics(bytes(data), 1)  # and again: a failed list is not remembered


def test_the_memos_are_bounded_by_bytes():
    memo = SeriesMemo(max_bytes=256 * 1024)  # ~600 entries of the ~430 bytes below; none over 1 KiB kept
    keys = [("prefix\x1f", (common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(int_value=i)).SerializeToString(),))
            for i in range(1500)]
    for key in keys:
        assert memo.add(key) == memo.get(key)
        assert 1 <= len(memo) <= 256 * 1024 // 400
    huge = ("prefix\x1f", (common_pb2.KeyValue(key="h", value=common_pb2.AnyValue(string_value="v" * 2000))
                           .SerializeToString(),))
    assert memo.add(huge)[1] == '{"h":"' + "v" * 2000 + '"}'  # worked out...
    assert memo.get(huge) is None  # ...but not kept


def test_bounds_of_either_zero_keep_their_sign():
    def text(bounds: list[float]) -> str:
        req = ExportMetricsServiceRequest()
        h = req.resource_metrics.add().scope_metrics.add().metrics.add(name="h").histogram
        h.data_points.add(explicit_bounds=bounds, bucket_counts=[1] * (len(bounds) + 1), count=len(bounds) + 1)
        return walk_metrics(req.SerializeToString(), 1).points[0][10]
    for _ in range(2):  # the second time from the bounds memo, where there is one
        assert text([0.0, 1.0]) == '{"bounds":[0.0,1.0],"counts":[1,1,1]}'
        assert text([-0.0, 1.0]) == '{"bounds":[-0.0,1.0],"counts":[1,1,1]}'
        assert text([0.5, 1.0]) == '{"bounds":[0.5,1.0],"counts":[1,1,1]}'


def test_every_data_point_message_is_read_with_raw_attributes():
    # wire.py changes the attributes of the four data point messages; a schema that grew a fifth would
    # leave its attributes parsed as messages, which the memo's walk could not take.
    names = {m.name for m in metrics_pb2.DESCRIPTOR.message_types_by_name.values()
             if "attributes" in m.fields_by_name and m.name.endswith("DataPoint")}
    assert names == {"NumberDataPoint", "HistogramDataPoint", "ExponentialHistogramDataPoint", "SummaryDataPoint"}


@st.composite
def _trace_requests(draw) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for ss in _drawn_scopes(draw, req.resource_spans, "scope_spans"):
        for i in range(draw(st.integers(1, 6))):
            sp = ss.spans.add(trace_id=bytes(15) + bytes([i + 1]), span_id=bytes(7) + bytes([i + 1]), name="s",
                              start_time_unix_nano=draw(st.sampled_from([0, 3_600 * 10**9, 7_300 * 10**9])))
            sp.attributes.extend(draw(_attributes))
            if draw(st.booleans()):
                sp.events.add(name="e").attributes.extend(draw(_attributes))
    return req


def _plain_spans(req: ExportTraceServiceRequest, project_id: int) -> tuple[list[str], dict, dict]:
    """Every span's attribute JSON, and the span attribute rollups (trace.md's attribute pickers: every key
    counted; a value under its label text, strings up to ROLLUP_VALUE_MAX, no arrays or maps), from the
    KeyValue messages."""
    texts, keys, values = [], {}, {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                attrs = attributes(sp.attributes)
                texts.append(dumps(attrs))
                hour = sp.start_time_unix_nano // 3_600_000_000_000
                for k, v in attrs.items():
                    keys[(project_id, "span", k, hour)] = keys.get((project_id, "span", k, hour), 0) + 1
                    if isinstance(v, (list, dict)) or (isinstance(v, str) and len(v) > ROLLUP_VALUE_MAX):
                        continue
                    key = (project_id, "span", k, label_text(v), hour)
                    values[key] = values.get(key, 0) + 1
    return texts, keys, values


def _check_traces(req: ExportTraceServiceRequest, project_id: int):
    batch = _walks_alike(req, project_id, walk_traces, traces_to_batch)
    span_only = lambda counts: {k: n for k, n in counts.items() if k[1] == "span"}  # noqa: E731
    assert ([s[12] for s in batch.spans], span_only(batch.span_attribute_keys),
            span_only(batch.span_attribute_values)) == _plain_spans(req, project_id)
    return batch


@settings(max_examples=300, deadline=None)
@given(_trace_requests())
def test_raw_span_attributes_give_the_plain_attribute_text_and_rollups(req):
    _check_traces(req, 7)


def test_spans_with_repeated_attributes_walk_alike():
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(200):
        sp = ss.spans.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), name="op",
                          start_time_unix_nano=10**18 + i * 10**9)
        for key, value in (("http.request.method", ("GET", "POST")[i % 2]), ("url.path", f"/items/{i}"),
                           ("http.response.status_code", 200 + i % 3), ("http.request.method", "PATCH")):
            kv = sp.attributes.add(key=key)
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
    batch = _check_traces(req, 1)
    assert batch.span_attribute_values[(1, "span", "http.request.method", "PATCH", 10**18 // 3_600_000_000_000)] == 200


def test_bad_span_attribute_bytes_fail_the_request_as_the_plain_parse_does():
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"t" * 16, span_id=b"s" * 8)
    sp.attributes.add(key="ok").value.string_value = "fine"
    data = bytearray(req.SerializeToString())
    at = data.index(b"ok")
    data[at:at + 2] = b"\xff\xfe"
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(bytes(data))
    RawAttributesTraceRequest.FromString(bytes(data))
    for _ in range(2):
        with pytest.raises(OtlpDecodeError, match="not a valid protobuf ExportTraceServiceRequest"):
            walk_traces(bytes(data), 1)


def test_the_key_value_memo_is_bounded_by_bytes():
    memo = KeyValueMemo(max_bytes=256 * 1024)
    for i in range(1500):
        encoded = common_pb2.KeyValue(key="k", value=common_pb2.AnyValue(int_value=i)).SerializeToString()
        assert memo.add(encoded) == memo.get(encoded) == ("k", f'"k":{i}', str(i))
        assert 1 <= len(memo) <= 256 * 1024 // 400
