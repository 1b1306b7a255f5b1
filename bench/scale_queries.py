"""Query latency on a large database (issue 16's scale benchmark): the tracing and metrics benchmarks' main
cases against a store filled by bench/prefill.py, through HTTP on a live `otelite serve`.

    python bench/prefill.py --db big.db --spans 10000000 --points 50000000
    python bench/scale_queries.py --db big.db [--server-root ../otelite-old] [--repeat 30] [--json out.json]

What it does, in order:
1. Creates a read key with the CLI (`otelite keys create`) of the checkout that serves.
2. Starts `otelite serve` on the database (from `--server-root` when given: an older commit, for ratios).
3. Metrics, first: each case's first call after start is the cold figure (nothing of the metric is in
   the server's memory), then `--repeat` warm calls (median, p95): a 24 h `histogram_quantile` and a 24 h
   `rate` over bench/ingest.py's 8,000 series (PostHog's metrics API).
4. Tracing: trace by id (random traces of the prefill: 10 spans each), the span query of the last hour
   with an attribute filter (one that 1 in 6 server spans meet, one that none does), and root spans of
   one service; sparklines of the last hour, day and week (all spans, one service, root spans, and
   error spans, a filter that needs the span rows), and the service picker (PostHog's tracing API).
5. The Prometheus scrape (every live series), `--repeat` times.

Windows end at the newest span / point of the file (the last hour, the last 24 hours of its data), not
at the clock, so a file filled yesterday is measured over the same data as on the day it was filled.

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import Server, _importable_as_otelite, machine_info  # noqa: E402

# The targets, and the tracing benchmark's for the sparkline and the pickers (bench/query_tracing.py).
TARGETS_MS = {"trace": 20, "span query": 50, "metrics": 250, "sparkline": 200, "pickers": 20}


def create_key(db: Path, server_root: Path | None, workdir: Path) -> str:
    env = dict(os.environ)
    if server_root is not None:
        env["PYTHONPATH"] = str(_importable_as_otelite(server_root, workdir))
    out = subprocess.run([sys.executable, "-m", "otelite.collector.cli", "keys", "create", "--db", str(db),
                          "--project", "1", "--scope", "tracing:read", "--scope", "metrics:read", "--name", "bench"],
                         capture_output=True, text=True, env=env, cwd=server_root or ROOT, check=True)
    return re.findall(r"(otl_[A-Za-z0-9_-]+)", out.stdout + out.stderr)[0]


def newest_data(db: Path) -> tuple[int, int]:
    """(newest span start, newest metric point) in ns: the windows end there, not at the clock, so a
    store written hours or days ago is measured over its busiest data however long ago it was filled."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        def newest(sql: str) -> int:
            try:
                return conn.execute(sql).fetchone()[0] or 0
            except sqlite3.OperationalError:  # the layout before issue 16 has no metric_chunks
                return 0
        span = newest("SELECT max(start_ns) FROM spans") or time.time_ns()
        point = max(newest("SELECT max(t_max) FROM metric_chunks"),
                    newest("SELECT max(time_ns) FROM metric_points")) or time.time_ns()
        return span, point
    finally:
        conn.close()


def iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"


def sample_trace_ids(db: Path, n: int) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        hi = conn.execute("SELECT max(id) FROM spans").fetchone()[0] or 0
        rng = random.Random(16)
        ids = []
        while len(ids) < n and hi:
            row = conn.execute("SELECT hex(trace_id) FROM spans WHERE id >= ? LIMIT 1", (rng.randrange(hi),)).fetchone()
            if row:
                ids.append(row[0].lower())
        return ids
    finally:
        conn.close()


def timed(client: httpx.Client, calls: list[tuple[str, str, dict]]) -> dict:
    """The first call alone (cold), then the rest: median and p95 in ms."""
    samples = []
    for method, url, kw in calls:
        t0 = time.perf_counter()
        r = client.request(method, url, **kw)
        samples.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:300]}")
    warm = sorted(samples[1:]) or samples
    return {"cold_ms": round(samples[0], 1), "p50_ms": round(warm[len(warm) // 2], 1),
            "p95_ms": round(warm[min(len(warm) - 1, round(0.95 * (len(warm) - 1)))], 1), "calls": len(samples)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--server-root", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--query-timeout", type=float, default=120.0, help="the servers' api.query_timeout (s)")
    ap.add_argument("--metric-expiration", default="7d",
                    help="the scrape's exporters.prometheus.metric_expiration (default 7d: every prefilled series)")
    args = ap.parse_args(argv)
    info = machine_info()
    print(f"machine: {info['nproc']} CPUs, load average {info['load_avg_1m']:.2f}; database "
          f"{args.db.stat().st_size / 2**20:,.0f} MiB", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="otelite-scaleq-"))
    key = create_key(args.db, args.server_root, workdir)
    trace_ids = sample_trace_ids(args.db, args.repeat + 1)
    # The latency is what is measured: the query budget (api.query_timeout, 5 s) would answer 503 instead.
    config = workdir / "budget.yaml"
    # The prefill's newest points are minutes old by now: without a longer metric_expiration the scrape
    # would expose no series at all.
    config.write_text(f"api:\n  query_timeout: {args.query_timeout}s\n"
                      f"exporters:\n  sqlite: {{}}\n  prometheus:\n    metric_expiration: {args.metric_expiration}\n")
    server = Server(workdir, "scale", config, args.db, args.server_root)
    server.start(timeout=120)
    results: dict[str, dict] = {}
    try:
        url = f"http://127.0.0.1:{server.http_port}"
        metrics, tracing = f"{url}/api/projects/1/metrics", f"{url}/api/projects/1/tracing/spans"
        span_end, point_end = newest_data(args.db)
        hour = {"date_from": iso(span_end - 3600 * 10**9), "date_to": iso(span_end)}
        span_day = {"date_from": iso(span_end - 86400 * 10**9), "date_to": iso(span_end)}
        span_week = {"date_from": iso(span_end - 7 * 86400 * 10**9), "date_to": iso(span_end)}
        day = {"dateFrom": iso(point_end - 86400 * 10**9), "dateTo": iso(point_end)}
        # bench/ingest.py's server spans carry `http.request.method` (1 in 6 is POST); `http.method`, the
        # tracing benchmark's key, is on none of them: a filter no span meets (answered from the rollups).
        attr = {"key": "http.request.method", "type": "span_attribute", "operator": "exact", "value": ["POST"]}
        absent = {"key": "http.method", "type": "span_attribute", "operator": "exact", "value": ["POST"]}
        cases = {
            "metrics: histogram_quantile 0.95, 24 h": ("metrics", "POST", f"{metrics}/query", {"json": {"query": {
                "metricName": "http.server.request.duration", "aggregation": "histogram_quantile",
                "quantile": 0.95, **day}}}),
            "metrics: rate, 24 h": ("metrics", "POST", f"{metrics}/query", {"json": {"query": {
                "metricName": "http.server.request.count", "aggregation": "rate", **day}}}),
            "span query: 100 latest root spans, 1 attribute filter, 1 h": ("span query", "POST", f"{tracing}/query", {
                "json": {"query": {"dateRange": hour, "filterGroup": {"type": "AND", "values": [attr]},
                                   "limit": 100}}}),
            "span query: 1 attribute filter no span meets, 1 h": ("span query", "POST", f"{tracing}/query", {
                "json": {"query": {"dateRange": hour, "filterGroup": {"type": "AND", "values": [absent]},
                                   "limit": 100}}}),
            "span query: root spans of one service, 1 h": ("span query", "POST", f"{tracing}/query", {
                "json": {"query": {"dateRange": hour, "serviceNames": ["checkout"]}}}),
            "sparkline: all spans, 1 h": ("sparkline", "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": hour}}}),
            "sparkline: all spans, 24 h": ("sparkline", "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": span_day}}}),
            "sparkline: all spans, 7 d (not a target)": (None, "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": span_week}}}),
            "sparkline: one service, 24 h": ("sparkline", "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": span_day, "serviceNames": ["checkout"]}}}),
            "sparkline: root spans (distinct traces), 24 h": ("sparkline", "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": span_day, "rootSpans": True}}}),
            "sparkline: errors only, 1 h (not a target)": (None, "POST", f"{tracing}/sparkline", {
                "json": {"query": {"dateRange": hour, "statusCodes": [2]}}}),
            "service-names, 1 h": ("pickers", "GET", f"{tracing}/service-names", {
                "params": {"dateRange": json.dumps(hour)}}),
            "service-names, 24 h, search": ("pickers", "GET", f"{tracing}/service-names", {
                "params": {"dateRange": json.dumps(span_day), "search": "e"}}),
        }
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
            for label, (target, method, u, kw) in cases.items():
                results[label] = timed(client, [(method, u, kw)] * (args.repeat + 1)) | {"target": target}
            results["trace by id (10 spans)"] = timed(
                client, [("POST", f"{tracing}/trace/{t}", {"json": {}}) for t in trace_ids]) | {"target": "trace"}
            results["Prometheus scrape (every live series)"] = timed(
                client, [("GET", f"{url}/metrics", {})] * (args.repeat + 1)) | {"target": None}
    finally:
        server.stop()
    print(f"\n{'case':62} {'cold':>9} {'p50':>9} {'p95':>9}  target (metrics: cold and p95; others: p95)")
    for label, r in results.items():
        target = TARGETS_MS.get(r["target"])
        # Issue 16: the metrics target holds cold (the first query after start) and warm; the others are p95s.
        worst = max(r["p95_ms"], r["cold_ms"]) if r["target"] == "metrics" else r["p95_ms"]
        verdict = "" if target is None else f"< {target} ms {'ok' if worst < target else 'MISSED'}"
        print(f"{label:62} {r['cold_ms']:8.1f}ms {r['p50_ms']:8.1f}ms {r['p95_ms']:8.1f}ms  {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "db_bytes": args.db.stat().st_size, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
