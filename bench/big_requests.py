"""Memory and time of the largest valid requests: OTLP/HTTP bodies near the 20 MiB limit made of the smallest
items (gauge points of one int, spans with ids and times only), whose rows take many times their wire size.

    .venv/bin/python -m bench.big_requests [--points 900000] [--spans 250000] [--concurrent 1 4]
                                           [--baseline-root ../old-checkout]

For each case the server (a fresh one, on a fresh database) receives `concurrent` such requests at once,
each retried on 503 until stored, and the bench prints the server's peak RSS (the main process and its
decode workers, sampled every 20 ms), the seconds until all were acknowledged, and checks that every item
is stored. With --baseline-root the same cases run against that checkout's server, one after the other,
and the ratios of the peak RSS over the idle server's are printed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest import Server, _family_status, machine_info


def metrics_body(n: int, seed: int) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", f"big{seed}"
    dps = rm.scope_metrics.add().metrics.add(name="g").gauge.data_points
    t0 = time.time_ns() - n
    for i in range(n):
        dps.add(time_unix_nano=t0 + i, as_int=i)
    return req.SerializeToString()


def traces_body(n: int, seed: int) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", f"big{seed}"
    spans = rs.scope_spans.add().spans
    t0 = time.time_ns() - n
    for i in range(n):
        ident = (seed << 40) + i + 1
        spans.add(trace_id=ident.to_bytes(16, "big"), span_id=ident.to_bytes(8, "big"),
                  start_time_unix_nano=t0 + i, end_time_unix_nano=t0 + i + 1)
    return req.SerializeToString()


def _send(port: int, path: str, body: bytes, refused: list) -> None:
    while True:
        r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, {"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(r, timeout=600) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                return
        except urllib.error.HTTPError as e:
            if e.code not in (429, 503):
                raise RuntimeError(f"status {e.code}: {e.read()[:200]!r}") from None
            refused.append(1)
            time.sleep(float(e.headers.get("Retry-After", "1")) / 4)


def run_case(workdir: Path, name: str, signal: str, bodies: list[bytes], items: int, root: Path | None) -> dict:
    server = Server(workdir, name, server_root=root)
    server.start(timeout=60)
    try:
        time.sleep(1.0)  # the decode workers are up
        idle = _family_status(server.proc.pid, "VmRSS")
        peak, stop = [idle], threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak[0] = max(peak[0], _family_status(server.proc.pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        refused: list = []
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            list(pool.map(lambda b: _send(server.http_port, f"/v1/{signal}", b, refused), bodies))
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        after = _family_status(server.proc.pid, "VmRSS")
        stored = server.count("spans" if signal == "traces" else "metric_points")
        return {"name": name, "idle_mb": idle / 1024, "peak_mb": peak[0] / 1024, "after_mb": after / 1024,
                "seconds": seconds, "refused": len(refused), "stored": stored, "expected": items * len(bodies)}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=900_000, help="gauge points per metrics request (18 MB)")
    ap.add_argument("--spans", type=int, default=250_000, help="spans per trace request (~13 MB)")
    ap.add_argument("--concurrent", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--baseline-root", type=Path, default=None, help="another checkout to measure the same way")
    args = ap.parse_args(argv)
    print(machine_info())
    roots = [("this", None)] + ([("baseline", args.baseline_root)] if args.baseline_root else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.concurrent:
            for signal, n, make in (("metrics", args.points, metrics_body), ("traces", args.spans, traces_body)):
                # k requests sharing a ~18 MB budget of bodies: as large as admission lets k be in flight
                size = n // k
                bodies = [make(size, seed + 1) for seed in range(k)]
                for label, root in roots:
                    r = run_case(Path(tmp), f"{label}-{signal}-{k}", signal, bodies, size, root)
                    r.update(label=label, case=f"{signal} {k} x {size:,} items ({len(bodies[0]) / 1e6:.1f} MB)")
                    results.append(r)
                    ok = "ok" if r["stored"] == r["expected"] else f"LOST {r['expected'] - r['stored']}"
                    print(f"{r['case']:<42} {label:<9} idle {r['idle_mb']:4.0f} MB  peak {r['peak_mb']:4.0f} MB  "
                          f"after {r['after_mb']:4.0f} MB  {r['seconds']:5.1f} s  503s {r['refused']:3d}  {ok}",
                          flush=True)
                if args.baseline_root:
                    this, base = results[-2], results[-1]
                    grow = lambda r: max(r["peak_mb"] - r["idle_mb"], 1e-9)  # noqa: E731
                    print(f"{'':<42} peak over idle: {grow(this):.0f} MB vs {grow(base):.0f} MB "
                          f"(x{grow(this) / grow(base):.2f}); time x{this['seconds'] / base['seconds']:.2f}")
    return 0 if all(r["stored"] == r["expected"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
