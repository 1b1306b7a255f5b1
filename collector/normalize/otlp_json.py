"""Hand-written OTLP/JSON -> protobuf mapping for traces and metrics.

OTLP/HTTP requests may carry ``application/json`` bodies.  This module turns
such a body (already parsed with :func:`json.loads`) into the very protobuf
messages the gRPC and binary OTLP/HTTP receivers produce, so the rest of the
pipeline has exactly one normalization path (protobuf -> rows).

The rules implemented here are those of the OTLP specification, section
"JSON Protobuf Encoding" (opentelemetry-proto docs/specification.md,
https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), which
builds on the proto3 JSON mapping with a few OTLP-specific deviations, plus
the leniencies the OpenTelemetry Collector accepts:

* Keys are the lowerCamelCase ``json_name`` of each proto field; the original
  snake_case proto field names are accepted as well.  Unknown keys are ignored
  at every level (forward compatibility); ``null`` means "field absent".
* ``traceId`` / ``spanId`` / ``parentSpanId`` (spans, links, exemplars) are
  hex strings, case-insensitive -- NOT base64 as plain proto3 JSON would
  demand.  An empty string means "unset".
* Enums may be given as integers or as enum value names.
* 64-bit integers may be given as JSON numbers or decimal strings.
* Doubles may be given as numbers or as the strings "NaN", "Infinity",
  "-Infinity" (or any numeric string).
* ``AnyValue.bytesValue`` is base64 (standard alphabet; url-safe accepted).

Fields of the schema this module does not map (ignored like unknown keys):
``Resource.entityRefs`` (still in development) and the profiles-only
``*Strindex`` fields of KeyValue / AnyValue.

We deliberately do not use ``google.protobuf.json_format``: it is an order of
magnitude slower and would decode the ids as base64.  Nothing reflects over
descriptors per field: every message type has a precomputed table from each
accepted key spelling to a small setter closure, and the two hottest paths --
``KeyValue``/``AnyValue`` (every attribute) and ``Span`` -- additionally
assign the common well-formed shapes inline, falling back to the table's
setter for anything else.

Errors are reported as :class:`OtlpJsonError` whose message names the path of
the offending value, e.g.
``resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters, got 30``.
The path is assembled only while an error propagates (each level appends its
segment in an ``except`` clause), so well-formed input pays nothing for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from typing import Any

from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "OtlpJsonError",
    "traces_request_from_json",
    "metrics_request_from_json",
    "status_to_json",
    "export_response_to_json",
]


class OtlpJsonError(ValueError):
    """An OTLP/JSON document does not map onto the OTLP protobuf schema.

    ``path`` is the location of the offending value (e.g.
    ``resourceSpans[0].scopeSpans[0].spans[3].traceId``, empty for the
    document itself) and ``reason`` says what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class _Invalid(Exception):
    """Internal error carrying the path segments collected so far, innermost first.

    Deliberately not a ValueError, so it cannot be confused with errors raised
    by protobuf itself while it propagates through the ``except`` clauses.
    """

    __slots__ = ("reason", "parts")

    def __init__(self, reason: str, *parts: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.parts = list(parts)


# A setter stores one JSON value into one field of a message; a field spec
# turns the proto field name into such a setter; a table maps every accepted
# key spelling of a message type to its setter.
_Setter = Callable[[Any, Any], None]
_FieldSpec = Callable[[str], _Setter]
_Table = dict[str, _Setter]

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_U32_MAX = 2**32 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_U64_MAX = 2**64 - 1


# --------------------------------------------------------------------------
# scalar conversions
# --------------------------------------------------------------------------


def _json_type(value: object) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _preview(value: object) -> str:
    """A short repr of a value, so huge strings do not flood error messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(what: str, value: object) -> _Invalid:
    if isinstance(value, str):
        return _Invalid(f"expected {what}, got string {_preview(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _Invalid(f"expected {what}, got {_preview(value)}")
    return _Invalid(f"expected {what}, got {_json_type(value)}")


def _to_int(value: object, lo: int, hi: int) -> int:
    """Converts an integer given as JSON number or decimal string (proto3 JSON
    encodes 64-bit integers as strings, but numbers are accepted too).

    Strings go through int(), which -- unlike Go's strconv used by the
    Collector -- also tolerates surrounding whitespace and "_" digit
    separators.  That leniency is harmless and a stricter per-character scan
    would cost more than the conversion itself on the hottest field kind
    (timestamps).
    """
    kind = type(value)
    if kind is int:
        result = value
    elif kind is str:
        try:
            result = int(value)  # type: ignore[arg-type]
        except ValueError:
            raise _expected("an integer", value) from None
    elif kind is float and value.is_integer():  # type: ignore[union-attr]
        # json.loads turns 1e3 or 5.0 into a float; proto3 JSON allows
        # exponent notation as long as the value is integral.
        result = int(value)  # type: ignore[arg-type]
    else:
        raise _expected("an integer", value)
    if not lo <= result <= hi:  # type: ignore[operator]
        raise _Invalid(f"integer {result} out of range [{lo}, {hi}]")
    return result  # type: ignore[return-value]


_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _to_double(value: object) -> float:
    """Converts a double given as number, numeric string or NaN/±Infinity."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise _Invalid(f"number {_preview(value)} out of range for a double") from None
    if kind is str:
        special = _SPECIAL_DOUBLES.get(value)  # type: ignore[call-overload]
        if special is not None:
            return special
        try:
            return float(value)  # type: ignore[arg-type]
        except ValueError:
            pass
    raise _expected('a number or "NaN", "Infinity", "-Infinity"', value)


def _to_hex_id(value: object, nbytes: int) -> bytes:
    """Decodes a trace/span id: OTLP/JSON uses hex here, not base64."""
    if type(value) is not str:
        raise _expected("a hex string", value)
    if not value:
        return b""  # empty string == unset id
    nchars = 2 * nbytes
    if len(value) != nchars:
        raise _Invalid(f"expected {nchars} hex characters, got {len(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    # fromhex() skips whitespace between bytes, hence the length re-check.
    if len(raw) != nbytes:
        raise _Invalid(f"expected {nchars} hex characters, got non-hex string {_preview(value)}")
    return raw


def _to_bytes(value: object) -> bytes:
    """Decodes AnyValue.bytesValue: standard base64, url-safe alphabet and
    missing padding tolerated (some encoders emit either)."""
    if type(value) is not str:
        raise _expected("a base64 string", value)
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid(f"expected base64, got string {_preview(value)}") from None


# --------------------------------------------------------------------------
# generic message filling
# --------------------------------------------------------------------------


def _fill(msg: Any, obj: object, table: _Table) -> None:
    """Sets the fields of ``msg`` from the JSON object ``obj`` via ``table``."""
    if not isinstance(obj, dict):
        raise _expected("an object", obj)
    for key, value in obj.items():
        setter = table.get(key)
        if setter is None or value is None:  # unknown key / null == absent
            continue
        try:
            setter(msg, value)
        except _Invalid as exc:
            exc.parts.append(key)
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            # Safety net: protobuf rejected a value our checks let through.
            raise _Invalid(str(exc), key) from None


def _index_of(items: list[Any], item: object) -> int:
    """Position of ``item`` (by identity) -- computed only on the error path,
    so the hot loops need not carry an index around."""
    for index, candidate in enumerate(items):
        if candidate is item:
            return index
    return -1


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _table(**fields: _FieldSpec) -> _Table:
    """Builds a key -> setter table; every field is reachable under its
    lowerCamelCase JSON name and its snake_case proto name."""
    table: _Table = {}
    for name, spec in fields.items():
        setter = spec(name)
        table[name] = setter
        table[_camel(name)] = setter
    return table


def _string() -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_string(msg: Any, value: Any) -> None:
            if type(value) is not str:
                raise _expected("a string", value)
            setattr(msg, attr, value)

        return set_string

    return spec


def _boolean() -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_boolean(msg: Any, value: Any) -> None:
            if type(value) is not bool:
                raise _expected("a boolean", value)
            setattr(msg, attr, value)

        return set_boolean

    return spec


def _integer(lo: int, hi: int) -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_integer(msg: Any, value: Any) -> None:
            # Inlined fast paths for the two common shapes (decimal string,
            # in-range number); _to_int handles everything else.
            kind = type(value)
            if kind is str:
                try:
                    value = int(value)
                except ValueError:
                    raise _expected("an integer", value) from None
                if not lo <= value <= hi:
                    raise _Invalid(f"integer {value} out of range [{lo}, {hi}]")
            elif kind is not int or not lo <= value <= hi:
                value = _to_int(value, lo, hi)
            setattr(msg, attr, value)

        return set_integer

    return spec


# Proto integer kinds by JSON-relevant range.
def _uint32() -> _FieldSpec:  # uint32, fixed32
    return _integer(0, _U32_MAX)


def _sint32() -> _FieldSpec:  # int32, sint32, sfixed32
    return _integer(_I32_MIN, _I32_MAX)


def _uint64() -> _FieldSpec:  # uint64, fixed64
    return _integer(0, _U64_MAX)


def _sint64() -> _FieldSpec:  # int64, sint64, sfixed64
    return _integer(_I64_MIN, _I64_MAX)


def _double() -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_double(msg: Any, value: Any) -> None:
            setattr(msg, attr, value if type(value) is float else _to_double(value))

        return set_double

    return spec


def _hex_id(nbytes: int) -> _FieldSpec:
    nchars = 2 * nbytes

    def spec(attr: str) -> _Setter:
        def set_id(msg: Any, value: Any) -> None:
            # Inlined fast path of _to_hex_id for a well-formed id.
            if type(value) is str and len(value) == nchars:
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raw = b""
                if len(raw) == nbytes:
                    setattr(msg, attr, raw)
                    return
            setattr(msg, attr, _to_hex_id(value, nbytes))

        return set_id

    return spec


def _enum(enum_type: Any) -> _FieldSpec:
    names: dict[str, int] = {v.name: v.number for v in enum_type.DESCRIPTOR.values}
    type_name = enum_type.DESCRIPTOR.name

    def spec(attr: str) -> _Setter:
        def set_enum(msg: Any, value: Any) -> None:
            if type(value) is int:
                # proto3 enums are open: unknown numbers are kept, as the
                # Collector does, but must still fit the int32 wire type.
                if not _I32_MIN <= value <= _I32_MAX:
                    raise _Invalid(f"enum value {value} out of int32 range")
                number = value
            elif type(value) is str:
                found = names.get(value)
                if found is None:
                    raise _Invalid(f"unknown {type_name} value {_preview(value)}")
                number = found
            else:
                raise _expected(f"a {type_name} name or integer", value)
            setattr(msg, attr, number)

        return set_enum

    return spec


def _message(table: _Table) -> _FieldSpec:
    """A singular sub-message; presence follows the JSON (``{}`` sets it)."""

    def spec(attr: str) -> _Setter:
        def set_message(msg: Any, value: Any) -> None:
            sub = getattr(msg, attr)
            _fill(sub, value, table)
            sub.SetInParent()  # keep HasField() true even for an empty object

        return set_message

    return spec


_Filler = Callable[[Any, object, _Table], None]


def _messages(table: _Table, filler: _Filler | None = None) -> _FieldSpec:
    """A repeated sub-message field; ``filler`` overrides the generic _fill
    for message types that have a hand-tuned fast path (spans)."""
    fill = filler or _fill

    def spec(attr: str) -> _Setter:
        def set_messages(msg: Any, value: Any) -> None:
            if not isinstance(value, list):
                raise _expected("an array", value)
            add = getattr(msg, attr).add
            item: Any = None
            try:
                for item in value:
                    fill(add(), item, table)
            except _Invalid as exc:
                exc.parts.append(f"[{_index_of(value, item)}]")
                raise

        return set_messages

    return spec


def _repeated_integer(lo: int, hi: int) -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_integers(msg: Any, value: Any) -> None:
            if not isinstance(value, list):
                raise _expected("an array", value)
            items: list[int] = []
            append = items.append
            for index, item in enumerate(value):
                if type(item) is int and lo <= item <= hi:
                    append(item)
                    continue
                try:
                    append(_to_int(item, lo, hi))
                except _Invalid as exc:
                    exc.parts.append(f"[{index}]")
                    raise
            getattr(msg, attr).extend(items)

        return set_integers

    return spec


def _repeated_double() -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_doubles(msg: Any, value: Any) -> None:
            if not isinstance(value, list):
                raise _expected("an array", value)
            items: list[float] = []
            append = items.append
            for index, item in enumerate(value):
                if type(item) is float:
                    append(item)
                    continue
                try:
                    append(_to_double(item))
                except _Invalid as exc:
                    exc.parts.append(f"[{index}]")
                    raise
            getattr(msg, attr).extend(items)

        return set_doubles

    return spec


def _one_of(group: str, member: _FieldSpec) -> _FieldSpec:
    """A member of a proto oneof: setting two members in one JSON object is an
    error rather than a silent last-one-wins, since it means data loss."""

    def spec(attr: str) -> _Setter:
        inner = member(attr)

        def set_member(msg: Any, value: Any) -> None:
            current = msg.WhichOneof(group)
            if current is not None and current != attr:
                raise _Invalid(f"only one of the '{group}' fields may be set, already got {_camel(current)}")
            inner(msg, value)

        return set_member

    return spec


# --------------------------------------------------------------------------
# KeyValue / AnyValue: the hottest path (every attribute), written by hand
# --------------------------------------------------------------------------

_ANY_STRING, _ANY_BOOL, _ANY_INT, _ANY_DOUBLE, _ANY_ARRAY, _ANY_KVLIST, _ANY_BYTES = range(7)
_ANY_KINDS: dict[str, int] = {}
for _kind, _name in enumerate(
    ("string_value", "bool_value", "int_value", "double_value", "array_value", "kvlist_value", "bytes_value")
):
    _ANY_KINDS[_name] = _ANY_KINDS[_camel(_name)] = _kind
del _kind, _name


def _values_of(obj: object) -> Any:
    """The ``values`` list of an ArrayValue / KeyValueList object (or None)."""
    if not isinstance(obj, dict):
        raise _expected("an object", obj)
    values = obj.get("values")
    if values is not None and not isinstance(values, list):
        raise _Invalid(_expected("an array", values).reason, "values")
    return values


def _fill_any_value(any_value: Any, obj: object) -> None:
    if not isinstance(obj, dict):
        raise _expected("an object", obj)
    seen: str | None = None
    for key, value in obj.items():
        kind = _ANY_KINDS.get(key)
        if kind is None or value is None:
            continue
        if seen is not None:
            raise _Invalid(f"AnyValue must hold one value, got both {seen} and {key}")
        seen = key
        try:
            if kind == _ANY_STRING:
                if type(value) is not str:
                    raise _expected("a string", value)
                any_value.string_value = value
            elif kind == _ANY_INT:
                if type(value) is not int or not _I64_MIN <= value <= _I64_MAX:
                    value = _to_int(value, _I64_MIN, _I64_MAX)
                any_value.int_value = value
            elif kind == _ANY_BOOL:
                if type(value) is not bool:
                    raise _expected("a boolean", value)
                any_value.bool_value = value
            elif kind == _ANY_DOUBLE:
                any_value.double_value = value if type(value) is float else _to_double(value)
            elif kind == _ANY_ARRAY:
                array = any_value.array_value
                array.SetInParent()  # an empty array is still an array value
                items = _values_of(value)
                if items:
                    add = array.values.add
                    for index, item in enumerate(items):
                        try:
                            _fill_any_value(add(), item)
                        except _Invalid as exc:
                            exc.parts.append(f"values[{index}]")
                            raise
            elif kind == _ANY_KVLIST:
                kvlist = any_value.kvlist_value
                kvlist.SetInParent()
                items = _values_of(value)
                if items:
                    try:
                        _fill_key_values(kvlist.values, items)
                    except _Invalid as exc:
                        exc.parts.append("values")
                        raise
            else:  # _ANY_BYTES
                any_value.bytes_value = _to_bytes(value)
        except _Invalid as exc:
            exc.parts.append(key)
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise _Invalid(str(exc), key) from None
    if seen is None:
        # {} is a valid "empty" AnyValue; keep the enclosing field present.
        any_value.SetInParent()


def _fill_key_values(repeated: Any, items: object) -> None:
    """Appends a JSON array of KeyValue objects to a repeated KeyValue field.

    KeyValue's keys ("key", "value") are the same in both spellings, so plain
    dict lookups suffice and unknown keys are ignored for free.  This is the
    hottest loop of all (every attribute of every span, point, resource...),
    hence the inlined fast path for the overwhelmingly common
    ``{"key": "k", "value": {"stringValue": "v"}}`` shape.
    """
    if not isinstance(items, list):
        raise _expected("an array", items)
    add = repeated.add
    item: Any = None
    try:
        for item in items:
            key_value = add()
            key = item.get("key")  # AttributeError if item is not an object
            if key is not None:
                key_value.key = key  # TypeError if not a string
            value = item.get("value")
            if value is None:
                continue
            if type(value) is dict and len(value) == 1:
                text = value.get("stringValue")
                if type(text) is str:
                    key_value.value.string_value = text
                    continue
                number = value.get("intValue")
                if type(number) is str:  # int64: usually a decimal string
                    try:
                        number = int(number)
                    except ValueError:
                        pass  # let the general path report it
                if type(number) is int and _I64_MIN <= number <= _I64_MAX:
                    key_value.value.int_value = number
                    continue
            _fill_any_value(key_value.value, value)
    except _Invalid as exc:
        exc.parts.append("value")
        exc.parts.append(f"[{_index_of(items, item)}]")
        raise
    except (AttributeError, TypeError, ValueError) as exc:
        # The fast path leaves type checks to Python / protobuf; work out
        # afterwards which of its unchecked steps failed.
        index = f"[{_index_of(items, item)}]"
        if not isinstance(item, dict):
            raise _Invalid(_expected("an object", item).reason, index) from None
        key = item.get("key")
        if key is not None and type(key) is not str:
            raise _Invalid(_expected("a string", key).reason, "key", index) from None
        # e.g. a lone UTF-16 surrogate, which protobuf strings cannot hold
        raise _Invalid(str(exc), index) from None


def _key_values() -> _FieldSpec:
    def spec(attr: str) -> _Setter:
        def set_key_values(msg: Any, value: Any) -> None:
            _fill_key_values(getattr(msg, attr), value)

        return set_key_values

    return spec


# --------------------------------------------------------------------------
# schema tables (bottom-up, mirroring the .proto files)
# --------------------------------------------------------------------------

_RESOURCE = _table(
    attributes=_key_values(),
    dropped_attributes_count=_uint32(),
)

_SCOPE = _table(
    name=_string(),
    version=_string(),
    attributes=_key_values(),
    dropped_attributes_count=_uint32(),
)

_SPAN_EVENT = _table(
    time_unix_nano=_uint64(),  # fixed64
    name=_string(),
    attributes=_key_values(),
    dropped_attributes_count=_uint32(),
)

_SPAN_LINK = _table(
    trace_id=_hex_id(16),
    span_id=_hex_id(8),
    trace_state=_string(),
    attributes=_key_values(),
    dropped_attributes_count=_uint32(),
    flags=_uint32(),  # fixed32
)

_SPAN_STATUS = _table(
    message=_string(),
    code=_enum(trace_pb2.Status.StatusCode),
)

_SPAN = _table(
    trace_id=_hex_id(16),
    span_id=_hex_id(8),
    trace_state=_string(),
    parent_span_id=_hex_id(8),
    flags=_uint32(),  # fixed32
    name=_string(),
    kind=_enum(trace_pb2.Span.SpanKind),
    start_time_unix_nano=_uint64(),  # fixed64
    end_time_unix_nano=_uint64(),  # fixed64
    attributes=_key_values(),
    dropped_attributes_count=_uint32(),
    events=_messages(_SPAN_EVENT),
    dropped_events_count=_uint32(),
    links=_messages(_SPAN_LINK),
    dropped_links_count=_uint32(),
    status=_message(_SPAN_STATUS),
)

# Spans are the bulk of every traces request, so they get a hand-tuned loop:
# the common, well-formed shape of each hot field is assigned inline, and
# anything else (other fields, other spellings of a value, bad input) falls
# back to the generic setter in _SPAN, which validates and words the error.
# That keeps exactly one definition of what each field accepts.
(
    _HOT_ATTRIBUTES,
    _HOT_TRACE_ID,
    _HOT_SPAN_ID,
    _HOT_PARENT_SPAN_ID,
    _HOT_NAME,
    _HOT_START,
    _HOT_END,
    _HOT_KIND,
) = range(8)
_SPAN_HOT: dict[str, int] = {}
for _code, _name in enumerate(
    (
        "attributes",
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "kind",
    )
):
    _SPAN_HOT[_name] = _SPAN_HOT[_camel(_name)] = _code
del _code, _name


def _fill_span(span: Any, obj: object, table: _Table) -> None:
    """_fill() for one Span (``table`` is _SPAN), with inlined fast paths."""
    if not isinstance(obj, dict):
        raise _expected("an object", obj)
    key = ""
    try:
        for key, value in obj.items():
            if value is None:
                continue
            hot = _SPAN_HOT.get(key)
            if hot is None:
                setter = table.get(key)
                if setter is not None:  # else: unknown key, ignored
                    setter(span, value)
                continue
            if hot == _HOT_ATTRIBUTES:
                _fill_key_values(span.attributes, value)
                continue
            if hot <= _HOT_PARENT_SPAN_ID:
                nbytes = 16 if hot == _HOT_TRACE_ID else 8
                if type(value) is str and len(value) == 2 * nbytes:
                    try:
                        raw = bytes.fromhex(value)
                    except ValueError:
                        raw = b""
                    if len(raw) == nbytes:
                        if hot == _HOT_TRACE_ID:
                            span.trace_id = raw
                        elif hot == _HOT_SPAN_ID:
                            span.span_id = raw
                        else:
                            span.parent_span_id = raw
                        continue
            elif hot == _HOT_NAME:
                if type(value) is str:
                    span.name = value
                    continue
            elif hot <= _HOT_END:
                if type(value) is str:
                    try:
                        value = int(value)
                    except ValueError:
                        pass
                if type(value) is int and 0 <= value <= _U64_MAX:
                    if hot == _HOT_START:
                        span.start_time_unix_nano = value
                    else:
                        span.end_time_unix_nano = value
                    continue
            else:  # _HOT_KIND; names ("SPAN_KIND_SERVER") take the general path
                if type(value) is int and 0 <= value <= _I32_MAX:
                    span.kind = value
                    continue
            table[key](span, value)  # the general (and error-reporting) path
    except _Invalid as exc:
        exc.parts.append(key)
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Invalid(str(exc), key) from None


_SCOPE_SPANS = _table(
    scope=_message(_SCOPE),
    spans=_messages(_SPAN, _fill_span),
    schema_url=_string(),
)

_RESOURCE_SPANS = _table(
    resource=_message(_RESOURCE),
    scope_spans=_messages(_SCOPE_SPANS),
    schema_url=_string(),
)

_TRACES_REQUEST = _table(resource_spans=_messages(_RESOURCE_SPANS))

_EXEMPLAR = _table(
    filtered_attributes=_key_values(),
    time_unix_nano=_uint64(),  # fixed64
    as_double=_one_of("value", _double()),
    as_int=_one_of("value", _sint64()),  # sfixed64
    span_id=_hex_id(8),
    trace_id=_hex_id(16),
)

_NUMBER_POINT = _table(
    attributes=_key_values(),
    start_time_unix_nano=_uint64(),  # fixed64
    time_unix_nano=_uint64(),  # fixed64
    as_double=_one_of("value", _double()),
    as_int=_one_of("value", _sint64()),  # sfixed64
    exemplars=_messages(_EXEMPLAR),
    flags=_uint32(),
)

# sum/min/max are proto3 `optional` here: setting them only when the key is
# present keeps HasField() meaningful (absent != 0).
_HISTOGRAM_POINT = _table(
    attributes=_key_values(),
    start_time_unix_nano=_uint64(),  # fixed64
    time_unix_nano=_uint64(),  # fixed64
    count=_uint64(),  # fixed64
    sum=_double(),
    bucket_counts=_repeated_integer(0, _U64_MAX),  # fixed64
    explicit_bounds=_repeated_double(),
    exemplars=_messages(_EXEMPLAR),
    flags=_uint32(),
    min=_double(),
    max=_double(),
)

_EXPONENTIAL_BUCKETS = _table(
    offset=_sint32(),  # sint32
    bucket_counts=_repeated_integer(0, _U64_MAX),  # uint64
)

_EXPONENTIAL_HISTOGRAM_POINT = _table(
    attributes=_key_values(),
    start_time_unix_nano=_uint64(),  # fixed64
    time_unix_nano=_uint64(),  # fixed64
    count=_uint64(),  # fixed64
    sum=_double(),
    scale=_sint32(),  # sint32
    zero_count=_uint64(),  # fixed64
    positive=_message(_EXPONENTIAL_BUCKETS),
    negative=_message(_EXPONENTIAL_BUCKETS),
    flags=_uint32(),
    exemplars=_messages(_EXEMPLAR),
    min=_double(),
    max=_double(),
    zero_threshold=_double(),
)

_QUANTILE_VALUE = _table(
    quantile=_double(),
    value=_double(),
)

_SUMMARY_POINT = _table(
    attributes=_key_values(),
    start_time_unix_nano=_uint64(),  # fixed64
    time_unix_nano=_uint64(),  # fixed64
    count=_uint64(),  # fixed64
    sum=_double(),
    quantile_values=_messages(_QUANTILE_VALUE),
    flags=_uint32(),
)

_TEMPORALITY = _enum(metrics_pb2.AggregationTemporality)

_GAUGE = _table(data_points=_messages(_NUMBER_POINT))
_SUM = _table(
    data_points=_messages(_NUMBER_POINT),
    aggregation_temporality=_TEMPORALITY,
    is_monotonic=_boolean(),
)
_HISTOGRAM = _table(
    data_points=_messages(_HISTOGRAM_POINT),
    aggregation_temporality=_TEMPORALITY,
)
_EXPONENTIAL_HISTOGRAM = _table(
    data_points=_messages(_EXPONENTIAL_HISTOGRAM_POINT),
    aggregation_temporality=_TEMPORALITY,
)
_SUMMARY = _table(data_points=_messages(_SUMMARY_POINT))

_METRIC = _table(
    name=_string(),
    description=_string(),
    unit=_string(),
    gauge=_one_of("data", _message(_GAUGE)),
    sum=_one_of("data", _message(_SUM)),
    histogram=_one_of("data", _message(_HISTOGRAM)),
    exponential_histogram=_one_of("data", _message(_EXPONENTIAL_HISTOGRAM)),
    summary=_one_of("data", _message(_SUMMARY)),
    metadata=_key_values(),
)

_SCOPE_METRICS = _table(
    scope=_message(_SCOPE),
    metrics=_messages(_METRIC),
    schema_url=_string(),
)

_RESOURCE_METRICS = _table(
    resource=_message(_RESOURCE),
    scope_metrics=_messages(_SCOPE_METRICS),
    schema_url=_string(),
)

_METRICS_REQUEST = _table(resource_metrics=_messages(_RESOURCE_METRICS))


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def _join_path(parts: list[str]) -> str:
    """Renders innermost-first segments as ``a[0].b[1].c``."""
    path = ""
    for part in reversed(parts):
        if path and not part.startswith("["):
            path += "."
        path += part
    return path


def _decode(doc: object, message: Any, table: _Table) -> Any:
    if not isinstance(doc, dict):
        raise OtlpJsonError("", f"expected a JSON object at the top level, got {_json_type(doc)}")
    try:
        _fill(message, doc, table)
    except _Invalid as exc:
        raise OtlpJsonError(_join_path(exc.parts), exc.reason) from None
    except RecursionError:
        # Only reachable through absurdly nested arrayValue/kvlistValue.
        raise OtlpJsonError("", "document nested too deeply") from None
    return message


def traces_request_from_json(doc: object) -> ExportTraceServiceRequest:
    """Maps a parsed OTLP/JSON traces body onto an ExportTraceServiceRequest.

    Raises OtlpJsonError (a ValueError) naming the offending path.
    """
    return _decode(doc, ExportTraceServiceRequest(), _TRACES_REQUEST)


def metrics_request_from_json(doc: object) -> ExportMetricsServiceRequest:
    """Maps a parsed OTLP/JSON metrics body onto an ExportMetricsServiceRequest.

    Raises OtlpJsonError (a ValueError) naming the offending path.
    """
    return _decode(doc, ExportMetricsServiceRequest(), _METRICS_REQUEST)


def _dump(obj: object) -> bytes:
    # Compact and UTF-8: these are HTTP response bodies, not for humans.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _any_to_json(detail: Any) -> object:
    """proto3 JSON of a google.protobuf.Any detail (cold path: error bodies).

    json_format is the only thing that knows how to render an arbitrary
    registered message type inline; if the type is not known to the default
    pool we fall back to its raw, base64-encoded bytes.
    """
    from google.protobuf import json_format  # lazy: never needed for requests

    try:
        return json_format.MessageToDict(detail)
    except Exception:  # unresolvable type_url, malformed payload, ...
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode("ascii")}


def status_to_json(status: status_pb2.Status) -> bytes:
    """JSON body for a google.rpc.Status (OTLP/HTTP failure responses).

    ``code`` and ``message`` are always present; ``details`` only when non-empty.
    """
    body: dict[str, object] = {"code": int(status.code), "message": status.message}
    if len(status.details):
        body["details"] = [_any_to_json(detail) for detail in status.details]
    return _dump(body)


def export_response_to_json(resp: Any) -> bytes:
    """JSON body for an Export*ServiceResponse (traces, metrics, or logs).

    ``{}`` when partial_success is unset.  Otherwise the proto3 JSON mapping
    applies: lowerCamelCase keys, int64 counters as decimal strings, and
    fields at their default value (0 / "") omitted.
    """
    if not resp.HasField("partial_success"):
        return _dump({})
    partial: dict[str, object] = {}
    # Cold path, so reflecting over the fields is fine and covers
    # rejectedSpans / rejectedDataPoints / rejectedLogRecords alike.
    for field, value in resp.partial_success.ListFields():
        if isinstance(value, int) and not isinstance(value, bool):
            partial[field.json_name] = str(value)  # int64 -> decimal string
        else:
            partial[field.json_name] = value
    return _dump({"partialSuccess": partial})
