"""The store as the rest of otelite sees it: one file, one writer, read connections on demand."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from collector.store.db import connect_reader, prepare_database
from collector.store.writer import Writer

if TYPE_CHECKING:
    from collector.config import BatchProcessorConfig, SqliteExporterConfig
    from collector.telemetry import Telemetry


class Store:
    def __init__(self, config: "SqliteExporterConfig", batching: "BatchProcessorConfig",
                 telemetry: "Telemetry | None" = None) -> None:
        self.path = config.path
        # Migrate (or refuse a newer file) before anything listens, so a bad file stops the start.
        self.schema_version = prepare_database(self.path)
        self.writer = Writer(self.path, config, batching, telemetry)

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        """Drain the queue, commit, close the write connection."""
        self.writer.close()

    def reader(self) -> sqlite3.Connection:
        """A new read connection (WAL: readers never block the writer). The caller closes it."""
        return connect_reader(self.path)
