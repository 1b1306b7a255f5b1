"""What every LaunchDarkly route shares: the URL prefix, the error shape, rate-limit headers and policies.

Errors are `{code, message}` (LaunchDarkly's "Errors" section; metric-groups.md). The generic codes of
api/errors.py already are LaunchDarkly's (`invalid_request`, `unauthorized`, `forbidden`, `not_found`,
`method_not_allowed`, `conflict`, `rate_limited`), plus `optimistic_locking_error` for a stale `_version`.

Rate limits (auth.md): the GETs are in route class `read`, the writes in `write`, token buckets per key
like every otelite route, off unless `auth.rate_limits` lists the class. LaunchDarkly documents that its
route-level headers appear "only when the corresponding limit is being enforced for your call" and tells
clients to program against the headers that are present, so otelite does the same: when the class is
limited, every response (2xx and 429) carries `X-Ratelimit-Route-Remaining` and `X-Ratelimit-Reset` (epoch
milliseconds); when it is not, neither is sent and nothing throttles. No default limit is invented here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.api.auth import RoutePolicy
from otelite.api.errors import ApiError, ErrorShape

if TYPE_CHECKING:
    from otelite.api.ratelimit import Decision

PREFIX = "/api/v2/projects/{projectKey}/metric-groups"
READ_SCOPE = "metrics:read"
WRITE_SCOPE = "metric_groups:write"


def _render(e: ApiError) -> dict:
    return {"code": e.code, "message": e.message}


def _rate_limit_headers(decision: "Decision") -> dict[str, str]:
    return {"X-Ratelimit-Route-Remaining": str(decision.remaining),
            "X-Ratelimit-Reset": str(int(decision.reset * 1000))}


ERRORS = ErrorShape("launchdarkly", _render, _rate_limit_headers)

COLLECTION = RoutePolicy(errors=ERRORS, scopes={"GET": READ_SCOPE, "POST": WRITE_SCOPE},
                         rate_class={"GET": "read", "POST": "write"}, project_param="projectKey")
ITEM = RoutePolicy(errors=ERRORS, scopes={"GET": READ_SCOPE, "PATCH": WRITE_SCOPE, "DELETE": WRITE_SCOPE},
                   rate_class={"GET": "read", "PATCH": "write", "DELETE": "write"}, project_param="projectKey")
