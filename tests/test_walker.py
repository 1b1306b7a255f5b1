"""Decoding and normalizing in worker processes (collector/pipeline/walker.py), and without them."""

import asyncio
import os
import pickle
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from conftest import trace_request
from metrics_otlp import base_ns, counter
from otelite.collector.normalize.otlp import OtlpDataError, traces_to_batch
from otelite.collector.pipeline.decode import OtlpDecodeError, walk_traces
from otelite.collector.pipeline.walker import _MAX_PENDING_PER_WORKER, Walker
from otelite.collector.store.writer import StoreFull


def test_worker_walk_equals_in_process_walk():
    req = trace_request(50, 1, service="walker", with_attribute=True)
    walker = Walker(1)
    try:
        walker.warm_up()
        in_worker = asyncio.run(walker.traces(req.SerializeToString(), 3))
        with pytest.raises(OtlpDecodeError) as info:
            asyncio.run(walker.traces(b"\xff\xff garbage", 3))
        assert str(info.value) == "not a valid protobuf ExportTraceServiceRequest"
        bad = trace_request(1, 2)
        bad.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
        with pytest.raises(OtlpDataError, match="trace_id must be 16 bytes"):
            asyncio.run(walker.traces(bad.SerializeToString(), 3))
    finally:
        walker.close()
    assert in_worker == traces_to_batch(req, 3) == walk_traces(req.SerializeToString(), 3)
    # The error crosses the process boundary intact (pickled by the pool).
    assert str(pickle.loads(pickle.dumps(OtlpDecodeError("X")))) == "not a valid protobuf X"


def test_requests_beyond_the_workers_bound_are_refused_before_they_are_walked():
    # A burst that passed the advisory check together (Ingest.check_admission, before the bodies were
    # read) is bounded here: past _MAX_PENDING_PER_WORKER a request is refused (503 / UNAVAILABLE), not
    # queued for the worker with its rows to come back at once.
    body = trace_request(20, 1, service="burst").SerializeToString()
    extra = 5
    walker = Walker(1)

    async def burst(n):
        return await asyncio.gather(*(walker.traces(body, 1) for _ in range(n)), return_exceptions=True)

    try:
        walker.warm_up()
        outcomes = asyncio.run(burst(_MAX_PENDING_PER_WORKER + extra))
        refused = [o for o in outcomes if isinstance(o, StoreFull)]
        walked = [o for o in outcomes if not isinstance(o, BaseException)]
        assert (len(refused), len(walked)) == (extra, _MAX_PENDING_PER_WORKER)
        assert str(refused[0]) == "the decode workers are busy" and refused[0].retry_after == 1
        assert all(w == walked[0] and w.items == 20 for w in walked)
        # The places are given back: a burst within the bound is walked whole, also one of metrics requests
        # that are each walked twice (their series' rows left out by the worker, never seen committed).
        assert not any(isinstance(o, BaseException) for o in asyncio.run(burst(_MAX_PENDING_PER_WORKER)))
        metrics = counter("requests", [(base_ns(1), i, {"host": f"h{i}"}) for i in range(3)]).SerializeToString()
        first = asyncio.run(walker.metrics(metrics, 1))

        async def metric_burst():
            return await asyncio.gather(*(walker.metrics(metrics, 1) for _ in range(_MAX_PENDING_PER_WORKER)),
                                        return_exceptions=True)
        again = asyncio.run(metric_burst())  # (each walked twice: its series were never seen committed)
        assert all(o == first and len(o.series) == 3 for o in again), again
        walker.check_admission()  # nothing pending: admitted
    finally:
        walker.close()


def test_in_event_loop_decoding_when_workers_are_off(make_server):
    srv = make_server({"receivers": {"otlp": {"decode_workers": 0, "protocols": {"grpc": None, "http": None}}}})
    r = httpx.post(srv.http_url + "/v1/traces", content=trace_request(3, 1).SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200
    r = httpx.post(srv.http_url + "/v1/traces", content=b"\xff\xff", headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400
    with grpc.insecure_channel(srv.grpc_endpoint) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(trace_request(2, 2), timeout=10)
    # OTLP/JSON too (with workers, decode.walk_traces_json runs in one), and its errors keep their paths.
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "json", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
    r = httpx.post(srv.http_url + "/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    assert (r.status_code, r.json()) == (200, {})
    r = httpx.post(srv.http_url + "/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [
        {**span, "spanId": "cd"}]}]}]})
    assert r.status_code == 400 and "resourceSpans[0].scopeSpans[0].spans[0].spanId" in r.json()["message"], r.text
    assert srv.query("SELECT count(*) FROM spans") == [(6,)]
    # No worker processes were started.
    assert _children(srv.proc.pid) == []


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def test_decode_workers_are_named_in_the_os(server):
    # collector/osthread.py: `top` and `ps` tell the decode workers from the server (its resource tracker
    # stays "python").
    names: set[str] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "otelite-decode" not in names:
        names = set()
        for child in _children(server.proc.pid):
            try:
                names.add(open(f"/proc/{child}/comm").read().strip())
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    assert "otelite-decode" in names


def test_workers_do_not_outlive_a_killed_collector(server):
    workers = _children(server.proc.pid)
    assert workers, "the default configuration starts a decode worker"
    server.kill()  # SIGKILL: no chance to shut the pool down
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{w}") for w in workers):
        time.sleep(0.05)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}")
             and open(f"/proc/{w}/stat").read().split(") ")[1][0] != "Z"]
    assert alive == []


def test_a_decode_worker_imports_only_what_it_runs():
    # A spawned worker imports the parent's main module (otelite.collector.cli under `otelite serve`) and
    # the module of the function it runs (decode.py); neither may pull in the store, numpy or the config
    # machinery (~25 MB of RSS per worker, counted in the overload budget of issue 16).
    code = ("import sys, otelite.collector.cli, otelite.collector.pipeline.decode; "
            "print(sorted(m for m in ('numpy', 'otelite.collector.store.writer', 'otelite.collector.config', "
            "'grpc', 'falcon', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
