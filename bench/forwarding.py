"""Forwarding throughput: spans/s delivered to an upstream while ingest runs, and what forwarding costs local
ingest, against the same ingest without a forwarder in the same run. Results: docs/benchmarks.md
("Forwarding", issue 17).

    python bench/forwarding.py [--seconds 20] [--clients 4] [--exporter otlp|otlphttp]

Two `otelite serve` processes on loopback: the forwarder (clients post bench/ingest.py's 1000-span
OTLP/HTTP requests to it, each acknowledged after its commit) and the upstream, a second otelite. Scenario
1 is the forwarder with only the sqlite exporter (the baseline); scenario 2 adds an `otlp` (gRPC, gzip)
or `otlphttp` exporter to the upstream. Reported: acknowledged spans/s at the forwarder, spans/s the
upstream stored during the load (read from its database), and how long the upstream took to catch up
after the load stopped (the backlog the durable queue carried). Every process shares the machine's cores.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402
from bench.ingest import build_trace_template, render  # noqa: E402


class Server:
    def __init__(self, workdir: Path, name: str, config: dict) -> None:
        self.db = workdir / f"{name}.db"
        self.grpc, self.http = free_port(), free_port()
        cfg = workdir / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otelite.collector.cli", "serve", "--config", str(cfg), "--db", str(self.db),
             "--grpc-endpoint", f"127.0.0.1:{self.grpc}", "--http-endpoint", f"127.0.0.1:{self.http}"],
            stdout=open(workdir / f"{name}.log", "wb"), stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.http}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not start")

    def spans(self) -> int:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def load(url: str, seconds: float, clients: int, on_tick) -> int:
    """Post 1000-span requests from `clients` threads for `seconds`; returns the spans acknowledged."""
    templates = [build_trace_template(v, time.time_ns()) for v in range(4)]
    acked = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                body = render(templates[rng.randrange(len(templates))], rng)
                r = http.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                if r.status_code == 200:
                    acked[i] += 1000
                else:
                    time.sleep(float(r.headers.get("retry-after", "0.1")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        on_tick()
        time.sleep(1.0)
    return sum(acked)


def scenario(workdir: Path, exporter: str | None, upstream: Server | None, seconds: float, clients: int) -> dict:
    exporters = {"sqlite": {}}
    if exporter == "otlp":
        exporters["otlp/up"] = {"endpoint": f"127.0.0.1:{upstream.grpc}", "tls": {"insecure": True}}
    elif exporter == "otlphttp":
        exporters["otlphttp/up"] = {"endpoint": f"http://127.0.0.1:{upstream.http}"}
    config = {"exporters": exporters,
              "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                                                   "exporters": list(exporters)}}}}
    fw = Server(workdir, f"forwarder-{exporter or 'none'}", config)
    before = upstream.spans() if upstream else 0
    started = time.monotonic()
    acked = load(f"http://127.0.0.1:{fw.http}/v1/traces", seconds, clients, lambda: None)
    elapsed = time.monotonic() - started
    out = {"acked_per_s": acked / elapsed}
    if exporter:
        during = upstream.spans() - before
        out["delivered_during_per_s"] = during / elapsed
        deadline = time.monotonic() + 300
        while upstream.spans() - before < acked and time.monotonic() < deadline:
            time.sleep(0.2)
        out["catch_up_s"] = time.monotonic() - started - elapsed
        out["delivered_overall_per_s"] = (upstream.spans() - before) / (time.monotonic() - started)
        out["all_delivered"] = upstream.spans() - before >= acked
    fw.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--exporter", choices=("otlp", "otlphttp"), default="otlp")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        upstream = Server(workdir, "upstream", {})
        try:
            base = scenario(workdir, None, None, args.seconds, args.clients)
            fwd = scenario(workdir, args.exporter, upstream, args.seconds, args.clients)
        finally:
            upstream.stop()
    print(f"{'scenario':48} {'acked spans/s':>14} {'ratio':>6}")
    print(f"{'sqlite only (baseline)':48} {base['acked_per_s']:14,.0f} {1.0:6.2f}")
    print(f"{'sqlite + ' + args.exporter + ' to a second otelite':48} {fwd['acked_per_s']:14,.0f} "
          f"{fwd['acked_per_s'] / base['acked_per_s']:6.2f}")
    print(f"delivered upstream while ingest ran: {fwd['delivered_during_per_s']:,.0f} spans/s "
          f"({fwd['delivered_during_per_s'] / fwd['acked_per_s']:.2f} of the ingest rate); caught up "
          f"{fwd['catch_up_s']:.1f} s after the load stopped; overall {fwd['delivered_overall_per_s']:,.0f} "
          f"spans/s; everything delivered: {fwd['all_delivered']}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
