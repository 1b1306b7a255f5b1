"""TLS of the forwarders: `tls.ca_file` with a self-signed certificate made here by openssl, for otlp
(gRPC) and otlphttp (https). The upstreams are grpc's own TLS server and the standard library's HTTPS
server, each decoding real OTLP requests (otelite's receivers do not serve TLS). Without the CA the
certificate is not trusted: nothing is delivered, the data waits, and the lag shows it. (`insecure: true`
is what the other forwarding tests use against a plaintext otelite.)"""

from __future__ import annotations

import gzip
import ssl
import subprocess
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import free_port, start_server, trace_request
from test_forwarding_otlp import FAST_RETRY, counter, forwarding, post_traces, wait_for


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request, context):
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def _https_server(cert, key, received: list) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            received.append(sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_ca_file_trusts_a_self_signed_upstream_and_nothing_else_does(tmp_path, certificate):
    cert, key = certificate
    traces = _Traces()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, grpc_server)
    grpc_port = free_port()
    grpc_server.add_secure_port(f"127.0.0.1:{grpc_port}",
                                grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())]))
    grpc_server.start()
    received: list[int] = []
    https = _https_server(cert, key, received)
    fw = None
    try:
        fw = start_server(tmp_path, forwarding({
            "otlp/trusted": {"endpoint": f"localhost:{grpc_port}", "tls": {"ca_file": str(cert)},
                             "retry_on_failure": FAST_RETRY},
            "otlp/untrusted": {"endpoint": f"localhost:{grpc_port}", "retry_on_failure": FAST_RETRY},
            "otlphttp/trusted": {"endpoint": f"https://localhost:{https.server_port}", "tls": {"ca_file": str(cert)},
                                 "retry_on_failure": FAST_RETRY},
        }, signals=("traces",)), "forwarder")
        post_traces(fw, trace_request(25, seed=1))
        wait_for(lambda: traces.spans == 25 and sum(received) == 25, "both trusted exporters to deliver")
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlp/trusted") == 25
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlphttp/trusted") == 25

        def untrusted_is_behind() -> bool:
            status = fw.health()["exporters"]["otlp/untrusted"]["traces"]
            return status["failing"] and status["lag_s"] > 0
        wait_for(untrusted_is_behind, "the untrusted exporter to report its lag")
        time.sleep(0.5)
        assert counter(fw, "otelcol_exporter_sent_spans_total", "otlp/untrusted") == 0
        assert counter(fw, "otelcol_exporter_send_failed_spans_total", "otlp/untrusted") == 0  # kept, retried
        assert traces.spans == 25  # only the exporter that trusts the CA got through
    finally:
        if fw is not None:
            fw.kill()
        grpc_server.stop(0)
        https.shutdown()
