"""What a decode worker process runs (walker.py): OTLP protobuf bytes → a WriteBatch, or for a request
of more items than walker.SLICE_ITEMS a SlicedBatch of its parts (normalize/split.py); an OTLP/JSON body →
the same, and the request as protobuf bytes (what the export log keeps for forwarders).

OTLP/JSON is parsed here too, not in the event loop: `json.loads` and the mapping to protobuf of a 20 MiB
body took about 1.7 s, and the walk of its message (the walk of a message ran in-process) as long again;
meanwhile the event loop answered nothing (/healthz waited 3.5 s, docs/benchmarks.md).

A module of its own, importing only protobuf and the normalizer, because a spawned worker imports the
modules of the functions it is given: walker.py imports the writer, and with it numpy and the store, which
a worker never uses (~25 MB of RSS in every worker, issue 16's overload budget).
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import signal
import threading
import time
import zlib
from typing import Any, Callable, Iterator

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelite.collector.normalize.otlp import OtlpDataError, metrics_to_batch, traces_to_batch
from otelite.collector.normalize.otlp_json import OtlpJsonError, metrics_request_from_json, traces_request_from_json
from otelite.collector.normalize.split import metric_items, split_metrics, split_traces, trace_items
from otelite.collector.normalize.wire import RawAttributesMetricsRequest, RawAttributesTraceRequest
from otelite.collector.osthread import name_os_thread
from otelite.collector.store.records import SlicedBatch, WriteBatch


class OtlpDecodeError(OtlpDataError):
    """The bytes are not the expected protobuf message (HTTP 400 / INVALID_ARGUMENT)."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"not a valid protobuf {type_name}")
        self.type_name = type_name

    def __reduce__(self):  # raised in a worker process and pickled back: rebuild from the type name
        return (OtlpDecodeError, (self.type_name,))


def _walk(request_type: type, parse_type: type, to_batch: Callable[[Any, int], WriteBatch],
          count: Callable[[Any], int], split: Callable[[Any, int], Iterator[Any]], payload: Any,
          project_id: int, slice_items: int | None) -> WriteBatch | SlicedBatch:
    """`parse_type`: what bytes are parsed as, `request_type` or a wire-compatible type (wire.py) whose
    nested bytes `to_batch` parses; a DecodeError of either is the request's (400).

    `slice_items`: a request of more spans or points than this is walked in parts of at most that many
    (normalize/split.py) into a SlicedBatch; None walks every request whole."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        if slice_items is None:
            return to_batch(payload, project_id)
        payload = payload.SerializeToString()  # re-read as parse_type, which the walk does anyway
    try:
        request = parse_type.FromString(bytes(payload))
        if slice_items is None or count(request) <= slice_items:
            return to_batch(request, project_id)
        return _walk_in_parts(to_batch, split(request, slice_items), project_id)
    except DecodeError:
        raise OtlpDecodeError(request_type.__name__) from None


def _walk_in_parts(to_batch: Callable[[Any, int], WriteBatch], parts: Iterator[Any], project_id: int
                   ) -> SlicedBatch:
    sliced = SlicedBatch([], 0)
    for part in parts:
        batch = to_batch(part, project_id)
        del part  # (the part's copy of its items, freed before the next one is made)
        sliced.items += batch.items
        sliced.rejected += batch.rejected
        sliced.errors += [e for e in batch.errors if e not in sliced.errors]
        batch.rejected, batch.errors = 0, []
        if batch.items:
            sliced.parts.append(zlib.compress(pickle.dumps(batch, pickle.HIGHEST_PROTOCOL), 1))
    return sliced


def walk_traces(payload: Any, project_id: int, slice_items: int | None = None) -> WriteBatch | SlicedBatch:
    return _walk(ExportTraceServiceRequest, RawAttributesTraceRequest, traces_to_batch, trace_items,
                 split_traces, payload, project_id, slice_items)


def walk_metrics(payload: Any, project_id: int, slice_items: int | None = None) -> WriteBatch | SlicedBatch:
    return _walk(ExportMetricsServiceRequest, RawAttributesMetricsRequest, metrics_to_batch, metric_items,
                 split_metrics, payload, project_id, slice_items)


# Series ids whose rows this worker process has sent with a batch (walk_metrics_leaving_out_sent). Bounded:
# past SENT_SERIES_MAX it starts again from nothing, and the rows are sent once more.
SENT_SERIES_MAX = 100_000
_SENT_SERIES: set[int] = set()


def walk_metrics_leaving_out_sent(payload: bytes, project_id: int, slice_items: int | None = None
                                  ) -> WriteBatch | SlicedBatch:
    """walk_metrics, but of the series whose rows this worker sent before the batch has only their ids and
    temporalities (records.SeriesLeftOut). What the decode workers run for the server (pipeline/walker.py),
    which walks the request again with every row unless it saw those series committed. A request walked
    in parts keeps every row."""
    try:
        request = RawAttributesMetricsRequest.FromString(bytes(payload))
        if slice_items is not None and metric_items(request) > slice_items:
            return _walk_in_parts(metrics_to_batch, split_metrics(request, slice_items), project_id)
        batch = metrics_to_batch(request, project_id, _SENT_SERIES)
    except DecodeError:  # (as _walk: the request's, 400)
        raise OtlpDecodeError(ExportMetricsServiceRequest.__name__) from None
    note_sent(batch, _SENT_SERIES, SENT_SERIES_MAX)
    return batch


def note_sent(batch: WriteBatch, sent: set[int], max_sent: int) -> None:
    """Count the series rows `batch` carries as sent (bounded by `max_sent`)."""
    if len(sent) + len(batch.series) > max_sent:
        sent.clear()
    sent.update(batch.series)


class OtlpJsonBodyError(OtlpDataError):
    """An OTLP/JSON body that is not JSON or does not map onto the OTLP schema (HTTP 400); the message says
    where (otlp_json.py: the path of the offending value)."""


def _document(body: bytes) -> Any:
    try:
        return json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise OtlpJsonBodyError(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise OtlpJsonBodyError("the body is not valid JSON: nested too deeply") from None


def _walk_json(from_json: Callable[[Any], Any], walk: Callable[..., WriteBatch | SlicedBatch], body: bytes,
               project_id: int, slice_items: int | None) -> tuple[WriteBatch | SlicedBatch, bytes]:
    try:
        encoded = from_json(_document(body)).SerializeToString()
    except OtlpJsonError as e:
        raise OtlpJsonBodyError(str(e)) from None
    return walk(encoded, project_id, slice_items), encoded


def walk_traces_json(body: bytes, project_id: int, slice_items: int | None = None
                     ) -> tuple[WriteBatch | SlicedBatch, bytes]:
    return _walk_json(traces_request_from_json, walk_traces, body, project_id, slice_items)


def walk_metrics_json(body: bytes, project_id: int, slice_items: int | None = None
                      ) -> tuple[WriteBatch | SlicedBatch, bytes]:
    return _walk_json(metrics_request_from_json, walk_metrics, body, project_id, slice_items)


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
    name_os_thread("otelite-decode")  # `top` then tells the workers from the server (osthread.py)


def _exit_with_parent(parent_pid: int) -> None:
    """Where prctl is not available: poll for the parent's death."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)
