"""Projects and API keys in the store (auth.md).

Keys are `otl_` + 32 random bytes (urlsafe base64), shown once at creation and stored only as their
SHA-256; a presented key is hashed, looked up by hash and compared in constant time. The prefix makes a
leaked key greppable; the first characters are kept (`display`) so a person can tell keys apart.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

KEY_PREFIX = "otl_"
SCOPES = ("metrics:read", "metrics:write", "tracing:read", "tracing:write", "metric_groups:write", "ingest")
_PROJECT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class KeyStoreError(ValueError):
    """A management request that cannot be done (unknown project, bad scope, ...): the message says why."""


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    key: str
    name: str
    timezone: str


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    project_id: int
    project_key: str
    name: str
    display: str  # e.g. "otl_AbC1…": enough to recognise, useless to authenticate
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class KeyStore:
    """Look-ups of projects and keys on the read connection it is given (the server keeps one for the
    event loop's thread). Writes are the functions below, run through `Store.write` / `write_sync`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def projects(self) -> list[Project]:
        return [Project(*r) for r in self._conn.execute("SELECT id, key, name, timezone FROM projects ORDER BY id")]

    def project(self, id_or_key: str | int) -> Project | None:
        """Path ids accept either the integer id or the key (auth.md)."""
        text = str(id_or_key)
        if text.isascii() and text.isdigit():  # not "²" or "١" (str.isdigit), which int() refuses
            if len(text) > 18:
                return None  # beyond SQLite's 64-bit integers: no such project
            row = self._conn.execute("SELECT id, key, name, timezone FROM projects WHERE id = ?",
                                     (int(text),)).fetchone()
        else:
            row = self._conn.execute("SELECT id, key, name, timezone FROM projects WHERE key = ?", (text,)).fetchone()
        return Project(*row) if row else None

    def keys(self) -> list[ApiKey]:
        rows = self._conn.execute(
            "SELECT k.id, k.project_id, p.key, k.name, k.display, k.scopes, k.created_at, k.revoked_at "
            "FROM api_keys k JOIN projects p ON p.id = k.project_id ORDER BY k.id").fetchall()
        return [ApiKey(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7]) for r in rows]

    def count_keys(self) -> int:
        return self._conn.execute("SELECT count(*) FROM api_keys").fetchone()[0]

    def authenticate(self, presented: str) -> ApiKey | None:
        """The active key whose secret is `presented`, or None (unknown, malformed or revoked)."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 256:
            return None
        digest = hash_secret(presented)
        row = self._conn.execute(
            "SELECT k.id, k.project_id, p.key, k.name, k.display, k.scopes, k.created_at, k.revoked_at, "
            "k.secret_hash FROM api_keys k JOIN projects p ON p.id = k.project_id WHERE k.secret_hash = ?",
            (digest,)).fetchone()
        # The lookup is by hash (no timing signal about the secret); compare_digest guards the match itself.
        if row is None or not hmac.compare_digest(row[8], digest) or row[7] is not None:
            return None
        return ApiKey(row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), row[6], row[7])


# --- writes: functions of the writer's connection, for Store.write / Store.write_sync ----------------------
# Each runs inside the writer's transaction (its own savepoint): a KeyStoreError rolls back its work only.

def create_project(conn: sqlite3.Connection, key: str, *, name: str | None = None, timezone: str = "UTC") -> Project:
    if not _PROJECT_KEY.match(key):
        raise KeyStoreError(f"project key {key!r} must be 1-63 characters of a-z, 0-9, '-' and '_'")
    if key.isdigit():
        raise KeyStoreError("a project key cannot be all digits (it would read as a project id)")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise KeyStoreError(f"unknown timezone {timezone!r} (use an IANA name such as Europe/Paris)") from None
    try:
        cur = conn.execute("INSERT INTO projects (key, name, timezone, created_at) VALUES (?, ?, ?, ?)",
                           (key, name or key, timezone, _now()))
    except sqlite3.IntegrityError:
        raise KeyStoreError(f"a project with key {key!r} already exists") from None
    return Project(cur.lastrowid, key, name or key, timezone)


def create_key(conn: sqlite3.Connection, project: str | int, scopes: list[str] | tuple[str, ...],
               name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns it with the secret, which is never stored and cannot be shown again."""
    proj = KeyStore(conn).project(project)
    if proj is None:
        raise KeyStoreError(f"no project {project!r}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyStoreError(f"unknown scope {', '.join(unknown) or '(none given)'}; scopes are {', '.join(SCOPES)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    display = secret[:len(KEY_PREFIX) + 4] + "…"
    ordered = tuple(s for s in SCOPES if s in scopes)
    created = _now()
    cur = conn.execute(
        "INSERT INTO api_keys (project_id, name, display, secret_hash, scopes, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)", (proj.id, name, display, hash_secret(secret), json.dumps(ordered), created))
    return ApiKey(cur.lastrowid, proj.id, proj.key, name, display, ordered, created, None), secret


def revoke_key(conn: sqlite3.Connection, key_id: int) -> ApiKey:
    cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (_now(), key_id))
    key = next((k for k in KeyStore(conn).keys() if k.id == key_id), None)
    if key is None:
        raise KeyStoreError(f"no API key with id {key_id}")
    if cur.rowcount == 0 and key.revoked_at is None:
        raise KeyStoreError(f"API key {key_id} could not be revoked")
    return key


def create_first_key(conn: sqlite3.Connection) -> tuple[ApiKey, str] | None:
    """auth.md, "First run": with no key at all, one admin key (every scope) for the default project.
    None when a key exists. The check and the insert are one transaction, so two processes starting on
    one file create one key between them."""
    if KeyStore(conn).count_keys():
        return None
    return create_key(conn, 1, SCOPES, name="admin (first run)")


def token_from_headers(authorization: str | None, api_key: str | None, *, allow_bare: bool = True) -> str | None:
    """The presented key: `Authorization: Bearer <key>`, `X-API-Key: <key>`, or (LaunchDarkly clients)
    a bare `Authorization: <key>`."""
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if rest and scheme.lower() == "bearer":
            return rest.strip()
        if not rest and allow_bare:
            return scheme
    if api_key:
        return api_key.strip()
    return None
