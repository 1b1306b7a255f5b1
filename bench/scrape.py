"""Scrape benchmark: GET /metrics of a live `otelite serve` holding 10,000 live series, against
prometheus-client's `generate_latest` rendering the same series in the same run. Results and the machine:
docs/benchmarks.md ("Scrape").

    python bench/scrape.py [--series 10000] [--scrapes 40] [--changed 8] [--history 0] [--json]

What it does, in order:
1. Starts `otelite serve` on a fresh database (free loopback ports, `auth: {mode: none}`).
2. Sends 10,000 series over OTLP/HTTP protobuf, each with 5 point attributes: 35% cumulative counters,
   10% delta counters (sent as several deltas each), 25% gauges, 20% explicit histograms (10 bounds), 5%
   exponential histograms, 5% summaries; 20 services (job/instance), so `target_info` has 20 samples.
   `--history N` sends every series N more times first, to show the scrape does not read history.
3. Times `--scrapes` scrapes over HTTP (client wall time, body fully read; and the server's CPU time per
   scrape from /proc) for text 0.0.4, OpenMetrics and gzip (as Prometheus asks), plus the same work
   in-process (store read + render, no HTTP). Then `--changed` more text scrapes, each right after every
   series received a new point: the worst case, where nothing translated for the last scrape is reusable.
4. Baseline: the scraped text parsed once into prometheus-client metric families, served by a registry
   collector, and rendered with `prometheus_client.generate_latest` the same number of times.

Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/scrape.py` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from bench.common import free_port, kv  # noqa: E402

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client import generate_latest as client_generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from otelite.collector.store.db import connect_reader  # noqa: E402
from otelite.exporters.prometheus.collect import StoreCollector  # noqa: E402

CUMULATIVE, DELTA = 2, 1
MIX = [("counter", 0.35), ("delta_counter", 0.10), ("gauge", 0.25), ("histogram", 0.20),
       ("exponential_histogram", 0.05), ("summary", 0.05)]
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
SERVICES = 20
DELTAS_PER_SERIES = 3


def _attrs(i: int) -> list:
    return [kv("http.route", f"/api/v{i % 7}/item/{i % 53}"), kv("http.method", ("GET", "POST", "PUT")[i % 3]),
            kv("http.status_code", str(200 + i % 5)), kv("cloud.region", f"region-{i % 4}"),
            kv("series", str(i))]


def build_requests(n: int, now_ns: int, rng: random.Random, rounds: int = 1) -> list[bytes]:
    """OTLP requests holding `n` series (1000 points per request); `rounds` sets of points per series."""
    kinds: list[str] = []
    for kind, share in MIX:
        kinds += [kind] * int(round(n * share))
    kinds = (kinds + ["gauge"] * n)[:n]
    out = []
    for r in range(rounds):
        t = now_ns - (rounds - r) * 1_000_000  # each round a millisecond newer; the last at about now
        for start in range(0, n, 1000):
            per_service: dict[int, dict[str, metrics_pb2.Metric]] = {}
            for i in range(start, min(start + 1000, n)):
                kind = kinds[i]
                svc = i % SERVICES
                metrics = per_service.setdefault(svc, {})
                name = f"bench.{kind}.m{i % 50}"
                m = metrics.get(name)
                if m is None:
                    m = metrics[name] = _metric(name, kind)
                _add_point(m, kind, i, t, rng)
            req = ExportMetricsServiceRequest()
            for svc, metrics in per_service.items():
                rm = req.resource_metrics.add()
                rm.resource.attributes.extend([kv("service.name", f"svc-{svc}"), kv("service.instance.id", f"pod-{svc}"),
                                               kv("host.name", f"node-{svc % 5}")])
                sm = rm.scope_metrics.add()
                sm.scope.name = "bench"
                sm.metrics.extend(metrics.values())
            out.append(req.SerializeToString())
    return out


def _metric(name: str, kind: str) -> metrics_pb2.Metric:
    m = metrics_pb2.Metric(name=name, description=f"A {kind.replace('_', ' ')}.")
    if kind in ("counter", "delta_counter"):
        m.sum.aggregation_temporality = DELTA if kind == "delta_counter" else CUMULATIVE
        m.sum.is_monotonic = True
    elif kind == "gauge":
        m.gauge.SetInParent()
    elif kind == "histogram":
        m.unit = "s"
        m.histogram.aggregation_temporality = CUMULATIVE
    elif kind == "exponential_histogram":
        m.unit = "By"
        m.exponential_histogram.aggregation_temporality = CUMULATIVE
    else:
        m.unit = "s"
        m.summary.SetInParent()
    return m


def _add_point(m: metrics_pb2.Metric, kind: str, i: int, t: int, rng: random.Random) -> None:
    start = t - 3_600_000_000_000
    if kind in ("counter", "delta_counter"):
        for d in range(DELTAS_PER_SERIES if kind == "delta_counter" else 1):
            dp = m.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=t - d, as_int=rng.randrange(1000))
            dp.attributes.extend(_attrs(i))
    elif kind == "gauge":
        dp = m.gauge.data_points.add(time_unix_nano=t, as_double=rng.random() * 100)
        dp.attributes.extend(_attrs(i))
    elif kind == "histogram":
        counts = [rng.randrange(50) for _ in range(len(BOUNDS) + 1)]
        dp = m.histogram.data_points.add(start_time_unix_nano=start, time_unix_nano=t, count=sum(counts),
                                         sum=rng.random() * 100, explicit_bounds=BOUNDS, bucket_counts=counts)
        dp.attributes.extend(_attrs(i))
    elif kind == "exponential_histogram":
        counts = [rng.randrange(20) for _ in range(20)]
        dp = m.exponential_histogram.data_points.add(start_time_unix_nano=start, time_unix_nano=t, scale=2,
                                                     count=sum(counts), sum=rng.random() * 1000)
        dp.positive.offset = 10
        dp.positive.bucket_counts.extend(counts)
        dp.attributes.extend(_attrs(i))
    else:
        dp = m.summary.data_points.add(time_unix_nano=t, count=100, sum=rng.random() * 10)
        for q in (0.5, 0.9, 0.99):
            dp.quantile_values.add(quantile=q, value=q * rng.random())
        dp.attributes.extend(_attrs(i))



class Server:
    def __init__(self, workdir: Path) -> None:
        self.db = workdir / "scrape.db"
        self.port, self.grpc_port = free_port(), free_port()
        self.log = workdir / "scrape.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cfg = self.db.with_suffix(".yaml")
        cfg.write_text("auth: {mode: none}\n")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "otelite.collector.cli", "serve", "--config", str(cfg), "--db", str(self.db),
                 "--grpc-endpoint", f"127.0.0.1:{self.grpc_port}", "--http-endpoint", f"127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("otelite did not start:\n" + self.log.read_text())

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
                ) -> tuple[int, bytes, dict]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            c.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)


def _stats(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
            "min_ms": round(ms[0], 1)}


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time(fn, n: int) -> list[float]:
    fn()  # warm-up (the first scrape also translates every series once)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class _Families:
    """A prometheus-client collector serving pre-built metric families (the rendering baseline)."""

    def __init__(self, families: list) -> None:
        self._families = families

    def collect(self):
        return iter(self._families)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()[0],
            "sqlite": sqlite3.sqlite_version, "prometheus_client": version("prometheus-client")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--scrapes", type=int, default=40)
    ap.add_argument("--changed", type=int, default=8, help="scrapes right after every series changed")
    ap.add_argument("--history", type=int, default=0, help="extra points per series sent before the last")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="otelite-scrape-") as tmp:
        server = Server(Path(tmp))
        server.start()
        try:
            t0 = time.perf_counter()
            for body in build_requests(args.series, time.time_ns(), rng, rounds=1 + args.history):
                status, resp, _ = server.request("POST", "/v1/metrics", body, {"Content-Type": "application/x-protobuf"})
                if status != 200:
                    raise RuntimeError(f"ingest failed: {status} {resp[:200]!r}")
            load_s = time.perf_counter() - t0

            results: dict = {"machine": machine_info(), "series": args.series, "scrapes": args.scrapes,
                             "history_points_per_series": args.history, "load_seconds": round(load_s, 1)}
            variants = {"text": {}, "openmetrics": {"Accept": "application/openmetrics-text; version=1.0.0"},
                        "text+gzip": {"Accept-Encoding": "gzip"}}
            bodies = {}
            for name, headers in variants.items():
                def scrape(headers=headers, name=name):
                    status, body, _ = server.request("GET", "/metrics", headers=headers)
                    assert status == 200, status
                    bodies[name] = body
                cpu0 = _cpu_seconds(server.proc.pid)
                results[f"http_{name}"] = _stats(_time(scrape, args.scrapes))
                results[f"http_{name}"]["server_cpu_ms"] = round(
                    (_cpu_seconds(server.proc.pid) - cpu0) * 1000 / (args.scrapes + 1), 1)
            results["points_rows"] = sqlite3.connect(server.db).execute("SELECT count(*) FROM metric_points").fetchone()[0]
            changed, changed_cpu = [], 0.0
            for _ in range(args.changed):
                for body in build_requests(args.series, time.time_ns(), rng):
                    assert server.request("POST", "/v1/metrics", body, {"Content-Type": "application/x-protobuf"})[0] == 200
                time.sleep(0.5)  # let the server settle after the load (its CPU time is counted per scrape)
                cpu0 = _cpu_seconds(server.proc.pid)
                t0 = time.perf_counter()
                status, _, _ = server.request("GET", "/metrics")
                changed.append(time.perf_counter() - t0)
                changed_cpu += _cpu_seconds(server.proc.pid) - cpu0
                assert status == 200
            if changed:
                results["http_text_all_changed"] = _stats(changed)
                results["http_text_all_changed"]["server_cpu_ms"] = round(changed_cpu * 1000 / len(changed), 1)
            text = bodies["text"].decode()
            results["body_bytes"] = {k: len(v) for k, v in bodies.items()}
            results["samples"] = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))

            # In-process: the same read + render, without HTTP (one reader connection, as a worker thread has).
            collector = StoreCollector(300.0)
            conn = connect_reader(str(server.db))
            results["inprocess_text"] = _stats(_time(lambda: collector.scrape(conn, 1), args.scrapes))
            results["inprocess_read_only"] = _stats(_time(lambda: collector.collect(conn, 1), args.scrapes))
            conn.close()

            # Baseline: prometheus-client renders the very same series.
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Families(list(text_string_to_metric_families(text))))
            baseline = _time(lambda: client_generate_latest(registry), args.scrapes)
            results["prometheus_client_generate_latest"] = _stats(baseline)
            results["ratio_p95_http_text_vs_client"] = round(
                results["http_text"]["p95_ms"] / results["prometheus_client_generate_latest"]["p95_ms"], 2)
            results["ratio_median_http_text_vs_client"] = round(
                results["http_text"]["median_ms"] / results["prometheus_client_generate_latest"]["median_ms"], 2)
        finally:
            server.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["machine"]
    print(f"machine: {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, SQLite {m['sqlite']}, "
          f"prometheus-client {m['prometheus_client']}; load average {m['loadavg_at_start']:.2f} at start")
    print(f"{results['series']} live series, {results['samples']} samples, {results['points_rows']} point rows "
          f"(loaded in {results['load_seconds']} s); {results['scrapes']} scrapes each")
    print(f"{'':38} {'median':>9} {'p95':>9} {'bytes':>10} {'server CPU':>10}")
    for key, label in (("http_text", "GET /metrics text 0.0.4"), ("http_openmetrics", "GET /metrics OpenMetrics"),
                       ("http_text+gzip", "GET /metrics text, gzip"),
                       ("http_text_all_changed", "GET text, every series just changed"),
                       ("inprocess_text", "in-process read + render (text)"),
                       ("inprocess_read_only", "in-process read only"),
                       ("prometheus_client_generate_latest", "prometheus_client.generate_latest")):
        r = results.get(key)
        if r is None:
            continue
        size = results["body_bytes"].get(key.removeprefix("http_"), "")
        cpu = f"{r['server_cpu_ms']:>7} ms" if "server_cpu_ms" in r else ""
        print(f"{label:38} {r['median_ms']:>7} ms {r['p95_ms']:>7} ms {size:>10} {cpu}")
    print(f"ratio GET text / prometheus-client: median {results['ratio_median_http_text_vs_client']}x, "
          f"p95 {results['ratio_p95_http_text_vs_client']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
