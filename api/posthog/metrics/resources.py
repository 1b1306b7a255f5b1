"""PostHog metrics API (seed 000, spec posthog-metrics.md), under /api/projects/:project_id/ and
/api/environments/:environment_id/ with the `metrics:read` scope.

Thin resources: each parses its input (request.py), runs on a worker thread's read connection
(`Store.read`) through the store's readers (collector/store/metrics.py) or the engine (query.py,
characterize.py) with the store's one point cache, and returns JSON. Errors are `ApiError`s rendered in
PostHog's shape by api/errors.py.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

import falcon

from otelite.api.auth import RoutePolicy
from otelite.api.dialect import Dialect
from otelite.api.errors import bad_request
from otelite.api.posthog.common import (DATE_SCHEMA, ERRORS, OPERATORS_SCHEMA, PREFIXES, error_responses,
                                        request_body)
from otelite.api.posthog.request_body import read_posthog_body
from otelite.api.posthog.metrics import attributes
from otelite.api.posthog.metrics.characterize import characterize
from otelite.api.posthog.metrics.query import run_query
from otelite.api.posthog.metrics.request import INERT_FIELDS, parse_characterize, parse_query
from otelite.collector.store import metrics as sm
from otelite.collector.times import zone

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.store.store import Store

READ = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read", "POST": "metrics:read"},
                   rate_class="read", project_param="project_id")
VALUES_LIMIT_DEFAULT, VALUES_LIMIT_MAX = 100, 1000


VALUES_PARAMS = ("value", "limit", "service")


def _services(raw: str | None) -> tuple[str, ...] | None:
    """PostHog's `service`: names separated by commas, used verbatim (not trimmed), empty entries dropped;
    sent empty, and only empty, it means the series without a service name; absent: every series."""
    if raw is None:
        return None
    if raw == "":
        return ("",)
    return tuple(dict.fromkeys(x for x in raw.split(",") if x))


def _values(conn: sqlite3.Connection, project_id: int, search: str, limit: int,
            services: tuple[str, ...] | None) -> list[dict]:
    return [{"name": m.name, "metric_type": m.type}
            for m in sm.metric_names(conn, project_id, search, limit, services)]




class HasMetricsResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        resp.media = {"hasMetrics": await self._store.read(sm.has_metrics, req.context.project.id)}


class ValuesResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        for name in req.params:
            if name not in VALUES_PARAMS:
                raise bad_request(f"unknown query parameter {name!r} (expected {', '.join(VALUES_PARAMS)})",
                                  attr=name)
        raw = req.get_param("limit")
        limit = VALUES_LIMIT_DEFAULT
        if raw is not None:
            if not (raw.strip().isascii() and raw.strip().isdigit()) or not 1 <= int(raw) <= VALUES_LIMIT_MAX:
                raise bad_request(f"limit must be an integer from 1 to {VALUES_LIMIT_MAX}, got {raw!r}", attr="limit")
            limit = int(raw)
        search = req.get_param("value") or ""
        resp.media = {"results": await self._store.read(_values, req.context.project.id, search, limit,
                                                        _services(req.get_param("service")))}


class AttributesResource:
    """GET metrics/attributes (`values=False`) and metrics/attribute_values (attributes.py)."""

    auth_policy = READ

    def __init__(self, store: "Store", values: bool) -> None:
        self._store, self._values = store, values

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        params = {name: req.get_param(name) for name in req.params}
        q = attributes.parse(params, project.id, zone(project.timezone), time.time_ns(), values=self._values)
        run = attributes.attribute_values if self._values else attributes.attribute_keys
        resp.media = await self._store.read(run, q)


class QueryResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        query = parse_query(await read_posthog_body(req), zone(project.timezone), time.time_ns())
        resp.media = await self._store.read(run_query, self._store.point_cache, project.id, project.timezone,
                                            query)


class CharacterizeResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        query = parse_characterize(await read_posthog_body(req), zone(project.timezone), time.time_ns())
        resp.media = await self._store.read(characterize, project.id, project.timezone, query,
                                            self._store.point_cache)


_PATH_PARAM = [{"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "project id or key"}]
# The request fields metrics/request.py reads (its *_FIELDS), with their types, for users and the fuzzer.
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_SCALAR = {"type": ["string", "number", "boolean"]}
_SCOPE = {"type": "string", "enum": ["resource", "attribute", "auto"],
          "description": "resource attributes, point attributes, or auto (a point attribute, else the resource's)"}
_FILTER = {"type": "object", "required": ["key"], "additionalProperties": False,
           "description": "eq (exact) / neq (is_not): the label equals (or not) the value, or any value of a "
                          "list; regex / not_regex: RE2 syntax, matched anywhere in the label (anchor with ^ and "
                          "$); a series without the label reads as \"\". A clause's filters are ANDed.",
           "properties": {"key": {"type": "string", "minLength": 1},
                          "op": {"type": "string", "description": "eq, neq, or any value of `operator`"},
                          "operator": OPERATORS_SCHEMA,
                          "value": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
                          "scope": _SCOPE, "type": {"type": "string"}, "label": {"type": ["string", "null"]}}}
_GROUP_BY = {"type": "array", "items": {"anyOf": [
    {"type": "string", "minLength": 1},
    {"type": "object", "required": ["key"], "additionalProperties": False,
     "properties": {"key": {"type": "string", "minLength": 1}, "scope": _SCOPE}}]}}
_AGGREGATIONS = ["sum", "avg", "min", "max", "count", "p50", "p90", "p95", "p99", "rate", "increase",
                 "histogram_quantile"]
_CLAUSE = {"metricName": {"type": "string", "minLength": 1},
           "aggregation": {"type": "string", "enum": _AGGREGATIONS},
           "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                        "description": "histogram_quantile's quantile (default 0.95)"},
           "metricType": {"type": "string", "enum": ["gauge", "sum", "histogram", "exponential_histogram", "summary"]},
           "filters": {"type": "array", "items": _FILTER}, "groupBy": _GROUP_BY}
_DATE_OR_EPOCH = {"anyOf": [DATE_SCHEMA, {"type": "number", "description": "epoch seconds"}]}
_INERT = {name: {"description": "schema bookkeeping PostHog's clients send; no effect"} for name in INERT_FIELDS}


def _body(query: dict) -> dict:
    return {"type": "object", "required": ["query"], "additionalProperties": False, "properties": {
        "query": query, "client_query_id": {"description": "no effect"}, "refresh": {"description": "no effect"}}}


_QUERY_BODY = request_body(_body({
    "type": "object", "required": ["dateFrom"], "additionalProperties": False,
    "description": "exactly one of metricName (one clause) or clauses; formula combines clauses by name",
    "properties": {**_CLAUSE, **_INERT,
                   "clauses": {"type": "array", "minItems": 1, "maxItems": 10, "items": {
                       "type": "object", "required": ["metricName"], "additionalProperties": False,
                       "properties": {"name": {"type": "string"}, **_CLAUSE}}},
                   "formula": {"type": "string", "maxLength": 512},
                   "interval": {"type": "string", "enum": ["second", "minute", "minute_5", "minute_15", "hour",
                                                           "hour_6", "day", "week"]},
                   "dateFrom": _DATE_OR_EPOCH,
                   "dateTo": {"anyOf": [DATE_SCHEMA, {"type": "number"}, {"type": "null"}],
                              "description": "default now; at most 31 days after dateFrom"}}}))
_CHARACTERIZE_BODY = request_body(_body({
    "type": "object", "required": ["metricName", "anomalyFrom"], "additionalProperties": False, "properties": {
        **{k: _CLAUSE[k] for k in ("metricName", "metricType", "aggregation", "quantile", "filters")}, **_INERT,
        "anomalyFrom": DATE_SCHEMA, "anomalyTo": DATE_SCHEMA, "baselineFrom": DATE_SCHEMA,
        "baselineTo": DATE_SCHEMA,
        "candidateKeys": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4}}}))
_SERIES = {"type": "object", "required": ["labels", "points", "metric_name", "clause"], "properties": {
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "points": {"type": "array", "items": {"type": "object", "required": ["time", "value"], "properties": {
        "time": {"type": "string"}, "value": _NUMBER_OR_NULL}}},
    "metric_name": {"type": ["string", "null"]}, "clause": {"type": "string"}}}
_RESULTS = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": _SERIES}}}
_CHARACTERIZATION = {"type": "object", "required": [
    "metric_name", "aggregation", "interval", "baseline_from", "baseline_to", "anomaly_from", "anomaly_to",
    "baseline_mean", "baseline_stddev", "anomaly_mean", "anomaly_peak", "change_ratio", "direction", "onset_time",
    "top_movers", "series"], "properties": {
    **{k: {"type": "string"} for k in ("metric_name", "aggregation", "interval", "baseline_from", "baseline_to",
                                       "anomaly_from", "anomaly_to")},
    **{k: _NUMBER_OR_NULL for k in ("baseline_mean", "baseline_stddev", "anomaly_mean", "anomaly_peak",
                                    "change_ratio", "significance", "onset_confidence", "absolute_change",
                                    "relative_change")},
    **{k: {"type": ["string", "null"]} for k in ("direction", "onset_time", "direction_source", "onset_model",
                                                 "reference_onset_time")},
    "onset_series": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["key", "label"], "properties": {
        "key": {"type": "string"}, "label": {"type": "string"}}}]},
    "top_movers": {"type": "array", "items": {"type": "object", "required": ["key", "label"], "properties": {
        "key": {"type": "string"}, "label": {"type": "string"}, "significant": {"type": "boolean"},
        **{k: _NUMBER_OR_NULL for k in ("baseline_value", "anomaly_value", "change_ratio", "magnitude",
                                        "significance")}}}},
    "series": _SERIES}}
_HAS_METRICS = {"type": "object", "required": ["hasMetrics"], "properties": {"hasMetrics": {"type": "boolean"}}}
_METRIC_NAMES = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["name", "metric_type"], "properties": {
        "name": {"type": "string"}, "metric_type": {"type": "string"}}}}}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_WINDOW_PARAMS = [
    {"name": "dateFrom", "in": "query", "schema": {"anyOf": [DATE_SCHEMA, {"const": ""}]},
     "description": "default (or empty): 7 days before dateTo"},
    {"name": "dateTo", "in": "query", "schema": {"anyOf": [DATE_SCHEMA, {"const": ""}]},
     "description": "default (or empty): now"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "metricName", "in": "query", "schema": {"type": "string"}, "description": "only this metric's labels"}]
_KEY_SELECTION_PARAMS = [
    {"name": "excluded_properties", "in": "query", "schema": {"type": "string"},
     "description": "a JSON list of keys to leave out (PostHog's taxonomic filter sends it)"},
    {"name": "properties", "in": "query", "schema": {"type": "string"},
     "description": "keys separated by commas: only these"}]
_ATTRIBUTES_RESPONSE = {"type": "object", "required": ["results", "count"], "properties": {
    "results": {"type": "array", "items": {"type": "object", "required": ["name", "attribute_count"], "properties": {
        "name": {"type": "string"},
        "attribute_count": {"type": ["integer", "null"], "description": "series carrying the key in the window"}}}},
    "count": {"type": "integer", "description": "number of keys returned"}}}
_ATTRIBUTE_VALUES_RESPONSE = {"type": "object", "required": ["results"], "properties": {
    "results": {"type": "array", "items": {"type": "object", "required": ["id", "name", "count"], "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "count": {"type": "integer", "description": "series carrying the value in the window"}}}}}}

OPENAPI_PATHS: dict = {}
for _prefix in PREFIXES:
    OPENAPI_PATHS[f"{_prefix}/metrics/attributes"] = {"get": {
        "summary": "Label keys (point and resource attributes merged) by how many series carry them; "
                   "service_name first",
        "parameters": _PATH_PARAM + [{"name": "search", "in": "query", "schema": {"type": "string"},
                                      "description": "case-insensitive substring of the key"}] + _WINDOW_PARAMS
        + _KEY_SELECTION_PARAMS,
        "responses": {"200": {"description": "keys", "content": {"application/json": {
            "schema": _ATTRIBUTES_RESPONSE}}}, **error_responses("metrics:read")}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/attribute_values"] = {"get": {
        "summary": "Values of one label key, a value equal to the search first, then by how many series carry them",
        "parameters": _PATH_PARAM + [{"name": "key", "in": "query", "required": True,
                                      "schema": {"type": "string", "minLength": 1}},
                                     {"name": "value", "in": "query", "schema": {"type": "string"},
                                      "description": "case-insensitive substring of the value"}] + _WINDOW_PARAMS,
        "responses": {"200": {"description": "values", "content": {"application/json": {
            "schema": _ATTRIBUTE_VALUES_RESPONSE}}}, **error_responses("metrics:read")}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/has_metrics"] = {"get": {
        "summary": "Whether the project has any metric", "parameters": _PATH_PARAM,
        "responses": {"200": _json(_HAS_METRICS, "whether it has metrics"), **error_responses("metrics:read")}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/values"] = {"get": {
        "summary": "Distinct metric names, most recently active first", "parameters": _PATH_PARAM + [
            {"name": "value", "in": "query", "schema": {"type": "string"},
             "description": "case-insensitive substring of the name"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": VALUES_LIMIT_MAX,
                                                         "default": VALUES_LIMIT_DEFAULT}},
            {"name": "service", "in": "query", "schema": {"type": "string"},
             "description": "services separated by commas (verbatim); empty: series without a service name"}],
        "responses": {"200": _json(_METRIC_NAMES, "names"), **error_responses("metrics:read")}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/query"] = {"post": {
        "summary": "Time series of one or more metric clauses, optionally combined by a formula",
        "parameters": _PATH_PARAM, "requestBody": _QUERY_BODY,
        "responses": {"200": _json(_RESULTS, "one series per clause and group (or the formula's)"),
                      **error_responses("metrics:read")}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/characterize"] = {"post": {
        "summary": "Characterize a metric anomaly: compare an anomaly window against a baseline, find the "
                   "onset, and rank which label values moved",
        "parameters": _PATH_PARAM, "requestBody": _CHARACTERIZE_BODY,
        "responses": {"200": _json(_CHARACTERIZATION, "baseline/anomaly statistics, direction, onset, top "
                                                      "movers, series"), **error_responses("metrics:read")}}}


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    store = services.store
    resources = {"has_metrics": HasMetricsResource(store), "values": ValuesResource(store),
                 "query": QueryResource(store), "characterize": CharacterizeResource(store),
                 "attributes": AttributesResource(store, values=False),
                 "attribute_values": AttributesResource(store, values=True)}
    for prefix in PREFIXES:
        for name, resource in resources.items():
            app.add_route(f"{prefix}/metrics/{name}", resource)


DIALECT = Dialect("posthog-metrics", add_routes, OPENAPI_PATHS)
