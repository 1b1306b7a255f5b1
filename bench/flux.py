"""Flux benchmark: batch ingest (items/s acknowledged after commit) next to OTLP/HTTP on the same server,
and query latency over 1M distribution values next to numpy's floor. Results: docs/benchmarks.md.

    python bench/flux.py [--duration 10] [--concurrency 8] [--values 1000000] [--queries 30] [--query-timeout 120]

1. Ingest: a fresh `otelite serve` (temp database, Flux's rate limits configured off). For `--duration`
   seconds, `--concurrency` clients each keep one request in flight: Flux `POST /flux/api/v1/metrics/batch`
   with 500 metrics (gauges, counters, distributions and sets over 50 tag combinations, timestamps now),
   then, on the same server, OTLP/HTTP protobuf requests of 500 gauge points (50 series). Only 200
   answers count; a 503 is retried after its Retry-After. Printed: acknowledged items/s of each and the
   ratio Flux/OTLP.
2. Query: `--values` distribution observations over 24 h (10 tag values) are written into a fresh store
   through its writer (the rows Flux ingest builds), then a server on that file answers
   `GET .../query?aggregation=p95&interval=1h` (all values, 24 buckets) and the same with
   `tags[route]=...` and `group_by=tags.route`, `--queries` times each after one warm-up. Printed: p50/p95
   latency, and the floor: numpy's percentile of the same values per hour, in this process, with each
   warm p95's ratio to it. The first (cold) query reads every value from SQLite into the point cache; the
   server runs with `api.query_timeout` = `--query-timeout` (default 120 s, so that cold read is measured
   rather than stopped; printed beside it: whether it fits the default budget of 5 s).

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import admin_key, free_port, kv  # noqa: E402

HOUR = 3600 * 10**9
BATCH = 500
DEFAULT_QUERY_TIMEOUT_S = 5.0  # api.query_timeout's default (collector/config.py)


class Server:
    def __init__(self, directory: Path, db: Path | None = None, query_timeout_s: float = 5.0) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.db = db or directory / "flux.db"
        self.port = free_port()
        config = directory / "flux.yaml"
        config.write_text(yaml.safe_dump({"auth": {"rate_limits": {"flux_batch": {"enabled": False},
                                                                   "flux_query": {"enabled": False}}},
                                          "api": {"query_timeout": f"{query_timeout_s:g}s"}}))
        self.log = directory / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(self.db), "--config", str(config),
             "--grpc-endpoint", f"127.0.0.1:{free_port()}", "--http-endpoint", f"127.0.0.1:{self.port}"],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=directory)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.key = admin_key(self.log)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def flux_batch(i: int) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    kinds = ("gauge", "counter", "distribution", "set")
    metrics = []
    for j in range(BATCH):
        kind = kinds[j % 4]
        value = f"user-{(i * BATCH + j) % 977}" if kind == "set" else float((i * 7 + j * 13) % 1000) / 7
        metrics.append({"name": f"bench.{kind}", "type": kind, "value": value, "timestamp": stamp,
                        "tags": {"route": f"/r{j % 10}", "region": f"z{j % 5}", "unit": "ms"}})
    return json.dumps({"metrics": metrics}).encode()


def otlp_batch(i: int) -> bytes:
    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "bench"))
    m = rm.scope_metrics.add().metrics.add(name="bench.otlp.gauge")
    for j in range(BATCH):
        dp = m.gauge.data_points.add(time_unix_nano=now, as_double=float((i + j) % 1000))
        dp.attributes.extend([kv("route", f"/r{j % 10}"), kv("region", f"z{j % 5}")])
    return req.SerializeToString()


async def load(url: str, headers: dict, make, seconds: float, concurrency: int) -> tuple[int, int, float]:
    """Acknowledged items, 503s and the elapsed seconds (until the last answer) over `seconds`,
    `concurrency` requests in flight."""
    acked, refused = 0, 0
    bodies = [make(i) for i in range(64)]  # prepared once: the load generator stays cheap
    started = time.monotonic()
    deadline = started + seconds

    async def client(n: int) -> None:
        nonlocal acked, refused
        async with httpx.AsyncClient(timeout=60) as c:
            i = n
            while time.monotonic() < deadline:
                r = await c.post(url, content=bodies[i % len(bodies)], headers=headers)
                i += concurrency
                if r.status_code == 200:
                    acked += BATCH
                elif r.status_code == 503:
                    refused += 1
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                else:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return acked, refused, time.monotonic() - started


def ingest(args, tmp: Path) -> None:
    srv = Server(tmp / "ingest")
    try:
        auth = {"Authorization": f"Bearer {srv.key}", "Content-Type": "application/json"}
        flux_acked, flux_refused, flux_s = asyncio.run(load(srv.url + "/flux/api/v1/metrics/batch", auth,
                                                            flux_batch, args.duration, args.concurrency))
        otlp_acked, otlp_refused, otlp_s = asyncio.run(load(srv.url + "/v1/metrics",
                                                            {"Content-Type": "application/x-protobuf"},
                                                            otlp_batch, args.duration, args.concurrency))
    finally:
        srv.stop()
    flux_rate, otlp_rate = flux_acked / flux_s, otlp_acked / otlp_s
    print(f"ingest  flux batch: {flux_rate:10.0f} items/s acknowledged ({flux_refused} x 503)")
    print(f"ingest  otlp/http : {otlp_rate:10.0f} points/s acknowledged ({otlp_refused} x 503)")
    print(f"ingest  ratio flux/otlp: {flux_rate / otlp_rate:.2f}")


def query(args, tmp: Path) -> None:
    from otelite.api.flux.ingest import FluxMetric, metric_rows
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.store.store import Store
    from otelite.exporters.sqlite.config import SqliteExporterConfig

    directory = tmp / "query"
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "flux.db"
    end = time.time_ns() // HOUR * HOUR
    start = end - 24 * HOUR
    rng = np.random.default_rng(7)
    values = rng.lognormal(4, 1, args.values).round(3)
    times = np.sort(rng.integers(start // 10**9, end // 10**9, args.values)) * 10**9  # whole seconds
    routes = rng.integers(0, 10, args.values)
    store = Store(SqliteExporterConfig(path=str(db)), BatchProcessorConfig())
    store.start()
    t0 = time.perf_counter()
    chunk = 20_000
    for i in range(0, args.values, chunk):
        metrics = [FluxMetric("bench.latency", "distribution", float(v), int(t), {"route": f"/r{r}"})
                   for v, t, r in zip(values[i:i + chunk], times[i:i + chunk], routes[i:i + chunk])]
        store.writer.submit(metric_rows(1, metrics)).result(timeout=120)
    store.close()
    print(f"query   wrote {args.values} observations in {time.perf_counter() - t0:.1f} s (through the writer)")

    hour = (times - start) // HOUR
    t0 = time.perf_counter()
    floor = [np.percentile(values[hour == h], 95) for h in range(24)]
    floor_s = time.perf_counter() - t0
    print(f"query   floor (numpy percentile per hour, in process, no I/O): {floor_s * 1e3:.1f} ms")

    srv = Server(directory, db, args.query_timeout)
    try:
        headers = {"Authorization": f"Bearer {srv.key}"}
        window = {"from": _iso(start), "to": _iso(end - 1), "interval": "1h"}
        cases = {"p95, 24 buckets": {"aggregation": "p95", **window},
                 "p95, tags[route]": {"aggregation": "p95", "tags[route]": "/r3", **window},
                 "p50,p95,p99 group_by": {"aggregation": "p50,p95,p99", "group_by": "tags.route", **window}}
        with httpx.Client(timeout=120) as c:
            for name, params in cases.items():
                url = srv.url + "/flux/api/v1/metrics/bench.latency/query"
                t0 = time.perf_counter()
                first = c.get(url, params=params, headers=headers)
                cold = time.perf_counter() - t0
                assert first.status_code == 200, first.text
                if name.startswith("p95, 24"):
                    got = [row["value"] for row in first.json()["data"]["series"]]
                    assert np.allclose(got, floor, rtol=0, atol=1e-9), "p95 differs from numpy"
                samples = []
                for _ in range(args.queries):
                    t0 = time.perf_counter()
                    assert c.get(url, params=params, headers=headers).status_code == 200
                    samples.append(time.perf_counter() - t0)
                samples.sort()
                p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
                fits = "within" if cold <= DEFAULT_QUERY_TIMEOUT_S else "OVER"
                print(f"query   {name:22s}: cold {cold * 1e3:7.1f} ms ({fits} the default 5 s budget), "
                      f"warm p50 {statistics.median(samples) * 1e3:7.1f} ms, p95 {p95 * 1e3:7.1f} ms "
                      f"({p95 / floor_s:.1f}x the floor)")
    finally:
        srv.stop()


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 10**9))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--values", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--query-timeout", type=float, default=120.0, help="the query server's api.query_timeout, s")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="otelite-flux-bench-") as tmp:
        ingest(args, Path(tmp))
        query(args, Path(tmp))


if __name__ == "__main__":
    main()
