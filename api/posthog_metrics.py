"""PostHog metrics API (seed 000, spec posthog-metrics.md), under /api/projects/:project_id/ and
/api/environments/:environment_id/ with the `metrics:read` scope."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import falcon

from api.auth import RoutePolicy

if TYPE_CHECKING:
    from collector.store.store import Store

READ = RoutePolicy(dialect="posthog", scopes={"GET": "metrics:read", "POST": "metrics:read"},
                   rate_class="read", project_param="project_id")
PREFIXES = ("/api/projects/{project_id}", "/api/environments/{project_id}")


def _has_metrics(conn: sqlite3.Connection, project_id: int) -> bool:
    return conn.execute("SELECT 1 FROM metric_series WHERE project_id = ? LIMIT 1", (project_id,)).fetchone() \
        is not None


class HasMetricsResource:
    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, project_id: str) -> None:
        resp.media = {"hasMetrics": await self._store.read(_has_metrics, req.context.project.id)}


OPENAPI_PATHS = {
    f"{prefix}/metrics/has_metrics": {"get": {
        "summary": "Whether the project has any metric", "parameters": [
            {"name": "project_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": '{"hasMetrics": bool}'}, "401": {"description": "no key"},
                      "403": {"description": "scope missing"}, "404": {"description": "no such project"}}}}
    for prefix in PREFIXES
}


def add_routes(app: falcon.asgi.App, store: "Store") -> None:
    has_metrics = HasMetricsResource(store)
    for prefix in PREFIXES:
        app.add_route(f"{prefix}/metrics/has_metrics", has_metrics)
