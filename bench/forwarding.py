"""Forwarding throughput: spans/s delivered to an upstream while ingest runs, and what forwarding costs local
ingest, against the same ingest without a forwarder in the same run. Results: docs/benchmarks.md
("Forwarding", issue 17).

    python bench/forwarding.py [--seconds 20] [--clients 4] [--exporter otlp|otlphttp|prometheusremotewrite]

Two `otelite serve` processes on loopback: the forwarder (clients post bench/ingest.py's 1000-span
OTLP/HTTP requests to it, each acknowledged after its commit) and the upstream, a second otelite. Scenario
1 is the forwarder with only the sqlite exporter (the baseline); scenario 2 adds an `otlp` (gRPC, gzip)
or `otlphttp` exporter to the upstream. Reported: acknowledged spans/s at the forwarder, spans/s the
upstream stored during the load (read from its database), and how long the upstream took to catch up
after the load stopped (the backlog the durable queue carried). Every process shares the machine's cores.

`--exporter prometheusremotewrite`: the clients post bench/ingest.py's 1000-point OTLP metrics requests
(timestamps moved to now) and the upstream is Debian's Prometheus with --web.enable-remote-write-receiver;
points delivered are those the forwarder counts as acknowledged by Prometheus
(otelcol_exporter_sent_metric_points_total).
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
from bench.ingest import build_metric_template, build_trace_template, render  # noqa: E402


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


class Prometheus:
    """Debian's Prometheus, receiving remote-write only."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "prometheus.yml").write_text("global: {evaluation_interval: 1m}\n")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
             "--log.level=warn"], stdout=open(workdir / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("prometheus did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def sent_points(fw: Server, exporter: str) -> tuple[float, float]:
    """(points delivered, points dropped) by `exporter`, from the forwarder's /metrics/self."""
    from prometheus_client.parser import text_string_to_metric_families
    text = httpx.get(f"http://127.0.0.1:{fw.http}/metrics/self", timeout=10).text
    sent = failed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("exporter") == exporter:
                if sample.name == "otelcol_exporter_sent_metric_points_total":
                    sent += sample.value
                elif sample.name == "otelcol_exporter_send_failed_metric_points_total":
                    failed += sample.value
    return sent, failed


def load(url: str, seconds: float, clients: int, on_tick, signal: str = "traces") -> int:
    """Post 1000-item requests from `clients` threads for `seconds`; returns the items acknowledged."""
    build = build_trace_template if signal == "traces" else build_metric_template
    templates = [build(v, time.time_ns()) for v in range(4)]
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


def remote_write_scenario(workdir: Path, exporter: str | None, prometheus: Prometheus | None, seconds: float,
                          clients: int) -> dict:
    exporters = {"sqlite": {}}
    if exporter:
        exporters["prometheusremotewrite/up"] = {"endpoint": f"http://127.0.0.1:{prometheus.port}/api/v1/write"}
    config = {"exporters": exporters,
              "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                                                    "exporters": list(exporters)}}}}
    fw = Server(workdir, f"forwarder-{exporter or 'none'}", config)
    started = time.monotonic()
    acked = load(f"http://127.0.0.1:{fw.http}/v1/metrics", seconds, clients, lambda: None, "metrics")
    elapsed = time.monotonic() - started
    out = {"acked_per_s": acked / elapsed}
    if exporter:
        name = "prometheusremotewrite/up"
        out["delivered_during_per_s"] = sent_points(fw, name)[0] / elapsed
        deadline = time.monotonic() + 300
        while sum(sent_points(fw, name)) < acked and time.monotonic() < deadline:
            time.sleep(0.5)
        sent, failed = sent_points(fw, name)
        out["catch_up_s"] = time.monotonic() - started - elapsed
        out["delivered_overall_per_s"] = sent / (time.monotonic() - started)
        out["all_delivered"] = sent >= acked and failed == 0
    fw.stop()
    return out


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
    parser.add_argument("--exporter", choices=("otlp", "otlphttp", "prometheusremotewrite"), default="otlp")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    remote_write = args.exporter == "prometheusremotewrite"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if remote_write:
            upstream, run, unit, target = Prometheus(workdir), remote_write_scenario, "points", "Prometheus"
        else:
            upstream, run, unit, target = Server(workdir, "upstream", {}), scenario, "spans", "a second otelite"
        try:
            base = run(workdir, None, None, args.seconds, args.clients)
            fwd = run(workdir, args.exporter, upstream, args.seconds, args.clients)
        finally:
            upstream.stop()
    print(f"{'scenario':48} {'acked ' + unit + '/s':>14} {'ratio':>6}")
    print(f"{'sqlite only (baseline)':48} {base['acked_per_s']:14,.0f} {1.0:6.2f}")
    print(f"{'sqlite + ' + args.exporter + ' to ' + target:48} {fwd['acked_per_s']:14,.0f} "
          f"{fwd['acked_per_s'] / base['acked_per_s']:6.2f}")
    print(f"delivered upstream while ingest ran: {fwd['delivered_during_per_s']:,.0f} {unit}/s "
          f"({fwd['delivered_during_per_s'] / fwd['acked_per_s']:.2f} of the ingest rate); caught up "
          f"{fwd['catch_up_s']:.1f} s after the load stopped; overall {fwd['delivered_overall_per_s']:,.0f} "
          f"{unit}/s; everything delivered: {fwd['all_delivered']}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
