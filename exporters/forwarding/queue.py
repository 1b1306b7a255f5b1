"""The durable queue every forwarding exporter runs on: a cursor over the store's export log.

What a forwarder has not delivered is not a copy in memory: it is the part of the export log after its
cursor (collector/store/export_log.py), committed together with the data it carries. Per signal, one lane
reads entries in commit order, sends them as one request (several entries merged), and only after the
upstream acknowledged moves the cursor, through `Store.write`. So:

- a restart or `kill -9` loses nothing: the lane starts again from the committed cursor;
- delivery is in order and at least once: a request may have reached the upstream when the process died
  before the cursor moved. Before a request leaves, `in_flight_to` records how far it reaches; after a
  restart, entries up to there are sent again and counted in otelite_exporter_resent_* (an upper bound of
  the duplicates the upstream may hold);
- the queue is bounded (sending_queue.queue_size in bytes or items, sending_queue.max_age): beyond the
  bound the oldest entries are dropped and counted (reason `queue_full` / `expired`);
- acknowledgement to the application depends only on the local commit: `consume` is a wake-up.

Failures follow `outcome.py`: retryable ones are retried with backoff (Retry-After / RetryInfo honoured),
permanent ones are dropped and counted. A permanent failure of a request that merged several entries is
retried entry by entry first, so one bad entry does not take its neighbours with it.

Subclasses implement `open`/`close` (their client), `send(signal, prepared)`, and may override
`prepare` (the request from entries; the default concatenates the OTLP requests: protobuf merges repeated
fields of concatenated messages, so N requests become one; entries holding a dialect's rows become OTLP
by rows.py) and `fold_dropped` (state to keep over
entries that are dropped without being sent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from otelite.collector.pipeline.consumer import Consumer, TelemetryBatch
from otelite.collector.store import export_log as xl
from otelite.collector.store.writer import StoreFull, StoreUnavailable
from otelite.exporters.forwarding.outcome import Backoff, Outcome, Permanent, Retryable
from otelite.exporters.forwarding.rows import NO_OTLP_TYPE, rows_request

if TYPE_CHECKING:
    from otelite.collector.component import Host
    from otelite.exporters.forwarding.config import QueueConfig, RetryConfig

log = logging.getLogger("otelite.forwarding")

MAX_REQUEST_BYTES = 2 << 20  # OTLP requests merged into one send; the Collector's receivers take 4 MiB
MAX_REQUEST_ENTRIES = 1000
_IDLE_POLL_S = 1.0  # a lane with nothing to send looks again this often even without a wake-up
_REFRESH_S = 1.0  # while waiting to retry, the backlog and the bounds are checked this often
_WARN_EVERY_S = 10.0
# How long shutdown lets a request in flight finish. One cut short is sent again at the next start (its
# entries are past in_flight_to, so counted as possibly resent): nothing is lost by not waiting longer.
_SHUTDOWN_WAIT_S = 5.0
_STORE_RETRY_S = 0.5


@dataclass
class Prepared:
    """A request ready to send: `body` (the subclass's), its entries, and the forwarder state of the
    position after them (export_log.advance), committed with the cursor."""

    body: Any
    entries: list[xl.Entry]
    state: dict | None = None
    items: int = 0  # items the request carries (spans or data points)
    dropped: dict[str, int] = field(default_factory=dict)  # items left out while building it, by reason


@dataclass
class Lane:
    """One exporter's queue for one signal. Read by /metrics/self and /healthz (telemetry.export_queues)."""

    exporter: str
    signal: str
    capacity: int
    sizer: str
    position: xl.Position = xl.Position(0, 0, 0)
    in_flight_to: int = 0
    resend_upto: int = 0  # after a restart: entries up to here may already be upstream
    queue_size: int = 0
    oldest_ns: int | None = None
    last_error: str = ""
    split_until: int = 0  # send entries one by one up to this seq (isolating a permanent failure)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    backoff: Backoff | None = None  # retrying the request that starts at backoff_seq
    backoff_seq: int = -1
    warned_at: float = -_WARN_EVERY_S


class Forwarder(Consumer):
    """Base of the forwarding exporters (see the module docstring)."""

    gates_ack = False
    counts_delivery = False
    keeps_totals = False  # prometheusremotewrite: state per series kept with the cursor
    max_request_bytes = MAX_REQUEST_BYTES

    def __init__(self, component_id: str, host: "Host", *, retry: "RetryConfig", queue: "QueueConfig",
                 timeout: float) -> None:
        super().__init__(component_id)
        self._store = host.store
        self._export_log = host.store.export_log
        self._telemetry = host.telemetry
        self._retry = retry
        self._queue = queue
        self.timeout = timeout
        self._signals: frozenset[str] = frozenset()
        self._lanes: dict[str, Lane] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._sent: dict = {}
        self._failed: dict = {}
        self._resent: dict = {}

    # -- the pipeline's side ----------------------------------------------------------------------------
    def serve_signals(self, signals: frozenset[str]) -> None:
        self._signals = signals
        self._export_log.subscribe(self.component_id, signals, keeps_totals=self.keeps_totals)
        t = self._telemetry
        self._sent = {s: t.exporter_sent[s].labels(self.component_id) for s in signals}
        self._failed = {s: t.exporter_failed[s].labels(self.component_id) for s in signals}
        self._resent = {s: t.exporter_resent[s].labels(self.component_id) for s in signals}

    async def consume(self, batch: TelemetryBatch) -> None:
        """The batch is already in the export log (committed with its rows): only wake the lane up."""
        lane = self._lanes.get(batch.signal)
        if lane is not None:
            lane.wake.set()

    async def start(self) -> None:
        await self.open()
        await self._store.write(self._export_log.reconcile)  # idempotent; the sqlite exporter ran it too
        for signal in sorted(self._signals):
            lane = Lane(self.component_id, signal, self._queue.queue_size, self._queue.sizer)
            self._lanes[signal] = lane
            self._telemetry.export_queues.append(lane)
            self._tasks.append(asyncio.get_running_loop().create_task(self._run(lane),
                                                                      name=f"{self.component_id}/{signal}"))

    async def shutdown(self) -> None:
        """Stop after the request in flight (at most the exporter's timeout); what is left stays queued."""
        self._stopping.set()
        for lane in self._lanes.values():
            lane.wake.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=min(self.timeout, _SHUTDOWN_WAIT_S) + 0.5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in self._lanes.values():
            if lane in self._telemetry.export_queues:
                self._telemetry.export_queues.remove(lane)
        await self.close()

    # -- what a subclass implements -------------------------------------------------------------------
    async def open(self) -> None:
        """Create the client."""

    async def close(self) -> None:
        """Close the client."""

    async def prepare(self, signal: str, entries: list[xl.Entry]) -> Prepared:
        items = sum(e.items for e in entries)
        if not any(e.holds_rows() for e in entries):
            return Prepared(b"".join(e.payload for e in entries), entries, None, items)
        parts, left_out = [], 0
        for e in entries:
            if e.holds_rows():  # metrics a REST dialect wrote: rows.py
                body, n = rows_request(xl.decode_rows(e.payload))
                parts.append(body)
                left_out += n
            else:
                parts.append(e.payload)
        return Prepared(b"".join(parts), entries, None, items, {NO_OTLP_TYPE: left_out} if left_out else {})

    async def send(self, signal: str, prepared: Prepared) -> Outcome:
        raise NotImplementedError

    async def fold_dropped(self, signal: str, entries: list[xl.Entry]) -> dict | None:
        """State for the position after `entries`, which are dropped unsent (None: nothing to keep)."""
        return None

    def state_committed(self, state: dict | None) -> None:
        """The cursor moved with `state` (from `prepare` or `fold_dropped`): it is the store's now."""

    # -- the lane ----------------------------------------------------------------------------------------
    async def _run(self, lane: Lane) -> None:
        while not self._stopping.is_set():
            try:
                cursor = await self._store.read(xl.read_cursor, self.component_id, lane.signal)
                if cursor is None:
                    await self._store.write(self._export_log.reconcile)
                    continue
                break
            except (StoreFull, StoreUnavailable) as e:
                await self._pause(lane, f"store: {e}")
        else:
            return
        lane.position, lane.in_flight_to = cursor.position, cursor.in_flight_to
        lane.resend_upto = cursor.in_flight_to
        while not self._stopping.is_set():
            try:
                await self._step(lane)
            except (StoreFull, StoreUnavailable) as e:
                await self._pause(lane, f"store: {e}")
            except Exception:  # noqa: BLE001 - a lane must outlive any one failure; the cursor stays put
                log.exception("exporter %s (%s): unexpected error", self.component_id, lane.signal)
                await self._pause(lane, "unexpected error")

    async def _step(self, lane: Lane) -> None:
        """Send the next request (or wait for one) and settle its outcome."""
        await self._refresh(lane)
        lane.wake.clear()
        entries = await self._store.read(xl.read_entries, lane.signal, lane.position,
                                         self.max_request_bytes, MAX_REQUEST_ENTRIES)
        if not entries:
            await self._idle(lane)
            return
        if entries[0].seq <= lane.split_until:
            entries = entries[:1]
        last = entries[-1].seq
        try:
            prepared = await self.prepare(lane.signal, entries)
        except (StoreFull, StoreUnavailable):
            raise  # the store, not the entries: try again
        except Exception as e:  # noqa: BLE001 - an entry that cannot be turned into a request is dropped
            log.exception("exporter %s (%s): cannot build a request", self.component_id, lane.signal)
            prepared, outcome = Prepared(None, entries, None, sum(e.items for e in entries)), Permanent(str(e))
        else:
            if last > lane.in_flight_to:
                await self._store.write(lambda c: xl.mark_in_flight(c, self.component_id, lane.signal, last))
                lane.in_flight_to = last
            outcome = await self._send_bounded(lane.signal, prepared)
        if isinstance(outcome, Retryable):
            if lane.backoff is None or lane.backoff_seq != entries[0].seq:
                lane.backoff, lane.backoff_seq = Backoff(self._retry), entries[0].seq
            backoff = lane.backoff
            lane.last_error = outcome.error
            if not backoff.exhausted():
                delay = backoff.next_delay(outcome.throttle_s)
                self._warn(lane, "%s; retrying in %.1f s", outcome.error, delay)
                await self._wait_to_retry(lane, delay, entries[0].seq)
                return
            self._warn(lane, "%s; giving up after %d attempts", outcome.error, backoff.attempts + 1)
            await self._finish(lane, prepared, dropped="retries_exhausted")
        elif isinstance(outcome, Permanent):
            lane.last_error = outcome.error
            if len(entries) > 1:
                lane.split_until = last  # find the entry the upstream refuses; send the others
                return
            log.error("exporter %s (%s): the upstream refused %d items for good, dropped: %s",
                      self.component_id, lane.signal, prepared.items, outcome.error)
            await self._finish(lane, prepared, dropped="permanent")
        else:
            if outcome.rejected or outcome.message:
                self._warn(lane, "partial success: %d items rejected: %s", outcome.rejected, outcome.message)
            await self._finish(lane, prepared, rejected=min(outcome.rejected, prepared.items))
            lane.last_error = ""
        lane.backoff = None

    async def _send_bounded(self, signal: str, prepared: Prepared) -> Outcome:
        try:
            return await asyncio.wait_for(self.send(signal, prepared), self.timeout + 1.0)
        except asyncio.TimeoutError:
            return Retryable(f"no answer within {self.timeout:g} s")

    async def _finish(self, lane: Lane, prepared: Prepared, *, rejected: int = 0, dropped: str = "") -> None:
        """Move the cursor past `prepared` (delivered, or dropped for `dropped`) and count it."""
        entries = prepared.entries
        to = entries[-1].position()
        await self._write_retrying(lane, lambda c: xl.advance(c, self.component_id, lane.signal, to,
                                                              prepared.state))
        lane.position = to
        self.state_committed(prepared.state)
        signal, items = lane.signal, prepared.items
        resent = sum(e.items for e in entries if e.seq <= lane.resend_upto)
        if resent:
            self._resent[signal].inc(resent)
        if dropped:
            self._drop(signal, items, dropped)
            return
        left_out = 0
        for reason, n in prepared.dropped.items():
            self._drop(signal, n, reason)
            left_out += n
        rejected = min(rejected, items - left_out)
        self._sent[signal].inc(items - left_out - rejected)
        if rejected:
            self._drop(signal, rejected, "rejected")

    def _drop(self, signal: str, items: int, reason: str) -> None:
        if items:
            self._failed[signal].inc(items)
            self._telemetry.exporter_dropped[signal].labels(self.component_id, reason).inc(items)

    async def _refresh(self, lane: Lane) -> None:
        """Update the queue's size and age, and drop the oldest entries beyond sending_queue's bounds."""
        b = await self._store.read(xl.backlog, lane.signal, lane.position)
        q = self._queue
        size = b.bytes if q.sizer == "bytes" else b.items
        now = time.time_ns()
        over_size = size > q.queue_size
        expired = q.max_age > 0 and b.oldest_ns is not None and b.oldest_ns < now - int(q.max_age * 1e9)
        if over_size or expired:
            head_items, head_bytes = lane.position.end_items + b.items, lane.position.end_bytes + b.bytes
            bounds = {"min_end_items": head_items - q.queue_size if over_size and q.sizer == "items" else None,
                      "min_end_bytes": head_bytes - q.queue_size if over_size and q.sizer == "bytes" else None,
                      "min_committed_ns": now - int(q.max_age * 1e9) if q.max_age > 0 else None}
            target = await self._store.read(lambda c: xl.first_kept(c, lane.signal, lane.position, **bounds))
            if target.seq > lane.position.seq:
                await self._drop_to(lane, target, "queue_full" if over_size else "expired")
                b = await self._store.read(xl.backlog, lane.signal, lane.position)
                size = b.bytes if q.sizer == "bytes" else b.items
        lane.queue_size, lane.oldest_ns = size, b.oldest_ns

    async def _drop_to(self, lane: Lane, target: xl.Position, reason: str) -> None:
        dropped = target.end_items - lane.position.end_items
        self._warn(lane, "queue bound (%s): dropping the oldest %d undelivered items", reason, dropped)
        if not self.keeps_totals:
            await self._write_retrying(lane, lambda c: xl.advance(c, self.component_id, lane.signal, target))
            lane.position = target
        else:
            # A forwarder keeping running totals folds what it drops, so later totals stay exact.
            while lane.position.seq < target.seq:
                entries = await self._store.read(xl.read_entries, lane.signal, lane.position,
                                                 self.max_request_bytes, MAX_REQUEST_ENTRIES)
                entries = [e for e in entries if e.seq <= target.seq]
                if not entries:
                    to = target
                    await self._write_retrying(lane, lambda c: xl.advance(c, self.component_id, lane.signal, to))
                    lane.position = to
                    break
                state = await self.fold_dropped(lane.signal, entries)
                to = entries[-1].position()
                await self._write_retrying(lane, lambda c: xl.advance(c, self.component_id, lane.signal, to,
                                                                      state))
                lane.position = to
                self.state_committed(state)
        self._drop(lane.signal, dropped, reason)

    async def _write_retrying(self, lane: Lane, fn) -> Any:
        """A cursor write must not be lost to a momentarily full write queue."""
        while True:
            try:
                return await self._store.write(fn)
            except StoreFull as e:
                await self._pause(lane, f"store: {e}", force=True)

    async def _idle(self, lane: Lane) -> None:
        lane.queue_size, lane.oldest_ns = 0, None
        waiter = asyncio.ensure_future(lane.wake.wait())
        try:
            await asyncio.wait([waiter], timeout=_IDLE_POLL_S)
        finally:
            waiter.cancel()

    async def _wait_to_retry(self, lane: Lane, delay: float, first_seq: int) -> None:
        """Sleep `delay` (ending early on shutdown), keeping the queue's figures and bounds current."""
        deadline = time.monotonic() + delay
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), min(remaining, _REFRESH_S))
            except asyncio.TimeoutError:
                pass
            try:
                await self._refresh(lane)
            except (StoreFull, StoreUnavailable):
                pass
            if lane.position.seq >= first_seq:
                return  # the bound dropped the request being retried: go on with what is left

    async def _pause(self, lane: Lane, message: str, force: bool = False) -> None:
        self._warn(lane, "%s", message)
        if force:
            await asyncio.sleep(_STORE_RETRY_S)
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), _STORE_RETRY_S)
        except asyncio.TimeoutError:
            pass

    def _warn(self, lane: Lane, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - lane.warned_at >= _WARN_EVERY_S:
            lane.warned_at = now
            log.warning("exporter %s (%s): " + message, self.component_id, lane.signal, *args)
