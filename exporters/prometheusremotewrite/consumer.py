"""Sends the export log's metrics to a remote-write 1.0 receiver.

Wire format and status codes as the specification says: a snappy-compressed (block format) protobuf
`WriteRequest` POSTed with `Content-Encoding: snappy`, `Content-Type: application/x-protobuf`,
`X-Prometheus-Remote-Write-Version: 0.1.0` and a User-Agent; 5xx is retried with backoff, 429 is retried
honouring Retry-After, any other 4xx is permanent ("MUST NOT retry write requests on HTTP 2xx and 4xx
responses other than 429"). The translation and the running totals are convert.py's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import cramjam
import httpx

from otelite.collector.store import export_log as xl
from otelite.exporters.forwarding.client import USER_AGENT, HttpForwarder
from otelite.exporters.forwarding.outcome import Delivered, Outcome, Permanent, Retryable, retry_after_seconds
from otelite.exporters.forwarding.queue import Prepared
from otelite.exporters.prometheusremotewrite.convert import Converter, Need

if TYPE_CHECKING:
    from otelite.collector.component import Host
    from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig

_MAX_ERROR_BYTES = 256


class RemoteWriteExporter(HttpForwarder):
    keeps_totals = True
    max_request_bytes = 1 << 20  # of OTLP requests per send: samples are larger than the points they come from

    def __init__(self, component_id: str, host: "Host", config: "PrometheusRemoteWriteExporterConfig") -> None:
        super().__init__(component_id, host, retry=config.retry_on_failure, queue=config.sending_queue,
                         timeout=config.timeout)
        self._config = config
        self._converter = Converter(config)
        self._headers = {**config.headers, "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                         "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": USER_AGENT}

    async def _walk(self, entries: list[xl.Entry]) -> Need:
        need = await asyncio.to_thread(self._converter.walk, entries)
        totals = await self._store.read(xl.load_state, self.component_id, xl.TOTALS, need.totals) \
            if need.totals else {}
        last_sent = await self._store.read(xl.load_state, self.component_id, xl.LAST_SENT, need.last_sent) \
            if need.last_sent else {}
        values = await self._store.read(xl.window_values, need.windows) if need.windows else {}
        self._converter.load(totals, last_sent, need, values)
        return need

    async def prepare(self, signal: str, entries: list[xl.Entry]) -> Prepared:
        need = await self._walk(entries)
        build = await asyncio.to_thread(self._converter.build, need)
        bodies = [bytes(cramjam.snappy.compress_raw(r)) for r in build.requests]
        dropped = {"out_of_order": build.out_of_order} if build.out_of_order else {}
        return Prepared(bodies, entries, build.state, build.items, dropped)

    async def fold_dropped(self, signal: str, entries: list[xl.Entry]) -> dict | None:
        need = await self._walk(entries)
        return (await asyncio.to_thread(self._converter.fold, need)).state

    def state_committed(self, state: dict | None) -> None:
        self._converter.commit(state)

    async def send(self, signal: str, prepared: Prepared) -> Outcome:
        # Requests of one send go in order; if a later one fails, all are sent again: the receiver stores
        # identical samples once (same series, timestamp and value).
        for body in prepared.body:
            outcome = await self._post(body)
            if not isinstance(outcome, Delivered):
                return outcome
        return Delivered()

    async def _post(self, body: bytes) -> Outcome:
        url = self._config.endpoint
        extensions = {"sni_hostname": self._config.tls.server_name_override} \
            if self._config.tls.server_name_override else None
        try:
            response = await self._client.post(url, content=body, headers=self._headers, extensions=extensions)
        except httpx.HTTPError as e:
            return Retryable(f"POST {url}: {type(e).__name__}: {e}")
        status = response.status_code
        if 200 <= status < 300:
            return Delivered()
        # 1.0: "Senders MUST NOT try and interpret the error message, and SHOULD log it as is."
        text = response.content[:_MAX_ERROR_BYTES].decode("utf-8", "replace").strip()
        message = f"POST {url}: HTTP {status}" + (f": {text}" if text else "")
        if status >= 500:
            return Retryable(message)
        if status == 429:
            return Retryable(message, retry_after_seconds(response.headers.get("retry-after")))
        return Permanent(message)
