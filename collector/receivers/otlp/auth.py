"""Which project OTLP data belongs to, and whether the sender may send it (auth.md, "Where auth applies").

`receivers.otlp.auth: none` (default): open, as sidecars on loopback expect; data goes to the default
project or to the one named by the `X-Otelite-Project` header (gRPC metadata `x-otelite-project`).
`required`: the sender must present a key with the `ingest` scope, and the key picks the project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otelite.collector.store.keys import token_from_headers

if TYPE_CHECKING:
    from otelite.collector.store.keys import KeyStore

DEFAULT_PROJECT_ID = 1


class OtlpAuthError(Exception):
    """`unauthenticated`: 401 / UNAUTHENTICATED; otherwise an unknown project: 404 / NOT_FOUND."""

    def __init__(self, message: str, *, unauthenticated: bool) -> None:
        super().__init__(message)
        self.unauthenticated = unauthenticated


class OtlpProjectResolver:
    def __init__(self, mode: str, keys: "KeyStore") -> None:
        self._required = mode == "required"
        self._keys = keys

    def resolve(self, authorization: str | None, api_key: str | None, project_hint: str | None) -> int:
        if self._required:
            token = token_from_headers(authorization, api_key, allow_bare=False)
            if not token:
                raise OtlpAuthError("an API key with the ingest scope is required "
                                    "(Authorization: Bearer <key>)", unauthenticated=True)
            key = self._keys.authenticate(token)
            if key is None:
                raise OtlpAuthError("the API key is invalid or revoked", unauthenticated=True)
            if "ingest" not in key.scopes:
                raise OtlpAuthError("the API key lacks the ingest scope", unauthenticated=True)
            return key.project_id
        if not project_hint:
            return DEFAULT_PROJECT_ID
        project = self._keys.project(project_hint)
        if project is None:
            raise OtlpAuthError(f"no project {project_hint!r}", unauthenticated=False)
        return project.id

    def for_http(self, req) -> int:
        return self.resolve(req.get_header("Authorization"), req.get_header("X-API-Key"),
                            req.get_header("X-Otelite-Project"))

    def for_grpc(self, context) -> int:
        md = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        return self.resolve(md.get("authorization"), md.get("x-api-key"), md.get("x-otelite-project"))
