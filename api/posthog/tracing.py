"""PostHog tracing API (seed 002, spec posthog-tracing.md) under /api/environments/:project_id/ and
/api/projects/:project_id/ with the `tracing:read` scope.

Thin resources: decode the request (api/posthog/tracing_query.py), read through the store on a worker thread
(collector/store/tracing.py), render. Errors are raised as ApiError and rendered in PostHog's shape.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable

import falcon

from otelite.api.auth import RoutePolicy
from otelite.api.dialect import Dialect
from otelite.api.errors import bad_request
from otelite.api.posthog import tracing_query as tq
from otelite.api.posthog.common import (DATE_SCHEMA, ERROR_SCHEMA, ERRORS, FILTER_VALUE_SCHEMA, OPERATORS_SCHEMA,
                                         PREFIXES, error_responses, request_body)
from otelite.api.posthog.request_body import read_posthog_body
from otelite.collector.store import tracing as st

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.store.store import Store

READ = RoutePolicy(errors=ERRORS, scopes={"GET": "tracing:read", "POST": "tracing:read"},
                   rate_class="read", project_param="project_id")
BASE = "/tracing/spans"


def _query(conn, q: tq.SpanListQuery) -> dict:
    rows, has_more = st.find_spans(conn, q.selection, q.order, q.limit, q.offset, q.after)
    cursor = None
    if has_more and rows and q.order.by == "timestamp":
        cursor = tq.encode_cursor(rows[-1].start_ns, rows[-1].span_id)
    listed = [(r, True) for r in rows]  # every listed span matched the query
    if q.prefetch is not None:
        context = st.trace_context(conn, q.selection, (r.trace_id for r in rows), (r.id for r in rows),
                                   q.prefetch)
        listed = tq.with_prefetched(rows, context, q.prefetch)
    spans = [r for r, _ in listed]
    resources = {} if q.exclude_attributes else \
        st.resource_attributes(conn, q.selection.project_id, (r.resource_id for r in spans))
    bounds = st.trace_bounds(conn, q.selection.project_id, (r.trace_id for r in spans))
    return {"results": [tq.render_span(r, resources, bounds.get(r.trace_id), matched=m,
                                       exclude_attributes=q.exclude_attributes) for r, m in listed],
            "hasMore": has_more, "nextCursor": cursor}


def _trace(conn, q: tq.TraceQuery) -> dict:
    rows, has_more, self_times, bounds = st.trace_page(conn, q.selection, q.offset, tq.TRACE_PAGE)
    resources = st.resource_attributes(conn, q.selection.project_id, (r.resource_id for r in rows))
    return {"results": [tq.render_span(r, resources, bounds, self_times.get(r.span_id, 0)) for r in rows],
            "hasMore": has_more, "nextOffset": q.offset + len(rows) if has_more else None}


class PostedQueryResource:
    """POST {"query": ...}: parsed by `parse` (tracing_query.py; its errors name the field) and answered by
    `run` on a store reader thread. The span list, the aggregates, the tree and the sparkline."""

    auth_policy = READ

    def __init__(self, store: "Store", parse: Callable[..., Any], run: Callable[..., dict]) -> None:
        self._store, self._parse, self._run = store, parse, run

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        q = self._parse(await read_posthog_body(req), project.id, project.timezone, time.time_ns())
        resp.media = await self._store.read(self._run, q)


class TraceResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str,
                      trace_id: str) -> None:
        project = req.context.project
        q = tq.parse_trace_request(trace_id, await read_posthog_body(req), project.id, project.timezone, time.time_ns())
        resp.media = await self._store.read(_trace, q)


def _sparkline(conn, q: tq.SparklineQuery) -> dict:
    return {"results": tq.sparkline_results(st.span_counts(conn, q.selection, q.bucket_ns, q.distinct_traces), q)}


def _aggregate(conn, q: tq.AggregateQuery) -> dict:
    rows, has_more = st.span_aggregates(conn, q.selection, q.limit, q.offset)
    compare = st.span_aggregates(conn, q.compare, q.limit, q.offset)[0] if q.compare is not None else None
    return {"results": [tq.render_aggregate(r) for r in rows],
            "compare": [tq.render_aggregate(r) for r in compare] if compare is not None else None,
            "has_more": has_more, "next_offset": q.offset + len(rows) if has_more else None}


def _tree(conn, q: tq.TreeQuery) -> dict:
    rows = st.span_tree(conn, q.selection, q.span_name, q.service_name, tq.AGGREGATE_MAX_ROWS)
    compare = st.span_tree(conn, q.compare, q.span_name, q.service_name, tq.AGGREGATE_MAX_ROWS) \
        if q.compare is not None else None
    return {"results": tq.render_tree(rows), "compare": tq.render_tree(compare) if compare is not None else None}


class ServiceNamesResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        tq.check_params(req.params, tq.SERVICE_NAMES_PARAMS)
        start, end = tq.parse_date_range(req.get_param("dateRange"), now_ns=time.time_ns(),
                                         timezone=project.timezone, default_from="-1h")
        names = await self._store.read(st.service_names, project.id, start or 0, end, req.get_param("search"),
                                       tq.SERVICE_NAMES_MAX)
        resp.media = {"results": [{"name": n} for n in names]}


def _params(req: falcon.asgi.Request) -> dict[str, str]:
    """The query string, one text per name (a repeated name → 400: which one would count?)."""
    out = {}
    for name, value in req.params.items():
        if isinstance(value, list):
            raise bad_request(f"{name}: given more than once", attr=name)
        out[name] = value
    return out


class AttributesResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        q = tq.parse_picker(_params(req), values=False, now_ns=time.time_ns(), timezone=project.timezone)
        read = functools.partial(st.attribute_keys, window=q.window, exclude=q.exclude, only=q.only)
        keys, total = await self._store.read(read, project.id, q.kind, q.search, q.limit, q.offset)
        filter_type = tq.PROPERTY_FILTER_TYPE[q.kind]
        resp.media = {"results": [{"name": k, "propertyFilterType": filter_type, "matchedOn": "key"} for k in keys],
                      "count": total}


class ValuesResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        if not req.get_param("key"):
            # posthog-tracing.md: exactly this body, as PostHog's view returns it (not the DRF error shape).
            resp.status = falcon.HTTP_400
            resp.media = {"error": "key is required"}
            return
        project = req.context.project
        q = tq.parse_picker(_params(req), values=True, now_ns=time.time_ns(), timezone=project.timezone)
        read = functools.partial(st.attribute_values, window=q.window)
        values = await self._store.read(read, project.id, q.kind, q.key, q.search, q.limit, q.offset)
        resp.media = {"results": [{"id": v, "name": v} for v in values]}


# --- OpenAPI ----------------------------------------------------------------------------------------------

def _param(name: str, where: str = "query", kind: str = "string", required: bool = False, **extra: Any) -> dict:
    return {"name": name, "in": where, "required": required, "schema": {"type": kind, **extra}}


_PROJECT = {**_param("project_id", "path", required=True), "description": "project id or key"}
_DATE_RANGE = {"type": "object", "additionalProperties": False, "properties": {
    "date_from": {"anyOf": [DATE_SCHEMA, {"type": "null"}, {"const": "all"}]},
    "date_to": {"anyOf": [DATE_SCHEMA, {"type": "null"}]},
    "explicitDate": {"type": ["boolean", "null"], "description": "accepted; otelite never rounds the dates"}}}
_SPAN_FILTER = {"type": "object", "required": ["key", "type"], "additionalProperties": False, "properties": {
    "key": {"type": "string", "minLength": 1}, "label": {"type": ["string", "null"]},
    "type": {"type": "string", "enum": list(tq.FILTER_TYPES)}, "operator": OPERATORS_SCHEMA,
    "value": FILTER_VALUE_SCHEMA}}
_GROUP = {"type": "object", "required": ["values"], "additionalProperties": False, "properties": {
    "type": {"type": "string", "enum": ["AND", "OR"]},
    "values": {"type": "array", "items": {"oneOf": [_SPAN_FILTER, {"type": "object", "required": ["values"]}]}}}}
_FILTER_GROUP = {"description": "a list of filters (AND) or {type: AND|OR, values: [filters or groups]}",
                 "oneOf": [{"type": "array", "items": {"oneOf": [_SPAN_FILTER, _GROUP]}}, _GROUP]}
_COMPARE = {"type": "object", "additionalProperties": False, "properties": {
    "compare": {"type": ["boolean", "null"]},
    "compare_to": {"type": ["string", "null"], "description": "a relative date (-1d, -7d); default: the previous "
                                                              "period of equal length"}}}
_SELECTION = {"dateRange": _DATE_RANGE, "serviceNames": {"type": "array", "items": {"type": "string"}},
              "statusCodes": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 2}},
              "traceId": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}, "rootSpans": {"type": "boolean"},
              "filterGroup": _FILTER_GROUP, "compareFilter": _COMPARE}
_STATS = {"count": {"type": "integer"}, "total_duration_nano": {"type": "number"},
          "avg_duration_nano": {"type": "number"}, "p50_duration_nano": {"type": "number"},
          "p95_duration_nano": {"type": "number"}, "p99_duration_nano": {"type": "number"},
          "p999_duration_nano": {"type": "number"}, "error_count": {"type": "integer"}}
_AGGREGATE_ROW = {"type": "object", "required": ["service_name", "name", *_STATS], "properties": {
    "service_name": {"type": "string"}, "name": {"type": "string"}, **_STATS}}
_TREE_ROW = {"type": "object", "required": ["parent_service", "parent_name", "service_name", "name", *_STATS,
                                            "avg_start_offset_nano", "calls_per_parent_invocation"],
             "properties": {"parent_service": {"type": "string"},
                            "parent_name": {"type": "string", "description": "<ROOT> for a trace's root spans"},
                            "service_name": {"type": "string"}, "name": {"type": "string"}, **_STATS,
                            "avg_start_offset_nano": {"type": "number"},
                            "calls_per_parent_invocation": {"type": ["number", "null"]}}}


def _nullable(schema: dict) -> dict:
    """An optional field: PostHog's clients send null for one they leave unset, which means the default."""
    return {"anyOf": [schema, {"type": "null"}]}


def _query_schema(properties: dict, required: tuple[str, ...] = ()) -> dict:
    query = {"type": "object", "additionalProperties": False, "properties": {
        **{name: schema if name in required else _nullable(schema) for name, schema in properties.items()},
        **{name: {"description": "schema bookkeeping PostHog's clients send; no effect"}
           for name in tq.INERT_FIELDS}}}
    body = {"type": "object", "additionalProperties": False, "properties": {
        "query": query if required else _nullable(query), "client_query_id": {"description": "no effect"},
        "refresh": {"description": "no effect"}}}
    if required:
        query["required"] = list(required)
        body["required"] = ["query"]
    return body


def _json_response(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Every field the span list (and the sparkline, which checks and ignores the list-only ones) reads:
# tracing_query.QUERY_FIELDS.
_SPAN_LIST = {**{k: v for k, v in _SELECTION.items() if k != "compareFilter"},
              "limit": {"type": "integer", "minimum": 1, "maximum": tq.MAX_LIMIT},
              "offset": {"type": "integer", "minimum": 0},
              "after": {"type": "string", "description": "nextCursor of the previous page (timestamp order)"},
              "orderBy": {"type": "string", "enum": ["timestamp", "duration", "latest", "earliest"]},
              "orderDirection": {"type": "string", "enum": ["DESC", "ASC", "desc", "asc"]},
              "prefetchSpans": {"type": "integer", "minimum": 1, "description": "spans per listed trace (≤ 100)"},
              "flatSpans": {"type": "boolean"}, "excludeAttributes": {"type": "boolean"}}
# The trace view's body has its fields at the top level (tracing_query.TRACE_FIELDS).
_TRACE_BODY = {"type": "object", "additionalProperties": False, "properties": {
    **{k: _nullable(_SELECTION[k]) for k in tq.TRACE_FIELDS if k != "offset"},
    "offset": _nullable({"type": "integer", "minimum": 0}),
    **{name: {"description": "schema bookkeeping PostHog's clients send; no effect"} for name in tq.INERT_FIELDS}}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_SPAN = {"type": "object", "required": [
    "uuid", "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name", "status_code",
    "status_message", "timestamp", "end_time", "duration_nano", "is_root_span", "attributes",
    "resource_attributes", "events", "links"], "properties": {
    "uuid": {"type": "string", "format": "uuid"}, "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    "span_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"}, "parent_span_id": {"type": "string"},
    "name": {"type": "string"}, "kind": {"type": "integer"}, "service_name": {"type": "string"},
    "status_code": {"type": "integer"}, "status_message": {"type": "string"},
    "timestamp": {"type": "string", "description": "ISO 8601 UTC, microseconds"}, "end_time": {"type": "string"},
    "duration_nano": {"type": "integer"}, "is_root_span": {"type": "boolean"}, "trace_start": {"type": "string"},
    "trace_duration": {"type": "integer", "description": "nanoseconds"},
    "matched_filter": {"type": "integer", "enum": [0, 1], "description": "span query only"},
    "self_time_nano": {"type": "integer", "description": "trace view only"},
    "attributes": _STRING_MAP, "resource_attributes": _STRING_MAP,
    "events": {"type": "array", "items": {"type": "object", "required": ["name", "timestamp", "attributes"],
                                          "properties": {"name": {"type": "string"}, "timestamp": {"type": "string"},
                                                         "attributes": _STRING_MAP}}},
    "links": {"type": "array", "items": {"type": "object", "required": [
        "trace_id", "span_id", "trace_state", "flags", "attributes"], "properties": {
        "trace_id": {"type": "string"}, "span_id": {"type": "string"}, "trace_state": {"type": "string"},
        "flags": {"type": "integer"}, "attributes": _STRING_MAP}}}}}
_SPAN_PAGE = {"type": "object", "required": ["results", "hasMore", "nextCursor"], "properties": {
    "results": {"type": "array", "items": _SPAN}, "hasMore": {"type": "boolean"},
    "nextCursor": {"type": ["string", "null"]}}}
_TRACE_PAGE = {"type": "object", "required": ["results", "hasMore", "nextOffset"], "properties": {
    "results": {"type": "array", "items": _SPAN}, "hasMore": {"type": "boolean"},
    "nextOffset": {"type": ["integer", "null"]}}}
_SPARKLINE = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["time", "service", "count"], "properties": {
        "time": {"type": "string"}, "service": {"type": "string"}, "count": {"type": "integer"}}}}}}
_NAMES = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}
_ATTRIBUTE_KEYS = {"type": "object", "required": ["results", "count"], "properties": {
    "results": {"type": "array", "items": {"type": "object", "required": ["name", "propertyFilterType", "matchedOn"],
                                           "properties": {"name": {"type": "string"}, "propertyFilterType": {
                                               "enum": sorted(tq.PROPERTY_FILTER_TYPE.values())},
                                               "matchedOn": {"const": "key"}}}},
    "count": {"type": "integer"}}}
_ATTRIBUTE_VALUES = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["id", "name"], "properties": {"id": {"type": "string"},
                                                               "name": {"type": "string"}}}}}}
_KEY_REQUIRED = {"type": "object", "required": ["error"], "properties": {"error": {"const": "key is required"}}}
_ATTRIBUTE_TYPE = _param("attribute_type", enum=sorted(tq.ATTRIBUTE_TYPES))
_PAGE = [_param("limit", kind="integer", minimum=1, maximum=tq.MAX_LIMIT),
         _param("offset", kind="integer", minimum=0)]

_OPERATIONS = {
    "/aggregate": {"post": {
        "summary": "Duration statistics per (service, span name) of the matching spans, by total duration",
        "parameters": [_PROJECT],
        "requestBody": request_body(_query_schema({
            **_SELECTION, "limit": {"type": "integer", "minimum": 1, "maximum": tq.AGGREGATE_MAX_ROWS},
            "offset": {"type": "integer", "minimum": 0}}), required=False),
        "responses": {"200": _json_response({
            "type": "object", "required": ["results", "compare", "has_more", "next_offset"], "properties": {
                "results": {"type": "array", "items": _AGGREGATE_ROW},
                "compare": {"type": ["array", "null"], "items": _AGGREGATE_ROW},
                "has_more": {"type": "boolean"}, "next_offset": {"type": ["integer", "null"]}}},
            "one page of rows; `compare` holds the compareFilter window's rows"), **error_responses("tracing:read")}}},
    "/tree": {"post": {
        "summary": "The call tree under a span name: duration statistics per (parent, child) edge",
        "parameters": [_PROJECT],
        "requestBody": request_body(_query_schema({
            **_SELECTION, "spanName": {"type": "string", "minLength": 1}, "serviceName": {"type": "string"}},
            required=("spanName",))),
        "responses": {"200": _json_response({
            "type": "object", "required": ["results", "compare"], "properties": {
                "results": {"type": "array", "items": _TREE_ROW},
                "compare": {"type": ["array", "null"], "items": _TREE_ROW}}},
            "edges by total duration (at most 5000)"), **error_responses("tracing:read")}}},
    "/query": {"post": {
        "summary": "Query spans (keyset cursor for timestamp order, offset for duration)",
        "parameters": [_PROJECT], "requestBody": request_body(_query_schema(_SPAN_LIST), required=False),
        "responses": {"200": _json_response(_SPAN_PAGE, "a page of spans; with prefetchSpans, spans of their "
                                                        "traces too (matched_filter 0)"),
                      **error_responses("tracing:read")}}},
    "/trace/{trace_id}": {"post": {
        "summary": "All spans of a trace in start order, with self_time_nano, pages of 2000",
        "parameters": [_PROJECT, _param("trace_id", "path", required=True, pattern="^[0-9a-fA-F]{32}$")],
        "requestBody": request_body(_TRACE_BODY, required=False),
        "responses": {"200": _json_response(_TRACE_PAGE, "a page of the trace's spans"),
                      **error_responses("tracing:read")}}},
    "/sparkline": {"post": {
        "summary": "Span counts per time bucket and service (zero-filled)", "parameters": [_PROJECT],
        "requestBody": request_body(_query_schema(_SPAN_LIST), required=False),
        "responses": {"200": _json_response(_SPARKLINE, "every bucket of the window, the top 10 services of each"),
                      **error_responses("tracing:read")}}},
    "/service-names": {"get": {
        "summary": "Service names seen in the date range",
        "parameters": [_PROJECT, {**_param("dateRange"), "description": 'the dateRange object as JSON text, e.g. '
                                                                         '{"date_from": "-1h"} (default: the last hour)'},
                       _param("search")],
        "responses": {"200": _json_response(_NAMES, "names"), **error_responses("tracing:read")}}},
    "/attributes": {"get": {
        "summary": "Attribute keys by frequency",
        "parameters": [_PROJECT, _ATTRIBUTE_TYPE, _param("search"), *_PAGE, _param("dateRange"),
                       _param("excluded_properties"), _param("properties")],
        "responses": {"200": _json_response(_ATTRIBUTE_KEYS, "keys"), **error_responses("tracing:read")}}},
    "/values": {"get": {
        "summary": "Values of an attribute by frequency",
        "parameters": [_PROJECT, _param("key", required=True), _ATTRIBUTE_TYPE, _param("value"), *_PAGE,
                       _param("dateRange")],
        "responses": {"200": _json_response(_ATTRIBUTE_VALUES, "values"), **error_responses("tracing:read"),
                      # posthog-tracing.md: without `key`, PostHog's view answers {"error": "key is required"}
                      "400": _json_response({"anyOf": [ERROR_SCHEMA, _KEY_REQUIRED]},
                                            "invalid input, or no `key`")}}},
}
OPENAPI_PATHS = {f"{prefix}{BASE}{suffix}": ops for prefix in PREFIXES for suffix, ops in _OPERATIONS.items()}


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    store = services.store
    resources = {"/query": PostedQueryResource(store, tq.parse_span_query, _query),
                 "/trace/{trace_id}": TraceResource(store),
                 "/sparkline": PostedQueryResource(store, tq.parse_sparkline, _sparkline),
                 "/service-names": ServiceNamesResource(store),
                 "/attributes": AttributesResource(store), "/values": ValuesResource(store),
                 "/aggregate": PostedQueryResource(store, tq.parse_aggregate, _aggregate),
                 "/tree": PostedQueryResource(store, tq.parse_tree, _tree)}
    for prefix in PREFIXES:
        for suffix, resource in resources.items():
            app.add_route(f"{prefix}{BASE}{suffix}", resource)


DIALECT = Dialect("posthog-tracing", add_routes, OPENAPI_PATHS)
