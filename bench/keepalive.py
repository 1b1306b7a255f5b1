"""Keep-alive latency benchmark (issue 10, row 4): what a client that reuses its connection (http.client,
httpx, Grafana, Prometheus) waits for `/healthz` and a PostHog span query on a small database.
How to run and what was measured: docs/benchmarks.md, "Keep-alive latency".

    python bench/keepalive.py [--requests 200] [--spans 2000] [--json out.json]

What it does:
1. Starts a fresh `otelite serve` (temp database, free ports) and stores `--spans` root spans of the last
   30 minutes over OTLP/HTTP (a small database: the figures are the HTTP path, not the query).
2. For each case, `--requests` calls on ONE keep-alive connection (the first call, which opens it, is not
   counted), then the same number each on a NEW connection: the baseline, which never waited for a
   delayed ACK even before TCP_NODELAY. Prints p50 / p95 / max of each and the ratio keep-alive / new
   connection (about 1 or below now; ≥ 40 ms against ~1 ms before the fix).

Not a test: pytest collects only tests/ (tests/test_keepalive.py asserts the bound).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import admin_key, free_port  # noqa: E402

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

TARGET_P50_MS = 5.0  # issue 10, acceptance


def _serve(directory: Path) -> tuple[subprocess.Popen, int, Path]:
    http_port, grpc_port = free_port(), free_port()
    log = directory / "otelite.log"
    args = [sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(directory / "otelite.db"),
            "--http-endpoint", f"127.0.0.1:{http_port}", "--grpc-endpoint", f"127.0.0.1:{grpc_port}"]
    proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=directory)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, http_port, log
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"otelite did not start: {log.read_text()[-2000:]}")


def _spans(n: int) -> bytes:
    now = time.time_ns()
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bench"
    ss = rs.scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id = (i + 1).to_bytes(16, "big")
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.name = f"op{i % 20}"
        sp.kind = 2
        sp.start_time_unix_nano = now - 1_800_000_000_000 + i * 1_000_000
        sp.end_time_unix_nano = sp.start_time_unix_nano + 5_000_000
        a = sp.attributes.add()
        a.key, a.value.string_value = "http.route", f"/r{i % 10}"
    return req.SerializeToString()


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
          headers: dict) -> float:
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    took = time.perf_counter() - started
    if resp.status != 200:
        raise SystemExit(f"{method} {path}: {resp.status}")
    return took * 1000


def _measure(port: int, method: str, path: str, body: bytes | None, headers: dict, n: int,
             keep_alive: bool) -> list[float]:
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if keep_alive:
        _call(conn, method, path, body, headers)  # opens the connection; not counted
    for _ in range(n):
        if not keep_alive:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out.append(_call(conn, method, path, body, headers))
    conn.close()
    return out


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))],
            "max": ordered[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--spans", type=int, default=2000)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="otelite-keepalive-"))
    proc, port, log = _serve(directory)
    try:
        key = admin_key(log)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _call(conn, "POST", "/v1/traces", _spans(args.spans), {"Content-Type": "application/x-protobuf"})
        conn.close()
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        cases = {
            "/healthz": ("GET", "/healthz", None, {}),
            "PostHog span query (10 latest root spans, 1 h)": (
                "POST", "/api/projects/default/tracing/spans/query",
                json.dumps({"query": {"dateRange": {"date_from": "-1h"}, "limit": 10}}).encode(), auth),
        }
        results = {}
        print(f"otelite keep-alive latency, {args.requests} requests per case, {args.spans} spans stored; "
              f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'case':52} {'connection':12} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, (method, path, body, headers) in cases.items():
            kept = _stats(_measure(port, method, path, body, headers, args.requests, keep_alive=True))
            fresh = _stats(_measure(port, method, path, body, headers, args.requests, keep_alive=False))
            results[name] = {"keep_alive": kept, "new_connection": fresh,
                             "ratio_p50": kept["p50"] / fresh["p50"]}
            for label, s in (("keep-alive", kept), ("new", fresh)):
                print(f"{name:52} {label:12} {s['p50']:8.2f} {s['p95']:8.2f} {s['max']:8.2f}")
            verdict = "✔" if kept["p50"] < TARGET_P50_MS else "✘"
            print(f"{'':52} {'ratio p50':12} {kept['p50'] / fresh['p50']:8.2f}   target keep-alive p50 < "
                  f"{TARGET_P50_MS:g} ms {verdict}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0 if all(r["keep_alive"]["p50"] < TARGET_P50_MS for r in results.values()) else 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
