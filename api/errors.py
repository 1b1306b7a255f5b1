"""Errors in each REST dialect's own shape (auth.md; the spec file of each dialect).

Resources and middleware raise `ApiError` with a generic code; the one error handler renders it with the
`ErrorShape` of the route that was matched (its `RoutePolicy.errors`, put on `req.context.error_shape` by
the auth middleware), so no responder formats an error body by hand. Each dialect defines its own shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import falcon

from otelite.collector.store.budget import QueryTimeout

if TYPE_CHECKING:
    from otelite.api.ratelimit import Decision

log = logging.getLogger("otelite.api")

# Generic codes → HTTP status (a dialect-specific code, e.g. Flux's `missing_name`, passes through).
STATUS = {
    "invalid_request": falcon.HTTP_400,
    "unauthorized": falcon.HTTP_401,
    "forbidden": falcon.HTTP_403,
    "not_found": falcon.HTTP_404,
    "method_not_allowed": falcon.HTTP_405,
    "conflict": falcon.HTTP_409,
    "payload_too_large": falcon.HTTP_413,
    "unsupported_media_type": falcon.HTTP_415,
    "unprocessable": falcon.HTTP_422,
    "rate_limited": falcon.HTTP_429,
    "internal_error": falcon.HTTP_500,
    "unavailable": falcon.HTTP_503,
}


class ApiError(Exception):
    """An error response. `code` is generic (see STATUS) or the dialect's own; `attr` names the field."""

    def __init__(self, status: str, code: str, message: str, *, attr: str | None = None,
                 extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.attr, self.extra, self.headers = attr, extra or {}, headers or {}


def _no_headers(decision: "Decision") -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ErrorShape:
    """How one API writes its errors (auth.md: "errors come in each API's own shape")."""

    name: str
    render: Callable[["ApiError"], dict]
    # Headers every rate-limited response of this API carries (LaunchDarkly sends its remaining count on
    # success too); Retry-After is added by the middleware to every 429, whatever the shape.
    rate_limit_headers: Callable[["Decision"], dict[str, str]] = _no_headers


def bad_request(message: str, *, attr: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(falcon.HTTP_400, code, message, attr=attr)


def _generic(e: ApiError) -> dict:
    return {"type": _GENERIC_TYPES.get(e.code, "invalid_request"), "code": e.code, "detail": e.message, **e.extra}


_GENERIC_TYPES = {"invalid_request": "validation_error", "unauthorized": "authentication_error",
                  "forbidden": "authentication_error", "unprocessable": "validation_error",
                  "rate_limited": "throttled_error",
                  "internal_error": "server_error", "unavailable": "server_error"}

# Routes that are not part of a dialect (health, OpenAPI, the OTLP receiver's non-OTLP errors).
GENERIC = ErrorShape("generic", _generic)


def render(resp: falcon.asgi.Response, error: ApiError, shape: ErrorShape) -> None:
    resp.status = error.status
    resp.media = shape.render(error)
    for name, value in error.headers.items():
        resp.set_header(name, value)


def _shape(req) -> ErrorShape:
    """The error shape of the route that matched (set by the auth middleware), else the generic one."""
    return req.context.get("error_shape") or GENERIC


_FALCON_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited"}


async def handle_api_error(req, resp, ex: ApiError, params) -> None:
    render(resp, ex, _shape(req))


async def handle_http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    """Falcon's own errors (no route, wrong method, bad media) in the matched dialect's shape."""
    code_num = int(str(ex.status)[:3])
    code = _FALCON_CODES.get(code_num, "internal_error" if code_num >= 500 else "invalid_request")
    message = ex.description or ex.title or "error"
    if code_num == 404 and not ex.description:
        message = f"no such resource: {req.path}"
    if code_num == 405 and not ex.description:
        message = f"{req.method} is not allowed here"
    headers = dict(ex.headers or {})
    render(resp, ApiError(ex.status, code, message, headers=headers), _shape(req))


# How long a client should wait before retrying a query the budget stopped (Retry-After, seconds).
QUERY_RETRY_AFTER_S = 1


async def handle_query_timeout(req, resp, ex: QueryTimeout, params) -> None:
    """A read over api.query_timeout, or refused because the query workers are saturated (Store.read):
    503 with Retry-After in the route's shape; ingest and health were never waiting on it."""
    render(resp, ApiError(falcon.HTTP_503, "unavailable", str(ex),
                          headers={"Retry-After": str(QUERY_RETRY_AFTER_S)}), _shape(req))


async def handle_recursion(req, resp, ex: RecursionError, params) -> None:
    """Input nested deeper than the interpreter's stack (JSON, filter groups, formulas): the client's
    doing, so a 400, never a 500. Parsers bound their own nesting; this is the last line."""
    render(resp, bad_request("the request is nested too deeply"), _shape(req))


async def handle_unexpected(req, resp, ex: Exception, params) -> None:
    """No stack trace or SQL reaches a response; the log has them under the request id (auth.md)."""
    rid = req.context.get("request_id", "")
    log.exception("unhandled error in %s %s (request %s)", req.method, req.path, rid)
    render(resp, ApiError(falcon.HTTP_500, "internal_error",
                          f"internal error; quote request id {rid} when reporting it"),
           _shape(req))


def add_error_handlers(app: falcon.asgi.App) -> None:
    # Falcon picks the most specific handler for an exception's class.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
    app.add_error_handler(QueryTimeout, handle_query_timeout)
    app.add_error_handler(RecursionError, handle_recursion)
