"""Admission before buffering (issue 16, collector/receivers/admission.py): a live server refuses OTLP requests
for want of room before it receives their bodies, on both transports, and takes them again once room is
back. A slow client holds part of the budget: it declares a body and sends it slowly (HTTP), or opens a
call and sends nothing yet (gRPC)."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from conftest import trace_request
from otelite.collector.receivers.admission import GRPC_RESERVE, BodyBudget
from otelite.collector.receivers.otlp.grpc import _export
from otelite.collector.store.writer import StoreFull

BUDGET = GRPC_RESERVE + 200_000
TRACE_PATH = "/v1/traces"
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_budget_arithmetic():
    b = BodyBudget(100)
    first, second = b.reservation(), b.reservation()
    first.resize(150)  # larger than the whole budget: admitted while nothing else is held
    with pytest.raises(StoreFull):
        second.resize(1)
    assert (b.held, second.size, b.refused) == (150, 0, 1)
    first.resize(60)
    second.resize(40)
    with pytest.raises(StoreFull):
        second.grow(1)
    first.close()
    second.close()
    assert b.held == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import start_server
    srv = start_server(tmp_path_factory.mktemp("admission"), {"receivers": {"otlp": {
        "protocols": {"grpc": {}, "http": {}}, "max_inflight_bytes": BUDGET}}})
    yield srv
    srv.stop()


def _head(srv, length: int) -> socket.socket:
    """An OTLP/HTTP request whose headers declare `length` body bytes, of which one is sent (Falcon
    dispatches a request on its first body event)."""
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    s.sendall(f"POST {TRACE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
              f"Content-Length: {length}\r\n\r\n\x0a".encode())
    return s


def _response(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def _post(srv, body: bytes) -> tuple[int, dict]:
    s = socket.create_connection(("127.0.0.1", srv.http_port), timeout=10)
    s.sendall(f"POST {TRACE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        return _response(s)
    finally:
        s.close()


def _grpc_export(srv, body: bytes):
    with grpc.insecure_channel(srv.grpc_endpoint) as channel:
        call = channel.unary_unary(GRPC_EXPORT, request_serializer=None, response_deserializer=None)
        return call(body, timeout=10)


def test_http_is_refused_from_its_headers_while_the_budget_is_held(server):
    slow = _head(server, BUDGET - 100_000)  # admitted: holds most of the budget while its body trickles in
    time.sleep(0.5)
    refused = _head(server, 200_000)  # 1 byte of 200,000 sent: the answer comes from the headers
    status, headers = _response(refused)
    assert status == 503 and headers["retry-after"] == "1"
    refused.close()
    # gRPC shares the budget: refused before its message is received, with RetryInfo.
    with pytest.raises(grpc.RpcError) as e:
        _grpc_export(server, trace_request(3, seed=90).SerializeToString())
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    info = dict(e.value.trailing_metadata())["google.rpc.retryinfo-bin"]
    assert error_details_pb2.RetryInfo.FromString(info).retry_delay.seconds == 1
    slow.close()  # the slow client gives up: its share comes back
    time.sleep(0.5)
    body = trace_request(5, seed=91).SerializeToString()
    assert _post(server, body)[0] == 200
    assert _grpc_export(server, trace_request(4, seed=92).SerializeToString()) is not None
    assert server.query("SELECT count(*) FROM spans WHERE span_id >= ?", ((90 * 1_000_000).to_bytes(8, "big"),)) \
        == [(9,)]  # only the acknowledged requests' spans: 5 + 4


def test_a_client_that_writes_its_whole_refused_body_reads_the_503_and_keeps_its_connection(server):
    """The refusal is answered from the headers; the server then reads and drops the rest of the body, so
    a client that writes its whole body before it reads (requests, which the OTel SDK's HTTP exporters
    use) gets the 503 and its Retry-After rather than a reset, and its connection serves the next request."""
    slow = _head(server, BUDGET - 100_000)
    time.sleep(0.5)
    headers = {"Content-Type": "application/x-protobuf"}
    for size in (4 * BUDGET, 8 * 2**20):  # bodies well past what a socket buffers
        r = requests.post(f"http://127.0.0.1:{server.http_port}{TRACE_PATH}", data=b"\x0a" * size, headers=headers,
                          timeout=10)
        assert (r.status_code, r.headers.get("Retry-After")) == (503, "1")
        assert status_pb2.Status.FromString(r.content).code == 14  # UNAVAILABLE
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(f"POST {TRACE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {8 * 2**20}\r\n\r\n".encode() + b"\x0a" * (8 * 2**20))
        status, head = _response(s)
        assert status == 503 and head.get("connection") != "close"
        slow.close()
        time.sleep(0.5)
        body = trace_request(2, seed=95).SerializeToString()
        s.sendall(f"POST {TRACE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert _next_status(s) == 200  # on the same connection
    assert server.query("SELECT count(*) FROM spans WHERE span_id >= ? AND span_id < ?",
                        ((95 * 1_000_000).to_bytes(8, "big"), (96 * 1_000_000).to_bytes(8, "big"))) == [(2,)]


def _next_status(s: socket.socket) -> int:
    """The status of the next response on `s` (what is left of the previous one's body is skipped)."""
    data = b""
    while b"HTTP/1.1 " not in data or len(data.split(b"HTTP/1.1 ", 1)[1]) < 3:
        chunk = s.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    return int(data.split(b"HTTP/1.1 ", 1)[1][:3])


def test_grpc_call_holds_its_reserve_before_sending_its_message(server):
    """A gRPC call whose message has not arrived holds GRPC_RESERVE: an HTTP request that does not fit
    beside it is refused; once the message arrives the call holds its real size and is stored."""
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        stream = channel.stream_unary(GRPC_EXPORT, request_serializer=None, response_deserializer=None)
        released = []

        def messages():
            while not released:
                time.sleep(0.05)
            yield trace_request(2, seed=93).SerializeToString()

        future = stream.future(messages(), timeout=20)
        time.sleep(0.5)
        small = _post(server, trace_request(1, seed=94).SerializeToString())[0]  # fits beside the call
        # 1 MiB held by the waiting call leaves 200 KB: a 300 KB declaration does not fit.
        refused = _head(server, 300_000)
        assert _response(refused)[0] == 503
        refused.close()
        released.append(True)
        response = trace_service_pb2.ExportTraceServiceResponse.FromString(future.result())
        assert not response.HasField("partial_success")
    assert small == 200
    assert _post(server, b"")[0] == 200  # an empty export: nothing to store, accepted


def test_a_refused_grpc_call_does_not_keep_its_rows_alive():
    # grpc.aio keeps a call's AbortError until the call ends. Raised inside the `except StoreFull`, it
    # carried the StoreFull as its __context__, and through that one's traceback the frames that held the
    # request's rows: thousands of refused points stayed alive under overload (docs/benchmarks.md).
    class Rows:
        pass
    rows_alive: list[weakref.ref] = []

    async def export(request, project_id, transport):
        rows = Rows()
        rows_alive.append(weakref.ref(rows))
        raise StoreFull(3)

    class Context:  # what _export uses of grpc.aio.ServicerContext: `abort`, which raises AbortError
        async def abort(self, code, details="", trailing_metadata=()):
            self.status = (code, details, dict(trailing_metadata))
            raise grpc.aio.AbortError()

    context = Context()
    with pytest.raises(grpc.aio.AbortError) as aborted:
        asyncio.run(_export(context, export, b"", lambda _: 1))
    gc.collect()
    assert rows_alive[0]() is None and aborted.value.__context__ is None  # (the AbortError still held)
    code, details, trailers = context.status
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "the store's queue is full")
    assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 3
