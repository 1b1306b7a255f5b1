"""Keep-alive latency (issue 10, row 4): no response waits for the client's delayed ACK.

Without TCP_NODELAY on accepted sockets, every response after the first on a connection took ≥ 40 ms
(Nagle's algorithm holding the body until the client ACKed the headers). Ten requests on one
connection must each take well under that on an empty server.
"""

from __future__ import annotations

import http.client
import time

import pytest

from conftest import free_port, start_server

SCRAPE_PORT = free_port()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # Also the optional Prometheus listener (exporters.prometheus.endpoint): every HTTP listener.
    s = start_server(tmp_path_factory.mktemp("keepalive"), {"exporters": {
        "sqlite": {}, "prometheus": {"endpoint": f"127.0.0.1:{SCRAPE_PORT}"}}})
    yield s
    s.kill()


def _timings(port: int, path: str, headers: dict | None = None) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(10):
            started = time.perf_counter()
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - started)
            assert resp.status == 200
            assert resp.getheader("Connection", "").lower() != "close"
    finally:
        conn.close()
    return out


def _best_round(port: int, path: str, headers: dict | None = None, rounds: int = 5) -> list[float]:
    """Of up to `rounds` rounds of ten requests (each on its own keep-alive connection), the first whose
    requests after the first all took < 20 ms, else the one whose slowest was fastest. Without
    TCP_NODELAY every request of every round took ≥ 40 ms; on the shared 2-core machine under load
    (average 20+) CPU contention delays single requests at random, so one round alone was flaky."""
    best: list[float] | None = None
    for _ in range(rounds):
        timings = _timings(port, path, headers)
        if best is None or max(timings[1:]) < max(best[1:]):
            best = timings
        if max(best[1:]) < 0.020:
            break
    return best


def test_ten_keepalive_requests_each_under_20ms(srv) -> None:
    timings = _best_round(srv.http_port, "/healthz")
    assert max(timings[1:]) < 0.020, [round(t * 1000, 1) for t in timings]


def test_keepalive_on_an_authenticated_route(srv) -> None:
    key = srv.admin_key()
    timings = _best_round(srv.http_port, "/api/projects/default/metrics/has_metrics",
                          {"Authorization": f"Bearer {key}"})
    assert max(timings[1:]) < 0.020, [round(t * 1000, 1) for t in timings]


def test_keepalive_on_the_prometheus_listener(srv) -> None:
    timings = _best_round(SCRAPE_PORT, "/metrics", {"Authorization": f"Bearer {srv.admin_key()}"})
    assert max(timings[1:]) < 0.020, [round(t * 1000, 1) for t in timings]
