"""What the Flux dialect's resources share: its error shape, route policies and rate-limit classes."""

from __future__ import annotations

import falcon

from otelite.api.auth import RoutePolicy
from otelite.api.errors import ApiError, ErrorShape
from otelite.collector.config import RateLimitConfig

# Flux's own error codes (flux.md; generic ones such as `unauthorized`, `not_found`, `rate_limited`,
# `payload_too_large` pass through api/errors.py unchanged).
MISSING_NAME = "missing_name"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
BATCH_TOO_LARGE = "batch_too_large"
INVALID_PARAMETER = "invalid_parameter"  # a query parameter (from, to, interval, limit, ...) is not valid
INVALID_AGGREGATION = "invalid_aggregation"  # an aggregation not valid for the metric's type

ERRORS = ErrorShape("flux", lambda e: {"error": {"code": e.code, "message": e.message}})

# Rate classes (flux.md, "Rate limits"): the seed's documented defaults, per API key; `auth.rate_limits`
# overrides or disables each. Single metrics, lists and events run at the server's standard rate (`flux`,
# unlimited unless configured).
BATCH_CLASS, QUERY_CLASS, STANDARD_CLASS = "flux_batch", "flux_query", "flux"
RATE_LIMITS = {BATCH_CLASS: RateLimitConfig(requests=10, per=60.0),
               QUERY_CLASS: RateLimitConfig(requests=60, per=60.0)}

_TOKEN_PARAM = "api_key"  # Flux's server also reads the key from this query parameter
WRITE = RoutePolicy(errors=ERRORS, scopes={"POST": "metrics:write"}, rate_class=STANDARD_CLASS,
                    token_param=_TOKEN_PARAM)
BATCH = RoutePolicy(errors=ERRORS, scopes={"POST": "metrics:write"}, rate_class=BATCH_CLASS,
                    token_param=_TOKEN_PARAM)
READ = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read"}, rate_class=STANDARD_CLASS,
                   token_param=_TOKEN_PARAM)
QUERY = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read"}, rate_class=QUERY_CLASS,
                    token_param=_TOKEN_PARAM)
# The list shares its URL with Trifle's series fetch, and the single metric with Trifle's track
# (api/shared_v1.py), so each resource serves one method only.
LIST_AND_TRACK = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read", "POST": "metrics:write"},
                             rate_class=STANDARD_CLASS, token_param=_TOKEN_PARAM)


def invalid(code: str, message: str) -> ApiError:
    """A 400 in Flux's shape with one of Flux's codes."""
    return ApiError(falcon.HTTP_400, code, message)
