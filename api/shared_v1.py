"""`/api/v1/...`: the prefix Flux and Trifle both document (spec README, "The /api/v1/metrics collision").

Each of the two dialects mounts its routes unambiguously under its own prefix (`/flux/api/v1/...`,
`/trifle/api/v1/...`) and also claims its paths here. A path one dialect claims is routed to it; a path
both claim is served by a `ShapeDispatch` that picks the dialect from the request (the method, then the
spec's shape rules), before authentication, so the chosen route's own policy (scopes, error shape, rate
class) applies exactly as under its own prefix (api/auth.py asks `delegate_for`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable

import falcon

from otelite.api.body import parse_json, read_body
from otelite.api.errors import ApiError, ErrorShape, bad_request

if TYPE_CHECKING:
    import falcon.asgi

PREFIX = "/api/v1"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def _metrics_shape(req: "falcon.asgi.Request") -> str:
    """GET: any of from/to/granularity → Trifle's series fetch, none → Flux's list. POST: `key` and
    `values` → Trifle's track; `name` or `type` → Flux's metric (the spec says `name` and `type`; with only
    one of them the body is still plainly Flux's, and Flux answers `missing_name` / `invalid_type` in its
    own shape); anything else → 400 naming both shapes."""
    if req.method == "GET":
        return "trifle" if any(req.get_param(p) is not None for p in ("from", "to", "granularity")) else "flux"
    raw = await read_body(req)
    body = parse_json(raw) if raw.strip() else None
    if isinstance(body, dict):
        if "key" in body and "values" in body:
            return "trifle"
        if "name" in body or "type" in body:
            return "flux"
    raise bad_request("POST /api/v1/metrics takes a Trifle body {key, at, values} or a Flux body "
                      "{name, type, value}; this body is neither")


# How each path claimed by both dialects chooses, when the method alone does not.
RULES: dict[str, Callable[["falcon.asgi.Request"], Awaitable[str]]] = {f"{PREFIX}/metrics": _metrics_shape}


def _either_shape(resources) -> ErrorShape:
    """One error body holding each dialect's own (Flux's `error`, Trifle's `errors`: distinct keys)."""
    shapes = [res.auth_policy.errors for res in resources if getattr(res, "auth_policy", None) is not None]

    def render(error: ApiError) -> dict:
        body: dict = {}
        for shape in shapes:
            body.update(shape.render(error))
        return body

    return ErrorShape("+".join(shape.name for shape in shapes), render)


class ShapeDispatch:
    """One URL served by two dialects; `delegate_for(req)` names the resource that answers this request."""

    def __init__(self, path: str, claims: dict[str, Any]) -> None:
        self._path = path
        self._claims = claims
        self._choose = RULES.get(path)
        # The query parameter a claimant accepts a key in (Flux's `api_key`), for api/auth.py's check of a
        # request whose body chose no dialect.
        params = {res.auth_policy.token_param for res in claims.values()
                  if getattr(res, "auth_policy", None) is not None and res.auth_policy.token_param}
        self.token_param = params.pop() if len(params) == 1 else None

    async def delegate_for(self, req: "falcon.asgi.Request") -> Any:
        responder = f"on_{req.method.lower()}"
        serving = [name for name, res in self._claims.items() if hasattr(res, responder)]
        if len(serving) == 1:
            return self._claims[serving[0]]
        # Until a dialect is chosen (a 405, or a body the rules cannot read: bad JSON, too large, neither
        # shape), the error is written in every candidate's shape at once, so each client finds its own.
        req.context.error_shape = _either_shape([self._claims[n] for n in serving] or self._claims.values())
        if not serving:
            return None  # Falcon answers 405
        if self._choose is None:
            raise RuntimeError(f"{self._path} is claimed by {', '.join(serving)} without a dispatch rule")
        return self._claims[await self._choose(req)]

    async def _delegate(self, req, resp, **params) -> None:
        target = req.context.get("delegate")
        responder = getattr(target, f"on_{req.method.lower()}", None)
        if responder is None:
            raise falcon.HTTPMethodNotAllowed(self._allowed())
        await responder(req, resp, **params)

    def _allowed(self) -> list[str]:
        return [m for m in _METHODS if any(hasattr(r, f"on_{m.lower()}") for r in self._claims.values())]

    on_get = on_post = on_put = on_patch = on_delete = _delegate


class SharedV1:
    """Collects the dialects' claims on `/api/v1/...` paths, then mounts them (app.py, after every dialect)."""

    def __init__(self) -> None:
        self._claims: dict[str, dict[str, Any]] = {}

    def claim(self, dialect: str, path: str, resource: Any) -> None:
        """`path` relative to /api/v1 (e.g. `/metrics/{name}`), served by `resource` of `dialect`."""
        self._claims.setdefault(PREFIX + path, {})[dialect] = resource

    def mount(self, app: "falcon.asgi.App") -> None:
        for path, claims in self._claims.items():
            app.add_route(path, next(iter(claims.values())) if len(claims) == 1 else ShapeDispatch(path, claims))
