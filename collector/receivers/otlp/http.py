"""OTLP/HTTP: `POST /v1/traces` and `POST /v1/metrics` as Falcon ASGI resources (otlp.md, "Transports").

Each request reads as a straight line: content type → bounded body → decompress within the limit →
export (decoded and walked by a decode worker, either encoding) → encode in the request's encoding. Every
failure goes through `_fail`, which answers with a `google.rpc.Status` encoded like the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import falcon
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelite.collector.normalize.otlp import OtlpDataError
from otelite.collector.receivers.compression import (ENCODINGS, BadCompression, BodyTooLarge, decompress,
                                                      read_limited)
from otelite.collector.receivers.otlp.auth import FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, OtlpAuthError
from otelite.collector.normalize.otlp_json import export_response_to_json, status_to_json
from otelite.collector.pipeline.ingest import ExportResult, StoreFull, StoreUnavailable
from otelite.collector.pipeline.decode import OtlpDecodeError

if TYPE_CHECKING:
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.receivers.admission import BodyBudget, Reservation
    from otelite.collector.receivers.otlp.config import HttpServerConfig

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# gRPC code numbers for the Status body (google.rpc.Code).
_INVALID_ARGUMENT, _NOT_FOUND, _PERMISSION_DENIED, _RESOURCE_EXHAUSTED, _UNIMPLEMENTED, _UNAVAILABLE, \
    _UNAUTHENTICATED = 3, 5, 7, 8, 12, 14, 16
_AUTH_STATUS = {UNAUTHENTICATED: (falcon.HTTP_401, _UNAUTHENTICATED), FORBIDDEN: (falcon.HTTP_403, _PERMISSION_DENIED),
                NOT_FOUND: (falcon.HTTP_404, _NOT_FOUND)}


class _Refusal(Exception):
    def __init__(self, http_status: str, code: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message, self.retry_after = http_status, code, message, retry_after


class _Signal:
    """What differs between /v1/traces and /v1/metrics."""

    def __init__(self, response_type: type, export: Callable, rejected_field: str,
                 admit: Callable[[], None] | None = None) -> None:
        self.response_type, self.export, self.rejected_field = response_type, export, rejected_field
        self.admit = admit  # raises StoreFull when the store cannot take data now


class OtlpHttpResource:
    """One OTLP signal endpoint. `project_for(req)` picks the project the data belongs to."""

    # receivers.otlp.auth is enforced by `project_for`, with OTLP's own status codes and bodies; so is the
    # body limit (protocols.http.max_request_body_size), not the REST one (api/body.py).
    handles_own_auth = True
    handles_own_body = True

    def __init__(self, signal: _Signal, config: "HttpServerConfig",
                 project_for: Callable[[falcon.asgi.Request], int], budget: "BodyBudget | None" = None) -> None:
        self._signal = signal
        self._limit = config.max_request_body_size
        self._project_for = project_for
        self._budget = budget

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        encoding = _encoding_of(req.content_type)
        held = self._budget.reservation() if self._budget is not None else None
        try:
            if encoding is None:
                raise _Refusal(falcon.HTTP_415, _INVALID_ARGUMENT,
                               f"unsupported Content-Type {req.content_type!r}; use {PROTOBUF} or {JSON}")
            project_id = self._project_for(req)  # before reading the body: no work for strangers
            if self._signal.admit is not None:
                self._signal.admit()  # full: 503 before reading a body that would be refused anyway
            body = await self._read_body(req, held)
            # Both encodings are parsed by a decode worker (pipeline/decode.py), not in the event loop.
            result: ExportResult = await self._signal.export(body, project_id, "http", json_body=encoding == JSON)
        except _Refusal as r:
            return _fail(resp, r, encoding or JSON)
        except OtlpDecodeError as e:
            return _fail(resp, _Refusal(falcon.HTTP_400, _INVALID_ARGUMENT, f"the body is {e}"), encoding)
        except OtlpDataError as e:
            return _fail(resp, _Refusal(falcon.HTTP_400, _INVALID_ARGUMENT, str(e)), encoding)
        except OtlpAuthError as e:
            http_status, code = _AUTH_STATUS[e.kind]
            return _fail(resp, _Refusal(http_status, code, str(e)), encoding)
        except StoreFull as e:
            # otlp.md: 503 + Retry-After is retryable, so the client keeps the data and sends it again.
            return _fail(resp, _Refusal(falcon.HTTP_503, _UNAVAILABLE, str(e), e.retry_after), encoding)
        except StoreUnavailable as e:
            return _fail(resp, _Refusal(falcon.HTTP_503, _UNAVAILABLE, str(e), 5), encoding)
        finally:
            if held is not None:
                held.close()  # the body and its rows are gone (stored, or refused)
        response = self._signal.response_type()
        if result.rejected or result.error_message:
            setattr(response.partial_success, self._signal.rejected_field, result.rejected)
            response.partial_success.error_message = result.error_message
        resp.status = falcon.HTTP_200
        resp.content_type = encoding
        resp.data = export_response_to_json(response) if encoding == JSON else response.SerializeToString()

    async def _wrong_method(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.set_header("Allow", "POST")
        _fail(resp, _Refusal(falcon.HTTP_405, _UNIMPLEMENTED, f"{req.method} is not supported; use POST"),
              _encoding_of(req.content_type) or JSON)

    on_get = on_put = on_patch = on_delete = _wrong_method

    async def on_options(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # Falcon's default would list every method above; only POST is served.
        resp.status = falcon.HTTP_204
        resp.set_header("Allow", "POST, OPTIONS")

    async def _read_body(self, req: falcon.asgi.Request, held: "Reservation | None") -> bytes:
        """Read at most the limit, then decompress to at most the limit (a gzip bomb stops at limit+1).
        `held` takes the body's bytes from the receiver's budget before they are read (admission.py)."""
        limit = self._limit
        declared = req.content_length
        if declared is not None and declared > limit:
            raise _too_large(limit)
        content_encoding = (req.get_header("Content-Encoding") or "identity").strip().lower()
        if content_encoding not in ENCODINGS:
            raise _Refusal(falcon.HTTP_400, _INVALID_ARGUMENT,
                           f"unsupported Content-Encoding {content_encoding!r}; use gzip, deflate or none")
        on_read = None
        if held is not None:
            if declared is not None:
                held.resize(declared)  # StoreFull: 503 before a byte of the body is read

            def grow(size: int) -> None:
                if size > held.size:
                    held.resize(size)  # a chunked body, or one longer than declared
            on_read = grow
        try:
            body = decompress(await read_limited(req.stream, limit, on_read), content_encoding, limit)
        except BodyTooLarge:
            raise _too_large(limit) from None
        except BadCompression as e:
            raise _Refusal(falcon.HTTP_400, _INVALID_ARGUMENT, str(e)) from None
        if held is not None and len(body) > held.size:
            held.resize(len(body))
        return body


def _too_large(limit: int) -> _Refusal:
    return _Refusal(falcon.HTTP_413, _RESOURCE_EXHAUSTED,
                    f"the request body exceeds the limit of {limit} bytes (after decompression)")


def _encoding_of(content_type: str | None) -> str | None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if media == JSON:
        return JSON
    return None


def _fail(resp: falcon.asgi.Response, refusal: _Refusal, encoding: str) -> None:
    """The one place a refusal becomes a response: google.rpc.Status in the request's encoding."""
    status = status_pb2.Status(code=refusal.code, message=refusal.message)
    resp.status = refusal.http_status
    resp.content_type = encoding
    resp.data = status_to_json(status) if encoding == JSON else status.SerializeToString()
    if refusal.retry_after is not None:
        resp.set_header("Retry-After", str(refusal.retry_after))


class OtlpNotServedResource:
    """A signal otelite does not take: logs (otlp.md: not in scope yet), or a signal no pipeline in
    service.pipelines takes. Said clearly, in OTLP's error shape, instead of a bare 404."""

    handles_own_auth = True
    handles_own_body = True  # never reads it

    def __init__(self, message: str) -> None:
        self._message = message

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        encoding = _encoding_of(req.content_type) or JSON
        _fail(resp, _Refusal(falcon.HTTP_404, _NOT_FOUND, self._message), encoding)


def add_routes(app: falcon.asgi.App, config: "HttpServerConfig", ingest: "Ingest",
               project_for: Callable[[falcon.asgi.Request], int]) -> None:
    """Mount the OTLP/HTTP endpoints (paths configurable, as in the Collector)."""
    signals = {
        "traces": (config.traces_url_path, _Signal(
            ExportTraceServiceResponse, ingest.export_traces, "rejected_spans",
            lambda: ingest.check_admission("traces"))),
        "metrics": (config.metrics_url_path, _Signal(
            ExportMetricsServiceResponse, ingest.export_metrics, "rejected_data_points",
            lambda: ingest.check_admission("metrics"))),
    }
    for name, (path, signal) in signals.items():
        if ingest.accepts(name):
            app.add_route(path, OtlpHttpResource(signal, config, project_for, ingest.body_budget))
        else:
            app.add_route(path, OtlpNotServedResource(f"no {name} pipeline is configured "
                                                      f"(service.pipelines); nothing was stored"))
    app.add_route(config.logs_url_path, OtlpNotServedResource("otelite does not store logs yet; "
                                                              "send traces and metrics"))
