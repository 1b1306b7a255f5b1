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


# --- OpenAPI pieces the PostHog operations share (full JSON schemas) --------------------------------------

ERROR_SCHEMA = {"type": "object", "required": ["type", "code", "detail", "attr"], "properties": {
    "type": {"type": "string"}, "code": {"type": "string"}, "detail": {"type": "string"},
    "attr": {"type": ["string", "null"], "description": "the field the error is about"}}}


def error_responses(scope: str) -> dict:
    """The error responses of a PostHog operation, in PostHog's (DRF's) shape."""
    body = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {"400": {"description": "invalid input; `detail` and `attr` name the field", **body},
            "401": {"description": "no or invalid key", **body},
            "403": {"description": f"the key lacks {scope}", **body},
            "404": {"description": "no such project", **body},
            "413": {"description": "request body over the limit", **body},
            "415": {"description": "a body that is neither JSON nor a form", **body},
            "429": {"description": "rate limited", **body},
            "503": {"description": "over api.query_timeout, or every query worker busy; retry after Retry-After "
                                   "seconds", **body}}


def request_body(schema: dict, required: bool = True) -> dict:
    """A request body as PostHog's views read it: JSON, or form fields (`query=<json>`) as Django REST
    framework parses them (request_body.py)."""
    form = {"type": "object", "additionalProperties": False,
            "properties": {"query": {"type": "string", "description": "the query as JSON"}}}
    return {"required": required, "content": {"application/json": {"schema": schema},
                                              "application/x-www-form-urlencoded": {"schema": form},
                                              "multipart/form-data": {"schema": form}}}


OPERATORS_SCHEMA = {"type": "string", "enum": [
    "exact", "is_not", "in", "not_in", "icontains", "not_icontains", "icontains_multi", "not_icontains_multi",
    "starts_with", "not_starts_with", "ends_with", "not_ends_with", "regex", "not_regex", "gt", "gte", "lt",
    "lte", "min", "max", "between", "not_between", "semver_eq", "semver_neq", "semver_gt", "semver_gte",
    "semver_lt", "semver_lte", "semver_tilde", "semver_caret", "semver_wildcard", "is_set", "is_not_set"],
    "description": "PostHog's PropertyOperator values that apply to strings and numbers "
                   "(docs/posthog-compatibility.md)"}
FILTER_VALUE_SCHEMA = {"description": "a string, number or boolean, or a list of them ([low, high] for between)",
                       "oneOf": [{"type": ["string", "number", "boolean", "null"]},
                                 {"type": "array", "items": {"type": ["string", "number", "boolean"]}}]}
DATE_SCHEMA = {"type": "string", "description": "an ISO datetime or a PostHog relative date (-1h, -30M minutes, "
                                              "-3m months, -1dStart, now)",
               "anyOf": [{"format": "date-time"}, {"pattern": "^(now|-?[0-9]{1,3}[smhdwqyM](Start|End)?)$"}]}
