"""Trifle's metrics API (trifle.md) as Falcon resources, mounted under `/trifle/api/v1` and claimed on the
shared `/api/v1` (api/shared_v1.py dispatches `/api/v1/metrics` between Flux and Trifle by shape).

- `POST /metrics` {key, at, values, operation?, untracked?} → 201 `{"data": {"created": "ok"}}` once the
  rows (rows.py) are committed; 503 + Retry-After when the store's queue is full.
- `GET /metrics?key&from&to&granularity` → `{"data": {"at": [...], "values": [{nested}...]}}`, every
  bucket from floor(from) to floor(to) in the project's zone, `{}` when empty; no key: the system key.
- `POST /metrics/query` → aggregate / timeline / category (formatters.py), checked in Trifle's order
  (request.py), then the unknown-path and no-data checks on the fetched buckets.

Every route first checks `X-Trifle-Source-Id` (when sent) against the token's project, as Trifle's auth
plug does before reading parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import falcon

from otelite.api.auth import RoutePolicy
from otelite.api.body import read_json
from otelite.api.errors import ApiError, bad_request
from otelite.api.trifle import formatters
from otelite.api.trifle.errors import ERRORS, unprocessable
from otelite.api.trifle.request import (QueryRequest, SeriesRequest, parse_query, parse_series_params,
                                        parse_write, trim)
from otelite.api.trifle.rows import write_rows
from otelite.api.trifle.series import MAX_BUCKETS, BucketTable, GridRangeError, fetch
from otelite.api.trifle.values import unflatten
from otelite.collector.pipeline.ingest import StoreFull, StoreUnavailable
from otelite.collector.query.model import TooManyBuckets
from otelite.collector.store.keys import Project
from otelite.collector.times import UTC, iso, iso_many, zone

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.store.keys import KeyStore
    from otelite.collector.store.store import Store

PREFIX = "/trifle/api/v1"
SOURCE_HEADER = "X-Trifle-Source-Id"
RECEIVER = "trifle"  # the receiver label of otelite_receiver_accepted_metric_points_total

METRICS_POLICY = RoutePolicy(errors=ERRORS, scopes={"GET": "metrics:read", "POST": "metrics:write"},
                             rate_class={"GET": "read", "POST": "write"})
QUERY_POLICY = RoutePolicy(errors=ERRORS, scopes={"POST": "metrics:read"}, rate_class="read")


def source_project(req: falcon.asgi.Request, keys: "KeyStore") -> Project:
    """The project the request is for: the token's, which `X-Trifle-Source-Id` (an id or key), when sent,
    must name (trifle.md); without auth (auth.mode none) the header picks the project."""
    project: Project = req.context.project
    named = trim(req.get_header(SOURCE_HEADER) or "")
    if not named:
        return project
    found = keys.project(named)
    principal = req.context.principal
    if found is None or (principal.project_id is not None and found.id != principal.project_id):
        raise bad_request(f"Invalid {SOURCE_HEADER} header", attr=SOURCE_HEADER)
    return found


def _json_number(value: float) -> int | float:
    """Whole values as integers, as Trifle's stored counters read (`{"count": 1}`)."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _too_many(granularity: str) -> ApiError:
    return bad_request(f"the range holds more than {MAX_BUCKETS} {granularity} buckets; use a coarser "
                       f"granularity or a shorter range", attr="granularity")


def _buckets(conn, cache, project: Project, request: SeriesRequest) -> tuple[BucketTable, list[str]]:
    """The request's buckets in the project's zone, and their starts as text in that zone. Runs in a read
    (store.read): with up to MAX_BUCKETS buckets, the texts and the rendering below take seconds, which on
    the event loop would stall /healthz and OTLP acknowledgements (issue 10)."""
    tz = zone(project.timezone)
    try:
        table = fetch(conn, cache, project.id, request.key, request.from_ns, request.to_ns,
                      request.granularity.grid(tz))
    except TooManyBuckets:
        raise _too_many(request.granularity.text) from None
    except GridRangeError:
        raise bad_request(f"granularity {request.granularity.text} reaches beyond the years a date can hold",
                          attr="granularity") from None
    return table, iso_many(table.starts, tz)


def _series(conn, cache, project: Project, request: SeriesRequest) -> dict:
    table, ats = _buckets(conn, cache, project, request)
    return {"data": {"at": ats, "values": [unflatten({p: _json_number(v) for p, v in m.items()})
                                           for m in table.bucket_maps()]}}


class MetricsResource:
    """`/metrics`: GET reads a key's buckets, POST tracks or asserts values."""

    auth_policy = METRICS_POLICY

    def __init__(self, store: "Store", ingest: "Ingest", keys: "KeyStore") -> None:
        self._store, self._ingest, self._keys = store, ingest, keys

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        project = source_project(req, self._keys)
        request = parse_series_params(req.params)
        resp.media = await self._store.read(_series, self._store.point_cache, project, request)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        project = source_project(req, self._keys)
        if not self._ingest.accepts("metrics"):
            raise ApiError(falcon.HTTP_404, "not_found", "no metrics pipeline is configured (service.pipelines); "
                                                         "nothing was stored")
        try:
            self._ingest.check_admission("metrics")  # full: refuse before parsing (collector/pipeline/ingest.py)
            write = parse_write(await read_json(req))
            await self._ingest.export_metric_rows(write_rows(project.id, write), project.id, RECEIVER)
        except StoreFull as e:
            # Trifle::Stats' API driver raises with the status and Retry-After, so the caller can retry.
            raise ApiError(falcon.HTTP_503, "unavailable", f"{e}; retry later",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except StoreUnavailable:
            raise ApiError(falcon.HTTP_503, "unavailable", "the store could not commit the values; nothing was "
                                                           "stored", headers={"Retry-After": "5"}) from None
        resp.status = falcon.HTTP_201
        resp.media = {"data": {"created": "ok"}}


class QueryResource:
    """`POST /metrics/query`: aggregate, timeline or category over a key's buckets."""

    auth_policy = QUERY_POLICY

    def __init__(self, store: "Store", keys: "KeyStore") -> None:
        self._store, self._keys = store, keys

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        project = source_project(req, self._keys)
        request = parse_query(await read_json(req, empty={}))
        resp.media = await self._store.read(_query, self._store.point_cache, project, request)


def _query(conn, cache, project: Project, request: QueryRequest) -> dict:
    """The query's answer, formatted in the read too (_buckets)."""
    table, ats = _buckets(conn, cache, project, request)
    available = table.available_paths()
    payload: dict[str, Any] = {
        "status": "ok", "metric_key": request.key, "value_path": request.value_path, "slices": request.slices,
        "timeframe": {"from": iso(request.from_ns, UTC), "to": iso(request.to_ns, UTC), "label": "custom",
                      "granularity": request.granularity.text},
        "available_paths": available}
    mode = {"aggregate": _aggregate, "timeline": _timeline, "category": _category}[request.mode]
    payload.update(mode(request, table, available, ats))
    return {"data": payload}


def _unknown_path(path: str, available: list[str]) -> ApiError:
    return unprocessable(f"Unknown path(s): {path}", missing_paths=[path], available_paths=available)


def _aggregate(request: QueryRequest, table: BucketTable, available: list[str], ats: list[str]) -> dict:
    path = request.value_path
    if path not in available:
        raise _unknown_path(path, available)
    values = [v for v in formatters.aggregate(table.columns[path], request.aggregator, request.slices)
              if v is not None]
    if not values:
        raise unprocessable(f"No data available for path {path} in the selected timeframe.",
                            available_paths=available)
    out = {"aggregator": request.aggregator, "values": values, "count": len(values), "matched_paths": [path],
           "table": formatters.table(table, [path], ats)}
    if request.slices == 1:
        out["value"] = values[0]
    return out


def _timeline(request: QueryRequest, table: BucketTable, available: list[str], ats: list[str]) -> dict:
    path = request.value_path
    if path not in available:  # a map path too: only numeric leaves are available (trifle.md)
        raise _unknown_path(path, available)
    try:
        result = formatters.timeline(table, path, request.slices, ats)
    except formatters.SlicesError as e:
        raise unprocessable(f"Timeline formatter failed for {path}: {e} cannot be sliced") from None
    matched = [p for p in result if p in available]
    return {"formatter": "timeline", "result": result, "matched_paths": matched,
            "table": formatters.table(table, matched, ats)}


def _category(request: QueryRequest, table: BucketTable, available: list[str], ats: list[str]) -> dict:
    path = request.value_path
    try:
        result, resolved = formatters.category(table, path, request.slices)
    except formatters.SlicesError as e:
        raise unprocessable(f"Category formatter failed for {path}: {e} cannot be sliced") from None
    matched = [p for p in resolved if p in available]
    if not matched:
        raise unprocessable(f"No matching data found for path {path} in the selected timeframe.",
                            available_paths=available)
    return {"formatter": "category", "result": result, "matched_paths": matched,
            "table": formatters.table(table, matched, ats)}


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    """Both mounts (spec README): `/trifle/api/v1/...` always, `/api/v1/...` through the shared claims."""
    metrics = MetricsResource(services.store, services.ingest, services.keys)
    query = QueryResource(services.store, services.keys)
    for path, resource in (("/metrics", metrics), ("/metrics/query", query)):
        app.add_route(PREFIX + path, resource)
        services.shared_v1.claim("trifle", path, resource)
