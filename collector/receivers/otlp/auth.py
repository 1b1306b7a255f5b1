"""Which project OTLP data belongs to, and whether the sender may send it (auth.md, "Where auth applies").

`receivers.otlp.auth` unset (default) or `none`: open, as sidecars on loopback expect; data goes to the
default project, or to the one named by the `X-Otelite-Project` header (gRPC metadata
`x-otelite-project`). That header is honoured only from a loopback peer, or with an API key of that
project with the `ingest` scope: otherwise any host reaching a non-loopback listener could write into any
project (issue 10). Unset is refused at start-up on a non-loopback listener (config.py); `none` says so
deliberately.
`required`: the sender must present a key with the `ingest` scope, and the key picks the project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.component import is_loopback
from otelite.collector.store.keys import token_from_headers

if TYPE_CHECKING:
    from otelite.collector.store.keys import KeyStore

DEFAULT_PROJECT_ID = 1
UNAUTHENTICATED, FORBIDDEN, NOT_FOUND = "unauthenticated", "forbidden", "not_found"


class OtlpAuthError(Exception):
    """`kind`: UNAUTHENTICATED (401 / UNAUTHENTICATED), FORBIDDEN (403 / PERMISSION_DENIED) or
    NOT_FOUND (an unknown project: 404 / NOT_FOUND)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class OtlpProjectResolver:
    def __init__(self, mode: str | None, keys: "KeyStore") -> None:
        self._required = mode == "required"
        self._keys = keys

    def resolve(self, authorization: str | None, api_key: str | None, project_hint: str | None,
                loopback_peer: bool = True) -> int:
        token = token_from_headers(authorization, api_key, allow_bare=False)
        if self._required:
            if not token:
                raise OtlpAuthError("an API key with the ingest scope is required "
                                    "(Authorization: Bearer <key>)", UNAUTHENTICATED)
            key = self._keys.authenticate(token)
            if key is None:
                raise OtlpAuthError("the API key is invalid or revoked", UNAUTHENTICATED)
            if "ingest" not in key.scopes:
                raise OtlpAuthError("the API key lacks the ingest scope", UNAUTHENTICATED)
            return key.project_id
        if not project_hint:
            return DEFAULT_PROJECT_ID
        project = self._keys.project(project_hint)
        if not loopback_peer:
            key = self._keys.authenticate(token) if token else None
            if key is None or "ingest" not in key.scopes or project is None or key.project_id != project.id:
                # One answer whether the project exists or not (auth.md: do not reveal it).
                raise OtlpAuthError("X-Otelite-Project is honoured only from loopback, or with an API key of "
                                    "that project with the ingest scope (Authorization: Bearer <key>)",
                                    FORBIDDEN)
        if project is None:
            raise OtlpAuthError(f"no project {project_hint!r}", NOT_FOUND)
        return project.id

    def for_http(self, req) -> int:
        return self.resolve(req.get_header("Authorization"), req.get_header("X-API-Key"),
                            req.get_header("X-Otelite-Project"), is_loopback(req.remote_addr or ""))

    def for_grpc(self, context) -> int:
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        return self.resolve(md.get("authorization"), md.get("x-api-key"), md.get("x-otelite-project"),
                            grpc_peer_is_loopback(context.peer() or ""))


def grpc_peer_is_loopback(peer: str) -> bool:
    """`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000` (grpc's peer strings) → loopback? A Unix socket is local."""
    kind, _, address = peer.partition(":")
    if kind == "unix":
        return True
    if kind == "ipv6":
        host = address.rpartition("]")[0].lstrip("[")
    elif kind == "ipv4":
        host = address.rpartition(":")[0]
    else:
        return False
    return is_loopback(host)
