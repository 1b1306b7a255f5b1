"""API keys, scopes, project isolation and rate limits for every REST route (auth.md).

Each resource declares `auth_policy = RoutePolicy(...)`: its dialect's error shape, the scope each
HTTP method needs, its rate-limit class and the URL parameter that names the project. The middleware
enforces it before the responder runs, so a resource never sees a request it should not. A resource
without a policy is refused (secure by default); `PUBLIC` opts out explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import falcon

from otelite.api.errors import GENERIC, ApiError, ErrorShape
from otelite.api.ratelimit import RateLimiter
from otelite.collector.component import is_loopback
from otelite.collector.store.keys import SCOPES, Project, token_from_headers

if TYPE_CHECKING:
    from otelite.collector.store.keys import ApiKey
    from otelite.collector.config import AuthConfig
    from otelite.collector.store.keys import KeyStore

DEFAULT_PROJECT_ID = 1


@dataclass(frozen=True)
class RoutePolicy:
    errors: ErrorShape  # how this route's errors (and rate-limit headers) look
    scopes: Mapping[str, str] = field(default_factory=dict)  # HTTP method → required scope
    rate_class: str | Mapping[str, str] | None = None  # class name, or per method
    project_param: str | None = None  # URL parameter holding the project id or key
    public: bool = False
    # A query parameter that may carry the key when no header does (Flux's server reads `api_key`).
    token_param: str | None = None

    def rate_class_for(self, method: str) -> str | None:
        if isinstance(self.rate_class, Mapping):
            return self.rate_class.get(method)
        return self.rate_class


PUBLIC = RoutePolicy(errors=GENERIC, public=True)
# As a route's scope: any valid key, whatever its scopes (GET /api/whoami: a key may ask what it is).
ANY_SCOPE = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int | None  # None when auth.mode is none
    project_id: int | None  # the only project this caller may see (None: any, auth.mode none)
    scopes: tuple[str, ...]
    key: "ApiKey | None" = None  # the presented key (None when auth.mode is none)


def project_header(req: falcon.asgi.Request) -> str | None:
    """`X-Otelite-Project` of a request without a key (auth.mode none), honoured only from a loopback peer
    (issue 10). auth.mode none is refused unless every listener is on loopback, so this holds by
    construction; the check keeps it true behind any future listener."""
    named = req.get_header("X-Otelite-Project")
    if named is not None and not is_loopback(req.remote_addr or ""):
        raise ApiError(falcon.HTTP_403, "forbidden", "X-Otelite-Project is honoured only from loopback")
    return named


class AuthMiddleware:
    def __init__(self, config: "AuthConfig", keys: "KeyStore", limiter: RateLimiter) -> None:
        self._open = config.mode == "none"
        self._keys = keys
        self._limiter = limiter

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource,
                               params: dict) -> None:
        if resource is None:
            return  # no route: Falcon answers 404
        if getattr(resource, "handles_own_auth", False):
            return  # the OTLP receiver: receivers.otlp.auth, enforced there with OTLP status codes
        if hasattr(resource, "delegate_for"):
            # A URL two dialects share (api/shared_v1.py): the chosen dialect's resource and policy apply.
            try:
                chosen = await resource.delegate_for(req)
            except ApiError:
                # The body chose no dialect (unreadable, neither shape): a caller without a valid key is
                # told only that (401, in every candidate's shape), never what is wrong with its body.
                self._authenticate(req, ANY_SCOPE, resource.token_param)
                raise
            resource = req.context.delegate = chosen
            if resource is None:
                return  # no dialect serves this method: 405
        policy: RoutePolicy | None = getattr(resource, "auth_policy", None)
        if policy is None:
            raise ApiError(falcon.HTTP_403, "forbidden", "this route has no access policy")
        req.context.error_shape = policy.errors
        if policy.public:
            return
        scope = policy.scopes.get(req.method)
        if scope is None:
            return  # a method the route does not serve: Falcon answers 405 without running anything
        principal = self._authenticate(req, scope, policy.token_param)
        req.context.principal = principal
        req.context.project = self._project(req, policy, params, principal)
        rate_class = policy.rate_class_for(req.method)
        if self._limiter.limited(rate_class):
            self._rate_limit(req, resp, policy, principal, rate_class)

    def _authenticate(self, req: falcon.asgi.Request, scope: str, token_param: str | None = None) -> Principal:
        if self._open:
            return Principal(None, None, SCOPES)
        token = token_from_headers(req.get_header("Authorization"), req.get_header("X-API-Key"))
        if not token and token_param:
            token = req.get_param(token_param) or None
        if not token:
            raise ApiError(falcon.HTTP_401, "unauthorized",
                           "authentication credentials were not provided: send Authorization: Bearer <key>")
        key = self._keys.authenticate(token)
        if key is None:
            raise ApiError(falcon.HTTP_401, "unauthorized", "the API key is invalid or has been revoked")
        if scope != ANY_SCOPE and scope not in key.scopes:
            raise ApiError(falcon.HTTP_403, "forbidden", f"this API key lacks the {scope} scope")
        return Principal(key.id, key.project_id, key.scopes, key)

    def _project(self, req: falcon.asgi.Request, policy: RoutePolicy, params: dict,
                 principal: Principal) -> Project:
        named = params.get(policy.project_param) if policy.project_param else None
        if named is None and principal.project_id is None:
            named = project_header(req)
        if named is None:
            named = principal.project_id or DEFAULT_PROJECT_ID
        project = self._keys.project(named)
        # Another project's id answers exactly like one that does not exist (auth.md: do not reveal it).
        if project is None or (principal.project_id is not None and project.id != principal.project_id):
            raise ApiError(falcon.HTTP_404, "not_found", "project not found")
        return project

    def _rate_limit(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, policy: RoutePolicy,
                    principal: Principal, rate_class: str) -> None:
        decision = self._limiter.take(principal.key_id, rate_class)
        headers = policy.errors.rate_limit_headers(decision)
        for name, value in headers.items():
            resp.set_header(name, value)
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after)
            raise ApiError(falcon.HTTP_429, "rate_limited",
                           f"rate limit exceeded; retry in {decision.retry_after} s", headers=headers)
