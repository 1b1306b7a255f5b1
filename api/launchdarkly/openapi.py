"""OpenAPI 3.1 paths of the metric groups API, with full request and response schemas.

The schemas say exactly what otelite accepts and returns (request.py, patch.py, representation.py): the
request schemas carry the same bounds and patterns the parsers enforce, and the response schemas are
LaunchDarkly's `MetricGroupRep` / `MetricGroupCollectionRep` as its generated client's strict models
read them. They are inlined (the document has no shared `components.schemas`).
"""

from __future__ import annotations

from typing import Any

from otelite.api.launchdarkly.patch import MAX_ADDED_VALUES, MAX_COMMENT, MAX_OPERATIONS
from otelite.api.launchdarkly.request import (EXPAND_PATTERN, EXPERIMENT_STATUSES, FILTER_PATTERN, KEY_PATTERN,
                                              MAX_DESCRIPTION, MAX_FILTER, MAX_LIMIT, MAX_METRIC_KEY, MAX_METRICS,
                                              MAX_NAME, MAX_OFFSET, MAX_TAG, MAX_TAGS, SORT_PATTERN)
from otelite.collector.store.metric_groups import KINDS

_STRING = {"type": "string"}
_LINK = {"type": "object", "required": ["href", "type"],
         "properties": {"href": _STRING, "type": {"const": "application/json"}}}
_LINKS = {"type": "object", "additionalProperties": _LINK}

ERROR = {"type": "object", "required": ["code", "message"],
         "properties": {"code": {"type": "string", "description": "invalid_request, unauthorized, forbidden, "
                                 "not_found, method_not_allowed, conflict, optimistic_locking_error, "
                                 "rate_limited, payload_too_large, unsupported_media_type, unavailable"},
                        "message": _STRING}}

_RATE_HEADERS = {
    "X-Ratelimit-Route-Remaining": {"description": "requests left in this route class's bucket (only when "
                                                   "auth.rate_limits limits the class)",
                                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "X-Ratelimit-Reset": {"description": "when the bucket is full again, epoch milliseconds",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}},
}


def _error(description: str) -> dict:
    return {"description": description, "headers": _RATE_HEADERS,
            "content": {"application/json": {"schema": ERROR}}}


def _ok(description: str, schema: dict) -> dict:
    return {"description": description, "headers": _RATE_HEADERS,
            "content": {"application/json": {"schema": schema}}}


_COMMON_ERRORS = {
    "400": _error("Invalid request; the message names the field or filter clause"),
    "401": _error("No API key, or an invalid or revoked one"),
    "403": _error("The key lacks the scope (metrics:read to read, metric_groups:write to write)"),
    "404": _error("Unknown project, a project the key may not see, or no such metric group"),
    "405": _error("Method not allowed"),
    "413": _error("Request body over the limit (api.max_request_body_size), refused from Content-Length"),
    "429": _error("Rate limited (Retry-After, X-Ratelimit-Reset)"),
}
_READ_ERRORS = {
    "503": _error("The read ran past its time budget (api.query_timeout) or the server is busy; retry after "
                  "Retry-After"),
}
_WRITE_ERRORS = {
    "415": _error("Unsupported Content-Encoding"),
    "503": _error("The store cannot take writes right now; retry after Retry-After"),
}

METRIC_IN_GROUP_INPUT = {
    "type": "object", "required": ["key"],
    "description": "nameInGroup is required in a funnel group",
    "properties": {"key": {"type": "string", "minLength": 1, "maxLength": MAX_METRIC_KEY,
                           "description": "the name of a metric stored in the project"},
                   "nameInGroup": {"type": ["string", "null"], "maxLength": MAX_NAME}},
}
METRIC_GROUP_POST = {
    "type": "object", "required": ["name", "kind", "maintainerId", "tags", "metrics"],
    "properties": {
        "key": {"type": "string", "pattern": KEY_PATTERN, "description": "defaults to a slug of the name"},
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
        "kind": {"type": "string", "enum": list(KINDS)},
        "description": {"type": ["string", "null"], "maxLength": MAX_DESCRIPTION},
        "maintainerId": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
        "tags": {"type": "array", "maxItems": MAX_TAGS, "items": {"type": "string", "minLength": 1,
                                                                  "maxLength": MAX_TAG}},
        "metrics": {"type": "array", "minItems": 1, "maxItems": MAX_METRICS, "items": METRIC_IN_GROUP_INPUT,
                    "description": "ordered; each metric at most once"},
    },
    # A funnel's steps are named (metric-groups.md: funnels need nameInGroup).
    "if": {"required": ["kind"], "properties": {"kind": {"const": "funnel"}}},
    "then": {"properties": {"metrics": {"items": {
        "required": ["nameInGroup"], "properties": {"nameInGroup": {"type": "string", "minLength": 1}}}}}},
}
METRIC_IN_GROUP_REP = {
    "type": "object", "required": ["key", "name", "kind", "_links"],
    "properties": {"key": _STRING, "name": _STRING, "kind": {"const": "custom"}, "isNumeric": {"type": "boolean"},
                   "unitAggregationType": {"enum": ["sum", "average"]}, "nameInGroup": _STRING, "_links": _LINKS},
}
METRIC_GROUP_REP = {
    "type": "object",
    "required": ["_id", "key", "name", "kind", "_links", "tags", "_creationDate", "_lastModified", "maintainer",
                 "metrics", "_version"],
    "properties": {
        "_id": {"type": "string", "format": "uuid"},
        "key": _STRING,
        "name": _STRING,
        "kind": {"type": "string", "enum": list(KINDS)},
        "description": _STRING,
        "_links": _LINKS,
        "tags": {"type": "array", "items": _STRING},
        "_creationDate": {"type": "integer", "description": "epoch milliseconds"},
        "_lastModified": {"type": "integer", "description": "epoch milliseconds"},
        "maintainer": {"type": "object", "required": ["key", "kind"],
                       "properties": {"key": _STRING, "kind": {"const": "member"}}},
        "metrics": {"type": "array", "items": METRIC_IN_GROUP_REP},
        "_version": {"type": "integer", "minimum": 1},
        "experiments": {"type": "array", "maxItems": 0, "description": "with expand=experiments (none)"},
        "experimentCount": {"const": 0, "description": "with expand=experimentCount"},
    },
}
METRIC_GROUP_COLLECTION_REP = {
    "type": "object", "required": ["items", "_links", "totalCount"],
    "properties": {"items": {"type": "array", "maxItems": MAX_LIMIT, "items": METRIC_GROUP_REP},
                   "_links": _LINKS, "totalCount": {"type": "integer", "minimum": 0}},
}

_POINTER = {"type": "string", "pattern": "^(/([^~/]|~[01])*)*$", "description": "a JSON Pointer"}
PATCH_OPERATION = {"oneOf": [
    {"type": "object", "required": ["op", "path", "value"],
     "properties": {"op": {"enum": ["add", "replace", "test"]}, "path": _POINTER, "value": {}}},
    {"type": "object", "required": ["op", "path"], "properties": {"op": {"const": "remove"}, "path": _POINTER}},
    {"type": "object", "required": ["op", "path", "from"],
     "properties": {"op": {"enum": ["move", "copy"]}, "path": _POINTER, "from": _POINTER}},
]}
_PATCH_ARRAY = {"type": "array", "maxItems": MAX_OPERATIONS, "items": PATCH_OPERATION}
PATCH_BODY = {"oneOf": [
    _PATCH_ARRAY,
    {"type": "object", "required": ["patch"],
     "properties": {"comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT}, "patch": _PATCH_ARRAY}},
]}


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


_PROJECT = _param("projectKey", "path", {"type": "string", "minLength": 1}, "the project key (or id)", True)
_GROUP = _param("metricGroupKey", "path", {"type": "string", "minLength": 1}, "the metric group key", True)
_VERSION = _param("LD-API-Version", "header", _STRING, "any value (beta, 20240415) or none")
_EXPAND = _param("expand", "query", {"type": "string", "pattern": EXPAND_PATTERN},
                 "comma-separated: experiments, experimentCount (otelite runs no experiments: [] and 0)")
_LIST_PARAMS = [
    _param("filter", "query", {"type": "string", "maxLength": MAX_FILTER, "pattern": FILTER_PATTERN},
           "clauses joined by ' and ': query equals 'text' (or ['a','b']), kind equals|anyOf, maintainerIds "
           "anyOf [...], maintainerTeamKey equals '...', experimentStatus equals one of "
           f"{', '.join(EXPERIMENT_STATUSES)}, hasConnections equals true|false"),
    _param("sort", "query", {"type": "string", "pattern": SORT_PATTERN},
           "comma-separated name, createdAt, connectionCount; - prefix for descending"),
    _EXPAND,
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page size, default 20"),
    _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "groups to skip"),
]
_SECURITY = [{"bearer": []}, {"apiKey": []}]
_AUTH_NOTE = " Send the key as `Authorization: <key>` (LaunchDarkly's clients) or `Authorization: Bearer <key>`."

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v2/projects/{projectKey}/metric-groups": {
        "get": {"summary": "List metric groups (LaunchDarkly)", "operationId": "getMetricGroups",
                "description": "Needs metrics:read." + _AUTH_NOTE, "security": _SECURITY,
                "parameters": [_PROJECT, _VERSION, *_LIST_PARAMS],
                "responses": {"200": _ok("A page of metric groups", METRIC_GROUP_COLLECTION_REP), **_COMMON_ERRORS,
                              **_READ_ERRORS}},
        "post": {"summary": "Create a metric group (LaunchDarkly)", "operationId": "createMetricGroup",
                 "description": "Needs metric_groups:write. Every metric key must name a metric stored in the "
                                "project." + _AUTH_NOTE, "security": _SECURITY,
                 "parameters": [_PROJECT, _VERSION],
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": METRIC_GROUP_POST}}},
                 "responses": {"201": _ok("The created metric group", METRIC_GROUP_REP), **_COMMON_ERRORS,
                               "409": _error("A metric group with this key exists"), **_WRITE_ERRORS}},
    },
    "/api/v2/projects/{projectKey}/metric-groups/{metricGroupKey}": {
        "get": {"summary": "Get a metric group (LaunchDarkly)", "operationId": "getMetricGroup",
                "description": "Needs metrics:read." + _AUTH_NOTE, "security": _SECURITY,
                "parameters": [_PROJECT, _GROUP, _VERSION, _EXPAND],
                "responses": {"200": _ok("The metric group", METRIC_GROUP_REP), **_COMMON_ERRORS, **_READ_ERRORS}},
        "patch": {"summary": "Patch a metric group with JSON Patch (LaunchDarkly)", "operationId": "patchMetricGroup",
                  "description": "Needs metric_groups:write. RFC 6902 on the representation (plus "
                                 "maintainerId); all or nothing; fields starting with _ and key are read-only; "
                                 "a failed test of /_version is a 409; the operations may add at most "
                                 f"{MAX_ADDED_VALUES} values (copies included)." + _AUTH_NOTE, "security": _SECURITY,
                  "parameters": [_PROJECT, _GROUP, _VERSION],
                  "requestBody": {"required": True, "content": {"application/json": {"schema": PATCH_BODY}}},
                  "responses": {"200": _ok("The patched metric group", METRIC_GROUP_REP), **_COMMON_ERRORS,
                                "409": _error("_version test failed (optimistic_locking_error)"), **_WRITE_ERRORS}},
        "delete": {"summary": "Delete a metric group (LaunchDarkly)", "operationId": "deleteMetricGroup",
                   "description": "Needs metric_groups:write." + _AUTH_NOTE, "security": _SECURITY,
                   "parameters": [_PROJECT, _GROUP, _VERSION],
                   "responses": {"204": {"description": "Deleted", "headers": _RATE_HEADERS}, **_COMMON_ERRORS,
                                 "503": _WRITE_ERRORS["503"]}},
    },
}
