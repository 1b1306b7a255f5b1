"""GET /api/whoami: which project and scopes the presented key has, and whether auth is on.

A client that holds only a key (the web UI, a script) needs the project to build
`/api/projects/:project_id/...` paths, and needs to know whether to ask for a key at all. The answer
reveals nothing the key's holder could not learn by trying routes: its own project and scopes.
Authentication is the same as every REST route's (auth.md): the key from `Authorization: Bearer`,
`X-API-Key` or a bare `Authorization`; no or a revoked key → 401. No scope is required, since a key of
any scope may ask what it is. With `auth: {mode: none}` the answer is project `default` (or the one
named by `X-Otelite-Project`, as for every route) with every scope.
"""

from __future__ import annotations


import falcon

from otelite.api.auth import ANY_SCOPE, RoutePolicy
from otelite.api.errors import GENERIC
from otelite.api.openapi import generic_errors

PATH = "/api/whoami"


class WhoamiResource:
    # Any valid key may ask what it is (ANY_SCOPE); the middleware authenticates it, resolves its project
    # (auth mode none: `default` or X-Otelite-Project, as for every route) and rate-limits it as a read.
    auth_policy = RoutePolicy(errors=GENERIC, scopes={"GET": ANY_SCOPE}, rate_class="read")

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.cache_control = ["no-store"]
        principal, project = req.context.principal, req.context.project
        key = principal.key
        resp.media = {"auth": "none" if key is None else "required", "project": _project(project),
                      "scopes": list(principal.scopes),
                      "key": None if key is None else {"id": key.id, "name": key.name, "display": key.display}}


def _project(project) -> dict:
    return {"id": project.id, "key": project.key, "name": project.name, "timezone": project.timezone}


_WHOAMI = {"type": "object", "required": ["auth", "project", "scopes", "key"], "properties": {
    "auth": {"enum": ["required", "none"]},
    "project": {"type": "object", "required": ["id", "key", "name", "timezone"], "properties": {
        "id": {"type": "integer"}, "key": {"type": "string"}, "name": {"type": "string"},
        "timezone": {"type": "string"}}},
    "scopes": {"type": "array", "items": {"type": "string"}},
    "key": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["id", "name", "display"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "display": {"type": "string"}}}]}}}
OPENAPI_PATHS = {PATH: {"get": {
    "summary": "The caller's project and scopes, and whether auth is on (auth: required | none)",
    "description": "Needs a valid key of any scope (none with auth mode none). The web UI calls it to "
                   "learn whether to ask for a key and which project to query.",
    "responses": {
        "200": {"description": "the caller", "content": {"application/json": {"schema": _WHOAMI}}},
        **generic_errors({"401": "no key, or an invalid or revoked one",
                          "403": "auth mode none: X-Otelite-Project from a peer that is not loopback",
                          "404": "auth mode none: the project named by X-Otelite-Project does not exist",
                          "429": "rate limited"})},
}}}
