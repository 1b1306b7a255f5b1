"""Shared fixtures: a live `otelite serve` subprocess on free loopback ports with a real SQLite file."""

from __future__ import annotations

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

TESTDATA = Path(__file__).parent / "testdata"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        args = [sys.executable, "-m", "collector.cli", "serve", "--db", str(self.db),
                "--grpc-endpoint", self.grpc_endpoint, "--http-endpoint", f"127.0.0.1:{self.http_port}"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        args += self.extra_args
        self.log_path = self.db.with_suffix(".log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
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
        raise RuntimeError(f"otelite did not become healthy:\n{self.log()}")

    def admin_key(self) -> str:
        """The first-run admin key the server printed (auth.md, "First run")."""
        found = re.findall(r"^\s+(otl_[A-Za-z0-9_-]+)$", self.log(), re.M)
        assert found, f"no first-run key in the log:\n{self.log()}"
        return found[0]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run `otelite ARGS --db <this server's db>` (e.g. keys create) and return the finished process."""
        return subprocess.run([sys.executable, "-m", "collector.cli", *args, "--db", str(self.db)],
                              capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)

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


def write_config(tmp_path: Path, doc: dict, name: str = "otelite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


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


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # Tests talk to loopback only; a proxy from the environment must not intercept them.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("OTEL_SDK_DISABLED", "false")
