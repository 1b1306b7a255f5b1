"""The sqlite exporter's consumer: hands a batch's rows to the store's single writer and returns once the
group commit that holds them has committed (store.md: acknowledge only after commit)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch

if TYPE_CHECKING:
    from otelite.collector.store.store import Store


class SqliteExporter(Consumer):
    gates_ack = True

    def __init__(self, component_id: str, store: "Store") -> None:
        super().__init__(component_id)
        self._writer = store.writer

    def check_admission(self) -> None:
        self._writer.check_admission()

    async def consume(self, batch: TelemetryBatch) -> None:
        """Raises StoreFull (queue full: nothing taken) or StoreUnavailable (the commit failed)."""
        future = self._writer.submit(batch.rows)
        # shield: a client that disconnects must not cancel the writer's future; the data is committed
        # anyway, only the acknowledgement is lost (the client will retry).
        await asyncio.shield(asyncio.wrap_future(future))
