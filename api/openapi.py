"""The OpenAPI 3.1 document at GET /api/schema/ (auth.md). Each API module contributes its paths."""

from __future__ import annotations

from typing import Any, Iterable

import falcon

from otelite.api.auth import PUBLIC

_STATUS_BODY = {"description": "a google.rpc.Status in the request's encoding"}
_OTLP_POST = {
    "requestBody": {"required": True, "content": {"application/x-protobuf": {}, "application/json": {}}},
    "responses": {"200": {"description": "stored (partial_success lists what was rejected)"},
                  "400": _STATUS_BODY, "401": _STATUS_BODY, "413": _STATUS_BODY, "415": _STATUS_BODY,
                  "503": {"description": "the store is full; retry after Retry-After seconds"}},
    "security": [{}, {"bearer": []}],
}

CORE_PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Liveness and writer health", "security": [],
                         "responses": {"200": {"description": "ok"}, "503": {"description": "writer stuck"}}}},
    "/metrics/self": {"get": {"summary": "otelite's own metrics (Prometheus text)", "security": [],
                              "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
    "/v1/traces": {"post": {"summary": "OTLP/HTTP traces", **_OTLP_POST}},
    "/v1/metrics": {"post": {"summary": "OTLP/HTTP metrics", **_OTLP_POST}},
    "/api/schema/": {"get": {"summary": "This document", "security": [],
                             "responses": {"200": {"description": "OpenAPI 3.1 JSON"}}}},
}


def build_document(path_sets: Iterable[dict[str, Any]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path_set in path_sets:
        for path, ops in path_set.items():
            paths.setdefault(path, {}).update(ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": "otelite", "version": "0.1.0",
                 "description": "OTLP ingest, and the PostHog, Flux, Trifle, LaunchDarkly and Prometheus "
                                "read surfaces over one SQLite store."},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an otelite API key (otl_...)"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": dict(sorted(paths.items())),
    }


class SchemaResource:
    auth_policy = PUBLIC

    def __init__(self, document: dict[str, Any]) -> None:
        self._document = document

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = self._document
