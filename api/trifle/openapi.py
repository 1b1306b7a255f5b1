"""OpenAPI paths of the Trifle dialect: every operation with its request and response schemas.

Documented on the unambiguous mount (`/trifle/api/v1/...`) and, for the path only Trifle serves, on
`/api/v1/metrics/query`. The shared `/api/v1/metrics` serves Flux or Trifle by shape (api/shared_v1.py);
its operations are Trifle's exactly as documented here under `/trifle`.
"""

from __future__ import annotations

from typing import Any

from otelite.api.trifle.request import AGGREGATORS, MODES, OPERATIONS

_STRINGS = {"type": "array", "items": {"type": "string"}}
_NUMBER_OR_NULL = {"type": ["number", "null"]}

_DETAIL = {"type": "object", "required": ["errors"], "properties": {"errors": {
    "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}}}
_UNPROCESSABLE = {"type": "object", "required": ["errors"], "properties": {"errors": {
    "type": "object", "required": ["status", "error"],
    "properties": {"status": {"const": "error"}, "error": {"type": "string"}, "available_paths": _STRINGS,
                   "missing_paths": _STRINGS, "allowed": _STRINGS}}}}


def _error(description: str, schema: dict = _DETAIL, retry: bool = False) -> dict:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if retry:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return out


_COMMON_ERRORS = {
    "400": _error("Bad request: the message names the field (Trifle: `{\"errors\": {\"detail\"}}`)"),
    "401": _error('`{"errors": {"detail": "Bad token"}}`'),
    "403": _error('`{"errors": {"detail": "Forbidden"}}`: the key lacks the scope'),
    "429": _error("Rate limited", retry=True),
}
_BODY_ERRORS = {
    "413": _error("The body is over the limit (after decompression)"),
    "415": _error("Unsupported Content-Encoding"),
}

_SOURCE = {"name": "X-Trifle-Source-Id", "in": "header", "required": False, "schema": {"type": "string"},
           "description": "The project (id or key); it must be the API key's project (else 400). "
                          "Trifle::Stats' API driver sends it."}
_INSTANT = {"type": "string", "description": "ISO 8601 with an offset, e.g. 2026-01-24T00:00:00Z"}
_GRANULARITY = {"type": "string", "pattern": r"^\s*[0-9]*[1-9][0-9]*(s|m|h|d|w|mo|q|y)\s*$",
                "description": "N units: s m h d w mo q y (N ≥ 1), aligned in the project's zone"}
_TIMEFRAME = {"type": "object", "required": ["from", "to", "label", "granularity"], "properties": {
    "from": {"type": "string"}, "to": {"type": "string"}, "label": {"const": "custom"},
    "granularity": {"type": "string"}}}
_TABLE = {"type": "object", "required": ["columns", "rows"], "properties": {
    "columns": _STRINGS,
    "rows": {"type": "array", "items": {"type": "array", "items": {"type": ["string", "number", "null"]}}}}}
_TIMELINE_POINT = {"type": "object", "required": ["at", "value"],
                   "properties": {"at": {"type": "string"}, "value": {"type": "number"}}}
_TIMELINE_POINTS = {"type": "array", "items": _TIMELINE_POINT}
_CATEGORY_TOTALS = {"type": "object", "additionalProperties": {"type": "number"}}

_WRITE_BODY = {
    "type": "object", "required": ["key", "at", "values"],
    "properties": {
        "key": {"type": "string", "minLength": 1, "description": "The metric key, e.g. event::signup"},
        "at": _INSTANT,
        "values": {"type": "object", "description": "Nested maps whose leaves are numbers",
                   "additionalProperties": {"type": ["number", "object"]}},
        "operation": {"type": "string", "enum": list(OPERATIONS), "default": "track",
                      "description": "track adds each leaf into its bucket; assert sets the leaves given"},
        "untracked": {"type": "boolean", "default": False,
                      "description": "count this write on the system key as __untracked__"},
    }}
_QUERY_BODY = {
    "type": "object", "required": ["key", "from", "to", "granularity", "value_path"],
    "properties": {
        "key": {"type": "string", "minLength": 1}, "from": _INSTANT, "to": _INSTANT, "granularity": _GRANULARITY,
        "mode": {"type": "string", "enum": list(MODES)},
        "format": {"type": "string", "enum": list(MODES), "description": "an alias of mode"},
        "value_path": {"type": "string", "minLength": 1, "description": "a dot path; no wildcards"},
        "aggregator": {"type": "string", "enum": list(AGGREGATORS), "description": "aggregate mode only"},
        "slices": {"type": "integer", "minimum": 1, "default": 1},
    }}
_QUERY_RESULT = {"type": "object", "required": ["data"], "properties": {"data": {
    "type": "object",
    "required": ["status", "metric_key", "value_path", "slices", "timeframe", "available_paths", "matched_paths"],
    "properties": {
        "status": {"const": "ok"}, "metric_key": {"type": "string"}, "value_path": {"type": "string"},
        "slices": {"type": "integer"}, "timeframe": _TIMEFRAME, "available_paths": _STRINGS,
        "matched_paths": _STRINGS, "table": _TABLE,
        "aggregator": {"type": "string", "enum": list(AGGREGATORS)},
        "value": {"type": "number"}, "values": {"type": "array", "items": {"type": "number"}},
        "count": {"type": "integer"},
        "formatter": {"type": "string", "enum": ["timeline", "category"]},
        "result": {"oneOf": [
            {"type": "object", "additionalProperties": {"oneOf": [
                _TIMELINE_POINTS, {"type": "array", "items": _TIMELINE_POINTS}]}},
            _CATEGORY_TOTALS,
            {"type": "array", "items": _CATEGORY_TOTALS}]},
    }}}}

_METRICS = {
    "get": {
        "summary": "Trifle: a key's values per bucket (every bucket from floor(from) to floor(to))",
        "tags": ["trifle"],
        "parameters": [
            {"name": "key", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "The metric key; omitted: the system key __system__key__"},
            {"name": "from", "in": "query", "required": True, "schema": _INSTANT},
            {"name": "to", "in": "query", "required": True, "schema": _INSTANT},
            {"name": "granularity", "in": "query", "required": True, "schema": _GRANULARITY},
            _SOURCE],
        "responses": {
            "200": {"description": "One nested map per bucket (`{}` when empty)", "content": {"application/json": {
                "schema": {"type": "object", "required": ["data"], "properties": {"data": {
                    "type": "object", "required": ["at", "values"],
                    "properties": {"at": _STRINGS, "values": {"type": "array", "items": {"type": "object"}}}}}}}}},
            **_COMMON_ERRORS},
    },
    "post": {
        "summary": "Trifle: track (add) or assert (set) a key's values at a time",
        "tags": ["trifle"],
        "parameters": [_SOURCE],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _WRITE_BODY}},
                        "description": "JSON; `Content-Encoding: gzip` accepted (Trifle::Stats' API driver)"},
        "responses": {
            "201": {"description": "Stored (committed)", "content": {"application/json": {"schema": {
                "type": "object", "required": ["data"], "properties": {"data": {
                    "type": "object", "required": ["created"], "properties": {"created": {"const": "ok"}}}}}}}},
            **_COMMON_ERRORS, **_BODY_ERRORS,
            "404": _error("No metrics pipeline is configured"),
            "503": _error("The store is full or could not commit: retry after Retry-After seconds", retry=True)},
    },
}
_QUERY = {
    "post": {
        "summary": "Trifle: aggregate (sum/mean/min/max, slices), timeline or category of a value path",
        "tags": ["trifle"],
        "parameters": [_SOURCE],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _QUERY_BODY}}},
        "responses": {
            "200": {"description": "The query's result", "content": {"application/json": {"schema": _QUERY_RESULT}}},
            **_COMMON_ERRORS, **_BODY_ERRORS,
            "422": _error("Trifle's checks: aggregator, slices, wildcard, unknown path, no data",
                          _UNPROCESSABLE)},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/trifle/api/v1/metrics": _METRICS,
    "/trifle/api/v1/metrics/query": _QUERY,
    "/api/v1/metrics/query": _QUERY,
}
