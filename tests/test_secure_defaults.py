"""Secure defaults (issue 10, item 6; rows 5 to 8 of its table), against live servers and the real CLI.

5. An OTLP listener beyond loopback without `receivers.otlp.auth` does not start; `X-Otelite-Project` is
   honoured from loopback peers, or with an ingest key of that project.
6. CLI commands that need a database refuse a missing one (exit 2) unless `--create`.
7. The database, its WAL and its SHM file are created 0600.
8. `/healthz` without a key shows the status only.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from conftest import ServerProcess, free_port, trace_request, write_config
from otelite.collector.receivers.otlp.auth import grpc_peer_is_loopback

ROOT = Path(__file__).parent.parent
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otelite.collector.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the source of a connection to it is not
    loopback either), or None on a machine with loopback only."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _span_ids(srv: ServerProcess) -> list[tuple[int, str]]:
    return srv.query("SELECT project_id, lower(hex(span_id)) FROM spans ORDER BY span_id")


def _span_hex(seed: int) -> str:
    return trace_request(1, seed).resource_spans[0].scope_spans[0].spans[0].span_id.hex()


# --- row 5: OTLP beyond loopback -------------------------------------------------------------------------

def test_serving_otlp_on_all_interfaces_without_receiver_auth_refuses_to_start(tmp_path):
    """The issue's command line, with the defaults: it used to start silently with OTLP open to the network."""
    proc = _cli(tmp_path, "serve", "--db", str(tmp_path / "x.db"), "--http-endpoint", f"0.0.0.0:{free_port()}",
                "--grpc-endpoint", f"0.0.0.0:{free_port()}")
    assert proc.returncode == 2, proc.stderr
    assert "receivers.otlp.auth" in proc.stderr and "beyond loopback" in proc.stderr, proc.stderr
    assert "auth: required" in proc.stderr and "auth: none" in proc.stderr  # what to do about it
    assert not (tmp_path / "x.db").exists()  # refused before anything was created

    # The same with only gRPC beyond loopback, from a config file: the message names the key and file.
    config = write_config(tmp_path, {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}}}})
    proc = _cli(tmp_path, "serve", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert proc.returncode == 2
    assert f"{config}: receivers.otlp.auth: OTLP listens beyond loopback (protocols.grpc.endpoint: " \
           "0.0.0.0:4317)" in proc.stderr, proc.stderr


@pytest.fixture
def open_server(make_server):
    """OTLP on every interface with `auth: none` said explicitly (it starts), and project acme."""
    srv = make_server(start=False, config={"receivers": {"otlp": {"auth": "none", "protocols": {
        "grpc": {"endpoint": f"0.0.0.0:{free_port()}"}, "http": {"endpoint": f"0.0.0.0:{free_port()}"}}}}})
    # ServerProcess passes --http-endpoint 127.0.0.1:<port>: bind every interface instead.
    srv.extra_args = ["--http-endpoint", f"0.0.0.0:{srv.http_port}", "--grpc-endpoint", f"0.0.0.0:{srv.grpc_port}"]
    srv.start()
    assert srv.cli("projects", "create", "acme").returncode == 0
    created = srv.cli("keys", "create", "--project", "acme", "--scope", "ingest")
    srv.acme_ingest = re.search(r"^(otl_\S+)$", created.stdout, re.M).group(1)
    created = srv.cli("keys", "create", "--project", "default", "--scope", "ingest")
    srv.default_ingest = re.search(r"^(otl_\S+)$", created.stdout, re.M).group(1)
    return srv


def test_explicit_auth_none_starts_and_loopback_peers_may_name_a_project(open_server):
    srv = open_server
    r = httpx.post(f"{srv.http_url}/v1/traces", content=trace_request(1, 1).SerializeToString(),
                   headers={**PROTOBUF, "X-Otelite-Project": "acme"}, timeout=10)
    assert r.status_code == 200, r.content
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            trace_request(1, 2), metadata=(("x-otelite-project", "acme"),), timeout=10)
    assert _span_ids(srv) == [(2, _span_hex(1)), (2, _span_hex(2))]


def test_a_remote_peer_may_name_a_project_only_with_a_key_of_it(open_server):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    srv = open_server
    url = f"http://{address}:{srv.http_port}/v1/traces"

    # Without a header: the default project, as any open OTLP endpoint.
    assert httpx.post(url, content=trace_request(1, 10).SerializeToString(), headers=PROTOBUF,
                      timeout=10).status_code == 200
    # With a header and no key, or a key of another project: 403, nothing stored.
    for extra in ({}, {"Authorization": f"Bearer {srv.default_ingest}"}, {"Authorization": "Bearer otl_wrong"}):
        r = httpx.post(url, content=trace_request(1, 11).SerializeToString(),
                       headers={**PROTOBUF, "X-Otelite-Project": "acme", **extra}, timeout=10)
        assert r.status_code == 403, (extra, r.content)
        assert "honoured only from loopback" in status_pb2.Status.FromString(r.content).message
    # A project that does not exist answers the same (its existence is not revealed).
    r = httpx.post(url, content=trace_request(1, 11).SerializeToString(),
                   headers={**PROTOBUF, "X-Otelite-Project": "nope"}, timeout=10)
    assert r.status_code == 403
    # With a key of that project: honoured.
    r = httpx.post(url, content=trace_request(1, 12).SerializeToString(), timeout=10,
                   headers={**PROTOBUF, "X-Otelite-Project": "acme", "Authorization": f"Bearer {srv.acme_ingest}"})
    assert r.status_code == 200, r.content

    with grpc.insecure_channel(f"{address}:{srv.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(trace_request(1, 13), metadata=(("x-otelite-project", "acme"),), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stub.Export(trace_request(1, 14), timeout=10,
                    metadata=(("x-otelite-project", "acme"), ("authorization", f"Bearer {srv.acme_ingest}")))
    assert _span_ids(srv) == [(1, _span_hex(10)), (2, _span_hex(12)), (2, _span_hex(14))]


@pytest.mark.parametrize("peer, loopback", [
    ("ipv4:127.0.0.1:5000", True), ("ipv4:127.8.9.10:1", True), ("ipv6:[::1]:5000", True),
    ("unix:/tmp/otelite.sock", True), ("ipv4:10.0.0.7:5000", False), ("ipv6:[2001:db8::1]:443", False),
    ("ipv6:[::ffff:10.0.0.7]:1", False), ("", False), ("garbage", False)])
def test_grpc_peer_strings(peer, loopback):
    assert grpc_peer_is_loopback(peer) is loopback


# --- row 6: the CLI and a missing database ---------------------------------------------------------------

def test_cli_refuses_a_missing_database_unless_create(tmp_path):
    for args in (["keys", "create", "--project", "default", "--scope", "metrics:read"], ["keys", "list"],
                 ["projects", "create", "acme"], ["projects", "list"], ["keys", "revoke", "1"]):
        proc = _cli(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert f"no database at {tmp_path / 'otelite.db'}" in proc.stderr and "--create" in proc.stderr, proc.stderr
        assert not (tmp_path / "otelite.db").exists(), args  # nothing was created
    proc = _cli(tmp_path, "keys", "create", "--project", "default", "--scope", "metrics:read", "--create")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "otelite.db").exists()
    assert stat.S_IMODE(os.stat(tmp_path / "otelite.db").st_mode) == 0o600
    assert _cli(tmp_path, "keys", "list").returncode == 0  # now it exists: no --create needed


# --- row 7: file permissions -----------------------------------------------------------------------------

def test_database_wal_and_shm_are_created_owner_only(make_server):
    old = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        srv = make_server()
    finally:
        os.umask(old)
    # A write makes sure the WAL holds data (and the SHM exists) while the server runs.
    assert httpx.post(f"{srv.http_url}/v1/traces", content=trace_request(2, 1).SerializeToString(),
                      headers=PROTOBUF, timeout=10).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{srv.db}{suffix}")
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


# --- row 8: /healthz ---------------------------------------------------------------------------------------

def test_healthz_without_a_key_shows_the_status_only(server):
    r = httpx.get(f"{server.http_url}/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert str(server.db) not in r.text
    r = httpx.get(f"{server.http_url}/healthz", headers={"Authorization": "Bearer otl_not_a_key"}, timeout=10)
    assert r.json() == {"status": "ok"}  # a wrong key is not an error for a probe, and shows nothing more
    details = server.health()
    assert details["status"] == "ok" and details["database"] == str(server.db)
    assert {"uptime_s", "schema_version", "queue_items"} <= set(details)


def test_healthz_shows_the_details_when_keys_are_off(make_server):
    srv = make_server({"auth": {"mode": "none"}})
    assert "database" in httpx.get(f"{srv.http_url}/healthz", timeout=10).json()
