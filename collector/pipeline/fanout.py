"""The fan-out from a receiver to the exporters of `service.pipelines` (the Collector's
`internal/fanoutconsumer`): one `FanOut` per signal, built once at start by `build_pipelines`.

Adding an exporter therefore touches no receiver: its factory (collector/component.py) creates a
`Consumer`, and the pipelines that list it get it in their fan-out. Exporters listed by several pipelines
of one signal get each batch once. Gating consumers (the sqlite exporter) decide the acknowledgement;
the others are given the batch only after those committed it, as bounded tasks the acknowledgement does
not wait for (collector/pipeline/consumer.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from otelite.collector.component import SIGNALS, Host, component_type
from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch
from otelite.collector.store.writer import StoreFull

if TYPE_CHECKING:
    from otelite.collector.config import Config
    from otelite.collector.telemetry import Telemetry

log = logging.getLogger("otelite.pipeline")

# Deliveries in flight per non-gating consumer. A forwarder slower than ingest falls behind by at most this
# many batches of memory; beyond it, batches are dropped for that consumer and counted failed (the
# Collector's sending_queue does the same when full). A forwarder that must not drop reads the store.
MAX_IN_FLIGHT = 64
_WARN_EVERY_S = 10.0
_SHUTDOWN_GRACE_S = 5.0


class FanOut:
    """The next consumer of one signal: every consumer of the pipelines of that signal."""

    def __init__(self, signal: str, consumers: list[Consumer], telemetry: "Telemetry") -> None:
        self.signal = signal
        self._gating = [c for c in consumers if c.gates_ack]
        self._others = [c for c in consumers if not c.gates_ack]
        if not self._gating:
            raise ValueError(f"the {signal} pipelines have no exporter that acknowledges (sqlite)")
        counted = [c for c in consumers if c.counts_delivery]
        self._sent = {c: telemetry.exporter_sent[signal].labels(c.component_id) for c in counted}
        self._failed = {c: telemetry.exporter_failed[signal].labels(c.component_id) for c in counted}
        self._in_flight: dict[Consumer, set[asyncio.Task]] = {c: set() for c in self._others}
        self._warned_at: dict[Consumer, float] = {}

    @property
    def consumers(self) -> list[Consumer]:
        return self._gating + self._others

    def check_admission(self) -> None:
        """Raise StoreFull now if a gating consumer could not take a batch (before a body is read)."""
        for c in self._gating:
            c.check_admission()

    async def consume(self, batch: TelemetryBatch) -> None:
        """Return once every gating consumer has the batch (committed); raise what one of them raised."""
        if len(self._gating) == 1:  # the usual case, kept to one await on the ingest path
            await self._consume_gating(self._gating[0], batch)
        else:
            outcomes = await asyncio.gather(*(self._consume_gating(c, batch) for c in self._gating),
                                            return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        # Only acknowledged data goes on: a batch a gating consumer refused will be sent again.
        for c in self._others:
            self._offer(c, batch)

    async def _consume_gating(self, c: Consumer, batch: TelemetryBatch) -> None:
        try:
            await c.consume(batch)
        except StoreFull:
            raise  # backpressure, not a failure: the receiver counts it refused and the client retries
        except Exception:
            self._failed[c].inc(batch.items)
            raise
        self._sent[c].inc(batch.items)

    def _offer(self, c: Consumer, batch: TelemetryBatch) -> None:
        tasks = self._in_flight[c]
        if len(tasks) >= MAX_IN_FLIGHT:
            self._count(self._failed, c, batch.items)
            self._warn(c, "dropped a batch: %d deliveries already in flight", len(tasks))
            return
        task = asyncio.get_running_loop().create_task(self._deliver(c, batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _deliver(self, c: Consumer, batch: TelemetryBatch) -> None:
        try:
            await c.consume(batch)
        except asyncio.CancelledError:
            self._count(self._failed, c, batch.items)
            raise
        except Exception as e:  # noqa: BLE001 - a forwarder's failure is counted, never propagated
            self._count(self._failed, c, batch.items)
            self._warn(c, "failed: %s", e)
        else:
            self._count(self._sent, c, batch.items)

    @staticmethod
    def _count(counters: dict, c: Consumer, items: int) -> None:
        counter = counters.get(c)  # absent for a consumer that counts its deliveries itself
        if counter is not None:
            counter.inc(items)

    def _warn(self, c: Consumer, message: str, *args: object) -> None:
        """Log a non-gating consumer's trouble at most every _WARN_EVERY_S (the counters have every case)."""
        now = time.monotonic()
        if now - self._warned_at.get(c, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned_at[c] = now
            log.warning("exporter %s (%s): " + message, c.component_id, self.signal, *args)

    async def drain(self, grace: float = _SHUTDOWN_GRACE_S) -> None:
        """Let in-flight deliveries finish for up to `grace` seconds, then cancel the rest."""
        tasks = [t for ts in self._in_flight.values() for t in ts]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class Pipelines:
    """The fan-out of each signal that has a pipeline, and the consumers they share."""

    def __init__(self, fanouts: dict[str, FanOut]) -> None:
        self._fanouts = fanouts
        unique: dict[int, Consumer] = {}
        for f in fanouts.values():
            for c in f.consumers:
                unique.setdefault(id(c), c)
        self.consumers = list(unique.values())

    def next_consumer(self, signal: str) -> FanOut | None:
        """What a receiver hands `signal` batches to; None when no pipeline takes that signal."""
        return self._fanouts.get(signal)

    async def start(self) -> None:
        started: list[Consumer] = []
        try:
            for c in self.consumers:
                await c.start()
                started.append(c)
        except BaseException:
            for c in reversed(started):  # start-up that fails halfway shuts down what it started
                await c.shutdown()
            raise

    async def shutdown(self) -> None:
        """After the receivers stopped: finish (or cancel) deliveries, then shut every consumer down."""
        await asyncio.gather(*(f.drain() for f in self._fanouts.values()))
        for c in reversed(self.consumers):
            try:
                await c.shutdown()
            except Exception:  # noqa: BLE001 - one exporter's failure must not stop the others' shutdown
                log.exception("exporter %s failed to shut down", c.component_id)


def build_pipelines(config: "Config", host: Host) -> Pipelines:
    """One consumer per exporter id (created by its type's factory), one fan-out per signal over the
    exporters of every pipeline of that signal (otelite runs one receiver, which every pipeline lists)."""
    consumers: dict[str, Consumer | None] = {}
    fanouts: dict[str, FanOut] = {}
    for signal in SIGNALS:
        members: list[Consumer] = []
        for pipeline_id, pipeline in config.service.pipelines.items():
            if component_type(pipeline_id) != signal:
                continue
            for exporter_id in pipeline.exporters:
                if exporter_id not in consumers:
                    factory = config.registry.get("exporters", component_type(exporter_id))
                    create = factory.create_consumer
                    consumers[exporter_id] = create(host, exporter_id, config.exporters[exporter_id]) \
                        if create is not None else None
                consumer = consumers[exporter_id]
                if consumer is not None and consumer not in members:
                    members.append(consumer)
        if members:
            fanouts[signal] = FanOut(signal, members, host.telemetry)
    for exporter_id, consumer in consumers.items():
        if consumer is not None:
            consumer.serve_signals(frozenset(s for s, f in fanouts.items() if consumer in f.consumers))
    return Pipelines(fanouts)
