"""GET /metrics: the store's live metrics for a Prometheus scrape (prometheus.md).

Text format 0.0.4 unless the scraper asks for OpenMetrics (Prometheus does, in its Accept header); gzip
when accepted. The store read and the rendering run on a worker thread, never on the event loop.

Access follows the REST API (auth.md): a key with `metrics:read` picks the project whose metrics are
shown (with `auth: {mode: none}`, the default project or the one named by `X-Otelite-Project`). In
Prometheus that is `authorization: {credentials: otl_...}` in the scrape config (README, "Prometheus").
"""

from __future__ import annotations

import gzip
import sqlite3
from typing import TYPE_CHECKING

import falcon
import falcon.asgi

from otelite.api.auth import DEFAULT_PROJECT_ID, AuthMiddleware, RoutePolicy
from otelite.api.body import BodyLimit
from otelite.api.dialect import Dialect
from otelite.api.openapi import generic_errors
from otelite.api.errors import GENERIC, add_error_handlers
from otelite.api.ratelimit import RateLimiter
from otelite.collector.store.keys import KeyStore
from otelite.exporters.prometheus.collect import StoreCollector
from otelite.exporters.prometheus.exposition import CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.config import Config
    from otelite.exporters.prometheus.config import PrometheusExporterConfig
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry

# Rate-limit class `scrape`: unlimited unless auth.rate_limits lists it.
SCRAPE = RoutePolicy(errors=GENERIC, scopes={"GET": "metrics:read"}, rate_class="scrape")
OPENAPI_PATHS = {"/metrics": {"get": {
    "summary": "Every live stored metric for a Prometheus scrape (text 0.0.4, or OpenMetrics 1.0.0 on Accept)",
    "responses": {"200": {"description": "text/plain; version=0.0.4 or application/openmetrics-text; "
                                         "version=1.0.0", "content": {"text/plain": {"schema": {"type": "string"}},
                                                                      "application/openmetrics-text": {
                                                                          "schema": {"type": "string"}}}},
                  **generic_errors({"401": "no key", "403": "scope metrics:read missing",
                                    "429": "rate limited", "503": "over api.query_timeout; retry later"})}}}}
_GZIP_LEVEL = 1  # a scrape is re-read every few seconds; level 1 already shrinks the text about 10x


def wants_openmetrics(accept: str | None) -> bool:
    """True when `accept` prefers OpenMetrics (any version we can answer with 1.0.0) over plain text."""
    if not accept:
        return False
    om = text = 0.0
    for part in accept.split(","):
        media, *params = (x.strip() for x in part.split(";"))
        q, version = _quality(params), None
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "version":
                version = v.strip().strip('"')
        media = media.lower()
        if media == "application/openmetrics-text" and version in (None, "1.0.0", "0.0.1"):
            om = max(om, q)
        elif media in ("text/plain", "text/*", "*/*"):
            text = max(text, q)
    return om > 0 and om >= text


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when `accept_encoding` lists gzip with a non-zero quality."""
    for part in (accept_encoding or "").split(","):
        coding, *params = (x.strip() for x in part.split(";"))
        if coding.lower() in ("gzip", "x-gzip"):
            return _quality(params) > 0
    return False


def _quality(params: list[str]) -> float:
    for p in params:
        k, _, v = p.partition("=")
        if k.strip().lower() == "q":
            try:
                return float(v.strip())
            except ValueError:
                return 0.0
    return 1.0


class PrometheusResource:
    auth_policy = SCRAPE

    def __init__(self, store: "Store", config: "PrometheusExporterConfig",
                 telemetry: "Telemetry | None" = None) -> None:
        self._store = store
        self._collector = StoreCollector(config.metric_expiration, telemetry)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        openmetrics = wants_openmetrics(req.get_header("Accept"))
        compress = accepts_gzip(req.get_header("Accept-Encoding"))
        project = req.context.get("project")
        project_id = project.id if project is not None else DEFAULT_PROJECT_ID
        body = await self._store.read(self._render, project_id, openmetrics, compress)
        # Always a Content-Type: Prometheus 3 refuses a scrape without one (prometheus.md).
        resp.content_type = CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT
        resp.set_header("Vary", "Accept, Accept-Encoding")
        if compress:
            resp.set_header("Content-Encoding", "gzip")
        resp.data = body

    def _render(self, conn: sqlite3.Connection, project_id: int, openmetrics: bool, compress: bool) -> bytes:
        body = self._collector.scrape(conn, project_id, openmetrics)
        return gzip.compress(body, _GZIP_LEVEL) if compress else body


def create_scrape_app(config: "Config", store: "Store", telemetry: "Telemetry") -> falcon.asgi.App:
    """The app of the optional `exporters.prometheus.endpoint` listener: /metrics alone, with the same
    access rules as on the main listener (like the Collector's prometheus exporter, on its own port)."""
    app = falcon.asgi.App(middleware=[
        AuthMiddleware(config.auth, KeyStore(store.reader()), RateLimiter(config.auth.rate_limits)),
        BodyLimit(config.api.max_request_body_size)])
    add_error_handlers(app)
    app.add_route("/metrics", PrometheusResource(store, config.prometheus, telemetry))
    return app


def _add_routes(app: falcon.asgi.App, services: "Services") -> None:
    app.add_route("/metrics", PrometheusResource(services.store, services.config.prometheus, services.telemetry))


DIALECT = Dialect("prometheus", _add_routes, OPENAPI_PATHS)
