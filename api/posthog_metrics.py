"""PostHog metrics API (seed 000, spec posthog-metrics.md), under /api/projects/:project_id/ and
/api/environments/:environment_id/ with the `metrics:read` scope.

Thin resources: each parses its input (api/metrics_query/request.py), runs the engine on a worker
thread's read connection (`Store.read`), and returns JSON. Errors are `ApiError`s rendered in PostHog's
shape by api/errors.py.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import TYPE_CHECKING

import falcon

from otelite.api.auth import RoutePolicy
from otelite.api.dialect import Dialect
from otelite.api.errors import bad_request
from otelite.api.metrics_query.characterize import characterize
from otelite.api.metrics_query.engine import run_query
from otelite.api.metrics_query.points import PointCache
from otelite.api.metrics_query.request import parse_characterize, parse_query
from otelite.api.metrics_query.timeutil import zone
from otelite.api.posthog.common import ERRORS, PREFIXES

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.store.store import Store

READ = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read", "POST": "metrics:read"},
                   rate_class="read", project_param="project_id")
VALUES_LIMIT_DEFAULT, VALUES_LIMIT_MAX = 100, 1000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _has_metrics(conn: sqlite3.Connection, project_id: int) -> bool:
    return conn.execute("SELECT 1 FROM metric_series WHERE project_id = ? LIMIT 1", (project_id,)).fetchone() \
        is not None


def _values(conn: sqlite3.Connection, project_id: int, search: str, limit: int) -> list[dict]:
    """Distinct metric names, most recently active first; a name used with several types shows the type
    it was last seen with (SQLite takes the bare `type` from the row holding max(last_seen_ns))."""
    rows = conn.execute(
        "SELECT name, type, max(last_seen_ns) AS seen FROM metric_series WHERE project_id = ? "
        "AND (? = '' OR instr(lower(name), ?) > 0) GROUP BY name ORDER BY seen DESC, name LIMIT ?",
        (project_id, search, search.lower(), limit)).fetchall()
    return [{"name": name, "metric_type": mtype} for name, mtype, _ in rows]


async def _body(req: falcon.asgi.Request) -> object:
    return await req.get_media(default_when_empty=None)


class HasMetricsResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        resp.media = {"hasMetrics": await self._store.read(_has_metrics, req.context.project.id)}


class ValuesResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        raw = req.get_param("limit")
        limit = VALUES_LIMIT_DEFAULT
        if raw is not None:
            if not raw.strip().isdigit() or not 1 <= int(raw) <= VALUES_LIMIT_MAX:
                raise bad_request(f"limit must be an integer from 1 to {VALUES_LIMIT_MAX}, got {raw!r}", attr="limit")
            limit = int(raw)
        search = req.get_param("value") or ""
        resp.media = {"results": await self._store.read(_values, req.context.project.id, search, limit)}


class QueryResource:
    auth_policy = READ

    def __init__(self, store: "Store", cache: PointCache) -> None:
        self._store, self._cache = store, cache

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        query = parse_query(await _body(req), zone(project.timezone), _now())
        resp.media = await self._store.read(run_query, project.id, project.timezone, query, self._cache)


class CharacterizeResource:
    auth_policy = READ

    def __init__(self, store: "Store", cache: PointCache) -> None:
        self._store, self._cache = store, cache

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        project = req.context.project
        query = parse_characterize(await _body(req), _now())
        resp.media = await self._store.read(characterize, project.id, project.timezone, query, self._cache)


_PATH_PARAM = [{"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "project id or key"}]
_ERRORS = {"400": {"description": "invalid query (detail and attr say what)"}, "401": {"description": "no key"},
           "403": {"description": "scope metrics:read missing"}, "404": {"description": "no such project"},
           "429": {"description": "rate limited"}}
_QUERY_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["query"], "properties": {"query": {"type": "object", "properties": {
        "metricName": {"type": "string"}, "aggregation": {"type": "string", "enum": [
            "sum", "avg", "min", "max", "count", "p50", "p90", "p95", "p99", "rate", "increase",
            "histogram_quantile"]},
        "quantile": {"type": "number"}, "metricType": {"type": "string"},
        "filters": {"type": "array", "items": {"type": "object"}}, "groupBy": {"type": "array", "items": {"type": "object"}},
        "interval": {"type": "string", "enum": ["second", "minute", "minute_5", "minute_15", "hour", "hour_6", "day", "week"]},
        "clauses": {"type": "array", "maxItems": 10, "items": {"type": "object"}},
        "formula": {"type": "string", "maxLength": 512}, "dateFrom": {"type": "string"}, "dateTo": {"type": "string"}}}}}}}}
_CHARACTERIZE_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["query"], "properties": {"query": {"type": "object", "required": [
        "metricName", "anomalyFrom"], "properties": {
        "metricName": {"type": "string"}, "anomalyFrom": {"type": "string"}, "anomalyTo": {"type": "string"},
        "baselineFrom": {"type": "string"}, "baselineTo": {"type": "string"}, "aggregation": {"type": "string"},
        "quantile": {"type": "number"}, "filters": {"type": "array", "items": {"type": "object"}},
        "candidateKeys": {"type": "array", "items": {"type": "string"}, "maxItems": 4}}}}}}}}

OPENAPI_PATHS: dict = {}
for _prefix in PREFIXES:
    OPENAPI_PATHS[f"{_prefix}/metrics/has_metrics"] = {"get": {
        "summary": "Whether the project has any metric", "parameters": _PATH_PARAM,
        "responses": {"200": {"description": '{"hasMetrics": bool}'}, **_ERRORS}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/values"] = {"get": {
        "summary": "Distinct metric names, most recently active first", "parameters": _PATH_PARAM + [
            {"name": "value", "in": "query", "schema": {"type": "string"},
             "description": "case-insensitive substring of the name"},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                         "default": 100}}],
        "responses": {"200": {"description": '{"results": [{"name", "metric_type"}]}'}, **_ERRORS}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/query"] = {"post": {
        "summary": "Time series of one or more metric clauses, optionally combined by a formula",
        "parameters": _PATH_PARAM, "requestBody": _QUERY_BODY,
        "responses": {"200": {"description": '{"results": [{"labels", "points": [{"time", "value"}], '
                                             '"metric_name", "clause"}]}'}, **_ERRORS}}}
    OPENAPI_PATHS[f"{_prefix}/metrics/characterize"] = {"post": {
        "summary": "Characterize a metric anomaly: compare an anomaly window against a baseline, find the "
                   "onset, and rank which label values moved",
        "parameters": _PATH_PARAM, "requestBody": _CHARACTERIZE_BODY,
        "responses": {"200": {"description": "baseline/anomaly statistics, direction, onset_time, top_movers, "
                                             "series"}, **_ERRORS}}}


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    store = services.store
    cache = PointCache()
    resources = {"has_metrics": HasMetricsResource(store), "values": ValuesResource(store),
                 "query": QueryResource(store, cache), "characterize": CharacterizeResource(store, cache)}
    for prefix in PREFIXES:
        for name, resource in resources.items():
            app.add_route(f"{prefix}/metrics/{name}", resource)


DIALECT = Dialect("posthog-metrics", add_routes, OPENAPI_PATHS)
