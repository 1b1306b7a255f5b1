"""Pieces every benchmark uses: free loopback ports, OTLP attribute building, the first-run admin key, an
`otelite serve` on its own database."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from opentelemetry.proto.common.v1 import common_pb2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kv(key: str, value) -> common_pb2.KeyValue:
    """A KeyValue of the AnyValue kind that matches the Python type (bool before int: bool is an int)."""
    attr = common_pb2.KeyValue(key=key)
    if isinstance(value, bool):
        attr.value.bool_value = value
    elif isinstance(value, int):
        attr.value.int_value = value
    elif isinstance(value, float):
        attr.value.double_value = value
    else:
        attr.value.string_value = value
    return attr


def admin_key(log_path: Path) -> str:
    """The key `otelite serve` printed on its first run (auth.md, "First run")."""
    return re.findall(r"^\s+(otl_[A-Za-z0-9_-]+)$", log_path.read_text(), re.M)[0]


class BenchServer:
    """`otelite serve` for a benchmark on free loopback ports: its database `workdir/db_name`, its log
    `workdir/server.log`, and a config file written from `config_yaml` when one is given."""

    def __init__(self, workdir: Path, db_name: str = "bench.db", config_yaml: str | None = None) -> None:
        self.db = workdir / db_name
        self.log_path = workdir / "server.log"
        self.config: Path | None = None
        if config_yaml is not None:
            self.config = workdir / "otelite.yaml"
            self.config.write_text(config_yaml)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        args = [sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(self.db), "--grpc-endpoint",
                f"127.0.0.1:{self.grpc_port}", "--http-endpoint", f"127.0.0.1:{self.http_port}"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.db.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"otelite exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"otelite did not become healthy:\n{self.log_path.read_text()}")

    def admin_key(self) -> str:
        return admin_key(self.log_path)

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout)
