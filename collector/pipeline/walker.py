"""Decoding and normalizing OTLP payloads, in worker processes when configured.

Why processes: the protobuf walk (store.md: the CPU cost of ingest) and the writer share one GIL, so an
in-process collector uses one core of two (docs/benchmarks.md measured 0.98 CPU, the other core idle).
A worker process decodes the raw protobuf bytes and walks them into a WriteBatch; the event loop only
unpickles the rows (about 2 ms per 1000 spans against about 35 ms for the walk) and hands them to the
writer. `receivers.otlp.decode_workers: 0` keeps everything in the event loop.

A payload is raw protobuf bytes (HTTP protobuf bodies, gRPC messages), an OTLP/JSON body (parsed and mapped
in the worker too), or an already built message (tests, in-process callers), which is walked in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator

# What runs in the worker lives in decode.py, which imports little: a worker imports it, not this module.
from otelite.collector.pipeline.decode import (walk_metrics, walk_metrics_json, walk_metrics_leaving_out_sent,
                                              walk_traces, walk_traces_json, worker_init)
from otelite.collector.store.records import SlicedBatch, WriteBatch
from otelite.collector.store.writer import StoreFull, StoreUnavailable

log = logging.getLogger("otelite.walker")


# Requests waiting for or inside a worker, per worker (Walker._slot). The executor's own queue is unbounded,
# so this is what keeps memory bounded under overload (store.md: backpressure, not growth): beyond it, 503.
_MAX_PENDING_PER_WORKER = 16

# A request of more spans or data points than this is walked and stored in parts of this many
# (normalize/split.py): its rows would take ~25x its wire size in memory at once. Twice the default
# send_batch_size, so the requests SDKs send (512 spans, a metric reader's export) are walked whole.
SLICE_ITEMS = 16_384

# Series ids the walker saw committed (`committed`), to which a worker's batch may leave their rows out.
# Bounded like a worker's own set (decode.SENT_SERIES_MAX): past it, it starts again from nothing, and
# batches leaving out rows are walked again whole until their series are seen committed again.
COMMITTED_SERIES_MAX = 100_000


class Walker:
    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pending = 0
        self._max_pending = workers * _MAX_PENDING_PER_WORKER
        self._pool: ProcessPoolExecutor | None = None
        self._committed_series: set[int] = set()
        if workers:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs grpc and threads, which must not be forked.
        return ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker_init, initargs=(os.getpid(),))

    def warm_up(self) -> None:
        """Start the workers now (spawning imports otelite: about a second), not on the first request.

        Call it from the main thread: PR_SET_PDEATHSIG fires when the thread that spawned a worker ends."""
        if self._pool is not None:
            list(self._pool.map(int, range(self._workers)))

    def check_admission(self) -> None:
        """Raise StoreFull while the workers have as much queued as they may (see _MAX_PENDING_PER_WORKER)."""
        if self._pool is not None and self._pending >= self._max_pending:
            raise StoreFull(1, "the decode workers are busy")

    async def traces(self, payload: Any, project_id: int) -> WriteBatch | SlicedBatch:
        with self._slot(payload):
            return await self._run(walk_traces, payload, project_id)

    async def metrics(self, payload: Any, project_id: int, *, whole: bool = False) -> WriteBatch | SlicedBatch:
        """The request's rows. A worker leaves out the rows of series it sent before (records.SeriesLeftOut);
        the writer does without them only for series already stored: where one was not seen committed (its
        earlier batch still in flight, or refused), the request is walked again with every row. `whole`:
        walk with every row at once (a walk in this process always is)."""
        with self._slot(payload):  # (one slot for both walks: a request is not refused after its first)
            if whole or self._pool is None or not isinstance(payload, (bytes, bytearray, memoryview)):
                return await self._run(walk_metrics, payload, project_id)
            batch = await self._run(walk_metrics_leaving_out_sent, payload, project_id)
            left_out = batch.series_left_out if isinstance(batch, WriteBatch) else None
            if left_out is not None and not self._committed_series.issuperset(left_out.ids):
                del batch  # (its rows are freed before the walk that replaces them)
                batch = await self._run(walk_metrics, payload, project_id)
            return batch

    def committed(self, batch: WriteBatch | SlicedBatch) -> None:
        """`batch` is committed: its series rows are stored, and later batches may leave them out."""
        if self._pool is not None and isinstance(batch, WriteBatch) and batch.series:
            if len(self._committed_series) + len(batch.series) > COMMITTED_SERIES_MAX:
                self._committed_series.clear()
            self._committed_series.update(batch.series)

    def forget_committed(self) -> None:
        """The store lacked a series this walker saw committed (writer.SeriesNotStored): trust none."""
        self._committed_series.clear()

    async def traces_json(self, body: bytes, project_id: int) -> tuple[WriteBatch | SlicedBatch, bytes]:
        """An OTLP/JSON body: its rows and the request as protobuf bytes (decode.py)."""
        with self._slot(body):
            return await self._run(walk_traces_json, body, project_id)

    async def metrics_json(self, body: bytes, project_id: int) -> tuple[WriteBatch | SlicedBatch, bytes]:
        with self._slot(body):
            return await self._run(walk_metrics_json, body, project_id)

    @contextlib.contextmanager
    def _slot(self, payload: Any) -> Iterator[None]:
        """Hold one of the workers' _max_pending places for a request's walks, or raise StoreFull.

        `check_admission` is only advisory: requests that passed it together before any of them reached
        a worker (a burst of 264 at once on an idle collector) were all queued for the workers, each
        metrics request's first rows held while it waited behind the others for its second walk: 93,000
        points alive against a writer queue of 20,000, and overload peaks up to 315 MB (issue 16's
        benchmark, docs/benchmarks.md). This is the bound itself."""
        if self._pool is None or not isinstance(payload, (bytes, bytearray, memoryview)):
            yield  # walked in this process, one at a time
            return
        self.check_admission()
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def _run(self, walk: Callable[[Any, int, int], Any], payload: Any, project_id: int) -> Any:
        if self._pool is None or not isinstance(payload, (bytes, bytearray, memoryview)):
            return walk(payload, project_id, SLICE_ITEMS)
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, walk, bytes(payload), project_id,
                                                                    SLICE_ITEMS)
        except BrokenProcessPool:
            # A worker died (e.g. killed for memory): nothing of this request was stored; the client
            # retries on 503. Replace the pool once for everyone waiting on the broken one.
            if self._pool is pool:
                log.error("a decode worker died; starting a new pool")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise StoreUnavailable("a decode worker failed; retry") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None
