"""The Flux dialect's OpenAPI paths: full request and response schemas for every operation, under both
mounts (`/flux/api/v1/...` and the shared `/api/v1/...`)."""

from __future__ import annotations

from typing import Any

from otelite.api.flux.ingest import FLUX_TYPES, MAX_BATCH, MAX_NAME, MAX_TAGS
from otelite.api.flux.query import ALL_AGGREGATIONS

_STR = {"type": "string"}
_NULLABLE_STR = {"type": ["string", "null"]}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": _STR, "message": _STR}}}}
# The router's own 404 (a path no route matches) is in the generic error shape. (POST /api/v1/metrics with a
# body of neither Flux's nor Trifle's shape is refused before a dialect is chosen, api/shared_v1.py, with
# Flux's `error` and Trifle's `errors` in one body: it matches _ERROR.)
_GENERIC_ERROR = {"type": "object", "required": ["code", "detail"],
                  "properties": {"type": _STR, "code": _STR, "detail": _STR}}
_TAG_VALUE = {"type": ["string", "number", "boolean", "null"]}
_TAGS_IN = {"type": ["object", "null"], "maxProperties": MAX_TAGS,
            "propertyNames": {"minLength": 1, "maxLength": 256}, "additionalProperties": _TAG_VALUE}
# Times the store can hold: 1970 up to 2262 (signed 64-bit nanoseconds); the pattern keeps to 2259.
_YEARS = r"^(19[7-9][0-9]|2[01][0-9][0-9]|22[0-5][0-9])-"
_TIME = {"type": "string", "format": "date-time", "pattern": _YEARS}
_TIME_IN = {"type": ["string", "null"], "format": "date-time", "pattern": _YEARS,
            "description": "ISO 8601 (default now; without an offset: UTC)"}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S"}

_METRIC_FIELDS = {"name": _NAME, "timestamp": _TIME_IN, "tags": _TAGS_IN}
# The value's type follows the metric's: a number, or a set's member (a string; numbers and booleans are
# rendered as one).
METRIC_IN = {"oneOf": [
    {"type": "object", "required": ["name", "type", "value"],
     "properties": {**_METRIC_FIELDS, "type": {"type": "string", "enum": ["gauge", "counter", "distribution"]},
                    "value": {"type": "number"}}},
    {"type": "object", "required": ["name", "type", "value"],
     "properties": {**_METRIC_FIELDS, "type": {"const": "set"},
                    "value": {"type": ["string", "number", "boolean"], "maxLength": 4096}}},
]}
_ITEM_ERRORS = {"type": "array", "items": {"type": "object", "required": ["index", "code", "message"],
                                           "properties": {"index": {"type": "integer"}, "code": _STR,
                                                          "message": _STR}}}
_COUNTS = {"type": "object", "required": ["accepted", "rejected"],
           "properties": {"accepted": {"type": "integer"}, "rejected": {"type": "integer"}, "errors": _ITEM_ERRORS}}
_FLUX_TYPE = {"type": "string", "enum": list(FLUX_TYPES)}
_METRIC_DEF = {"type": "object", "required": ["name", "type", "tags", "first_seen", "last_seen"],
               "properties": {"name": _STR, "type": _FLUX_TYPE, "tags": {"type": "array", "items": _STR},
                              "first_seen": _STR, "last_seen": _STR}}
_ROW = {"type": "object", "required": ["timestamp"], "properties": {"timestamp": _STR},
        "additionalProperties": {"type": ["number", "null"]}}
_ROWS = {"type": "array", "items": _ROW}
_EVENT_OUT = {"type": "object",
              "required": ["id", "name", "timestamp", "value", "properties", "tags", "user_id", "session_id",
                           "environment", "service"],
              "properties": {"id": {"type": "integer"}, "name": _STR, "timestamp": _STR,
                             "value": {"type": ["number", "null"]}, "properties": {"type": ["object", "null"]},
                             "tags": {"type": ["object", "null"], "additionalProperties": _STR},
                             "user_id": _NULLABLE_STR, "session_id": _NULLABLE_STR,
                             "environment": _NULLABLE_STR, "service": _NULLABLE_STR}}


def _data(schema: dict, extra: dict | None = None) -> dict:
    properties = {"data": schema, **(extra or {})}
    return {"type": "object", "required": list(properties), "properties": properties}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: str, bad_request: dict = _ERROR, not_found: dict = _ERROR) -> dict:
    text = {"400": "invalid request (Flux's code says why)", "401": "no or unknown API key",
            "403": "the key lacks the scope", "404": "not found", "413": "body too large",
            "415": "unsupported Content-Encoding", "429": "rate limited; retry after Retry-After seconds",
            "503": "the store is full; retry after Retry-After seconds"}
    shapes = {"400": bad_request, "404": not_found}
    return {s: _json(shapes.get(s, _ERROR), text[s]) for s in statuses}


_READ_ERRORS = ("400", "401", "403", "404", "429")
_WRITE_ERRORS = ("400", "401", "403", "404", "413", "415", "429", "503")


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_TAG_FILTER = {"name": "tags", "in": "query", "required": False, "style": "deepObject", "explode": True,
               "schema": {"type": "object", "propertyNames": {"minLength": 1, "maxLength": 256},
                          "additionalProperties": {"type": "string"}},
               "description": "tags[key]=value: only readings with that tag value"}
# A metric name holding "/" cannot be addressed in a path: the router answers that 404 (generic shape).
_ROUTED_404 = {"anyOf": [_ERROR, _GENERIC_ERROR]}
_NAME_PARAM = {"name": "name", "in": "path", "required": True,
               "schema": {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": "^[^/]+$"}}
# Batch items are validated one by one: an invalid item is rejected in the answer, not the request.
_BATCH_ITEM = {"description": "a metric (see POST /metrics); each is validated alone"}
_BATCH_EVENT = {"description": "an event {name, timestamp?, value?, properties?, tags?, user_id?, session_id?, "
                              "environment?, service?}; each is validated alone"}


def _operations() -> dict[str, dict[str, Any]]:
    return {
        "/metrics": {
            "get": {"summary": "Flux: every metric (OTLP ones included, typed as Flux types)",
                    "responses": {"200": _json(_data({"type": "array", "items": _METRIC_DEF}), "metrics"),
                                  **_errors("401", "403", "404", "429")}},
            "post": {"summary": "Flux: track one metric (stored once committed)", "requestBody": _body(METRIC_IN),
                     "responses": {"201": _json(_data({"type": "object",
                                                       "required": ["name", "type", "value", "timestamp"],
                                                       "properties": {"name": _STR, "type": _FLUX_TYPE,
                                                                      "value": {"type": ["number", "string"]},
                                                                      "timestamp": _STR}}), "stored"),
                                   **_errors(*_WRITE_ERRORS)}},
        },
        "/metrics/batch": {
            "post": {"summary": f"Flux: track up to {MAX_BATCH} metrics, each validated alone",
                     "requestBody": _body({"anyOf": [
                         {"type": "object", "required": ["metrics"],
                          "properties": {"metrics": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                                     "items": _BATCH_ITEM}}},
                         {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": _BATCH_ITEM}]}),
                     "responses": {"200": _json(_data(_COUNTS), "the valid items are stored"),
                                   **_errors(*_WRITE_ERRORS)}},
        },
        "/flux/batch": {
            "post": {"summary": "Flux: events and metrics together (what BrainzLab's SDK sends)",
                     "requestBody": _body({"type": "object", "anyOf": [{"required": ["events"]},
                                                                       {"required": ["metrics"]}],
                                           "properties": {
                         "events": {"type": ["array", "null"], "maxItems": MAX_BATCH, "items": _BATCH_EVENT},
                         "metrics": {"type": ["array", "null"], "maxItems": MAX_BATCH, "items": _BATCH_ITEM}}}),
                     "responses": {"200": _json(_data({"type": "object", "required": ["events", "metrics"],
                                                       "properties": {"events": _COUNTS, "metrics": _COUNTS}}),
                                                "the valid items are stored"),
                                   **_errors(*_WRITE_ERRORS)}},
        },
        "/metrics/{name}": {
            "get": {"summary": "Flux: one metric's definition and point count", "parameters": [_NAME_PARAM],
                    "responses": {"200": _json(_data({**_METRIC_DEF, "required": _METRIC_DEF["required"] + [
                        "data_points"], "properties": {**_METRIC_DEF["properties"],
                                                       "data_points": {"type": "integer"}}}), "the metric"),
                                  **_errors(*_READ_ERRORS, not_found=_ROUTED_404)}},
        },
        "/metrics/{name}/query": {
            "get": {"summary": "Flux: aggregations of a metric per interval (empty buckets omitted)",
                    "parameters": [
                        _NAME_PARAM,
                        _query("from", _TIME, "ISO 8601; default to − 24h"),
                        _query("to", _TIME, "ISO 8601, inclusive; default now"),
                        _query("aggregation", {"type": "string"},
                               f"one or several, comma-separated: {', '.join(ALL_AGGREGATIONS)}"),
                        _query("interval", {"type": "string", "pattern": r"^[1-9][0-9]{0,5}[smhd]$"},
                               "Ns, Nm, Nh or Nd; default chosen from the range"),
                        _query("group_by", {"type": "string", "pattern": r"^tags\..+"}, "tags.<key>"),
                        _TAG_FILTER],
                    "responses": {"200": _json(_data({
                        "type": "object", "required": ["name", "aggregation", "interval"],
                        "properties": {"name": _STR, "aggregation": _STR, "interval": _STR, "series": _ROWS,
                                       "groups": {"type": "object", "additionalProperties": _ROWS}}}),
                        "one row per bucket with data"), **_errors(*_READ_ERRORS, not_found=_ROUTED_404)}},
        },
        "/events": {
            "get": {"summary": "Flux: events, newest first",
                    "parameters": [
                        _query("name", _STR, "exact, or a prefix ending in *"),
                        _query("from", _TIME, "ISO 8601, inclusive"),
                        _query("to", _TIME, "ISO 8601, inclusive"),
                        _query("user_id", _STR, "exact"), _query("session_id", _STR, "exact"),
                        _query("environment", _STR, "exact"), _query("service", _STR, "exact"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "default 100"),
                        _query("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "default 0"),
                        _TAG_FILTER],
                    "responses": {"200": _json(_data({"type": "array", "items": _EVENT_OUT}, {"meta": {
                        "type": "object", "required": ["limit", "offset", "count"],
                        "properties": {"limit": {"type": "integer"}, "offset": {"type": "integer"},
                                       "count": {"type": "integer"}}}}), "events"),
                                  **_errors(*_READ_ERRORS)}},
        },
    }


def openapi_paths() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix in ("/flux/api/v1", "/api/v1"):
        for path, ops in _operations().items():
            out[prefix + path] = ops
    return out
