"""Pieces every benchmark uses: free loopback ports, OTLP attribute building, the first-run admin key."""

from __future__ import annotations

import re
import socket
from pathlib import Path

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
