"""Fan-out overhead: CPU per batch of the pipeline hand-off against calling the exporter directly, in the
same run. How to run and what was measured: docs/benchmarks.md ("Ingest", "Issue 9").

    python bench/fanout.py [--batches 100000]

`FanOut.consume` (collector/pipeline/fanout.py) with a no-op gating consumer, against awaiting that
consumer directly (the path before the fan-out); then with one non-gating consumer added (a forwarder's
cost, paid only when one is configured). The consumers do nothing, so the figures are the fan-out's own
cost; the last column puts it against walking one of bench/ingest.py's 1000-span requests into rows (what
every request costs anyway). CPU time (time.process_time): other load on the machine moves it less than
wall time. Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import build_trace_template, render  # noqa: E402
from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch  # noqa: E402
from otelite.collector.pipeline.fanout import FanOut  # noqa: E402
from otelite.collector.pipeline.decode import walk_traces  # noqa: E402
from otelite.collector.store.records import WriteBatch  # noqa: E402
from otelite.collector.telemetry import Telemetry  # noqa: E402


class _NoOp(Consumer):
    def __init__(self, component_id: str, gates_ack: bool) -> None:
        super().__init__(component_id)
        self.gates_ack = gates_ack  # instance attribute: one class for both kinds

    async def consume(self, batch: TelemetryBatch) -> None:
        return None


async def _per_batch_us(n: int, call) -> float:
    rows = WriteBatch(spans=[()] * 1000)
    started = time.process_time()
    for _ in range(n):
        await call(TelemetryBatch("traces", 1, b"", rows))
        await asyncio.sleep(0)  # one turn of the loop per batch, as a server has: deliveries run here
    return (time.process_time() - started) / n * 1e6


async def hand_off(n: int) -> None:
    direct = _NoOp("sqlite", True)
    only_sqlite = FanOut("traces", [_NoOp("sqlite", True)], Telemetry())
    with_forwarder = FanOut("traces", [_NoOp("sqlite", True), _NoOp("otlp", False)], Telemetry())
    base = await _per_batch_us(n, direct.consume)
    rows = [("consumer called directly (baseline)", base),
            ("fan-out, sqlite only (the default pipelines)", await _per_batch_us(n, only_sqlite.consume)),
            ("fan-out, sqlite + one non-gating consumer", await _per_batch_us(n, with_forwarder.consume))]
    walk = walk_us()
    print(f"{'hand-off of one batch':<48} {'us/batch':>9} {'vs baseline':>12} {'of a walk':>10}")
    for name, us in rows:
        print(f"{name:<48} {us:>9.2f} {us - base:>+11.2f} {(us - base) / walk:>10.4%}")
    print(f"(walking one 1000-span request into rows: {walk / 1000:.1f} ms of CPU)")


def walk_us() -> float:
    """CPU to walk one of bench/ingest.py's 1000-span requests into rows: what a request costs anyway."""
    now = time.time_ns()
    templates = [build_trace_template(v, now) for v in range(4)]
    rng = random.Random(1)
    payloads = [render(templates[i % 4], rng) for i in range(40)]
    started = time.process_time()
    for p in payloads:
        walk_traces(p, 1)
    return (time.process_time() - started) / len(payloads) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=100_000)
    args = ap.parse_args(argv)
    asyncio.run(hand_off(args.batches))
    return 0


if __name__ == "__main__":
    sys.exit(main())
