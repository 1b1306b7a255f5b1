"""GET /healthz and GET /metrics/self (the collector's own metrics, prometheus.md)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otelite.api.auth import PUBLIC
from otelite.collector.store.db import database_bytes
from otelite.collector.store.keys import token_from_headers

if TYPE_CHECKING:
    from otelite.collector.store.keys import KeyStore
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry


class HealthResource:
    """Liveness for anyone (load balancers and probes hold no key): `{"status"}` only. The details (the
    database's path, schema version, queue) are for a valid API key of any scope, or everyone with
    `auth: {mode: none}` (loopback only): a stranger learns nothing about the host (issue 10). A key
    that is not valid is not an error here (a probe must not fail on it): the answer is the status."""

    # Not the middleware's policy (it requires a scope per method); the key is checked here, as whoami does.
    auth_policy = PUBLIC

    def __init__(self, store: "Store", started: float, auth_mode: str = "required",
                 keys: "KeyStore | None" = None, telemetry: "Telemetry | None" = None) -> None:
        self._store = store
        self._started = started
        self._open = auth_mode == "none"
        self._keys = keys
        self._telemetry = telemetry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        stuck = self._store.writer.is_stuck()
        resp.status = falcon.HTTP_503 if stuck else falcon.HTTP_200
        resp.cache_control = ["no-store"]
        resp.media = {"status": "stuck" if stuck else "ok"}
        if self._open or self._has_valid_key(req):
            resp.media.update({
                "uptime_s": round(time.monotonic() - self._started, 3),
                "database": self._store.path,
                "schema_version": self._store.schema_version,
                "queue_items": self._store.writer.queued,
            })
            if self._telemetry is not None and self._telemetry.export_queues:
                resp.media["exporters"] = forwarding_status(self._telemetry.export_queues)

    def _has_valid_key(self, req: falcon.asgi.Request) -> bool:
        token = token_from_headers(req.get_header("Authorization"), req.get_header("X-API-Key"))
        return bool(token) and self._keys is not None and self._keys.authenticate(token) is not None


def forwarding_status(queues: list) -> dict:
    """Per forwarding exporter and signal: how far behind it is (issue 17). A detail, not a status: an
    upstream that is down does not make otelite unhealthy, its data waits in the store."""
    now = time.time_ns()
    out: dict = {}
    for q in queues:
        out.setdefault(q.exporter, {})[q.signal] = {
            "lag_s": round(max(0.0, (now - q.oldest_ns) / 1e9), 3) if q.oldest_ns is not None else 0.0,
            "queue_size": q.queue_size,
            "queue_capacity": q.capacity,
            "sizer": q.sizer,
            "failing": bool(q.last_error),  # the message is in the log: it names the upstream
        }
    return out


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
