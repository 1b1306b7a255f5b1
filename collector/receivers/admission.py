"""Admission before buffering (issue 16): a budget of request bytes the OTLP receiver holds at once.

The writer's queue bounds the rows waiting for a commit, but not the requests before them: with 264
requests in flight, uvicorn and grpc used to read every body whole (~470 KiB each) before admission could
refuse one, and the process went past 300 MB. Now a request takes its share of this budget *before* its
body is read and gives it back when it is answered (its rows committed, or refused):

- OTLP/HTTP: the declared Content-Length, before the body is read (a chunked body, chunk by chunk as it
  is read); after decompression, the decompressed size. No room: 503 with Retry-After at once. Falcon
  dispatches a request on its first body event, so what the process holds of a refused body is what
  uvicorn had read when the request was dispatched (its socket reads stop at 64 KiB buffered while the
  app does not read); the rest is never read until the response is sent, then discarded.
- OTLP/gRPC: `GRPC_RESERVE` before the message is received (the handler takes its one message itself,
  see grpc.py), then the message's real size. No room: UNAVAILABLE with RetryInfo, the message unread
  (HTTP/2 flow control holds the sender back).

A request larger than the whole budget is admitted when nothing else is held, or it could never be
stored. Everything runs on the event loop, so no lock is needed.
"""

from __future__ import annotations

from otelite.collector.store.writer import StoreFull

GRPC_RESERVE = 1 << 20  # held for a gRPC message not yet received (OTLP exporters send well under 1 MiB)


class BodyBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = 0
        self.refused = 0  # requests refused for want of room (telemetry, tests)

    def reservation(self) -> "Reservation":
        return Reservation(self)


class Reservation:
    """What one request holds; `close()` (always, in a finally) gives it back."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def resize(self, size: int) -> None:
        """Hold `size` bytes in all. Raises StoreFull (nothing more held) when the budget has no room."""
        b = self._budget
        more = size - self.size
        if more > 0 and b.held - self.size > 0 and b.held + more > b.limit:
            b.refused += 1
            raise StoreFull(1, "too many request bytes are being received; retry later")
        b.held += more
        self.size = size

    def grow(self, n: int) -> None:
        self.resize(self.size + n)

    def close(self) -> None:
        self._budget.held -= self.size
        self.size = 0
