"""BrainzLab Flux (seed 003, spec flux.md): ingest, events, list/get/query, under `/flux/api/v1/...` and,
shared with Trifle by shape (api/shared_v1.py), under `/api/v1/...`.

Thin resources: parse (ingest.py / query.py, pure), then ingest through the pipeline (metric points are
acknowledged after their commit, like OTLP), `Store.write` (events) or `Store.read` (reads through the
store's catalog and the engine), then answer in the seed's `{"data": ...}` envelope. Errors are
`ApiError`s rendered in Flux's `{"error": {"code", "message"}}` shape by api/errors.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import falcon

from otelite.api.body import read_json
from otelite.api.errors import ApiError
from otelite.api.flux.common import (BATCH, BATCH_TOO_LARGE, INVALID_PARAMETER, INVALID_VALUE, LIST_AND_TRACK,
                                     QUERY, READ, invalid)
from otelite.api.flux.ingest import (MAX_BATCH, MAX_NAME, MAX_TEXT, ItemError, Outcome, metric_rows, parse_event,
                                     parse_items, parse_metric, parse_tags)
from otelite.api.flux.ingest import flux_time
from otelite.api.flux.query import get_metric, list_metrics, parse_query, run_query, tag_filter_key
from otelite.collector.pipeline.ingest import StoreFull, StoreUnavailable
from otelite.collector.store.events import EventSelection, StoredEvent, insert_events, list_events
from otelite.collector.times import parse_iso

if TYPE_CHECKING:
    from otelite.api.dialect import Services
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.store.store import Store

RECEIVER = "flux"  # the `receiver` label of otelite_receiver_*_metric_points_total
EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, EVENTS_OFFSET_MAX = 100, 1000, 1_000_000


def _unavailable(message: str, retry_after: int) -> ApiError:
    return ApiError(falcon.HTTP_503, "unavailable", message, headers={"Retry-After": str(retry_after)})


class _Writer:
    """Stores parsed metrics (through the pipeline) and events (Store.write); answers only after commit."""

    def __init__(self, store: "Store", ingest: "Ingest") -> None:
        self._store = store
        self._ingest = ingest

    def admit(self) -> None:
        """Before reading a body: refuse at once when the store cannot take data (503 + Retry-After)."""
        if not self._ingest.accepts("metrics"):
            raise ApiError(falcon.HTTP_404, "not_found", "no metrics pipeline is configured "
                                                         "(service.pipelines); nothing was stored")
        try:
            self._ingest.check_admission("metrics")
        except StoreFull as e:
            raise _unavailable(str(e), e.retry_after) from None

    async def store(self, project_id: int, metrics: list, events: list) -> None:
        jobs = []
        if metrics:
            jobs.append(self._ingest.export_metric_rows(metric_rows(project_id, metrics), project_id, RECEIVER))
        if events:
            jobs.append(self._store.write(lambda conn: insert_events(conn, events)))
        try:
            # Both usually land in one group commit of the writer; each is acknowledged only once committed.
            await asyncio.gather(*jobs)
        except StoreFull as e:
            raise _unavailable(str(e), e.retry_after) from None
        except StoreUnavailable as e:
            raise _unavailable(str(e), 5) from None


def _items(body: Any, key: str, *, required: bool) -> list:
    """The list under `key` of a batch body (`/metrics/batch` also takes a bare array); at most MAX_BATCH.
    `required`: an absent or empty list is a 400 (flux.md: "No metrics provided")."""
    if isinstance(body, list) and required:
        items = body
    elif isinstance(body, dict):
        items = body.get(key)
    elif body is None:
        items = None
    else:
        raise invalid(INVALID_VALUE, f"the body must be an object with a {key} array")
    if items is None or (required and items == []):
        if required:
            raise invalid(INVALID_VALUE, "No metrics provided")
        return []
    if not isinstance(items, list):
        raise invalid(INVALID_VALUE, f"{key} must be an array")
    if len(items) > MAX_BATCH:
        raise invalid(BATCH_TOO_LARGE, f"{key}: a batch holds at most {MAX_BATCH} items, got {len(items)}; "
                                       "nothing was stored")
    return items


class MetricsResource:
    """`GET /metrics` (the list) and `POST /metrics` (one metric)."""

    auth_policy = LIST_AND_TRACK

    def __init__(self, store: "Store", writer: _Writer) -> None:
        self._store = store
        self._writer = writer

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"data": await self._store.read(list_metrics, req.context.project.id)}

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._writer.admit()
        body = await read_json(req)
        try:
            metric = parse_metric(body, time.time_ns())
        except ItemError as e:
            raise invalid(e.code, e.message) from None
        await self._writer.store(req.context.project.id, [metric], [])
        resp.status = falcon.HTTP_201
        resp.media = {"data": metric.echo()}


class MetricsBatchResource:
    """`POST /metrics/batch`: each item alone; the valid ones are stored even when others are rejected."""

    auth_policy = BATCH

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._writer.admit()
        items = _items(await read_json(req), "metrics", required=True)
        outcome: Outcome = parse_items(items, parse_metric, time.time_ns())
        await self._writer.store(req.context.project.id, outcome.accepted, [])
        resp.media = {"data": outcome.counts()}


class FluxBatchResource:
    """`POST /flux/batch`: what BrainzLab's SDK sends every 5 s (events and metrics; either may be empty)."""

    auth_policy = BATCH

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        self._writer.admit()
        body = await read_json(req)
        if not isinstance(body, dict) or not ("events" in body or "metrics" in body):
            raise invalid(INVALID_VALUE, "the body must be an object {events: [...], metrics: [...]} "
                                         "(either list may be empty)")
        events, metrics = _items(body, "events", required=False), _items(body, "metrics", required=False)
        project_id, now = req.context.project.id, time.time_ns()
        event_outcome = parse_items(events, parse_event, project_id, now)
        metric_outcome = parse_items(metrics, parse_metric, now)
        await self._writer.store(project_id, metric_outcome.accepted, event_outcome.accepted)
        resp.media = {"data": {"events": event_outcome.counts(), "metrics": metric_outcome.counts()}}


class MetricResource:
    """`GET /metrics/:name`: the definition and how many points it holds."""

    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        found = await self._store.read(get_metric, req.context.project.id, name)
        if found is None:
            raise ApiError(falcon.HTTP_404, "not_found", f"metric {name[:MAX_NAME]!r} not found")
        resp.media = {"data": found}


class MetricQueryResource:
    """`GET /metrics/:name/query`: buckets of one or several aggregations, optionally grouped by a tag."""

    auth_policy = QUERY

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        query = parse_query(name, req.params, time.time_ns())
        data = await self._store.read(run_query, self._store.point_cache, req.context.project.id, query)
        if data is None:
            raise ApiError(falcon.HTTP_404, "not_found", f"metric {name[:MAX_NAME]!r} not found")
        resp.media = {"data": data}


# --- events ---------------------------------------------------------------------------------------------

def _param(params: dict, name: str, max_len: int = MAX_TEXT) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise invalid(INVALID_PARAMETER, f"{name}: give it once")
    if value is not None and len(value) > max_len:
        raise invalid(INVALID_PARAMETER, f"{name}: at most {max_len} characters")
    return value


def _int_param(params: dict, name: str, default: int, low: int, high: int) -> int:
    raw = _param(params, name, 32)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise invalid(INVALID_PARAMETER, f"{name}: must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _time_param(params: dict, name: str) -> int | None:
    raw = _param(params, name, 64)
    if raw is None:
        return None
    ns = parse_iso(raw)
    if ns is None or not 0 <= ns < 1 << 63:
        raise invalid(INVALID_PARAMETER, f"{name}: not an ISO 8601 time between 1970 and 2262: {raw!r}")
    return ns


def parse_events_query(project_id: int, params: dict) -> EventSelection:
    """`GET /events?name&from&to&user_id&session_id&environment&service&tags[key]&limit&offset`."""
    tags = {}
    for param in params:
        key = tag_filter_key(param)
        if key is not None:
            tags[key] = _param(params, param)
    try:
        parse_tags(tags, "tags")  # the same limits as stored tags
    except ItemError as e:
        raise invalid(INVALID_PARAMETER, e.message) from None
    start, end = _time_param(params, "from"), _time_param(params, "to")
    if start is not None and end is not None and start > end:
        raise invalid(INVALID_PARAMETER, "from: must not be after to")
    return EventSelection(
        project_id, name=_param(params, "name", MAX_NAME + 1) or None, start_ns=start, end_ns=end,
        user_id=_param(params, "user_id"), session_id=_param(params, "session_id"),
        environment=_param(params, "environment"), service=_param(params, "service"),
        tags=tuple(sorted(tags.items())),
        limit=_int_param(params, "limit", EVENTS_LIMIT_DEFAULT, 1, EVENTS_LIMIT_MAX),
        offset=_int_param(params, "offset", 0, 0, EVENTS_OFFSET_MAX))


def render_event(e: StoredEvent) -> dict:
    return {"id": e.id, "name": e.name, "timestamp": flux_time(e.time_ns), "value": e.value, "properties": e.properties,
            "tags": e.tags, "user_id": e.user_id, "session_id": e.session_id, "environment": e.environment,
            "service": e.service}


class EventsResource:
    """`GET /events`: newest first, filtered and paged (flux.md)."""

    auth_policy = READ

    def __init__(self, store: "Store") -> None:
        self._store = store

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        selection = parse_events_query(req.context.project.id, req.params)
        events = await self._store.read(list_events, selection)
        resp.media = {"data": [render_event(e) for e in events],
                      "meta": {"limit": selection.limit, "offset": selection.offset, "count": len(events)}}


# --- mounting -----------------------------------------------------------------------------------------------

PREFIX = "/flux/api/v1"


def add_routes(app: falcon.asgi.App, services: "Services") -> None:
    """Mount under /flux/api/v1 and claim the same paths under /api/v1 (shared with Trifle)."""
    store, writer = services.store, _Writer(services.store, services.ingest)
    routes = {
        "/metrics": MetricsResource(store, writer),
        "/metrics/batch": MetricsBatchResource(writer),
        "/metrics/{name}": MetricResource(store),
        "/metrics/{name}/query": MetricQueryResource(store),
        "/flux/batch": FluxBatchResource(writer),
        "/events": EventsResource(store),
    }
    for path, resource in routes.items():
        app.add_route(PREFIX + path, resource)
        services.shared_v1.claim("flux", path, resource)
