"""`otelite serve`: the store, the pipelines' exporters, the Falcon app on uvicorn and the grpc.aio server
in one event loop.

Start-up that fails halfway shuts down what it already started. SIGINT/SIGTERM: stop accepting, let
in-flight requests finish (they wait for their commits), drain the queue, commit, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from typing import TYPE_CHECKING

import uvicorn

from otelite.api.app import create_app
from otelite.api.prometheus import create_scrape_app
from otelite.collector import malloc
from otelite.collector.component import Host, parse_endpoint
from otelite.collector.pipeline.fanout import build_pipelines
from otelite.collector.pipeline.ingest import Ingest
from otelite.collector.pipeline.memory_limiter import run_memory_limiter
from otelite.collector.pipeline.walker import Walker
from otelite.collector.receivers.admission import BodyBudget
from otelite.collector.receivers.otlp import grpc as otlp_grpc
from otelite.collector.receivers.otlp.auth import OtlpProjectResolver
from otelite.collector.receivers.otlp.config import HttpServerConfig
from otelite.collector.store.keys import KeyStore, create_first_key
from otelite.collector.store.store import Store
from otelite.collector.telemetry import Telemetry

if TYPE_CHECKING:
    from otelite.collector.config import Config

log = logging.getLogger("otelite")

_GRPC_GRACE_S = 10.0


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGINT/SIGTERM for both servers."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def _first_run_key(config: "Config", store: Store) -> None:
    """auth.md: with no key at all, create one admin key for the default project and show it once."""
    if config.auth.mode == "none":
        return
    created = await store.write(create_first_key)
    if created is None:
        return
    key, secret = created
    print(f"otelite: created the first API key (id {key.id}, all scopes, project 'default'). It is shown only "
          f"once; keep it somewhere safe:\n\n    {secret}\n\nSend it as 'Authorization: Bearer <key>'. "
          f"Create narrower keys with 'otelite keys create --project default --scope metrics:read'.",
          flush=True)


async def serve(config: "Config") -> int:
    telemetry = Telemetry()
    store = Store(config.sqlite, config.batch, telemetry, query_timeout=config.api.query_timeout,
                  query_workers=config.api.query_workers)
    store.start()
    # Heap holes back to the system after ingest pressed (malloc.py).
    trimmer = malloc.trimmer(store.writer.pressed_since_asked)
    if trimmer is not None:
        trimmer.start()
    pipelines = None
    walker: Walker | None = None
    grpc_server = None
    http_server: _Uvicorn | None = None
    scrape_server: _Uvicorn | None = None  # exporters.prometheus.endpoint, when configured
    limiter: asyncio.Task | None = None
    try:
        await _first_run_key(config, store)
        built = build_pipelines(config, Host(store, telemetry))
        await built.start()  # shuts down what it started if it fails halfway
        pipelines = built
        walker = Walker(config.otlp.decode_workers)
        ingest = Ingest(pipelines, telemetry, walker, body_budget=BodyBudget(config.otlp.max_inflight_bytes))
        otlp = config.otlp
        walker.warm_up()  # in the main thread (see Walker.warm_up); nothing is served yet
        if otlp.protocols.grpc is not None:
            resolver = OtlpProjectResolver(otlp.auth, KeyStore(store.reader()))
            grpc_server, _ = otlp_grpc.create_server(otlp.protocols.grpc, ingest, resolver.for_grpc)
            await grpc_server.start()
            log.info("OTLP/gRPC listening on %s", otlp.protocols.grpc.endpoint)
        http_cfg = otlp.protocols.http or HttpServerConfig()
        app = create_app(config, store, ingest, telemetry)
        limiter = asyncio.create_task(run_memory_limiter(config.memory_limiter, store.writer))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        http_server, http_task = await _listen(app, http_cfg.endpoint, "HTTP (OTLP/HTTP, API, /healthz)",
                                               timeout_graceful_shutdown=30)
        if config.prometheus.endpoint is not None:
            scrape_server, scrape_task = await _listen(create_scrape_app(config, store, telemetry),
                                                       config.prometheus.endpoint, "Prometheus /metrics")
        log.info("storing data in %s (schema version %d)", store.path, store.schema_version)
        # Ingest allocates many short-lived tuples and dicts: keep the start-up heap out of the cyclic
        # collector and collect the young generation less often (measured ~10% on the metrics walk).
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        await stop.wait()
        log.info("shutting down: no new requests; draining the queue")
        http_server.should_exit = True
        waits = [http_task]
        if scrape_server is not None:
            scrape_server.should_exit = True
            waits.append(scrape_task)
        if grpc_server is not None:
            waits.append(asyncio.create_task(grpc_server.stop(_GRPC_GRACE_S)))
        await asyncio.gather(*waits, return_exceptions=True)
        return 0
    finally:
        if limiter is not None:
            limiter.cancel()
        if http_server is not None and not http_server.should_exit:
            http_server.should_exit = True
        if scrape_server is not None:
            scrape_server.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(0)
        if walker is not None:
            await asyncio.to_thread(walker.close)
        if pipelines is not None:
            await pipelines.shutdown()
        # The writer drains what was admitted before it stops: nothing acknowledged, nothing lost.
        await asyncio.to_thread(store.close)
        if trimmer is not None:
            trimmer.close()
        log.info("stopped; %d items committed this run", store.writer.committed_items)


async def _listen(app, endpoint: str, what: str, **options) -> tuple[_Uvicorn, asyncio.Task]:
    """Serve `app` on `endpoint` with uvicorn; returns once it listens.

    The socket is bound here, so a port in use is an OSError naming the endpoint (uvicorn itself would
    sys.exit from inside the event loop)."""
    host, port = parse_endpoint(endpoint)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP, and
    # without it every response after the first on a keep-alive connection waited ~40 ms for the client's
    # delayed ACK (Nagle). Setting it on the listener too is inherited by accepted sockets on Linux.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {endpoint} for {what}: {e.strerror}") from None
    server = _Uvicorn(uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                     http="httptools", server_header=False, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            raise OSError(f"cannot listen on {endpoint} for {what}")
        await asyncio.sleep(0.01)
    log.info("%s listening on %s", what, endpoint)
    return server, task


def run(config: "Config") -> int:
    try:
        return asyncio.run(serve(config))
    except SystemExit as e:  # uvicorn exits this way when it cannot bind
        return int(e.code or 1)
