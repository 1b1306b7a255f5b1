"""OpenAPI paths of the Trifle dialect: every operation with its request and response schemas.

Documented on the unambiguous mount (`/trifle/api/v1/...`) and, for the path only Trifle serves, on
`/api/v1/metrics/query`. The shared `/api/v1/metrics` serves Flux or Trifle by shape (api/shared_v1.py);
its Trifle operations are exactly those documented here under `/trifle`.

The request schemas are as tight as a schema can say (times with an offset, granularities, no wildcard,
numeric leaves, an aggregator in aggregate mode), so a request they accept is answered 2xx unless the
data decides otherwise: an unknown path or nothing in the range (422), more slices than buckets for a
formatter (422), more than 100,000 buckets (400).
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
# Reads run under the query budget (collector/store/budget.py): past api.query_timeout, or with every
# query worker busy, the answer is a 503 with Retry-After.
_READ_BUDGET = {"503": _error("The read took longer than api.query_timeout, or the query workers are busy: "
                              "retry after Retry-After seconds", retry=True)}
_BODY_ERRORS = {
    "413": _error("The body is over the limit (after decompression)"),
    "415": _error("Unsupported Content-Encoding"),
}

# X-Trifle-Source-Id is described in words, not as a parameter: its valid values are the deployment's
# project ids and keys, which a schema cannot list.
_SOURCE_NOTE = (" Optional header `X-Trifle-Source-Id`: the project (id or key) the API key belongs to "
                "(Trifle::Stats' API driver sends it); another project's → 400 `Invalid X-Trifle-Source-Id header`.")
_INSTANT = {"type": "string", "format": "date-time",
            "pattern": r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
                       r"[0-5][0-9](\.[0-9]{1,9})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])$",
            "description": "ISO 8601 with an offset, e.g. 2026-01-24T00:00:00Z or 2026-01-24T04:00:00+04:00"}
_GRANULARITY = {"type": "string", "pattern": r"^\s*0*[1-9][0-9]{0,2}(s|m|h|d|w|mo|q|y)\s*$",
                "description": "N units, N ≥ 1: s m h d w mo q y (e.g. 1m, 33m, 1h, 1d, 1w, 1mo, 1q, 1y), "
                               "aligned in the project's time zone"}
_KEY = {"type": "string", "pattern": r"\S", "description": "The metric key, e.g. event::signup"}


def _any_case(*names: str) -> dict:
    """A string naming one of `names`, trimmed and in any case (Trifle compares mode and aggregator so)."""
    spelled = "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in name) for name in names)
    return {"type": "string", "pattern": rf"^\s*({spelled})\s*$"}
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

# `values` is recursive: it refers to itself by its place in the document.
_VALUES_POINTER = ("#/paths/~1trifle~1api~1v1~1metrics/post/requestBody/content/application~1json/schema/"
                   "properties/values")
_WRITE_BODY = {
    "type": "object", "required": ["key", "at", "values"],
    "properties": {
        "key": {"type": "string", "minLength": 1, "description": "The metric key, e.g. event::signup"},
        "at": _INSTANT,
        "values": {"type": "object", "description": "Nested maps whose leaves are numbers",
                   "additionalProperties": {"anyOf": [{"type": "number"}, {"$ref": _VALUES_POINTER}]}},
        "operation": {"enum": [*OPERATIONS, None], "default": "track",
                      "description": "track adds each leaf into its bucket; assert sets the leaves given"},
        "untracked": {"type": ["boolean", "null"], "default": False,
                      "description": "count this write on the system key as __untracked__"},
    }}
_FORMATTERS = _any_case("timeline", "category")
_AGGREGATE = _any_case("aggregate")
_AGGREGATOR = _any_case(*AGGREGATORS)
_NO_MODE = {"type": "null"}  # absent or null: `format` decides
_QUERY_BODY = {
    "type": "object", "required": ["key", "from", "to", "granularity", "value_path"],
    "properties": {
        "key": _KEY, "from": _INSTANT, "to": _INSTANT, "granularity": _GRANULARITY,
        "mode": {"anyOf": [_any_case(*MODES), {"type": "null"}],
                 "description": "aggregate, timeline or category (trimmed, any case)"},
        "format": {"description": "an alias of mode, read when mode is absent"},
        "value_path": {"type": "string", "pattern": r"^[^*]*\S[^*]*$",
                       "description": "a dot path into the values (e.g. count, country.US); no wildcards"},
        "aggregator": {"description": "aggregate mode only: sum, mean, min or max (trimmed, any case)"},
        "slices": {"anyOf": [{"type": "number", "minimum": 1, "multipleOf": 1},
                             {"type": "string", "pattern": r"^\s*\+?0*[1-9][0-9]*\s*$"},
                             {"const": False}, {"type": "null"}],
                   "default": 1, "description": "a whole number ≥ 1 (as a number or a string); absent: 1"},
    },
    # mode (or, without it, format) is required; aggregate mode needs an aggregator.
    "anyOf": [
        {"required": ["mode"], "properties": {"mode": _FORMATTERS}},
        {"required": ["mode", "aggregator"], "properties": {"mode": _AGGREGATE, "aggregator": _AGGREGATOR}},
        {"required": ["format"], "properties": {"mode": _NO_MODE, "format": _FORMATTERS}},
        {"required": ["format", "aggregator"],
         "properties": {"mode": _NO_MODE, "format": _AGGREGATE, "aggregator": _AGGREGATOR}},
    ]}
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
        "description": "Every bucket from floor(from) to floor(to), `{}` when empty." + _SOURCE_NOTE,
        "parameters": [
            {"name": "key", "in": "query", "required": False, "schema": _KEY,
             "description": "The metric key; omitted: the system key __system__key__"},
            {"name": "from", "in": "query", "required": True, "schema": _INSTANT},
            {"name": "to", "in": "query", "required": True, "schema": _INSTANT},
            {"name": "granularity", "in": "query", "required": True, "schema": _GRANULARITY}],
        "responses": {
            "200": {"description": "One nested map per bucket (`{}` when empty)", "content": {"application/json": {
                "schema": {"type": "object", "required": ["data"], "properties": {"data": {
                    "type": "object", "required": ["at", "values"],
                    "properties": {"at": _STRINGS, "values": {"type": "array", "items": {"type": "object"}}}}}}}}},
            **_COMMON_ERRORS, **_READ_BUDGET},
    },
    "post": {
        "summary": "Trifle: track (add) or assert (set) a key's values at a time",
        "description": "Answered after the values are committed." + _SOURCE_NOTE,
        "tags": ["trifle"],
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
        "description": "Checked in Trifle's order: key, from, to, granularity, mode (400), slices (422), "
                       "value_path (400), aggregator (422), wildcard (422), unknown path (422)." + _SOURCE_NOTE,
        "tags": ["trifle"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _QUERY_BODY}}},
        "responses": {
            "200": {"description": "The query's result", "content": {"application/json": {"schema": _QUERY_RESULT}}},
            **_COMMON_ERRORS, **_BODY_ERRORS,
            "422": _error("Trifle's checks: aggregator, slices, wildcard, unknown path, no data",
                          _UNPROCESSABLE), **_READ_BUDGET},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/trifle/api/v1/metrics": _METRICS,
    "/trifle/api/v1/metrics/query": _QUERY,
    "/api/v1/metrics/query": _QUERY,
}
