"""What PostHog's tracing and metrics APIs share: URL prefixes and the error shape (auth.md)."""

from __future__ import annotations

from otelite.api.errors import ApiError, ErrorShape

# Both prefixes name the same project (PostHog's environments are projects here); id or key.
PREFIXES = ("/api/projects/{project_id}", "/api/environments/{project_id}")

# Django REST framework pairs a `type` with each code.
_TYPES = {
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


def _render(e: ApiError) -> dict:
    kind, code = _TYPES.get(e.code, ("validation_error", e.code))
    return {"type": kind, "code": code, "detail": e.message, "attr": e.attr, **e.extra}


ERRORS = ErrorShape("posthog", _render)
