"""Splitting one large OTLP request into requests of at most `limit` spans or data points each.

Why: a request's rows take about 25 times its wire size in memory (a tuple of Python objects per point,
then the writer's work on them). An 18 MB OTLP/HTTP body of 900,000 tiny gauge points, valid and under the
20 MiB limit, moved the collector from 154 to 614 MB of RSS (docs/benchmarks.md), so no byte budget on
bodies (receivers/admission.py) could keep memory bounded. The decode worker walks a large request part by
part instead (pipeline/decode.py), and the writer stores the parts one after the other in one transaction
(store/records.py: SlicedBatch), so the request is still stored or refused as a whole.

Each part is a complete request of the same type: the resource and scope messages (and a metric's
description, unit, metadata and aggregation fields) are repeated in every part that holds their spans or
points. The walk reads nothing across items but those, so the parts walk into exactly the rows of the
whole request; span attribute rollup counts are sums, which the writer adds up (tests/test_walker.py).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator


def trace_items(request: Any) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def metric_items(request: Any) -> int:
    return sum(len(_points(m)) for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)


def split_traces(request: Any, limit: int) -> Iterator[Any]:
    """Parts of a trace request (`RawAttributesTraceRequest` or `ExportTraceServiceRequest`), in order."""
    part = _Part(request, "resource_spans", "scope_spans", limit)
    for ri, rs in enumerate(request.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            spans = ss.spans
            yield from part.fill(len(spans), lambda i, j: part.scope((ri, si), rs, ss).spans.extend(spans[i:j]))
    yield from part.rest()


def split_metrics(request: Any, limit: int) -> Iterator[Any]:
    """Parts of a metrics request (`RawAttributesMetricsRequest` or `ExportMetricsServiceRequest`), in
    order. A metric without data holds nothing to store and is left out (the walk skips it too)."""
    part = _Part(request, "resource_metrics", "scope_metrics", limit)
    for ri, rm in enumerate(request.resource_metrics):
        for si, sm in enumerate(rm.scope_metrics):
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                points = getattr(metric, kind).data_points
                header = _metric_header(metric, kind)

                def add(i: int, j: int) -> None:
                    m = part.scope((ri, si), rm, sm).metrics.add()
                    m.CopyFrom(header)
                    getattr(m, kind).data_points.extend(points[i:j])

                yield from part.fill(len(points), add)
    yield from part.rest()


def _points(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind is not None else ()


def _metric_header(metric: Any, kind: str) -> Any:
    """`metric` without its data points (copying it whole would copy them all, once per part): what the
    walk reads of a metric besides its points."""
    header = type(metric)(name=metric.name, description=metric.description, unit=metric.unit)
    header.metadata.extend(metric.metadata)
    data = getattr(header, kind)
    data.SetInParent()  # the oneof is set even when it has no other field (a gauge, a summary)
    for f, v in getattr(metric, kind).ListFields():
        if f.name != "data_points":
            setattr(data, f.name, v)  # aggregation_temporality, is_monotonic: scalars
    return header


class _Part:
    """The part being filled: the resource and scope containers of the current items, made on first use
    (`position`, resource index and scope index, says when the source's resource or scope changes), and
    its room for `limit` items."""

    def __init__(self, request: Any, resources_field: str, scopes_field: str, limit: int) -> None:
        self._type = type(request)
        self._resources_field = resources_field
        self._scopes_field = scopes_field
        self._limit = limit
        self._new()

    def _new(self) -> None:
        self._request = self._type()
        self._position: tuple[int, int] | None = None
        self._resource = self._scope = None
        self._room = self._limit

    def fill(self, n: int, add: Callable[[int, int], None]) -> Iterator[Any]:
        """Add a run of `n` items, `add(i, j)` putting items i..j-1 into this part, as many to each part as
        it has room for; yields each part that is full."""
        i = 0
        while i < n:
            take = min(self._room, n - i)
            add(i, i + take)
            i += take
            self._room -= take
            if not self._room:
                yield self._done()

    def rest(self) -> Iterator[Any]:
        """The last part, unless it is empty."""
        if self._room < self._limit:
            yield self._done()

    def scope(self, position: tuple[int, int], source_resource: Any, source_scope: Any) -> Any:
        if self._position is None or position[0] != self._position[0]:
            r = getattr(self._request, self._resources_field).add()
            r.resource.CopyFrom(source_resource.resource)
            r.schema_url = source_resource.schema_url
            self._resource, self._position = r, None
        if position != self._position:
            s = getattr(self._resource, self._scopes_field).add()
            s.scope.CopyFrom(source_scope.scope)
            s.schema_url = source_scope.schema_url
            self._scope, self._position = s, position
        return self._scope

    def _done(self) -> Any:
        request = self._request
        self._new()
        return request
