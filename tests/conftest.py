"""Shared fixtures: a live `otelite serve` subprocess on free loopback ports with a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.collector.component import Host
from otelite.collector.pipeline.fanout import build_pipelines
from otelite.collector.pipeline.ingest import Ingest
from otelite.collector.store.store import Store
from otelite.collector.telemetry import Telemetry

TESTDATA = Path(__file__).parent / "testdata"


_HANDED_OUT_PORTS: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this test run.

    The socket is closed before the caller binds, so the kernel may offer the same port to the next
    call; two ports picked for one server (its HTTP and its own /metrics listener) then collide.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT_PORTS:
            _HANDED_OUT_PORTS.add(port)
            return port


@dataclass
class ServerProcess:
    """A running `otelite serve`. `db` is its SQLite file; `query()` reads it with a fresh connection."""

    db: Path
    grpc_port: int
    http_port: int
    config_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    # 60 s: on the shared 2-core machine under load (average 20+), imports alone took 20 s.
    def start(self, timeout: float = 60.0) -> "ServerProcess":
        args = [sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(self.db),
                "--grpc-endpoint", self.grpc_endpoint, "--http-endpoint", f"127.0.0.1:{self.http_port}"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        args += self.extra_args
        self.log_path = self.db.with_suffix(".log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.db.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelite exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.proc.kill()  # not left running behind the failed test
        self.proc.wait(10)
        raise RuntimeError(f"otelite did not become healthy:\n{self.log()}")

    def admin_key(self) -> str:
        """The first-run admin key the server printed (auth.md, "First run")."""
        found = re.findall(r"^\s+(otl_[A-Za-z0-9_-]+)$", self.log(), re.M)
        assert found, f"no first-run key in the log:\n{self.log()}"
        return found[0]

    def health(self, timeout: float = 5.0, client: httpx.Client | None = None) -> dict:
        """GET /healthz with the admin key: the details (queue_items, ...) are shown only to a key."""
        get = client.get if client is not None else httpx.get
        r = get(f"{self.http_url}/healthz", headers={"Authorization": f"Bearer {self.admin_key()}"},
                timeout=timeout)
        assert r.status_code in (200, 503), (r.status_code, r.text)
        return r.json()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `otelite ARGS --db <this server's db>` (e.g. keys create) and return the finished process."""
        return subprocess.run([sys.executable, "-m", "otelite.collector.cli", *args, "--db", str(self.db)],
                              capture_output=True, text=True, timeout=30, cwd=self.db.parent)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def read(self, fn, *args):
        """`fn(conn, *args)` on a read connection, as Store.read runs the store's readers."""
        from otelite.collector.store.db import connect_reader
        from otelite.collector.store.points import ReadTransaction
        conn = connect_reader(str(self.db))
        try:
            with ReadTransaction(conn):
                return fn(conn, *args)
        finally:
            conn.close()

    def point_rows(self) -> list[tuple]:
        """Every stored metric point (records.POINT_COLUMNS tuples), wherever the store keeps it: the head
        table `metric_points` holds only recent ones (issue 16: older points are packed into chunks)."""
        from otelite.collector.store.points import point_rows
        ids = [r[0] for r in self.query("SELECT id FROM metric_series")]
        return self.read(point_rows, ids)


def write_config(tmp_path: Path, doc: dict, name: str = "otelite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def start_server(directory: Path, config: dict | None = None, name: str = "otelite") -> ServerProcess:
    """Start `otelite serve` with its database (and config, if any) in `directory`."""
    cfg_path = write_config(directory, config, f"{name}.yaml") if config is not None else None
    return ServerProcess(db=directory / f"{name}.db", grpc_port=free_port(), http_port=free_port(),
                         config_path=cfg_path).start()


def trace_request(n_spans: int, seed: int = 0, *, start_ns: int | None = None, service: str = "svc",
                  with_attribute: bool = False) -> ExportTraceServiceRequest:
    """A hand-built request of `n_spans` root spans with ids unique per (seed, index), starting now
    (or at `start_ns`), 10 ns apart; `with_attribute` adds an int attribute `i` = index."""
    start = time.time_ns() if start_ns is None else start_ns
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    for i in range(n_spans):
        sp = ss.spans.add()
        sp.trace_id = (seed * 1_000_000 + i + 1).to_bytes(16, "big")
        sp.span_id = (seed * 1_000_000 + i + 1).to_bytes(8, "big")
        sp.name = f"op{i}"
        sp.start_time_unix_nano = start + i
        sp.end_time_unix_nano = start + i + 10
        if with_attribute:
            a = sp.attributes.add()
            a.key, a.value.int_value = "i", i
    return req


@pytest.fixture
def make_server(tmp_path):
    """Factory: `make_server(config=dict|None, db=path|None)` starts a server; all are stopped at the end."""
    started: list[ServerProcess] = []

    def factory(config: dict | None = None, db: Path | None = None, start: bool = True) -> ServerProcess:
        cfg_path = write_config(tmp_path, config, f"config{len(started)}.yaml") if config is not None else None
        srv = ServerProcess(db=db or tmp_path / f"otelite{len(started)}.db", grpc_port=free_port(),
                            http_port=free_port(), config_path=cfg_path)
        started.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in started:
        if srv.alive():
            srv.kill()


@pytest.fixture
def server(make_server) -> ServerProcess:
    """A server on the embedded defaults (fresh database, free ports)."""
    return make_server()


@pytest.fixture(scope="session", autouse=True)
def _no_proxy():
    # Tests talk to loopback only; a proxy from the environment must not intercept them. Session-wide,
    # so module-scoped server fixtures are covered too.
    saved = {v: os.environ.pop(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                                             "ALL_PROXY", "all_proxy") if v in os.environ}
    previous_no_proxy = os.environ.get("NO_PROXY")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    yield
    os.environ.update(saved)
    if previous_no_proxy is None:
        os.environ.pop("NO_PROXY", None)
    else:
        os.environ["NO_PROXY"] = previous_no_proxy


class PipelineHarness:
    """A real store and the pipelines of `config`, in process (no HTTP): `async with` starts the store,
    builds and starts the pipelines and an `Ingest`; leaving shuts them down and closes the store."""

    def __init__(self, config) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.store = Store(config.sqlite, config.batch, self.telemetry)

    async def __aenter__(self):
        self.store.start()
        self.pipelines = build_pipelines(self.config, Host(self.store, self.telemetry))
        await self.pipelines.start()
        self.ingest = Ingest(self.pipelines, self.telemetry)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pipelines.shutdown()
        await asyncio.to_thread(self.store.close)
