"""Metrics query benchmark: latency of POST metrics/query and metrics/characterize on a live server.
How to run and what was measured: docs/benchmarks.md ("Metrics queries").

    python bench/query_metrics.py [--series 1000] [--points 333] [--runs 20] [--quick] [--only characterize]

What it does:
1. Starts a fresh `otelite serve` (temp database, free ports) and sends, over OTLP/HTTP protobuf,
   `--series` series of each of a cumulative monotonic counter, a gauge and a cumulative explicit
   histogram (10 bounds), `--points` points per series spread evenly over the last 24 hours
   (1,000 × 3 × 333 ≈ 1,000,000 points). Labels: route (10 values), status (5) and instance (20), so
   every series has a distinct (route, status, instance) (beyond 1,000 series, plus `shard`: 1,000
   series per value). In the last 3 hours the gauge of route /r3 triples, so characterize has something
   to find. Every request is acknowledged after commit.
2. Times, `--runs` times each after one cold run (the first query of a metric loads its points into
   the server's cache; later ones read only newer rows):
   - characterize: gauge, anomaly = last 3 h, baseline = the 21 h before, automatic candidate keys;
   - query: gauge, avg, 24 h, automatic interval, groupBy route;
   - rate: counter, rate, 24 h, automatic interval;
   - histogram_quantile: histogram, q 0.95, 24 h, automatic interval.
   Reported: the cold run, and p50 / p95 / max of the warm runs (client-side wall time, HTTP included).
   `--only characterize` sends only the gauge and times only characterize (for 10,000 series, whose
   three metrics would take most of the run to ingest).

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchServer  # noqa: E402

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402

TARGET_QUERY_P95_MS, TARGET_CHARACTERIZE_P95_MS = 250, 1000
BOUNDS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
DAY_NS = 86_400 * 10**9



def _labels(i: int, series: int) -> dict[str, str]:
    """route × status × instance give 1,000 distinct series; beyond that a `shard` label keeps them apart."""
    labels = {"route": f"/r{i % 10}", "status": str(200 + (i // 10) % 5), "instance": f"i{(i // 50) % 20:02d}"}
    if series > 1000:
        labels["shard"] = f"s{i // 1000:02d}"
    return labels


def build_requests(series: int, points: int, end_ns: int, gauge_only: bool = False) -> list[bytes]:
    """One request per time step: every series of the three metrics (or of the gauge only) at that step."""
    rng = np.random.default_rng(7)
    step = DAY_NS // points
    start = end_ns - step * points
    attrs = [[common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=v)) for key, v in _labels(i, series).items()]
             for i in range(series)]
    anomaly_from = end_ns - 3 * 3600 * 10**9
    counter = np.zeros(series, np.int64)
    hist = np.zeros((series, len(BOUNDS) + 1), np.int64)
    out = []
    for k in range(points):
        t = start + k * step
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        kv = rm.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", "bench"
        sm = rm.scope_metrics.add()
        g = sm.metrics.add(name="bench.load")
        if not gauge_only:
            c = sm.metrics.add(name="bench.requests")
            c.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
            c.sum.is_monotonic = True
            h = sm.metrics.add(name="bench.latency")
            h.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        counter += rng.integers(0, 20, series)
        hist += rng.integers(0, 5, (series, len(BOUNDS) + 1))
        gauge = 50 + 10 * rng.standard_normal(series)
        if t >= anomaly_from:
            gauge[[i for i in range(series) if i % 10 == 3]] *= 3
        for i in range(series):
            dp = g.gauge.data_points.add(time_unix_nano=t, as_double=float(gauge[i]))
            dp.attributes.extend(attrs[i])
            if gauge_only:
                continue
            dp = c.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t, as_int=int(counter[i]))
            dp.attributes.extend(attrs[i])
            counts = hist[i].tolist()
            dp = h.histogram.data_points.add(start_time_unix_nano=start, time_unix_nano=t, count=sum(counts),
                                             sum=float(sum(counts) * 40), explicit_bounds=BOUNDS, bucket_counts=counts)
            dp.attributes.extend(attrs[i])
        out.append(req.SerializeToString())
    return out


def ingest(server: BenchServer, requests: list[bytes], concurrency: int = 4) -> float:
    t0 = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        def send(body: bytes) -> None:
            while True:
                r = client.post(server.url + "/v1/metrics", content=body,
                                headers={"Content-Type": "application/x-protobuf"})
                if r.status_code == 200:
                    return
                if r.status_code != 503:
                    raise RuntimeError(f"ingest failed: {r.status_code} {r.text[:200]}")
                time.sleep(0.05)
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, requests))
    return time.perf_counter() - t0


def timed(client: httpx.Client, url: str, body: dict, runs: int) -> dict:
    samples = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        r = client.post(url, json=body)
        samples.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    warm = np.array(samples[1:])
    return {"cold_ms": round(samples[0], 1), "p50_ms": round(float(np.percentile(warm, 50)), 1),
            "p95_ms": round(float(np.percentile(warm, 95)), 1), "max_ms": round(float(warm.max()), 1),
            "runs": runs, "response": r.json()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=1000, help="series per metric")
    ap.add_argument("--points", type=int, default=333, help="points per series over 24 h")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="100 series, 100 points, 5 runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--only", choices=["characterize"], help="send only the gauge and time only characterize")
    ap.add_argument("--query-timeout", type=float, default=600,
                    help="the server's api.query_timeout in seconds: the cold run loads every point of the metric "
                         "(3.3 million at 10,000 series), longer than the default 5 s budget on a busy machine")
    args = ap.parse_args(argv)
    if args.quick:
        args.series, args.points, args.runs = 100, 100, 5
    workdir = Path(tempfile.mkdtemp(prefix="otelite-qbench-"))
    server = BenchServer(workdir, config_yaml=None if args.query_timeout is None
                         else f"api:\n  query_timeout: {args.query_timeout:g}s\n")
    try:
        end_ns = time.time_ns() - 60 * 10**9
        t0 = time.perf_counter()
        gauge_only = args.only == "characterize"
        requests = build_requests(args.series, args.points, end_ns, gauge_only)
        build_s = time.perf_counter() - t0
        server.start()
        ingest_s = ingest(server, requests)
        total = args.series * args.points * (1 if gauge_only else 3)
        print(f"built {len(requests)} requests in {build_s:.1f} s; ingested {total:,} points in {ingest_s:.1f} s "
              f"({total / ingest_s:,.0f} points/s)")
        base = f"{server.url}/api/projects/1/metrics"
        headers = {"Authorization": f"Bearer {server.admin_key()}"}
        cases = [  # characterize first, so its cold run loads the gauge itself
            ("characterize (auto keys)", "characterize", {"query": {
                "metricName": "bench.load", "anomalyFrom": "-3h", "baselineFrom": "-24h"}}),
            ("query (avg, groupBy route)", "query", {"query": {
                "metricName": "bench.load", "aggregation": "avg", "dateFrom": "-24h",
                "groupBy": [{"key": "route"}]}}),
            ("rate", "query", {"query": {"metricName": "bench.requests", "aggregation": "rate", "dateFrom": "-24h"}}),
            ("histogram_quantile 0.95", "query", {"query": {
                "metricName": "bench.latency", "aggregation": "histogram_quantile", "quantile": 0.95,
                "dateFrom": "-24h"}}),
        ]
        if gauge_only:
            cases = cases[:1]
        results = {}
        with httpx.Client(timeout=120, headers=headers) as client:
            for label, route, body in cases:
                res = timed(client, f"{base}/{route}", body, args.runs)
                resp = res.pop("response")
                if route == "query":
                    res["series"] = len(resp["results"])
                    res["buckets"] = len(resp["results"][0]["points"])
                else:
                    res["interval"] = resp["interval"]
                    res["direction"] = resp["direction"]
                    res["top_mover"] = f"{resp['top_movers'][0]['key']}={resp['top_movers'][0]['label']}" \
                        if resp["top_movers"] else None
                results[label] = res
        print(f"\n{'case':30} {'cold':>9} {'p50':>9} {'p95':>9} {'max':>9}  target p95")
        for label, r in results.items():
            target = TARGET_CHARACTERIZE_P95_MS if label.startswith("characterize") else TARGET_QUERY_P95_MS
            verdict = "ok" if r["p95_ms"] < target else "MISSED"
            extra = {k: v for k, v in r.items() if k not in ("cold_ms", "p50_ms", "p95_ms", "max_ms", "runs")}
            print(f"{label:30} {r['cold_ms']:8.1f}ms {r['p50_ms']:8.1f}ms {r['p95_ms']:8.1f}ms {r['max_ms']:8.1f}ms"
                  f"  < {target} ms {verdict}  {extra}")
        info = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "series_per_metric": args.series, "points_per_series": args.points, "points": total,
                "ingest_s": round(ingest_s, 1), "results": results}
        if args.json:
            args.json.write_text(json.dumps(info, indent=2))
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
