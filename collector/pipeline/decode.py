"""What a decode worker process runs (walker.py): OTLP protobuf bytes → a WriteBatch.

A module of its own, importing only protobuf and the normalizer, because a spawned worker imports the
modules of the functions it is given: walker.py imports the writer, and with it numpy and the store, which
a worker never uses (~25 MB of RSS in every worker, issue 16's overload budget).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any, Callable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.collector.normalize.otlp import OtlpDataError, metrics_to_batch, traces_to_batch
from otelite.collector.normalize.wire import RawAttributesMetricsRequest, RawAttributesTraceRequest
from otelite.collector.store.records import WriteBatch


class OtlpDecodeError(OtlpDataError):
    """The bytes are not the expected protobuf message (HTTP 400 / INVALID_ARGUMENT)."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"not a valid protobuf {type_name}")
        self.type_name = type_name

    def __reduce__(self):  # raised in a worker process and pickled back: rebuild from the type name
        return (OtlpDecodeError, (self.type_name,))


def _walk(request_type: type, parse_type: type, to_batch: Callable[[Any, int], WriteBatch], payload: Any,
          project_id: int) -> WriteBatch:
    """`parse_type`: what bytes are parsed as, `request_type` or a wire-compatible type (wire.py) whose
    nested bytes `to_batch` parses; a DecodeError of either is the request's (400)."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        return to_batch(payload, project_id)
    try:
        return to_batch(parse_type.FromString(bytes(payload)), project_id)
    except DecodeError:
        raise OtlpDecodeError(request_type.__name__) from None


def walk_traces(payload: Any, project_id: int) -> WriteBatch:
    return _walk(ExportTraceServiceRequest, RawAttributesTraceRequest, traces_to_batch, payload, project_id)


def walk_metrics(payload: Any, project_id: int) -> WriteBatch:
    return _walk(ExportMetricsServiceRequest, RawAttributesMetricsRequest, metrics_to_batch, payload, project_id)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_init(parent_pid: int) -> None:
    # A Ctrl-C reaches the whole process group: the workers must keep serving the main process while it
    # drains, and stop only when it shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # ...but they must not outlive it: a worker holds both ends of its task pipe, so after a `kill -9` of
    # the collector it would wait forever. Linux kills it with its parent; the check closes the race of a
    # parent that died before prctl ran.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(0)


def _exit_with_parent(parent_pid: int) -> None:
    """Where prctl is not available: poll for the parent's death."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)
