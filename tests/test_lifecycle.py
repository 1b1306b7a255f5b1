"""Start-up and shutdown of `otelite serve` (STYLE.md: each invalid config is a fixture in testdata/).

Acceptance: config errors name the key (and the file) and exit 2; SIGTERM exits 0 with the queue
drained; SIGINT exits 0; a database with a newer schema is refused with exit 2 and a clear message; a
minimal OpenTelemetry Collector config loads unchanged and serves.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelite.collector.config import ConfigError, load_config
from otelite.collector.store.db import prepare_database
from otelite.collector.store.migrations import schema_version
from conftest import TESTDATA, ServerProcess, free_port

PROTOBUF = "application/x-protobuf"
ROOT_DIR = TESTDATA.parent.parent


def serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """`otelite serve ARGS` as a subprocess that is expected to stop by itself."""
    return subprocess.run([sys.executable, "-m", "otelite.collector.cli", "serve", *args], cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=timeout)


# --- configuration errors -------------------------------------------------------------------------------

# fixture file → what follows "FILE: " in the message
CONFIG_ERRORS = {
    "bad_unknown_key.yaml": "receivers.otlp.protocols.http.max_request_body_sise: unknown key (known: endpoint, "
                            "logs_url_path, max_request_body_size, metrics_url_path, traces_url_path)",
    "bad_synchronous.yaml": "exporters.sqlite.synchronous: must be NORMAL or FULL, got 'EXTRA'",
    "bad_duration.yaml": "processors.batch.timeout: expected a duration such as 5s or 7d, got '5 seconds'",
    "bad_endpoint.yaml": "receivers.otlp.protocols.grpc.endpoint: expected HOST:PORT, got 'localhost'",
    "bad_pipeline_ref.yaml": "service.pipelines.traces.processors: references 'batch/fast', which is not "
                             "configured under processors",
    "bad_component.yaml": "exporters.kafka: unknown component type 'kafka' (known: otlp, otlphttp, prometheus, "
                          "prometheusremotewrite, sqlite)",
    "bad_queue_size.yaml": "exporters.sqlite.sending_queue.queue_size: must be positive, got 0",
    "bad_no_protocols.yaml": "receivers.otlp.protocols: enable grpc, http or both",
    "bad_type.yaml": "receivers.otlp.protocols.grpc.max_recv_msg_size_mib: expected a number, got 'four'",
    "bad_yaml.yaml": "line 7, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' "
                     "(while parsing a flow sequence at line 6, column 19)",
}


@pytest.mark.parametrize("name", sorted(CONFIG_ERRORS))
def test_config_error_names_file_and_key(name, tmp_path):
    path = TESTDATA / name
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {CONFIG_ERRORS[name]}"
    # The command line prints the same message and exits 2 without creating a database or listening.
    db = tmp_path / "never.db"
    done = serve("--config", str(path), "--db", str(db), "--grpc-endpoint", f"127.0.0.1:{free_port()}",
                 "--http-endpoint", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"otelite: invalid configuration: {path}: {CONFIG_ERRORS[name]}\n"
    assert done.stdout == ""
    assert not db.exists()


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    done = serve("--config", str(path), "--db", str(tmp_path / "never.db"))
    assert done.returncode == 2
    assert done.stderr == f"otelite: invalid configuration: {path}: cannot read the config file: " \
                          "No such file or directory\n"


def test_bad_command_line_endpoint(tmp_path):
    done = serve("--db", str(tmp_path / "never.db"), "--http-endpoint", "4318")
    assert done.returncode == 2
    assert done.stderr == ("otelite: invalid configuration: command line: receivers.otlp.protocols.http.endpoint: "
                           "expected HOST:PORT, got '4318'\n")


# --- a real Collector config ----------------------------------------------------------------------------

def test_collector_minimal_config_loads_unchanged():
    cfg = load_config(TESTDATA / "collector_minimal.yaml")
    assert cfg.otlp.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert cfg.otlp.protocols.http.endpoint == "127.0.0.1:4318"
    assert cfg.otlp.protocols.http.max_request_body_size == 20 * 1024 * 1024  # default kept
    ml = cfg.memory_limiter
    assert (ml.check_interval, ml.limit_mib, ml.spike_limit_mib) == (1.0, 512, 128)
    b = cfg.batch
    assert (b.send_batch_size, b.send_batch_max_size, b.timeout) == (8192, 10000, 0.001)
    assert cfg.sqlite.path == "./otelite.db"
    assert sorted(cfg.service.pipelines) == ["metrics", "traces"]
    for p in cfg.service.pipelines.values():
        assert (p.receivers, p.processors, p.exporters) == (["otlp"], ["memory_limiter", "batch"], ["sqlite"])
    assert cfg.service.telemetry == {"logs": {"level": "info"}}


def test_collector_minimal_config_serves_sdk_data_and_sigint_exits_0(tmp_path):
    """A live start on the Collector config; the real SDK exporters send; SIGINT stops it with exit 0."""
    srv = ServerProcess(db=tmp_path / "otelite.db", grpc_port=free_port(), http_port=free_port(),
                        config_path=TESTDATA / "collector_minimal.yaml")
    try:
        srv.start()
        resource = Resource.create({"service.name": "lifecycle"})
        tracer_provider = TracerProvider(resource=resource)
        span_exporter = HttpSpanExporter(endpoint=f"{srv.http_url}/v1/traces", timeout=10)
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        with tracer_provider.get_tracer("tests").start_as_current_span("checkout") as span:
            trace_id = span.get_span_context().trace_id
        tracer_provider.shutdown()
        reader = PeriodicExportingMetricReader(GrpcMetricExporter(endpoint=srv.grpc_endpoint, insecure=True,
                                                                  timeout=10), export_interval_millis=60_000)
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter_provider.get_meter("tests").create_counter("orders").add(3)
        meter_provider.shutdown()  # flushes: one export of the counter over gRPC
        assert srv.stop(signal.SIGINT, timeout=15) == 0
    finally:
        if srv.alive():
            srv.kill()
    assert srv.query("SELECT trace_id, name, service_name FROM spans") == [
        (trace_id.to_bytes(16, "big"), "checkout", "lifecycle")]
    assert srv.query("SELECT s.name, p.value FROM metric_points p JOIN metric_series s ON s.id = p.series_id"
                     ) == [("orders", 3)]
    log = srv.log()
    assert "shutting down: no new requests; draining the queue" in log
    assert "stopped; 2 items committed this run" in log


# --- SIGTERM drains the queue ---------------------------------------------------------------------------

def _traces(request_no: int, n: int) -> trace_service_pb2.ExportTraceServiceRequest:
    now = time.time_ns()
    spans = [trace_pb2.Span(trace_id=struct.pack(">QQ", request_no + 1, 1),
                            span_id=struct.pack(">II", request_no + 1, i + 1), name="drain",
                            start_time_unix_nano=now, end_time_unix_nano=now + 1) for i in range(n)]
    resource = PbResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="drain"))])
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


def test_sigterm_waits_for_queued_requests_and_exits_0(make_server):
    srv = make_server({"exporters": {"sqlite": {"busy_timeout": "0.2s"}}})
    n_http, n_grpc, per_request = 4, 2, 100
    total = (n_http + n_grpc) * per_request
    results: dict[int, object] = {}

    def send_http(n: int) -> None:
        r = httpx.post(f"{srv.http_url}/v1/traces", content=_traces(n, per_request).SerializeToString(),
                       headers={"Content-Type": PROTOBUF}, timeout=20)
        results[n] = r.status_code

    def send_grpc(n: int) -> None:
        with grpc.insecure_channel(srv.grpc_endpoint) as channel:
            try:
                trace_service_pb2_grpc.TraceServiceStub(channel).Export(_traces(n, per_request), timeout=20)
                results[n] = 200
            except grpc.RpcError as e:
                results[n] = e.code()

    # Hold SQLite's write lock so every request is admitted and waits in the queue for its commit.
    locker = sqlite3.connect(srv.db, isolation_level=None, timeout=5)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(n_http + n_grpc) as pool:
            futures = [pool.submit(send_http, n) for n in range(n_http)]
            futures += [pool.submit(send_grpc, n) for n in range(n_http, n_http + n_grpc)]
            deadline = time.monotonic() + 10
            while srv.health()["queue_items"] < total:
                assert time.monotonic() < deadline, "the requests were not all queued"
                time.sleep(0.02)
            srv.proc.send_signal(signal.SIGTERM)
            # Draining: no longer accepting connections, yet still running, because its clients wait for
            # commits that the held lock prevents.
            deadline = time.monotonic() + 10
            while True:
                try:
                    httpx.get(f"{srv.http_url}/healthz", timeout=2)
                except httpx.ConnectError:
                    break
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.05)
            time.sleep(0.3)
            assert srv.alive() and results == {}
            locker.execute("ROLLBACK")
            for f in futures:
                f.result(timeout=15)
    finally:
        locker.close()
    assert srv.proc.wait(15) == 0
    assert results == {n: 200 for n in range(n_http + n_grpc)}
    rows = srv.query("SELECT span_id FROM spans")
    assert sorted(rows) == sorted((struct.pack(">II", n + 1, i + 1),)
                                  for n in range(n_http + n_grpc) for i in range(per_request))
    log = srv.log()
    assert "shutting down: no new requests; draining the queue" in log
    assert f"stopped; {total} items committed this run" in log


def test_sigterm_when_idle_exits_0(server):
    assert server.stop(signal.SIGTERM, timeout=15) == 0
    assert "stopped; 0 items committed this run" in server.log()


# --- schema versions ------------------------------------------------------------------------------------

def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "future.db"
    assert prepare_database(str(db)) == schema_version()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    before = db.read_bytes()
    done = serve("--db", str(db), "--grpc-endpoint", f"127.0.0.1:{free_port()}",
                 "--http-endpoint", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"otelite: the database has schema version 999, newer than this otelite understands "
        f"({schema_version()}); upgrade otelite or use another --db")
    assert db.read_bytes() == before  # refused, not touched
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (999,)
    conn.close()



@pytest.mark.parametrize("which", ["http", "grpc"])
def test_port_in_use_stops_cleanly_naming_the_endpoint(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        other = f"127.0.0.1:{free_port()}"
        http, grpc_ep = (busy, other) if which == "http" else (other, busy)
        proc = subprocess.run([sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(tmp_path / "p.db"),
                               "--http-endpoint", http, "--grpc-endpoint", grpc_ep],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"otelite: cannot listen on {busy} for " in proc.stderr
    assert "Traceback" not in proc.stderr
