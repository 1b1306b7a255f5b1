"""The sqlite exporter's consumer: hands a batch's rows to the store's single writer and returns once the
group commit that holds them has committed (store.md: acknowledge only after commit)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch
from otelite.collector.store.export_log import ExportRecord, encode_rows

if TYPE_CHECKING:
    from otelite.collector.store.store import Store


class SqliteExporter(Consumer):
    gates_ack = True

    def __init__(self, component_id: str, store: "Store") -> None:
        super().__init__(component_id)
        self._store = store
        self._writer = store.writer
        self._export_log = store.export_log

    async def start(self) -> None:
        # Cursors for forwarders added since the last run; those of forwarders removed from the config are
        # forgotten and their entries trimmed (also when no forwarder is left), before anything is received.
        while await self._store.write(self._export_log.reconcile):
            pass

    def check_admission(self) -> None:
        self._writer.check_admission()

    async def consume(self, batch: TelemetryBatch) -> None:
        """Raises StoreFull (queue full: nothing taken) or StoreUnavailable (the commit failed)."""
        export = None
        if self._export_log.forwards(batch.signal):
            # The forwarders' durable queue: the request is appended in the commit that stores its rows.
            payload = batch.encoded()
            if payload is None:  # metrics a REST dialect built (Flux, Trifle): their rows are forwarded
                payload = encode_rows(batch.rows)
            export = ExportRecord(batch.signal, batch.project_id, batch.items, payload)
        future = self._writer.submit(batch.rows, export)
        # shield: a client that disconnects must not cancel the writer's future; the data is committed
        # anyway, only the acknowledgement is lost (the client will retry).
        await asyncio.shield(asyncio.wrap_future(future))
