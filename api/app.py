"""`create_app(config, store, ingest)`: the Falcon ASGI application on the HTTP listener.

Routes are listed here in one place; resources are thin and get their dependencies injected.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from api.health import HealthResource, SelfMetricsResource
from collector.receivers.otlp import http as otlp_http

if TYPE_CHECKING:
    from collector.config import Config
    from collector.pipeline.ingest import Ingest
    from collector.store.store import Store
    from collector.telemetry import Telemetry

log = logging.getLogger("otelite.api")


class RequestIdMiddleware:
    """Every response carries X-Request-Id (the client's, if it sent a sane one) and is counted."""

    def __init__(self, telemetry: "Telemetry") -> None:
        self._telemetry = telemetry

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        given = req.get_header("X-Request-Id")
        req.context.request_id = given if given and len(given) <= 128 and given.isprintable() \
            else uuid.uuid4().hex

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource,
                               req_succeeded: bool) -> None:
        resp.set_header("X-Request-Id", req.context.get("request_id", ""))
        route = req.uri_template or "unmatched"
        self._telemetry.http_requests.labels(route, resp.status_code).inc()


async def _internal_error(req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params) -> None:
    """No stack trace or SQL reaches a response; the log has them under the request id."""
    if isinstance(ex, falcon.HTTPError):
        raise ex
    rid = req.context.get("request_id", "")
    log.exception("unhandled error in %s %s (request %s)", req.method, req.path, rid)
    resp.status = falcon.HTTP_500
    resp.media = {"type": "server_error", "code": "internal_error",
                  "detail": f"internal error; quote request id {rid} when reporting it"}


def create_app(config: "Config", store: "Store", ingest: "Ingest", telemetry: "Telemetry") -> falcon.asgi.App:
    app = falcon.asgi.App(middleware=[RequestIdMiddleware(telemetry)])
    app.add_error_handler(Exception, _internal_error)
    http = config.otlp.protocols.http
    if http is not None:
        # Without auth (the default on loopback) OTLP data goes to the default project (auth.md).
        otlp_http.add_routes(app, http, ingest, lambda req: 1)
    app.add_route("/healthz", HealthResource(store, time.monotonic()))
    app.add_route("/metrics/self", SelfMetricsResource(store, telemetry))
    return app
