"""GET /healthz and GET /metrics/self (the collector's own metrics, prometheus.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otelite.api.auth import PUBLIC
from otelite.collector.store.db import database_bytes

if TYPE_CHECKING:
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry


class HealthResource:
    auth_policy = PUBLIC
    def __init__(self, store: "Store", started: float) -> None:
        self._store = store
        self._started = started

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        stuck = self._store.writer.is_stuck()
        resp.status = falcon.HTTP_503 if stuck else falcon.HTTP_200
        resp.media = {
            "status": "stuck" if stuck else "ok",
            "uptime_s": round(time.monotonic() - self._started, 3),
            "database": self._store.path,
            "schema_version": self._store.schema_version,
            "queue_items": self._store.writer.queued,
        }


class SelfMetricsResource:
    auth_policy = PUBLIC
    def __init__(self, store: "Store", telemetry: "Telemetry") -> None:
        self._store = store
        self._telemetry = telemetry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._telemetry.database_bytes.set(database_bytes(self._store.path))
        self._telemetry.queue_size.set(self._store.writer.queued)
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self._telemetry.registry)
