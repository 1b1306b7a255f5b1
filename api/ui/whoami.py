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

from typing import TYPE_CHECKING

import falcon

from otelite.api.auth import DEFAULT_PROJECT_ID, PUBLIC, project_header
from otelite.api.errors import ApiError
from otelite.collector.store.keys import SCOPES, token_from_headers

if TYPE_CHECKING:
    from otelite.collector.store.keys import KeyStore

PATH = "/api/whoami"


class WhoamiResource:
    # Not the middleware's policy: that one requires a named scope per method, and this route needs a
    # valid key of any scope. The key is checked here with the same KeyStore.authenticate.
    auth_policy = PUBLIC

    def __init__(self, auth_mode: str, keys: "KeyStore") -> None:
        self._open = auth_mode == "none"
        self._keys = keys

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.cache_control = ["no-store"]
        if self._open:
            named = project_header(req) or DEFAULT_PROJECT_ID
            project = self._keys.project(named)
            if project is None:
                raise ApiError(falcon.HTTP_404, "not_found", "project not found")
            resp.media = {"auth": "none", "project": _project(project), "scopes": list(SCOPES), "key": None}
            return
        token = token_from_headers(req.get_header("Authorization"), req.get_header("X-API-Key"))
        if not token:
            raise ApiError(falcon.HTTP_401, "unauthorized",
                           "authentication credentials were not provided: send Authorization: Bearer <key>")
        key = self._keys.authenticate(token)
        if key is None:
            raise ApiError(falcon.HTTP_401, "unauthorized", "the API key is invalid or has been revoked")
        project = self._keys.project(key.project_id)
        if project is None:  # the key's project was deleted under it
            raise ApiError(falcon.HTTP_401, "unauthorized", "the API key is invalid or has been revoked")
        resp.media = {"auth": "required", "project": _project(project), "scopes": list(key.scopes),
                      "key": {"id": key.id, "name": key.name, "display": key.display}}


def _project(project) -> dict:
    return {"id": project.id, "key": project.key, "name": project.name, "timezone": project.timezone}


OPENAPI_PATHS = {PATH: {"get": {
    "summary": "The caller's project and scopes, and whether auth is on (auth: required | none)",
    "description": "Needs a valid key of any scope (none with auth mode none). The web UI calls it to "
                   "learn whether to ask for a key and which project to query.",
    "responses": {
        "200": {"description": '{"auth": "required"|"none", "project": {"id", "key", "name", "timezone"}, '
                               '"scopes": [str], "key": {"id", "name", "display"} | null}'},
        "401": {"description": "no key, or an invalid or revoked one"},
        "404": {"description": "auth mode none: the project named by X-Otelite-Project does not exist"}},
}}}
