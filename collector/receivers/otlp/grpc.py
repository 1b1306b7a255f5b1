"""OTLP/gRPC: unary `Export` of TraceService and MetricsService on a grpc.aio server (otlp.md).

Status codes: INVALID_ARGUMENT for bad data, UNAVAILABLE with RetryInfo for backpressure,
RESOURCE_EXHAUSTED for oversized messages (enforced by grpc's max_receive_message_length).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otelite.collector.normalize.otlp import OtlpDataError
from otelite.collector.receivers.admission import GRPC_RESERVE
from otelite.collector.receivers.otlp.auth import FORBIDDEN, NOT_FOUND, UNAUTHENTICATED, OtlpAuthError
from otelite.collector.pipeline.ingest import ExportResult, StoreFull, StoreUnavailable
from otelite.collector.pipeline.decode import OtlpDecodeError

if TYPE_CHECKING:
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.receivers.admission import BodyBudget
    from otelite.collector.receivers.otlp.config import GrpcServerConfig

ProjectResolver = Callable[[grpc.aio.ServicerContext], int]
_AUTH_CODES = {UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED, FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
               NOT_FOUND: grpc.StatusCode.NOT_FOUND}


async def _export(context: grpc.aio.ServicerContext, export: Callable, request, project_for: ProjectResolver
                  ) -> ExportResult:
    """Run the export and map every failure to its gRPC status in one place."""
    try:
        return await export(request, project_for(context), "grpc")
    except OtlpDecodeError as e:
        code, message, retry_after = grpc.StatusCode.INVALID_ARGUMENT, f"the message is {e}", None
    except OtlpDataError as e:
        code, message, retry_after = grpc.StatusCode.INVALID_ARGUMENT, str(e), None
    except OtlpAuthError as e:
        code, message, retry_after = _AUTH_CODES[e.kind], str(e), None
    except StoreFull as e:
        code, message, retry_after = grpc.StatusCode.UNAVAILABLE, str(e), e.retry_after
    except StoreUnavailable as e:
        code, message, retry_after = grpc.StatusCode.UNAVAILABLE, str(e), 5
    # Aborted here, not in the `except`: grpc keeps the AbortError until the call ends, and raised there it
    # would carry the export's exception as its __context__, whose traceback holds the frames that hold the
    # request's rows. Under overload a few thousand refused points stayed alive so (docs/benchmarks.md).
    if retry_after is not None:
        await _abort_unavailable(context, message, retry_after)
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


async def _abort_unavailable(context: grpc.aio.ServicerContext, message: str, retry_after: int) -> None:
    # RetryInfo tells the client how long to back off: in google.rpc.Status details (the standard place)
    # and in `google.rpc.retryinfo-bin`, which the OpenTelemetry Python exporter reads.
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after))
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message)
    status.details.add().Pack(info)
    await context.abort(grpc.StatusCode.UNAVAILABLE, message, trailing_metadata=(
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    ))


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, ingest: "Ingest", project_for: ProjectResolver) -> None:
        self._ingest, self._project_for = ingest, project_for

    async def Export(self, request, context):  # noqa: N802 - the gRPC method name
        result = await _export(context, self._ingest.export_traces, request, self._project_for)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if result.rejected or result.error_message:
            response.partial_success.rejected_spans = result.rejected
            response.partial_success.error_message = result.error_message
        return response


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, ingest: "Ingest", project_for: ProjectResolver) -> None:
        self._ingest, self._project_for = ingest, project_for

    async def Export(self, request, context):  # noqa: N802
        result = await _export(context, self._ingest.export_metrics, request, self._project_for)
        response = metrics_service_pb2.ExportMetricsServiceResponse()
        if result.rejected or result.error_message:
            response.partial_success.rejected_data_points = result.rejected
            response.partial_success.error_message = result.error_message
        return response


def _export_handler(service: str, servicer, admit: Callable[[], None], budget: "BodyBudget | None"
                    ) -> grpc.GenericRpcHandler:
    """What the generated `add_*Servicer_to_server` registers, with two differences.

    The method is served as stream-unary, which the wire cannot tell from unary (a client's unary call is
    a stream of one message): so the handler runs *before* its message is received, and an overloaded
    collector answers UNAVAILABLE without receiving it (`admit`: the queue; `budget`: request bytes held,
    admission.py), where grpc would have buffered every message in flight whole first. And the message
    stays bytes: the walker decodes it (possibly in a worker process), so bad data becomes
    INVALID_ARGUMENT rather than grpc's UNKNOWN."""
    async def export(request_iterator, context: grpc.aio.ServicerContext):
        held = budget.reservation() if budget is not None else None
        try:
            try:
                admit()
                if held is not None:
                    held.resize(GRPC_RESERVE)
            except StoreFull as e:
                await _abort_unavailable(context, str(e), e.retry_after)
            message = await context.read()
            if message is grpc.aio.EOF:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no message")
            if held is not None:
                try:
                    held.resize(len(message))
                except StoreFull as e:
                    await _abort_unavailable(context, str(e), e.retry_after)
            return await servicer.Export(message, context)
        finally:
            if held is not None:
                held.close()

    return grpc.method_handlers_generic_handler(service, {"Export": grpc.stream_unary_rpc_method_handler(
        export, response_serializer=lambda response: response.SerializeToString())})


def create_server(config: "GrpcServerConfig", ingest: "Ingest", project_for: ProjectResolver) -> tuple[grpc.aio.Server, int]:
    """Build the grpc.aio server bound to `config.endpoint`; returns it with the bound port."""
    options = [
        ("grpc.max_receive_message_length", int(config.max_recv_msg_size_mib * 1024 * 1024)),
        ("grpc.so_reuseport", 0),
    ]
    if config.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    server = grpc.aio.server(options=options)
    # A signal no pipeline takes has no service: grpc answers UNIMPLEMENTED, as the Collector's receiver does.
    services = (("traces", "opentelemetry.proto.collector.trace.v1.TraceService", TraceService),
                ("metrics", "opentelemetry.proto.collector.metrics.v1.MetricsService", MetricsService))
    server.add_generic_rpc_handlers(tuple(
        _export_handler(name, servicer(ingest, project_for),
                        lambda signal=signal: ingest.check_admission(signal), ingest.body_budget)
        for signal, name, servicer in services if ingest.accepts(signal)))
    try:
        port = server.add_insecure_port(config.endpoint)
    except RuntimeError:  # grpcio raises where older versions returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {config.endpoint} for OTLP/gRPC")
    return server, port
