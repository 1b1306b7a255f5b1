"""Routes of the web UI: the app at /ui and every /ui/... path (deep links such as
/ui/traces/<trace_id> load the same page, whose router reads the path), its files under /ui/assets/,
and GET /api/whoami.

Every UI response carries a strict Content-Security-Policy: scripts, styles and requests only from this
origin, nothing inline, no frames; together with the app rendering telemetry only through
`textContent`, an attacker-controlled attribute value cannot run script (issue 18, "Access").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon

from otelite.api.auth import PUBLIC
from otelite.api.dialect import Dialect
from otelite.api.ui import assets as ui_assets
from otelite.api.ui.whoami import OPENAPI_PATHS as WHOAMI_PATHS, PATH as WHOAMI_PATH, WhoamiResource

if TYPE_CHECKING:
    from otelite.api.dialect import Services

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _send(req: falcon.asgi.Request, resp: falcon.asgi.Response, asset: ui_assets.Asset) -> None:
    resp.set_headers(SECURITY_HEADERS)
    resp.content_type = asset.content_type
    resp.etag = asset.etag
    # Names are not fingerprinted, so the browser revalidates each time (a 304 costs one round trip).
    resp.cache_control = ["no-cache"]
    resp.vary = ["Accept-Encoding"]
    if asset.etag in (req.get_header("If-None-Match") or "").replace(" ", "").split(","):
        resp.status = falcon.HTTP_304
        return
    if asset.gzipped is not None and "gzip" in (req.get_header("Accept-Encoding") or ""):
        resp.set_header("Content-Encoding", "gzip")
        resp.data = asset.gzipped
    else:
        resp.data = asset.body


class AppResource:
    """index.html for /ui and for every path below it (the client-side router takes it from there)."""

    auth_policy = PUBLIC

    def __init__(self, files: dict[str, ui_assets.Asset]) -> None:
        self._index = files[ui_assets.INDEX]

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, rest: str = "") -> None:
        _send(req, resp, self._index)

    on_head = on_get


class AssetResource:
    auth_policy = PUBLIC

    def __init__(self, files: dict[str, ui_assets.Asset]) -> None:
        self._files = files

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        asset = self._files.get(name)
        if asset is None:
            resp.set_headers(SECURITY_HEADERS)
            raise falcon.HTTPNotFound(description=f"no such UI file: {name}")
        _send(req, resp, asset)

    on_head = on_get


class RootRedirectResource:
    """GET / → /ui/ (a person typing the listener's address gets the UI)."""

    auth_policy = PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raise falcon.HTTPFound("/ui/")


OPENAPI_PATHS = {
    **WHOAMI_PATHS,
    "/ui/": {"get": {"summary": "The web UI (any /ui/... path serves it; /ui/traces/{trace_id} opens a trace)",
                     "security": [], "responses": {"200": {"description": "the app's page", "content": {
                         "text/html": {"schema": {"type": "string"}}}}}}},
}


def _add_routes(app: falcon.asgi.App, services: "Services") -> None:
    files = ui_assets.load()
    app_resource = AppResource(files)
    app.add_route("/ui", app_resource)
    app.add_route("/ui/{rest:path}", app_resource)
    app.add_route("/ui/assets/{name:path}", AssetResource(files))
    app.add_route("/", RootRedirectResource())
    app.add_route(WHOAMI_PATH, WhoamiResource())


# Registered with the REST dialects in api/app.py (api/dialect.py): its routes and OpenAPI paths.
DIALECT = Dialect("ui", _add_routes, OPENAPI_PATHS)
