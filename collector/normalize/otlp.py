"""OTLP protobuf messages → store rows (`WriteBatch`).

The one normalization path: OTLP/JSON is first mapped to the same protobuf messages (otlp_json.py), so
JSON and protobuf payloads are stored identically. Nothing in the payload is dropped silently
(otlp.md, "What must be normalized"): every field lands in a column or in a JSON column, and an item
that cannot be stored is counted as rejected with a reason (partial success).

store.md measures this walk, not protobuf decoding, as the CPU cost of ingest, so the loops below are
written for speed: local names, one dict per attribute list, no per-field reflection.
"""

from __future__ import annotations

import base64
import hashlib
import math
import operator
from array import array
from collections import Counter
from typing import Any, Container, Iterable

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.collector.jsontext import dumps as _dumps, dumps_sorted as _dumps_sorted
from otelite.collector.normalize.wire import RawAttributesMetricsRequest, RawAttributesTraceRequest, key_values
from otelite.collector.store.records import INT64_MAX as _INT64_MAX, ROLLUP_VALUE_MAX, SeriesLeftOut, WriteBatch
from otelite.collector.store.records import label_text  # noqa: F401 - re-exported

_HOUR_NS = 3_600_000_000_000
_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK
# OTLP times and counts are uint64; SQLite's INTEGER is int64 (records.INT64_MAX). A value above it (a time
# after the year 2262) cannot be stored: its item is rejected (partial success). Left to the writer, it
# failed the whole group commit with 503, every other client's request in it too, and the retried request
# again and again.


class OtlpDataError(ValueError):
    """The whole request is invalid (e.g. an id of the wrong length): HTTP 400 / INVALID_ARGUMENT."""


def fingerprint(*parts: object) -> int:
    """A stable 63-bit id (positive SQLite INTEGER) for a resource, scope or series."""
    return _fingerprint_text("\x1f".join(map(str, parts)))


def _fingerprint_text(text: str) -> int:
    """`fingerprint` of parts already joined (the metrics walk joins a series' fixed parts once)."""
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") >> 1


# --- AnyValue -------------------------------------------------------------------------------------------

def any_value(v: Any) -> Any:
    """AnyValue → a JSON-able Python value (bytes as base64 text, arrays as lists, kvlists as dicts)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return json_double(v.double_value)
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def json_double(d: float) -> float | str:
    """JSON has no NaN/Infinity: keep them as the strings OTLP/JSON itself uses."""
    return d if math.isfinite(d) else ("NaN" if d != d else ("Infinity" if d > 0 else "-Infinity"))


def attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    # The hot loop of ingest. A non-empty string_value can only be a string (the oneof's other members
    # read as ""), so strings skip WhichOneof; the rest, and the empty string, go through `any_value`.
    return {kv.key: (v := kv.value).string_value or any_value(v) for kv in kvs}


def _resource_row(project_id: int, resource: Any, schema_url: str) -> tuple[int, tuple, dict]:
    attrs = attributes(resource.attributes)
    attrs_json = _dumps_sorted(attrs)
    dropped = resource.dropped_attributes_count
    rid = fingerprint(project_id, attrs_json, dropped, schema_url)
    svc = attrs.get("service.name")
    row = (rid, project_id, attrs_json, dropped, schema_url,
           label_text(svc) if svc is not None else "",
           _opt_text(attrs.get("service.namespace")), _opt_text(attrs.get("service.instance.id")))
    return rid, row, attrs


def _scope_row(project_id: int, scope: Any, schema_url: str) -> tuple[int, tuple]:
    attrs_json = _dumps_sorted(attributes(scope.attributes))
    dropped = scope.dropped_attributes_count
    sid = fingerprint(project_id, scope.name, scope.version, attrs_json, dropped, schema_url)
    return sid, (sid, project_id, scope.name, scope.version, attrs_json, dropped, schema_url)


def _opt_text(value: Any) -> str | None:
    return None if value is None else label_text(value)


def _check_id(raw: bytes, size: int, what: str) -> None:
    # otlp.md: a wrong id length makes the request undecodable (400), as the Collector's pdata does.
    if raw and len(raw) != size:
        raise OtlpDataError(f"{what} must be {size} bytes ({size * 2} hex characters), got {len(raw)} bytes")


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


# --- memos of what repeating attributes make (wire.py) ------------------------------------------------

_ENTRY_BYTES = 400  # a memo entry's objects besides its texts and bytes (measured: ~570 bytes in all a series)


class _Memo:
    """A dict of what the walk worked out for inputs seen lately, bounded by an estimate of its memory
    (the lengths of its keys' bytes and its texts, plus _ENTRY_BYTES an entry): when full it starts afresh,
    which costs one walk of each input again. An entry over 1/256 of the budget is not kept (a client's
    huge attributes must not push out everyone else's)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._known: dict = {}
        self._bytes = 0
        self.get = self._known.get

    def _keep(self, key: Any, value: Any, size: int) -> None:
        size += _ENTRY_BYTES
        if size > self.max_bytes // 256:
            return
        if self._bytes + size > self.max_bytes:
            self._known.clear()
            self._bytes = 0
        self._known[key] = value
        self._bytes += size

    def __len__(self) -> int:
        return len(self._known)


# --- traces ---------------------------------------------------------------------------------------------

class KeyValueMemo(_Memo):
    """What one attribute of a span makes: its encoded KeyValue (wire.py) → (key, its member of the attribute
    JSON object, `"key":value`, its label text for the value rollup or None), for the attributes seen lately.

    Spans' attribute lists differ, but most single attributes repeat (method, route, status, peer...): the
    walk parses and encodes each of those once, not once per span (the attributes were two thirds of the
    trace walk: docs/benchmarks.md)."""

    def __init__(self, max_bytes: int = 4 << 20) -> None:
        super().__init__(max_bytes)

    def add(self, encoded: bytes) -> tuple[str, str, str | None]:
        (kv,) = key_values((encoded,))  # DecodeError: the request is invalid
        value = (v := kv.value).string_value or any_value(v)
        if value.__class__ is str:
            text = value if len(value) <= ROLLUP_VALUE_MAX else None
        else:  # arrays and maps are not rolled up; 0.0 and -0.0 are two labels (their reprs differ)
            text = None if isinstance(value, (list, dict)) else label_text(value)
        known = (kv.key, _dumps({kv.key: value})[1:-1], text)
        self._keep(encoded, known, len(encoded) + len(known[1]) + (len(text) if text is not None else 0))
        return known


_KEY_VALUE_MEMO = KeyValueMemo()
_key, _member = operator.itemgetter(0), operator.itemgetter(1)


def _span_attributes(encoded: Any) -> tuple[list[tuple], str]:
    """A span's attributes from their encoded KeyValues: the memo entries of its attributes, as many as
    `attributes()` would give keys (a repeated key keeps its first place and its last value), and the
    attribute JSON `dumps(attributes(...))` would give."""
    memo = _KEY_VALUE_MEMO
    kvs = list(map(memo.get, encoded))  # (map, dict and zip: C loops, no Python step per attribute)
    if None in kvs:
        kvs = [kv or memo.add(b) for kv, b in zip(kvs, encoded)]
    if len(kvs) > 1:
        by_key = dict(zip(map(_key, kvs), kvs))
        if len(by_key) < len(kvs):
            kvs = list(by_key.values())
    return kvs, "{" + ",".join(map(_member, kvs)) + "}"


def traces_to_batch(request: ExportTraceServiceRequest | RawAttributesTraceRequest, project_id: int
                    ) -> WriteBatch:
    """Walk a trace request into rows. Raises OtlpDataError for a request that is invalid as a whole; spans
    that are invalid alone are counted in `rejected`. Bytes are parsed as a RawAttributesTraceRequest
    (pipeline/decode.py); a message built in process (OTLP/JSON, tests) is re-read as one, so every request
    takes this one walk (a serialization and a parse, both in C)."""
    if not isinstance(request, RawAttributesTraceRequest):
        request = RawAttributesTraceRequest.FromString(request.SerializeToString())
    batch = WriteBatch()
    append = batch.spans.append
    key_counts: Counter = Counter()
    value_counts: Counter = Counter()
    # The KeyValueMemo entries of the span attributes per hour, gathered by list.extend and counted once
    # at the end (_count_span_attributes): a Python step per attribute was a fifth of the walk.
    hour_kvs: dict[int, list] = {}
    dumps = _dumps
    for rs in request.resource_spans:
        rid, rrow, rattrs = _resource_row(project_id, rs.resource, rs.schema_url)
        service = rrow[5]
        per_hour: Counter = Counter()
        for ss in rs.scope_spans:
            sid, srow = _scope_row(project_id, ss.scope, ss.schema_url)
            stored_in_scope = False
            current_hour = None
            for sp in ss.spans:
                trace_id = sp.trace_id
                span_id = sp.span_id
                parent = sp.parent_span_id
                if (trace_id and len(trace_id) != 16) or (span_id and len(span_id) != 8) \
                        or (parent and len(parent) != 8):
                    _check_id(trace_id, 16, "span.trace_id")
                    _check_id(span_id, 8, "span.span_id")
                    _check_id(parent, 8, "span.parent_span_id")
                if not trace_id or trace_id == _ZERO_TRACE or not span_id or span_id == _ZERO_SPAN:
                    batch.rejected += 1
                    _note(batch, "a span with an empty or all-zero trace_id or span_id was rejected")
                    continue
                start = sp.start_time_unix_nano
                end = sp.end_time_unix_nano
                if start > _INT64_MAX or end > _INT64_MAX:
                    batch.rejected += 1
                    _note(batch, "a span with a time over 2^63 - 1 ns (after the year 2262) was rejected")
                    continue
                hour = start // _HOUR_NS
                per_hour[hour] += 1
                if hour != current_hour:
                    current_hour = hour
                    extend_kvs = hour_kvs.setdefault(hour, []).extend
                kvs, attrs_json = _span_attributes(sp.attributes)
                extend_kvs(kvs)
                events = sp.events
                links = sp.links
                status = sp.status
                append((
                    project_id, trace_id, span_id, parent or None, sp.trace_state, sp.flags, sp.name,
                    sp.kind, start, end, status.code, status.message, attrs_json,
                    dumps([_event(e) for e in events]) if events else None,
                    dumps([_link(ln) for ln in links]) if links else None,
                    sp.dropped_attributes_count, sp.dropped_events_count, sp.dropped_links_count,
                    rid, sid, service,
                ))
                stored_in_scope = True
            if stored_in_scope:
                batch.scopes[sid] = srow
        if per_hour:
            batch.resources[rid] = rrow
            # Resource attributes apply to every span of the resource: count them once per span.
            for hour, n in per_hour.items():
                for k, v in rattrs.items():
                    key_counts[(project_id, "resource", k, hour)] += n
                    if not isinstance(v, (list, dict)):
                        text = label_text(v)
                        if len(text) <= ROLLUP_VALUE_MAX:
                            value_counts[(project_id, "resource", k, text, hour)] += n
    for hour, kvs in hour_kvs.items():
        _count_span_attributes(project_id, hour, kvs, key_counts, value_counts)
    batch.span_attribute_keys = key_counts
    batch.span_attribute_values = value_counts
    return batch


def _count_span_attributes(project_id: int, hour: int, kvs: list, key_counts: Counter,
                           value_counts: Counter) -> None:
    """Roll up the span attributes of one hour (their KeyValueMemo entries): every key is counted; a value
    under its label text when it has one (KeyValueMemo.add: scalars, strings up to ROLLUP_VALUE_MAX)."""
    get = value_counts.get
    for (k, _, text), n in Counter(kvs).items():
        key_counts[(project_id, "span", k, hour)] += n
        if text is not None:
            key = (project_id, "span", k, text, hour)
            value_counts[key] = get(key, 0) + n


def _event(e: Any) -> dict:
    return {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes(e.attributes),
            "dropped_attributes_count": e.dropped_attributes_count}


def _link(ln: Any) -> dict:
    _check_id(ln.trace_id, 16, "link.trace_id")
    _check_id(ln.span_id, 8, "link.span_id")
    return {"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex(), "trace_state": ln.trace_state,
            "flags": ln.flags, "attributes": attributes(ln.attributes),
            "dropped_attributes_count": ln.dropped_attributes_count}


def _note(batch: WriteBatch, message: str) -> None:
    if message not in batch.errors:
        batch.errors.append(message)


# --- metrics --------------------------------------------------------------------------------------------

class SeriesMemo(_Memo):
    """What a data point's attributes make of its series: (series prefix, the attributes as encoded
    KeyValues, wire.py) → (series id, attribute JSON), for the attribute lists seen lately.

    A sidecar's series come back in every export, so the walk parses, encodes and hashes an attribute list
    once, not once per point (it was most of the walk: docs/benchmarks.md). 8 MiB hold ~14,000 series of the
    benchmark's (three attributes each)."""

    def __init__(self, max_bytes: int = 8 << 20) -> None:
        super().__init__(max_bytes)

    def add(self, key: tuple[str, tuple[bytes, ...]]) -> tuple[int, str]:
        prefix, encoded = key
        attrs_json = _dumps_sorted(attributes(key_values(encoded)))  # DecodeError: the request is invalid
        known = (_fingerprint_text(prefix + attrs_json), attrs_json)
        self._keep(key, known, sum(map(len, encoded)) + len(attrs_json))
        return known


_SERIES_MEMO = SeriesMemo()  # one per process: a decode worker's, or the event loop's when there is none


def metrics_to_batch(request: ExportMetricsServiceRequest | RawAttributesMetricsRequest, project_id: int,
                     rows_sent: Container[int] = ()) -> WriteBatch:
    """Walk a metrics request into series and point rows. Bytes are parsed as a RawAttributesMetricsRequest
    (pipeline/decode.py); a message built in process (OTLP/JSON, tests) is re-read as one, so every request
    takes this one walk. `rows_sent`: series whose rows a decode worker sent already (decode.py): of those
    the batch has only their ids and temporalities (WriteBatch.series_left_out), not their rows."""
    if not isinstance(request, RawAttributesMetricsRequest):
        request = RawAttributesMetricsRequest.FromString(request.SerializeToString())
    memo = _SERIES_MEMO
    memo_get = memo.get
    batch = WriteBatch()
    series = batch.series
    left_out: dict[int, int] = {}  # series id → temporality, of the series in rows_sent
    points = batch.points
    append = points.append
    bucket_counts = batch.bucket_counts
    for rm in request.resource_metrics:
        rid, rrow, rattrs = _resource_row(project_id, rm.resource, rm.schema_url)
        for sm in rm.scope_metrics:
            sid, srow = _scope_row(project_id, sm.scope, sm.schema_url)
            stored = False
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    # A metric with no data carries nothing to store; the Collector accepts it too.
                    continue
                data = getattr(metric, kind)
                temporality = getattr(data, "aggregation_temporality", 0)
                monotonic = 1 if getattr(data, "is_monotonic", False) else 0
                walk = _POINT_WALKERS[kind]
                name = metric.name
                # Read once per metric: each read makes a new str, and a series row of each was pickled
                # (and unpickled on the event loop's side) on its own: 13% of a batch's unpickling.
                unit, description = metric.unit, metric.description
                has_metadata = bool(metric.metadata)
                has_exemplars = kind != "summary"  # SummaryDataPoint has no exemplars field.
                # A histogram point's walker also gives its bucket counts as int64 bytes (records.WriteBatch
                # .bucket_counts), which packing reads instead of parsing the bucket JSON again.
                counts_at = bucket_counts if kind == "histogram" else None
                # The series fingerprint's parts but the point attributes, joined once per metric.
                series_prefix = "\x1f".join(map(str, (project_id, name, kind, rid, sid))) + "\x1f"
                for dp in data.data_points:
                    key = (series_prefix, tuple(dp.attributes))
                    series_id, attrs_json = memo_get(key) or memo.add(key)
                    t = dp.time_unix_nano
                    start = dp.start_time_unix_nano
                    point = walk(dp)
                    if point.__class__ is not tuple or t > _INT64_MAX or start > _INT64_MAX \
                            or (point[1] or 0) > _INT64_MAX:
                        batch.rejected += 1
                        why = point if point.__class__ is str else "a time or count over 2^63 - 1"
                        _note(batch, f"a {kind} data point of {name!r} with {why} was rejected")
                        continue
                    if series_id not in series:
                        if series_id in rows_sent:
                            left_out[series_id] = temporality
                        else:
                            series[series_id] = (series_id, project_id, name, kind, unit, description,
                                                 temporality, monotonic, rid, sid, attrs_json, t, t)
                    exemplars = dp.exemplars if has_exemplars else None
                    if counts_at is not None:
                        counts_at[len(points)] = point[7]
                        point = point[:7]
                    append((project_id, series_id, start, t) + point
                           + (_exemplars(exemplars) if exemplars else None,))
                    stored = True
                    if has_metadata:
                        _note(batch, "metric metadata is not stored")
            if stored:
                batch.scopes[sid] = srow
                batch.resources[rid] = rrow
    if left_out:
        batch.series_left_out = SeriesLeftOut(array("q", left_out), array("i", left_out.values()))
    return batch


def _number(v: float) -> float | str:
    # SQLite stores NaN as NULL; keep it as the text OTLP/JSON uses so it is not mistaken for "no value".
    return "NaN" if v != v else v


def _opt(dp: Any, name: str) -> float | None:
    return getattr(dp, name) if dp.HasField(name) else None


# Each walker returns (value, count, sum, min, max, flags, buckets), or why the point cannot be stored: a
# point with no value, or one whose bucket layout is not one (the OTLP data model: explicit bounds strictly
# increasing, an exponential scale in [-10, 20] and a zero threshold >= 0, quantiles in [0, 1], a count
# that is the sum of the buckets when there are buckets). Stored, such a layout broke every later query of
# its metric (NaN and infinite bounds are not JSON SQLite reads), a scale of 2^31 asked the scrape for a
# 2^31-bit shift, and a count below its buckets' sum made the scrape's +Inf bucket smaller than the ones
# before it, which OpenMetrics parsers refuse (the whole scrape with it).
def _number_point(dp: Any) -> tuple | str:
    kind = dp.WhichOneof("value")
    if kind == "as_int":
        value: Any = dp.as_int
    elif kind == "as_double":
        value = _number(dp.as_double)
    elif dp.flags & _NO_RECORDED_VALUE:
        value = None
    else:
        return "no value"
    return (value, None, None, None, None, dp.flags, None)


def _histogram_point(dp: Any) -> tuple | str:
    bounds = tuple(dp.explicit_bounds)
    counts = list(dp.bucket_counts)
    if counts and len(counts) != len(bounds) + 1:
        return "bucket_counts that are not one more than its explicit_bounds"
    bounds_text = _bounds_text(bounds)
    if bounds_text is None:
        return "explicit_bounds that are not finite and strictly increasing"
    if counts and sum(counts) != dp.count:
        return "a count that is not the sum of its bucket_counts"
    # The text of _dumps({"bounds": bounds, "counts": counts}), with the bounds' part (the same in every
    # point of a metric, and most of the encoding: a repr per float) encoded once. Then the same counts as
    # int64 bytes, which metrics_to_batch moves to WriteBatch.bucket_counts: each is at most the point's
    # count, and a count over 2^63 - 1 is refused there, so none overflows (such a point's bytes are not kept).
    return (None, dp.count, _opt(dp, "sum"), _opt(dp, "min"), _opt(dp, "max"), dp.flags,
            '{"bounds":' + bounds_text + ',"counts":' + _dumps(counts) + "}",
            array("q", counts).tobytes() if dp.count <= _INT64_MAX else b"")


_BOUNDS_TEXT: dict[tuple, str] = {}  # explicit bounds → their JSON text, for the bounds seen lately
_BOUNDS_TEXT_MAX = 1024


def _bounds_text(bounds: tuple) -> str | None:
    """The JSON text of valid bounds (finite, strictly increasing), else None."""
    text = _BOUNDS_TEXT.get(bounds)
    if text is None:
        if not (all(map(math.isfinite, bounds)) and all(a < b for a, b in zip(bounds, bounds[1:]))):
            return None
        text = _dumps(bounds)
        # 0.0 == -0.0 (and hash alike), so a key holding a zero could answer for bounds with the other sign.
        if 0.0 not in bounds:
            if len(_BOUNDS_TEXT) >= _BOUNDS_TEXT_MAX:
                _BOUNDS_TEXT.clear()
            _BOUNDS_TEXT[bounds] = text
    return text


_EXP_SCALES = range(-10, 21)


def _exponential_point(dp: Any) -> tuple | str:
    if dp.scale not in _EXP_SCALES:
        return f"scale {dp.scale} (the data model's range is -10 to 20)"
    if not dp.zero_threshold >= 0 or dp.zero_threshold == math.inf:
        return "a zero_threshold that is not a finite number >= 0"
    positive, negative = list(dp.positive.bucket_counts), list(dp.negative.bucket_counts)
    if (positive or negative or dp.zero_count) and dp.zero_count + sum(positive) + sum(negative) != dp.count:
        return "a count that is not the sum of its buckets and zero_count"
    buckets = {
        "scale": dp.scale, "zero_count": dp.zero_count, "zero_threshold": dp.zero_threshold,
        "positive": {"offset": dp.positive.offset, "counts": positive},
        "negative": {"offset": dp.negative.offset, "counts": negative},
    }
    return (None, dp.count, _opt(dp, "sum"), _opt(dp, "min"), _opt(dp, "max"), dp.flags, _dumps(buckets))


def _summary_point(dp: Any) -> tuple | str:
    quantiles = [[q.quantile, json_double(q.value)] for q in dp.quantile_values]
    if not all(0.0 <= q <= 1.0 for q, _ in quantiles):
        return "a quantile outside [0, 1]"
    return (None, dp.count, dp.sum, None, None, dp.flags, _dumps({"quantiles": quantiles}))


_POINT_WALKERS = {
    "gauge": _number_point,
    "sum": _number_point,
    "histogram": _histogram_point,
    "exponential_histogram": _exponential_point,
    "summary": _summary_point,
}


def _exemplars(exemplars: Any) -> str | None:
    if not exemplars:
        return None
    out = []
    for ex in exemplars:
        _check_id(ex.trace_id, 16, "exemplar.trace_id")
        _check_id(ex.span_id, 8, "exemplar.span_id")
        kind = ex.WhichOneof("value")
        out.append({"time_ns": ex.time_unix_nano,
                    "value": ex.as_int if kind == "as_int" else json_double(ex.as_double),
                    "trace_id": ex.trace_id.hex(), "span_id": ex.span_id.hex(),
                    "filtered_attributes": attributes(ex.filtered_attributes)})
    return _dumps(out)
