"""Trifle benchmark: ingest acknowledged after commit, a 30-day `1d` series and a 24-hour `1m` timeline.
How to run and what was measured: docs/benchmarks.md ("Trifle").

    python bench/trifle.py [--writes 20000] [--leaves 10] [--concurrency 16] [--runs 20] [--quick]

What it does:
1. Starts a fresh `otelite serve` (temporary database, free ports, metric retention off so the oldest day
   stays) and sends `--writes` `POST /api/v1/metrics` tracks of one key, each with `--leaves` numeric
   leaves (count, duration, country.*, channel.*, ...), their `at` spread evenly over the last 30 days, with
   `--concurrency` requests in flight on keep-alive connections. Each 201 is sent after the commit, so
   values/s is acknowledged values (leaves; the two system-key points per write are not counted).
   Baseline, measured in the same run: the very same point rows (`api/trifle/rows.py`) inserted by plain
   `executemany`, 1000 points per BEGIN IMMEDIATE … COMMIT, into a fresh database from `prepare_database`
   on a `connect_writer` connection (only BEGIN..COMMIT timed): the ratio is acknowledged / raw.
2. Times, `--runs` times after one cold run: `GET /api/v1/metrics` of the key over 30 days at `1d`, and
   `POST /api/v1/metrics/query` timeline of `count` over the last 24 hours at `1m` (1,441 buckets), plus
   an aggregate (sum, 1h, 30 days, 6 slices). Reported: cold, p50, p95, max (client wall time, HTTP
   included). Baseline in the same run: the same buckets read in this process straight from the file
   through `api/trifle/series.fetch` (the engine, its point cache warm) — the ratio is what HTTP, parsing
   and rendering add.

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchServer, admin_key  # noqa: E402

from otelite.api.trifle.request import parse_write  # noqa: E402
from otelite.api.trifle.rows import write_rows  # noqa: E402
from otelite.api.trifle.series import fetch  # noqa: E402
from otelite.collector.query.grid import CalendarGrid  # noqa: E402
from otelite.collector.store.db import connect_reader, connect_writer, prepare_database  # noqa: E402
from otelite.collector.store.points import PointCache  # noqa: E402
from otelite.collector.store.records import POINT_COLUMNS, RESOURCE_COLUMNS, SCOPE_COLUMNS, SERIES_COLUMNS  # noqa: E402
from otelite.collector.times import NS, UTC, parse_iso  # noqa: E402

KEY = "bench::signup"
DAY_NS = 86_400 * NS
COUNTRIES = ("US", "UK", "DE", "FR", "JP", "BR", "IN", "CA")
CHANNELS = ("organic", "paid", "referral", "email")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_bodies(writes: int, leaves: int, end_ns: int) -> list[bytes]:
    """`writes` track bodies of `leaves` leaves, `at` spread evenly over the 30 days before `end_ns`."""
    rng = np.random.default_rng(12)
    step = 30 * DAY_NS // writes
    start = end_ns - step * writes
    out = []
    for i in range(writes):
        values: dict = {"count": 1, "duration": round(float(rng.lognormal(-1, 0.5)), 4)}
        extra = leaves - 2
        countries = COUNTRIES[:max(0, min(len(COUNTRIES), extra - extra // 2))]
        channels = CHANNELS[:max(0, extra - len(countries))]
        if countries:
            values["country"] = {c: int(rng.integers(0, 3)) for c in countries}
        if channels:
            values["channel"] = {c: int(rng.integers(0, 2)) for c in channels}
        n = 2 + len(countries) + len(channels)
        for j in range(leaves - n):
            values[f"extra{j}"] = j
        out.append(json.dumps({"key": KEY, "at": _iso(start + i * step), "values": values}).encode())
    return out


async def _send_all(url: str, token: str, bodies: list[bytes], concurrency: int) -> tuple[float, int, int]:
    """Send every body; a 503 is retried after its Retry-After, a write whose keep-alive connection was
    closed under it (the server's idle timeout racing a busy client) is sent again on a new one. Returns
    (seconds, 503s seen, resends). A resend of a write that had been committed would show as more values
    stored than acknowledged, which main() checks."""
    queue = list(reversed(bodies))
    retried = resent = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retried, resent
        while queue:
            body = queue.pop()
            while True:
                try:
                    r = await client.post(url, content=body, headers=headers)
                except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                    resent += 1
                    continue
                if r.status_code == 201:
                    break
                if r.status_code != 503:
                    raise RuntimeError(f"write failed: {r.status_code} {r.text[:200]}")
                retried += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, retried, resent


def raw_ceiling(bodies: list[bytes], workdir: Path) -> float:
    """Seconds to insert the same point rows by plain executemany, 1000 points per transaction."""
    path = str(workdir / "raw.db")
    prepare_database(path)
    conn = connect_writer(path, synchronous="NORMAL", cache_mib=128, busy_timeout=5.0)
    batches = [write_rows(1, parse_write(json.loads(b))) for b in bodies]

    def insert(table: str, columns: tuple) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    first = batches[0]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(insert("resources", RESOURCE_COLUMNS), list(first.resources.values()))
    conn.executemany(insert("scopes", SCOPE_COLUMNS), list(first.scopes.values()))
    conn.executemany(insert("metric_series", SERIES_COLUMNS), [r for b in batches for r in b.series.values()])
    conn.execute("COMMIT")
    points = [p for b in batches for p in b.points]
    sql = insert("metric_points", POINT_COLUMNS).replace("INSERT OR IGNORE", "INSERT")
    elapsed = 0.0
    for i in range(0, len(points), 1000):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, points[i:i + 1000])
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - t0
    conn.close()
    return elapsed


def _stats(samples: list[float]) -> dict:
    warm = np.array(samples[1:])
    return {"cold_ms": round(samples[0], 1), "p50_ms": round(float(np.percentile(warm, 50)), 1),
            "p95_ms": round(float(np.percentile(warm, 95)), 1), "max_ms": round(float(warm.max()), 1)}


def time_http(client: httpx.Client, method: str, url: str, runs: int, **kw) -> tuple[dict, dict]:
    samples = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        r = client.request(method, url, **kw)
        samples.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return _stats(samples), r.json()["data"]


def time_in_process(db: Path, runs: int, from_ns: int, to_ns: int, grid) -> dict:
    conn = connect_reader(str(db))
    cache = PointCache()
    samples = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        fetch(conn, cache, 1, KEY, from_ns, to_ns, grid)
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return _stats(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=20_000)
    ap.add_argument("--leaves", type=int, default=10, help="numeric leaves per write")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3000 writes, 5 runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.writes, args.runs = 3000, 5
    load_at_start = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="otelite-trifle-bench-"))
    server = BenchServer(workdir, config_yaml="exporters:\n  sqlite:\n    retention:\n      metrics: 0\n")
    try:
        end_ns = time.time_ns() // (60 * NS) * 60 * NS
        bodies = build_bodies(args.writes, args.leaves, end_ns)
        server.start()
        token = admin_key(server.log_path)
        seconds, retried, resent = asyncio.run(_send_all(server.url + "/api/v1/metrics", token, bodies,
                                                         args.concurrency))
        values = args.writes * args.leaves
        raw_s = raw_ceiling(bodies, workdir)
        stored = sqlite3.connect(server.db).execute(
            "SELECT count(*) FROM metric_points p JOIN metric_series s ON s.id = p.series_id WHERE s.name = ?",
            (KEY,)).fetchone()[0]
        ingest = {"writes": args.writes, "values": values, "seconds": round(seconds, 2),
                  "writes_per_s": round(args.writes / seconds), "values_per_s": round(values / seconds),
                  "raw_values_per_s": round(values / raw_s), "ratio_to_raw": round(raw_s / seconds, 3),
                  "retried_503": retried, "resent_after_connection_reset": resent, "stored_values": stored}
        print(f"ingest: {args.writes:,} writes × {args.leaves} values in {seconds:.1f} s: "
              f"{values / seconds:,.0f} values/s acknowledged after commit ({args.writes / seconds:,.0f} writes/s, "
              f"{retried} 503s retried, {resent} resent on a new connection); raw executemany {values / raw_s:,.0f} values/s; ratio "
              f"{raw_s / seconds:.3f}; stored {stored:,} of {values:,}")
        if stored != values:
            print("MISMATCH: stored values differ from acknowledged ones")
            return 1

        day_from, day_to = _iso(end_ns - 30 * DAY_NS), _iso(end_ns)
        tl_from, tl_to = _iso(end_ns - DAY_NS), _iso(end_ns)
        cases = [
            ("GET 30 days at 1d", "GET", "/api/v1/metrics",
             {"params": {"key": KEY, "from": day_from, "to": day_to, "granularity": "1d"}},
             (day_from, day_to, CalendarGrid(1, "d"))),
            ("timeline 24 h at 1m", "POST", "/api/v1/metrics/query",
             {"json": {"key": KEY, "from": tl_from, "to": tl_to, "granularity": "1m", "mode": "timeline",
                       "value_path": "count"}},
             (tl_from, tl_to, CalendarGrid(1, "m"))),
            ("aggregate 30 days at 1h", "POST", "/api/v1/metrics/query",
             {"json": {"key": KEY, "from": day_from, "to": day_to, "granularity": "1h", "mode": "aggregate",
                       "value_path": "count", "aggregator": "sum", "slices": 6}},
             (day_from, day_to, CalendarGrid(1, "h"))),
        ]
        results = {}
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
            for label, method, path, kw, (f, t, grid) in cases:
                http, data = time_http(client, method, server.url + path, args.runs, **kw)
                local = time_in_process(server.db, args.runs, parse_iso(f), parse_iso(t), grid)
                buckets = len(data["at"]) if "at" in data else len(data.get("table", {}).get("rows", []))
                results[label] = {"http": http, "in_process": local, "buckets": buckets,
                                  "ratio_p95": round(http["p95_ms"] / max(local["p95_ms"], 0.01), 2)}
        print(f"\n{'case':26} {'cold':>9} {'p50':>9} {'p95':>9} {'max':>9}   in-process p95   ratio  buckets")
        for label, r in results.items():
            h, loc = r["http"], r["in_process"]
            print(f"{label:26} {h['cold_ms']:8.1f}ms {h['p50_ms']:8.1f}ms {h['p95_ms']:8.1f}ms {h['max_ms']:8.1f}ms"
                  f"   {loc['p95_ms']:10.1f}ms   {r['ratio_p95']:5.2f}  {r['buckets']}")
        info = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version, "load_average_at_start": load_at_start,
                "load_average_at_end": os.getloadavg(), "ingest": ingest,
                "queries": results}
        if args.json:
            args.json.write_text(json.dumps(info, indent=2))
        return 0
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
