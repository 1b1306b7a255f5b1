"""The OpenAPI 3.1 document at GET /api/schema/ (auth.md). Each API module contributes its paths."""

from __future__ import annotations

from typing import Any, Iterable

import falcon

from otelite.api.auth import PUBLIC

JSON = "application/json"
# otelite's own error body (api/errors.py GENERIC): whoami, the Prometheus scrape.
GENERIC_ERROR = {"type": "object", "required": ["type", "code", "detail"], "properties": {
    "type": {"type": "string"}, "code": {"type": "string"}, "detail": {"type": "string"}}}


def generic_errors(descriptions: dict[str, str]) -> dict[str, Any]:
    """Responses in otelite's own error shape, one per status."""
    return {status: {"description": text, "content": {JSON: {"schema": GENERIC_ERROR}}}
            for status, text in descriptions.items()}

# What an OTLP/HTTP answer carries (OTLP spec: a google.rpc.Status on failure, an Export*ServiceResponse on
# success), in the request's encoding.
_STATUS = {"type": "object", "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                                            "details": {"type": "array"}}}
_STATUS_BODY = {"description": "a google.rpc.Status in the request's encoding",
                "content": {"application/x-protobuf": {}, JSON: {"schema": _STATUS}}}
_OTLP_OK = {"description": "stored (partialSuccess lists what was rejected)", "content": {
    "application/x-protobuf": {}, JSON: {"schema": {"type": "object", "properties": {
        "partialSuccess": {"type": "object"}}}}}}


def _otlp_post(summary: str, resource_key: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object", "properties": {resource_key: {"type": "array", "items": {
                "type": "object"}}}}}}},
        "responses": {"200": _OTLP_OK, **{s: _STATUS_BODY for s in ("400", "401", "403", "404", "413", "415")},
                      "503": {**_STATUS_BODY, "description": "the store is full; retry after Retry-After seconds"}},
        "security": [{}, {"bearer": []}],
    }


_HEALTH = {"type": "object", "required": ["status"], "properties": {
    "status": {"enum": ["ok", "stuck"]}, "uptime_s": {"type": "number"}, "database": {"type": "string"},
    "schema_version": {"type": "integer"}, "queue_items": {"type": "integer"},
    "exporters": {"type": "object", "description": "per forwarding exporter and signal: lag_s, queue_size, "
                                                   "queue_capacity, sizer, failing"}},
    "description": "status only, unless a valid API key is sent (or auth.mode is none): then the details"}
_PROMETHEUS_TEXT = {"text/plain": {"schema": {"type": "string"}}}

CORE_PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Liveness and writer health", "security": [{}, {"bearer": []}],
                         "responses": {"200": {"description": "ok", "content": {JSON: {"schema": _HEALTH}}},
                                       "503": {"description": "the writer is stuck",
                                               "content": {JSON: {"schema": _HEALTH}}}}}},
    "/metrics/self": {"get": {"summary": "otelite's own metrics (Prometheus text)", "security": [],
                              "responses": {"200": {"description": "text/plain; version=0.0.4",
                                                    "content": _PROMETHEUS_TEXT}}}},
    "/v1/traces": {"post": _otlp_post("OTLP/HTTP traces", "resourceSpans")},
    "/v1/metrics": {"post": _otlp_post("OTLP/HTTP metrics", "resourceMetrics")},
    "/api/schema/": {"get": {"summary": "This document", "security": [],
                             "responses": {"200": {"description": "OpenAPI 3.1 JSON", "content": {JSON: {
                                 "schema": {"type": "object", "required": ["openapi", "paths"]}}}}}}},
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
