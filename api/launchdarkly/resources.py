"""LaunchDarkly's metric groups API (seed 001, metric-groups.md) under /api/v2/projects/{projectKey}/metric-groups.

Thin resources: the auth middleware has already checked the key, the scope (reads `metrics:read`, writes
`metric_groups:write`) and the project (api/launchdarkly/common.py); each responder decodes the request
(request.py / patch.py, bodies through api/body.py), runs one function of groups.py on the store — reads
through `Store.read`, writes through `Store.write` — and renders. Any `LD-API-Version` header, or none, is
accepted: LaunchDarkly's generated clients send `20240415` on every call, its docs say `beta`.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import falcon

from otelite.api.body import read_json
from otelite.api.dialect import Dialect
from otelite.api.errors import ApiError, bad_request
from otelite.api.launchdarkly import groups
from otelite.api.launchdarkly.common import COLLECTION, ERRORS, ITEM, PREFIX
from otelite.api.launchdarkly.openapi import OPENAPI_PATHS
from otelite.api.launchdarkly.patch import parse_patch_body
from otelite.api.launchdarkly.representation import collection_href, link, project_href
from otelite.api.launchdarkly.request import parse_create, parse_get, parse_list
from otelite.collector.store.writer import StoreFull, StoreUnavailable

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.store.store import Store


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _write(store: "Store", fn):
    """Store.write, with the store's refusals as LaunchDarkly-shaped 503s (retryable, Retry-After)."""
    try:
        return await store.write(fn)
    except StoreFull as e:
        raise ApiError(falcon.HTTP_503, "unavailable", str(e), headers={"Retry-After": str(e.retry_after)}) from None
    except StoreUnavailable:
        raise ApiError(falcon.HTTP_503, "unavailable", "the store could not commit the change; retry",
                       headers={"Retry-After": "5"}) from None


def _reject_semantic_patch(req: falcon.asgi.Request) -> None:
    if "semanticpatch" in (req.content_type or "").lower():
        raise bad_request("metric groups take a JSON Patch; semantic patch (domain-model="
                          "launchdarkly.semanticpatch) is not supported")


def _page_links(project_key: str, params: dict, limit: int, offset: int, total: int) -> dict:
    """LaunchDarkly's collection links: parent, self, and first/prev/next/last for paging."""
    base = collection_href(project_key)

    def at(start: int) -> dict:
        query = {k: v for k, v in params.items() if k not in ("limit", "offset") and isinstance(v, str)}
        return link(f"{base}?{urlencode({**query, 'limit': limit, 'offset': start})}")

    out = {"parent": link(project_href(project_key)), "self": at(offset), "first": at(0)}
    if offset > 0:
        out["prev"] = at(max(0, offset - limit))
    if offset + limit < total:
        out["next"] = at(offset + limit)
    out["last"] = at(max(0, (total - 1) // limit * limit))
    return out


class MetricGroupsResource:
    auth_policy = COLLECTION

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, projectKey: str) -> None:
        project = req.context.project
        query = parse_list(req.params, project.id)
        items, total = await self._store.read(groups.page, project, query)
        resp.media = {"items": items, "_links": _page_links(project.key, req.params, query.limit, query.offset, total),
                      "totalCount": total}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, projectKey: str) -> None:
        project = req.context.project
        key, fields = parse_create(await read_json(req))
        resp.media = await _write(self._store, partial(groups.create, project=project, key=key, fields=fields,
                                                       uuid=str(uuid.uuid4()), now_ms=_now_ms()))
        resp.status = falcon.HTTP_201


class MetricGroupResource:
    auth_policy = ITEM

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, projectKey: str,
                     metricGroupKey: str) -> None:
        group = await self._store.read(groups.get, req.context.project, metricGroupKey, parse_get(req.params))
        if group is None:
            raise groups.not_found(metricGroupKey)
        resp.media = group

    async def on_patch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, projectKey: str,
                       metricGroupKey: str) -> None:
        _reject_semantic_patch(req)
        ops = parse_patch_body(await read_json(req))
        resp.media = await _write(self._store, partial(groups.patch, project=req.context.project,
                                                       key=metricGroupKey, ops=ops, now_ms=_now_ms()))

    async def on_delete(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, projectKey: str,
                        metricGroupKey: str) -> None:
        await _write(self._store, partial(groups.delete, project=req.context.project, key=metricGroupKey))
        resp.status = falcon.HTTP_204


async def unknown_path(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params) -> None:
    """Any other path under /api/v2/: a 404 in LaunchDarkly's shape (e.g. a group key with an encoded '/',
    which no route matches), rather than the generic shape."""
    req.context.error_shape = ERRORS
    raise ApiError(falcon.HTTP_404, "not_found", f"no such resource: {req.path}")


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    app.add_route(PREFIX, MetricGroupsResource(services.store))
    app.add_route(PREFIX + "/{metricGroupKey}", MetricGroupResource(services.store))
    app.add_sink(unknown_path, "/api/v2/")


DIALECT = Dialect("launchdarkly", add_routes, OPENAPI_PATHS)
