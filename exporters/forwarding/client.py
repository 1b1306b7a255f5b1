"""What the forwarders present to an upstream: their User-Agent, and the HTTP exporters' client (otlphttp,
prometheusremotewrite: one keep-alive httpx client each, opened and closed with the exporter)."""

from __future__ import annotations

import httpx

from otelite.exporters.forwarding.queue import Forwarder
from otelite.exporters.forwarding.tls import ssl_context

USER_AGENT = "otelite-forwarder/0.1"


def http_client(tls, timeout: float) -> httpx.AsyncClient:
    """An HTTP/1.1 client with keep-alive; TLS settings apply to https:// URLs."""
    return httpx.AsyncClient(verify=ssl_context(tls), timeout=timeout, follow_redirects=False,
                             trust_env=False, limits=httpx.Limits(max_connections=4))


class HttpForwarder(Forwarder):
    """A forwarder that POSTs through `self._client`, made from its config's `tls` and `timeout`."""

    _client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        self._client = http_client(self._config.tls, self._config.timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
