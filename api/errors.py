"""Errors in each REST dialect's own shape (auth.md; the spec file of each dialect).

Resources and middleware raise `ApiError` with a generic code; the one error handler renders it for the
dialect of the route that was matched (set on `req.context.dialect` by the auth middleware), so no
responder formats an error body by hand.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import falcon

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


def bad_request(message: str, *, attr: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(falcon.HTTP_400, code, message, attr=attr)


# PostHog (Django REST framework) pairs a `type` with each code.
_POSTHOG = {
    "invalid_request": ("validation_error", "invalid_input"),
    "unauthorized": ("authentication_error", "not_authenticated"),
    "forbidden": ("authentication_error", "permission_denied"),
    "not_found": ("invalid_request", "not_found"),
    "method_not_allowed": ("invalid_request", "method_not_allowed"),
    "conflict": ("invalid_request", "conflict"),
    "payload_too_large": ("invalid_request", "payload_too_large"),
    "unsupported_media_type": ("invalid_request", "unsupported_media_type"),
    "unprocessable": ("validation_error", "invalid_input"),
    "rate_limited": ("throttled_error", "throttled"),
    "internal_error": ("server_error", "error"),
    "unavailable": ("server_error", "unavailable"),
}


def _posthog(e: ApiError) -> dict:
    kind, code = _POSTHOG.get(e.code, ("validation_error", e.code))
    return {"type": kind, "code": code, "detail": e.message, "attr": e.attr, **e.extra}


def _generic(e: ApiError) -> dict:
    return {"type": _POSTHOG.get(e.code, ("invalid_request",))[0], "code": e.code, "detail": e.message, **e.extra}


def _flux(e: ApiError) -> dict:
    return {"error": {"code": e.code, "message": e.message, **e.extra}}


def _launchdarkly(e: ApiError) -> dict:
    return {"code": e.code, "message": e.message, **e.extra}


def _trifle(e: ApiError) -> dict:
    # trifle.md: fixed details for 401/403; 422 carries status/error plus extra fields.
    if e.code == "unauthorized":
        return {"errors": {"detail": "Bad token"}}
    if e.code == "forbidden":
        return {"errors": {"detail": "Forbidden"}}
    if e.status == falcon.HTTP_422:
        return {"errors": {"status": "error", "error": e.message, **e.extra}}
    return {"errors": {"detail": e.message, **e.extra}}


RENDERERS: dict[str, Callable[[ApiError], dict]] = {
    "generic": _generic,
    "posthog": _posthog,
    "flux": _flux,
    "launchdarkly": _launchdarkly,
    "trifle": _trifle,
}


def render(resp: falcon.asgi.Response, error: ApiError, dialect: str) -> None:
    resp.status = error.status
    resp.media = RENDERERS.get(dialect, _generic)(error)
    for name, value in error.headers.items():
        resp.set_header(name, value)


_FALCON_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited"}


async def handle_api_error(req, resp, ex: ApiError, params) -> None:
    render(resp, ex, req.context.get("dialect", "generic"))


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
    render(resp, ApiError(ex.status, code, message, headers=headers), req.context.get("dialect", "generic"))


async def handle_unexpected(req, resp, ex: Exception, params) -> None:
    """No stack trace or SQL reaches a response; the log has them under the request id (auth.md)."""
    rid = req.context.get("request_id", "")
    log.exception("unhandled error in %s %s (request %s)", req.method, req.path, rid)
    render(resp, ApiError(falcon.HTTP_500, "internal_error",
                          f"internal error; quote request id {rid} when reporting it"),
           req.context.get("dialect", "generic"))


def add_error_handlers(app: falcon.asgi.App) -> None:
    # Falcon picks the most specific handler for an exception's class.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http_error)
    app.add_error_handler(ApiError, handle_api_error)
