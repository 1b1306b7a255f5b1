"""`create_app(config, store, ingest, telemetry)`: the Falcon ASGI application on the HTTP listener.

The REST dialects are listed here once (`DIALECTS`); each declares its own routes, policies, OpenAPI paths
and error shape (api/dialect.py). Resources are thin and get their dependencies injected.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from otelite.api import flux, openapi, prometheus, trifle
from otelite.api.auth import AuthMiddleware
from otelite.api.body import BodyLimit
from otelite.api.dialect import Services
from otelite.api.errors import add_error_handlers
from otelite.api.health import HealthResource, SelfMetricsResource
from otelite.api.launchdarkly import DIALECT as LAUNCHDARKLY
from otelite.api.posthog import tracing as posthog_tracing
from otelite.api.posthog.metrics import resources as posthog_metrics
from otelite.api.ratelimit import RateLimiter, effective_limits
from otelite.api.ui import routes as ui_routes
from otelite.collector.receivers.otlp import http as otlp_http
from otelite.collector.receivers.otlp.auth import OtlpProjectResolver
from otelite.collector.store.keys import KeyStore

if TYPE_CHECKING:
    from otelite.collector.config import Config
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry


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
        self._telemetry.http_requests.labels(req.uri_template or "unmatched", resp.status_code).inc()


# Every REST dialect served on the HTTP listener, in one place (docs/architecture.md, "Adding a dialect").
DIALECTS = (posthog_tracing.DIALECT, posthog_metrics.DIALECT, prometheus.DIALECT, ui_routes.DIALECT, flux.DIALECT,
            trifle.DIALECT, LAUNCHDARKLY)


def create_app(config: "Config", store: "Store", ingest: "Ingest", telemetry: "Telemetry") -> falcon.asgi.App:
    # One read connection for key and project look-ups, used only from the event loop's thread.
    keys = KeyStore(store.reader())
    app = falcon.asgi.App(middleware=[
        RequestIdMiddleware(telemetry),
        AuthMiddleware(config.auth, keys,
                       RateLimiter(effective_limits(config.auth.rate_limits, [d.rate_limits for d in DIALECTS]))),
        BodyLimit(config.api.max_request_body_size),  # after auth: strangers get 401, errors the route's shape
    ])
    app.req_options.strip_url_path_trailing_slash = True  # PostHog paths: trailing slash optional
    add_error_handlers(app)
    services = Services(config, store, ingest, telemetry, keys)
    for dialect in DIALECTS:
        dialect.add_routes(app, services)
    services.shared_v1.mount(app)

    http = config.otlp.protocols.http
    if http is not None:
        resolver = OtlpProjectResolver(config.otlp.auth, keys)
        otlp_http.add_routes(app, http, ingest, resolver.for_http)
    app.add_route("/healthz", HealthResource(store, time.monotonic(), config.auth.mode, keys, telemetry))
    app.add_route("/metrics/self", SelfMetricsResource(store, telemetry))
    document = openapi.build_document([openapi.CORE_PATHS] + [d.openapi_paths for d in DIALECTS])
    app.add_route("/api/schema", openapi.SchemaResource(document))
    return app
