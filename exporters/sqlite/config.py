"""`exporters.sqlite`: the store's file, durability, retention and the bounded queue in front of its writer
(store.md). Each field's comment says what happens when it is omitted."""

from __future__ import annotations

from dataclasses import dataclass, field

from otelite.collector.component import InvalidField, duration
from otelite.collector.store.db import WRITER_CACHE_MIB
from otelite.collector.store.spans import MERGE_AT


@dataclass
class RetentionConfig:
    traces: float = duration(7 * 86400.0)  # spans older than this are deleted; 0 keeps forever
    metrics: float = duration(30 * 86400.0)  # metric points and Flux events older than this are deleted; 0 keeps forever
    check_interval: float = duration(60.0)  # how often expired rows are looked for
    chunk_rows: int = 5000  # rows deleted per transaction, so deletion never stalls ingest


@dataclass
class SendingQueueConfig:
    # Bounded admission in front of the writer. When full, receivers answer 503 + Retry-After.
    queue_size: int = 20_000  # about 1.5 s of work: bounds RSS, acks stay within client timeouts
    sizer: str = "items"  # "items" (spans + data points) or "requests"


@dataclass
class CompactionConfig:
    # A commit's points of one metric and hour go straight into a chunk when there are at least this many
    # (collector/store/appender.py); fewer go to the head table, which the writer packs into per-metric
    # chunks between commits (collector/store/compactor.py). A head point moves once its commit is this old ...
    head_max_age: float = duration(60.0)
    # ... or earlier when the head holds more points than this (queries scan the head: keep it small).
    head_max_points: int = 100_000
    direct_min_points: int = 64  # see above
    # Trace-index runs (one per trace and commit) the runs' head holds before the writer merges it into
    # the runs table in key order (collector/store/spans.py); about a million spans of ten-span traces.
    trace_head_runs: int = MERGE_AT
    # Rows one background step (a head pass, a step of a migration) takes, in its own transaction:
    # larger steps finish background work sooner, smaller ones hold ingest up for less time.
    step_rows: int = 20_000


@dataclass
class SqliteExporterConfig:
    path: str = "./otelite.db"
    synchronous: str = "NORMAL"  # NORMAL survives a process crash (WAL); FULL survives power loss
    # Page cache of the writer. 16 MiB: the trace index is no longer a b-tree written at random places
    # (span_trace_runs, issue 16). On a 10M-span store 32 and 128 MiB ingest at the same rate while 128
    # added ~100 MB of RSS under overload; 16 instead of 32 keeps that store's overload peak under 300 MB
    # (235-278 MB against 281-329) for ~5% of span ingest on an empty store (docs/benchmarks.md, "Storage
    # at scale", 2026-12-02 09:50).
    cache_mib: int = WRITER_CACHE_MIB
    busy_timeout: float = duration(5.0)  # a write waits this long for a lock before retrying the batch
    # Metric points the engine keeps between queries, decoded and sorted (collector/store/points.py), one
    # cache shared by every dialect; least recently used metrics are dropped beyond this. 0: nothing is
    # kept (every query decodes the chunks of its range again).
    query_cache_mib: int = 256
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    sending_queue: SendingQueueConfig = field(default_factory=SendingQueueConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)

    def validate(self) -> None:
        if self.synchronous.upper() not in ("NORMAL", "FULL"):
            raise InvalidField("synchronous", f"must be NORMAL or FULL, got {self.synchronous!r}")
        self.synchronous = self.synchronous.upper()
        if self.sending_queue.sizer not in ("items", "requests"):
            raise InvalidField("sending_queue.sizer",
                               f"must be items or requests, got {self.sending_queue.sizer!r}")
        for key, value in (("sending_queue.queue_size", self.sending_queue.queue_size),
                           ("cache_mib", self.cache_mib),
                           ("retention.chunk_rows", self.retention.chunk_rows),
                           ("compaction.head_max_points", self.compaction.head_max_points),
                           ("compaction.direct_min_points", self.compaction.direct_min_points),
                           ("compaction.trace_head_runs", self.compaction.trace_head_runs),
                           ("compaction.step_rows", self.compaction.step_rows)):
            if value <= 0:
                raise InvalidField(key, f"must be positive, got {value}")
        if not self.path:
            raise InvalidField("path", "must not be empty")
        if self.compaction.head_max_age < 0:
            raise InvalidField("compaction.head_max_age", "must not be negative")
        if self.query_cache_mib < 0:
            raise InvalidField("query_cache_mib", f"must not be negative, got {self.query_cache_mib}")
