"""Projects, API keys, scopes, isolation and rate limits against a live server (issue 3, auth.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from google.rpc import status_pb2

from otelite.api.ratelimit import RateLimiter
from conftest import trace_request
from otelite.collector.config import RateLimitConfig

ROOT = Path(__file__).parent.parent
HAS_METRICS = "/api/projects/{}/metrics/has_metrics"


def _created_key(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return re.search(r"^(otl_[A-Za-z0-9_-]+)$", proc.stdout, re.M).group(1)


def _get(server, path: str, key: str | None = None, **headers) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(server.http_url + path, headers=headers, timeout=10)


def _span_hex(seed: int) -> str:
    """The stored span id (as SQLite's hex()) of `trace_request(1, seed)`."""
    return trace_request(1, seed).resource_spans[0].scope_spans[0].spans[0].span_id.hex().upper()


def _metric_request(name: str):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = name
    dp = m.gauge.data_points.add()
    dp.as_double, dp.time_unix_nano = 1.5, time.time_ns()
    return req


def test_keys_scopes_and_project_isolation(server):
    admin = server.admin_key()
    assert server.cli("projects", "create", "acme").returncode == 0
    acme_reader = _created_key(server.cli("keys", "create", "--project", "acme", "--scope", "metrics:read"))
    tracing_only = _created_key(server.cli("keys", "create", "--project", "default", "--scope", "tracing:read"))

    # Data in the default project only.
    r = httpx.post(server.http_url + "/v1/metrics", content=_metric_request("cpu").SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200

    # No key → 401 in PostHog's shape, with a request id and nothing internal.
    r = _get(server, HAS_METRICS.format(1))
    assert r.status_code == 401
    assert r.json() == {"type": "authentication_error", "code": "not_authenticated", "attr": None,
                        "detail": "authentication credentials were not provided: send Authorization: Bearer <key>"}
    assert r.headers["X-Request-Id"]
    assert _get(server, HAS_METRICS.format(1), "otl_not-a-real-key").status_code == 401

    # The admin key sees the default project, by id and by key; X-API-Key and bare Authorization work too.
    assert _get(server, HAS_METRICS.format(1), admin).json() == {"hasMetrics": True}
    assert _get(server, HAS_METRICS.format("default"), admin).json() == {"hasMetrics": True}
    assert _get(server, HAS_METRICS.format(1), None, **{"X-API-Key": admin}).json() == {"hasMetrics": True}
    assert _get(server, HAS_METRICS.format(1), None, Authorization=admin).json() == {"hasMetrics": True}

    # Missing scope → 403.
    r = _get(server, HAS_METRICS.format(1), tracing_only)
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    assert "metrics:read" in r.json()["detail"]

    # Project A's key asking for B's data → 404, exactly like a project that does not exist.
    foreign = _get(server, HAS_METRICS.format(1), acme_reader)
    missing = _get(server, HAS_METRICS.format(999), acme_reader)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json() == {"type": "invalid_request", "code": "not_found",
                                                "detail": "project not found", "attr": None}
    assert _get(server, HAS_METRICS.format("default"), acme_reader).status_code == 404
    # ...and its own project, which has no data, answers for itself only.
    assert _get(server, HAS_METRICS.format("acme"), acme_reader).json() == {"hasMetrics": False}

    # Revoking (another process, the CLI) takes effect on the next request.
    key_id = re.search(r"^\s*(\d+)\s+acme\s", server.cli("keys", "list").stdout, re.M).group(1)
    assert server.cli("keys", "revoke", key_id).returncode == 0
    r = _get(server, HAS_METRICS.format("acme"), acme_reader)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]

    # Secrets exist nowhere in clear text: not in `keys list`, not in the database file or its WAL.
    listing = server.cli("keys", "list").stdout
    for secret in (admin, acme_reader, tracing_only):
        assert secret not in listing
        for suffix in ("", "-wal"):
            path = Path(str(server.db) + suffix)
            if path.exists():
                assert secret.encode() not in path.read_bytes()
    assert "revoked" in listing and "active" in listing
    assert server.alive()


def test_first_run_key_is_printed_once(make_server):
    srv = make_server()
    first = srv.admin_key()
    assert srv.stop() == 0
    srv.start()
    assert srv.log().count("otl_") == 1  # the restart printed no key
    assert _get(srv, HAS_METRICS.format(1), first).status_code == 200


def test_rate_limit_answers_429_then_recovers(make_server):
    # 2 tokens per 6 s: slow enough that a busy machine cannot refill one between the first three requests.
    srv = make_server({"auth": {"rate_limits": {"read": {"requests": 2, "per": "6s"}}}})
    key = srv.admin_key()
    codes = [_get(srv, HAS_METRICS.format(1), key).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = _get(srv, HAS_METRICS.format(1), key)
    assert r.status_code == 429
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 3
    assert r.json()["type"] == "throttled_error" and r.json()["code"] == "throttled"
    time.sleep(retry_after + 0.1)
    assert _get(srv, HAS_METRICS.format(1), key).status_code == 200


def test_otlp_auth_required(make_server):
    srv = make_server({"receivers": {"otlp": {"auth": "required", "protocols": {"grpc": None, "http": None}}}})
    assert srv.cli("projects", "create", "acme").returncode == 0
    ingest = _created_key(srv.cli("keys", "create", "--project", "acme", "--scope", "ingest"))
    reader = _created_key(srv.cli("keys", "create", "--project", "acme", "--scope", "metrics:read"))
    body = trace_request(1, 0).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}

    r = httpx.post(srv.http_url + "/v1/traces", content=body, headers=headers)
    assert r.status_code == 401
    assert "ingest" in status_pb2.Status.FromString(r.content).message
    r = httpx.post(srv.http_url + "/v1/traces", content=body, headers={**headers, "Authorization": f"Bearer {reader}"})
    assert r.status_code == 401  # a key without the ingest scope

    with grpc.insecure_channel(srv.grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(trace_request(1, 1), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stub.Export(trace_request(1, 2), metadata=(("authorization", f"Bearer {ingest}"),), timeout=10)

    r = httpx.post(srv.http_url + "/v1/traces", content=body, headers={**headers, "Authorization": f"Bearer {ingest}"})
    assert r.status_code == 200
    # Only the authenticated requests were stored, under the key's project (acme = 2).
    assert srv.query("SELECT project_id, hex(span_id) FROM spans ORDER BY span_id") == [
        (2, _span_hex(0)), (2, _span_hex(2))]


def test_otlp_open_mode_routes_by_project_header(server):
    server.cli("projects", "create", "acme")
    headers = {"Content-Type": "application/x-protobuf"}
    body = trace_request(1, 6).SerializeToString()
    assert httpx.post(server.http_url + "/v1/traces", content=body, headers=headers).status_code == 200
    r = httpx.post(server.http_url + "/v1/traces", content=trace_request(1, 7).SerializeToString(),
                   headers={**headers, "X-Otelite-Project": "acme"})
    assert r.status_code == 200
    r = httpx.post(server.http_url + "/v1/traces", content=body, headers={**headers, "X-Otelite-Project": "nope"})
    assert r.status_code == 404
    assert server.query("SELECT project_id, hex(span_id) FROM spans ORDER BY span_id") == [
        (1, _span_hex(6)), (2, _span_hex(7))]


def test_auth_mode_none_needs_loopback(make_server, tmp_path):
    srv = make_server({"auth": {"mode": "none"}})
    assert "otl_" not in srv.log()  # no first-run key when no key is needed
    assert _get(srv, HAS_METRICS.format(1)).json() == {"hasMetrics": False}

    config = tmp_path / "open.yaml"
    # The receiver opts in to an open OTLP port explicitly (else that refusal comes first); the REST API
    # without keys is still refused beyond loopback.
    config.write_text("auth: {mode: none}\nreceivers:\n  otlp:\n    auth: none\n    protocols:\n      http:\n"
                      "        endpoint: 0.0.0.0:4318\n")
    proc = subprocess.run([sys.executable, "-m", "otelite.collector.cli", "serve", "--config", str(config),
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2
    assert f"{config}: auth.mode: 'none' is only allowed when every listener is on loopback, but " \
           "receivers.otlp.protocols.http.endpoint is 0.0.0.0:4318" in proc.stderr


def test_openapi_document_is_public_and_lists_routes(server):
    r = _get(server, "/api/schema/")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/projects/{project_id}/metrics/has_metrics" in doc["paths"]
    assert "bearer" in doc["components"]["securitySchemes"]


def test_unknown_route_and_method_use_generic_body(server):
    r = _get(server, "/api/nothing-here", server.admin_key())
    assert r.status_code == 404 and r.json()["code"] == "not_found" and r.headers["X-Request-Id"]
    r = httpx.delete(server.http_url + HAS_METRICS.format(1), headers={"Authorization": f"Bearer {server.admin_key()}"})
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"


def test_token_bucket_refills_at_the_configured_rate():
    now = [0.0]
    limiter = RateLimiter({"q": RateLimitConfig(requests=60, per=60.0, burst=2)}, clock=lambda: now[0])
    assert [limiter.take(1, "q").allowed for _ in range(3)] == [True, True, False]
    denied = limiter.take(1, "q")
    assert denied.retry_after == 1
    assert limiter.take(2, "q").allowed  # buckets are per key
    now[0] = 1.0
    assert limiter.take(1, "q").allowed and not limiter.take(1, "q").allowed
    assert not limiter.limited("unlisted") and not limiter.limited(None)
