"""Load for the kill -9 tests: threads that keep posting OTLP/HTTP requests to a live server until stopped
or until the server is gone, and remember which request numbers were acknowledged (200)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx


class Lanes:
    """`lanes` threads; lane k sends request numbers k, k + lanes, k + 2 × lanes, ..., each body `body(n)`."""

    def __init__(self, url: str, body: Callable[[int], bytes], lanes: int = 4) -> None:
        self.acked: list[int] = []
        self._url, self._body, self._n = url, body, lanes
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(k,)) for k in range(lanes)]

    def start(self) -> Lanes:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _send(self, lane: int) -> None:
        client = httpx.Client(timeout=10)
        n = lane
        while not self._stop.is_set():
            try:
                r = client.post(self._url, content=self._body(n), headers={"Content-Type": "application/x-protobuf"})
            except httpx.HTTPError:
                break  # the server is gone (killed)
            if r.status_code == 200:
                self.acked.append(n)
            n += self._n
        client.close()
