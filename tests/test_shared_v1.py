"""The /api/v1 paths Flux and Trifle share (spec README, "The /api/v1/metrics collision"): the dispatch
picks a dialect by method and shape, and the chosen dialect's own policy, error shape and body apply.

Two small dialect resources stand in for Flux and Trifle (the real ones are tested in their own files);
auth runs against a real SQLite file with real keys.
"""

from __future__ import annotations

import gzip
import json
import sqlite3

import falcon
import falcon.asgi
import falcon.testing
import pytest

from otelite.api.auth import AuthMiddleware, RoutePolicy
from otelite.api.body import read_json
from otelite.api.errors import ErrorShape, add_error_handlers, bad_request
from otelite.api.ratelimit import RateLimiter
from otelite.api.shared_v1 import SharedV1
from otelite.collector.config import AuthConfig
from otelite.collector.store.db import connect_reader, prepare_database
from otelite.collector.store.keys import KeyStore, create_key

FLUX_ERRORS = ErrorShape("flux-test", lambda e: {"error": {"code": e.code, "message": e.message}})
TRIFLE_ERRORS = ErrorShape("trifle-test", lambda e: {"errors": {"detail": e.message}})


class _Echo:
    def __init__(self, dialect: str, policy: RoutePolicy) -> None:
        self.dialect, self.auth_policy = dialect, policy

    async def on_get(self, req, resp, **params) -> None:
        resp.media = {"dialect": self.dialect, "params": params}

    async def on_post(self, req, resp, **params) -> None:
        body = await read_json(req)
        if isinstance(body, dict) and body.get("boom"):
            raise bad_request("boom")
        resp.media = {"dialect": self.dialect, "body": body}


FLUX = RoutePolicy(errors=FLUX_ERRORS, scopes={"GET": "metrics:read", "POST": "metrics:write"})
# A different scope for Trifle's POST than Flux's, so the test shows whose policy was applied.
TRIFLE = RoutePolicy(errors=TRIFLE_ERRORS, scopes={"GET": "metrics:read", "POST": "tracing:read"})


class _TrifleQuery:
    auth_policy = TRIFLE

    async def on_post(self, req, resp) -> None:
        resp.media = {"dialect": "trifle", "body": await read_json(req)}


@pytest.fixture
def client(tmp_path):
    db = str(tmp_path / "shared.db")
    prepare_database(db)
    with sqlite3.connect(db) as conn:
        _, writer = create_key(conn, "default", ["metrics:read", "metrics:write"])
        _, reader = create_key(conn, "default", ["metrics:read", "tracing:read"])
    app = falcon.asgi.App(middleware=[AuthMiddleware(AuthConfig(mode="required"), KeyStore(connect_reader(db)),
                                                     RateLimiter({}))])
    add_error_handlers(app)
    shared = SharedV1()
    shared.claim("flux", "/metrics", _Echo("flux", FLUX))
    shared.claim("trifle", "/metrics", _Echo("trifle", TRIFLE))
    shared.claim("flux", "/metrics/{name}", _Echo("flux", FLUX))
    shared.claim("trifle", "/metrics/query", _TrifleQuery())
    shared.mount(app)
    c = falcon.testing.TestClient(app)
    c.writer = {"Authorization": f"Bearer {writer}"}
    c.reader = {"Authorization": f"Bearer {reader}"}
    return c


def test_get_goes_to_trifle_with_a_range_and_to_flux_without(client) -> None:
    assert client.simulate_get("/api/v1/metrics", headers=client.writer).json["dialect"] == "flux"
    for param in ("from", "to", "granularity"):
        r = client.simulate_get("/api/v1/metrics", params={param: "x"}, headers=client.writer)
        assert r.json["dialect"] == "trifle", param


def test_post_goes_by_shape_and_the_body_is_read_once(client) -> None:
    trifle = {"key": "event::signup", "at": "2026-01-01T00:00:00Z", "values": {"count": 1}}
    r = client.simulate_post("/api/v1/metrics", json=trifle, headers=client.reader)
    assert (r.status_code, r.json) == (200, {"dialect": "trifle", "body": trifle})
    flux = {"name": "signups", "type": "counter", "value": 1}
    r = client.simulate_post("/api/v1/metrics", json=flux, headers=client.writer)
    assert (r.status_code, r.json) == (200, {"dialect": "flux", "body": flux})
    # Trifle::Stats' driver gzips its bodies: the dispatcher decides on the decompressed body.
    r = client.simulate_post("/api/v1/metrics", body=gzip.compress(json.dumps(trifle).encode()),
                             headers={**client.reader, "Content-Encoding": "gzip",
                                      "Content-Type": "application/json"})
    assert r.json == {"dialect": "trifle", "body": trifle}


def test_the_chosen_dialects_policy_and_error_shape_apply(client) -> None:
    # The writer key lacks Trifle's (test) POST scope but has Flux's, and the reverse for the reader key.
    trifle = {"key": "k", "values": {"a": 1}}
    r = client.simulate_post("/api/v1/metrics", json=trifle, headers=client.writer)
    assert r.status_code == 403 and r.json == {"errors": {"detail": "this API key lacks the tracing:read scope"}}
    r = client.simulate_post("/api/v1/metrics", json={"name": "n", "type": "gauge"}, headers=client.reader)
    assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
    r = client.simulate_post("/api/v1/metrics", json={"key": "k", "values": {}, "boom": 1}, headers=client.reader)
    assert r.status_code == 400 and r.json == {"errors": {"detail": "boom"}}
    r = client.simulate_post("/api/v1/metrics", json={"name": "n", "type": "gauge", "boom": 1},
                             headers=client.writer)
    assert r.status_code == 400 and r.json == {"error": {"code": "invalid_request", "message": "boom"}}


@pytest.mark.parametrize("body", [{"foo": 1}, [1, 2], "text", None])
def test_a_body_of_neither_shape_is_a_400_naming_both(client, body) -> None:
    r = client.simulate_post("/api/v1/metrics", json=body, headers=client.writer)
    assert r.status_code == 400
    # No dialect is chosen yet: the body holds both dialects' error shapes, each naming both body shapes.
    assert set(r.json) == {"error", "errors"} and r.json["error"]["code"] == "invalid_request"
    for message in (r.json["error"]["message"], r.json["errors"]["detail"]):
        assert "{key, at, values}" in message and "{name, type, value}" in message


def test_bad_bodies_are_400_or_413_never_500(client) -> None:
    r = client.simulate_post("/api/v1/metrics", body=b"{not json", headers=client.writer)
    assert r.status_code == 400 and "not valid JSON" in r.json["error"]["message"] == r.json["errors"]["detail"]
    r = client.simulate_post("/api/v1/metrics", body=b"[" * 100_000 + b"]" * 100_000, headers=client.writer)
    assert r.status_code == 400
    bomb = gzip.compress(b"{" + b" " * (4 << 20) + b"}")
    r = client.simulate_post("/api/v1/metrics", body=bomb, headers={**client.writer, "Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = client.simulate_post("/api/v1/metrics", body=b"{}", headers={**client.writer, "Content-Encoding": "br"})
    assert r.status_code == 415
    r = client.simulate_post("/api/v1/metrics", body=b"\x1f\x8b garbage",
                             headers={**client.writer, "Content-Encoding": "gzip"})
    assert r.status_code == 400


def test_one_claimant_is_routed_directly_and_methods_it_lacks_are_405(client) -> None:
    r = client.simulate_get("/api/v1/metrics/cpu", headers=client.writer)
    assert r.json == {"dialect": "flux", "params": {"name": "cpu"}}
    r = client.simulate_post("/api/v1/metrics/query", json={"key": "k"}, headers=client.reader)
    assert r.json["dialect"] == "trifle"
    assert client.simulate_get("/api/v1/metrics/query", headers=client.reader).status_code == 405
    r = client.simulate_delete("/api/v1/metrics", headers=client.writer)
    assert r.status_code == 405 and set(r.json) == {"error", "errors"}


def test_a_caller_without_a_valid_key_never_learns_what_is_wrong_with_its_body(client) -> None:
    # A body that chooses no dialect is a 400 only for a valid key; a stranger gets a 401 (in both shapes).
    for headers in ({}, {"Authorization": "Bearer otl_not_a_key"}):
        for body in (b"{not json", b'{"foo": 1}', b"[" * 100_000 + b"]" * 100_000):
            r = client.simulate_post("/api/v1/metrics", body=body, headers=headers)
            assert r.status_code == 401, (headers, body[:20], r.text)
            assert set(r.json) == {"error", "errors"} and r.json["error"]["code"] == "unauthorized"
        # A body of one dialect's shape: that dialect's 401, in its own shape.
        r = client.simulate_post("/api/v1/metrics", json={"key": "k", "values": {"a": 1}}, headers=headers)
        assert r.status_code == 401 and set(r.json) == {"errors"}
    r = client.simulate_post("/api/v1/metrics", body=b"{not json", headers=client.writer)
    assert r.status_code == 400  # with a key, the body's fault is named
