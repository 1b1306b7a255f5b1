"""Flux metrics and events → store rows (flux.md, "Ingest"). Pure functions: each item is validated alone
and either becomes rows or an `ItemError` with Flux's code and a message naming the field.

How the four Flux types are stored (collector/store/metrics.py documents the representation):

    gauge         OTel `gauge`, one point per value (the last value of a bucket wins when read)
    counter       DELTA `sum`, not monotonic (the SDK's decrement sends negative values), one point per delta
    distribution  `distribution`, one point per observation (exact percentiles)
    set           `set`, one point per member, the member as text

Every series has an empty resource and the instrumentation scope `FLUX_SCOPE`; the tags are its point
attributes, each value rendered as a string (numbers and booleans too, so `{"status": 200}` and
`{"status": "200"}` are one series).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from otelite.api.flux.common import INVALID_TYPE, INVALID_VALUE, MISSING_NAME
from otelite.collector.jsontext import dumps_sorted as _dumps_sorted
from otelite.collector.normalize.otlp import fingerprint
from otelite.collector.store.events import EventRow
from otelite.collector.store.metrics import DISTRIBUTION, FLUX_SCOPE, SET
from otelite.collector.store.records import INT64_MAX, WriteBatch, label_text, stored_number
from otelite.collector.times import NS, iso_utc, parse_iso

FLUX_TYPES = ("gauge", "counter", "distribution", "set")
# Flux type → (store type, temporality, is_monotonic)
_STORED = {"gauge": ("gauge", 0, 0), "counter": ("sum", 1, 0), "distribution": (DISTRIBUTION, 0, 0),
           "set": (SET, 0, 0)}
MAX_BATCH = 500  # flux.md: more → 400 batch_too_large, nothing stored
MAX_NAME = 255
MAX_TAGS = 128
MAX_TAG_KEY = 256
MAX_TEXT = 4096  # a tag value, a set member, a user or session id
_TIME_MAX_NS = INT64_MAX  # 2262-04-11: the store's times are signed 64-bit nanoseconds
_EMPTY_RESOURCE = "{}"


class ItemError(ValueError):
    """One metric or event that cannot be stored: Flux's `code` and a message naming the field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class FluxMetric:
    name: str
    type: str  # one of FLUX_TYPES
    value: int | float | str  # a set's member is text
    time_ns: int
    tags: dict[str, str]

    def echo(self) -> dict:
        """The stored metric as `POST /api/v1/metrics` answers it (seed 003)."""
        return {"name": self.name, "type": self.type, "value": self.value, "timestamp": flux_time(self.time_ns)}


def flux_time(ns: int) -> str:
    """ISO 8601 UTC with a `Z`, with as many fraction digits as the time needs: whole seconds as the seed
    shows them, milliseconds as the SDK sends them, micro- or nanoseconds only when present."""
    frac = ns % NS
    text = iso_utc(ns, 9 if frac % 1000 else 6 if frac % 10**6 else 3)
    return text[:-5] + "Z" if frac == 0 else text


# --- fields ---------------------------------------------------------------------------------------------

def _name(item: dict, what: str) -> str:
    name = item.get("name")
    if name is None or (isinstance(name, str) and not name.strip()):
        raise ItemError(MISSING_NAME, f"{what} name is required")
    if not isinstance(name, str):
        raise ItemError(INVALID_VALUE, f"name must be a string, got {_kind(name)}")
    if len(name) > MAX_NAME:
        raise ItemError(INVALID_VALUE, f"name must be at most {MAX_NAME} characters")
    return name


def _number(value: Any, field: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ItemError(INVALID_VALUE, f"{field} must be numeric, got {_kind(value)}")
    stored = stored_number(value)
    if stored is None:
        raise ItemError(INVALID_VALUE, f"{field} must be a finite number within a double's range")
    return stored


def _member(value: Any) -> str:
    """A set member: a string, or a number or boolean rendered as one (the SDK sends `value.to_s`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ItemError(INVALID_VALUE, f"value must be a finite number or a string, got {value}")
    if not isinstance(value, (str, int, float, bool)):
        raise ItemError(INVALID_VALUE, f"value of a set must be a string, got {_kind(value)}")
    text = label_text(value)
    if len(text) > MAX_TEXT:
        raise ItemError(INVALID_VALUE, f"value of a set must be at most {MAX_TEXT} characters")
    return text


def parse_timestamp(value: Any, now_ns: int, field: str = "timestamp") -> int:
    """ISO 8601 (the SDK sends UTC with milliseconds); null or absent → now; no offset → UTC."""
    if value is None:
        return now_ns
    if not isinstance(value, str):
        raise ItemError(INVALID_VALUE, f"{field} must be an ISO 8601 string, got {_kind(value)}")
    ns = parse_iso(value) if len(value) <= 64 else None
    if ns is None:
        raise ItemError(INVALID_VALUE, f"{field} is not an ISO 8601 time: {value[:64]!r}")
    if not 0 <= ns <= _TIME_MAX_NS:
        raise ItemError(INVALID_VALUE, f"{field} must be between 1970 and 2262, got {value!r}")
    return ns


def parse_tags(value: Any, field: str = "tags") -> dict[str, str]:
    """A flat map; numbers and booleans rendered as strings; a null value leaves the tag out (a series
    without a tag reads as the empty label, so the two are the same); nested objects or arrays → 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ItemError(INVALID_VALUE, f"{field} must be an object of strings, got {_kind(value)}")
    if len(value) > MAX_TAGS:
        raise ItemError(INVALID_VALUE, f"{field} may have at most {MAX_TAGS} keys")
    out: dict[str, str] = {}
    for key, v in value.items():
        if not key or len(key) > MAX_TAG_KEY:
            raise ItemError(INVALID_VALUE, f"{field} keys must be 1 to {MAX_TAG_KEY} characters")
        if v is None:
            continue
        if isinstance(v, (dict, list)):
            raise ItemError(INVALID_VALUE, f"{field}.{key} must be a string, number or boolean, not nested")
        if isinstance(v, float) and not math.isfinite(v):
            raise ItemError(INVALID_VALUE, f"{field}.{key} must be a finite number, got {v}")
        text = label_text(v)
        if len(text) > MAX_TEXT:
            raise ItemError(INVALID_VALUE, f"{field}.{key} must be at most {MAX_TEXT} characters")
        out[key] = text
    return out


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


# --- metrics --------------------------------------------------------------------------------------------

def parse_metric(item: Any, now_ns: int) -> FluxMetric:
    """One metric `{name, type, value, timestamp?, tags?}` (flux.md)."""
    if not isinstance(item, dict):
        raise ItemError(INVALID_VALUE, f"a metric must be an object, got {_kind(item)}")
    name = _name(item, "metric")
    kind = item.get("type")
    if kind not in FLUX_TYPES:
        shown = repr(kind) if isinstance(kind, str) else _kind(kind)
        raise ItemError(INVALID_TYPE, f"type must be gauge, counter, distribution or set, got {shown[:64]}")
    if "value" not in item or item["value"] is None:
        raise ItemError(INVALID_VALUE, "value is required" + (" (a string member for sets)" if kind == SET else ""))
    value = _member(item["value"]) if kind == SET else _number(item["value"], "value")
    return FluxMetric(name, kind, value, parse_timestamp(item.get("timestamp"), now_ns),
                      parse_tags(item.get("tags")))


def _ids(project_id: int) -> tuple[int, int]:
    rid = fingerprint(project_id, _EMPTY_RESOURCE, 0, "")
    sid = fingerprint(project_id, FLUX_SCOPE, "", "{}", 0, "")
    return rid, sid


def metric_rows(project_id: int, metrics: list[FluxMetric]) -> WriteBatch:
    """The rows of valid metrics: one series per (name, type, tags), one point per metric."""
    batch = WriteBatch()
    if not metrics:
        return batch
    rid, sid = _ids(project_id)
    batch.resources[rid] = (rid, project_id, _EMPTY_RESOURCE, 0, "", "", None, None)
    batch.scopes[sid] = (sid, project_id, FLUX_SCOPE, "", "{}", 0, "")
    series, points = batch.series, batch.points
    for m in metrics:
        stored, temporality, monotonic = _STORED[m.type]
        attrs = _dumps_sorted(m.tags)
        series_id = fingerprint(project_id, m.name, stored, rid, sid, attrs)
        t = m.time_ns
        if series_id not in series:
            series[series_id] = (series_id, project_id, m.name, stored, "", "", temporality, monotonic, rid, sid,
                                 attrs, t, t)
        points.append((project_id, series_id, 0, t, m.value, None, None, None, None, 0, None, None))
    return batch


# --- events ---------------------------------------------------------------------------------------------

def _optional_text(item: dict, field: str, numbers: bool) -> str | None:
    value = item.get(field)
    if value is None:
        return None
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and (isinstance(value, int) or math.isfinite(value)):  # (isfinite of a 400-digit int raises)
        value = label_text(value)  # a numeric user id, as the SDK's `user.id.to_s` would send it
    if not isinstance(value, str):
        raise ItemError(INVALID_VALUE, f"{field} must be a string, got {_kind(value)}")
    if len(value) > MAX_TEXT:
        raise ItemError(INVALID_VALUE, f"{field} must be at most {MAX_TEXT} characters")
    return value


def _finite_json(value: Any, field: str) -> None:
    """JSON has no NaN or Infinity (Python's parser accepts them): refuse them anywhere inside `value`."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise ItemError(INVALID_VALUE, f"{field} must not contain NaN or Infinity")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_event(item: Any, project_id: int, now_ns: int) -> EventRow:
    """One event `{name, timestamp?, value?, properties?, tags?, user_id?, session_id?, environment?,
    service?}`; every field but the name may be null (the SDK sends nulls)."""
    if not isinstance(item, dict):
        raise ItemError(INVALID_VALUE, f"an event must be an object, got {_kind(item)}")
    name = _name(item, "event")
    value = item.get("value")
    if value is not None:
        value = float(_number(value, "value"))
    properties = item.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise ItemError(INVALID_VALUE, f"properties must be an object, got {_kind(properties)}")
        _finite_json(properties, "properties")
    tags = item.get("tags")
    return EventRow(project_id, name, parse_timestamp(item.get("timestamp"), now_ns), value, properties,
                    parse_tags(tags) if tags is not None else None,
                    _optional_text(item, "user_id", True), _optional_text(item, "session_id", True),
                    _optional_text(item, "environment", False), _optional_text(item, "service", False))


# --- batches --------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What a batch of items became: the valid ones, and an error per rejected item (by index)."""

    accepted: list
    errors: list[dict]

    def counts(self) -> dict:
        return {"accepted": len(self.accepted), "rejected": len(self.errors), "errors": self.errors}


def parse_items(items: list, parse, *args) -> Outcome:
    out = Outcome([], [])
    for index, item in enumerate(items):
        try:
            out.accepted.append(parse(item, *args))
        except ItemError as e:
            out.errors.append({"index": index, "code": e.code, "message": e.message})
    return out
