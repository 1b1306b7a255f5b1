"""Opening the SQLite file: migrations once, then one writer connection and any number of readers."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from otelite.collector.store import functions
from otelite.collector.store.migrations import migrate


def prepare_database(path: str) -> int:
    """Create or migrate the file at `path` (WAL mode) and return its schema version.

    Raises migrations.SchemaTooNewError for a file written by a newer otelite.
    """
    if path != ":memory:":
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        # WAL is a property of the file: set once here, every later connection inherits it (store.md).
        conn.execute("PRAGMA journal_mode=WAL")
        return migrate(Database(conn))
    finally:
        conn.close()


def connect_writer(path: str, *, synchronous: str = "NORMAL", cache_mib: int = 128,
                   busy_timeout: float = 5.0) -> sqlite3.Connection:
    """The single writer's connection; transactions are managed explicitly (BEGIN IMMEDIATE/COMMIT)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (kill -9); FULL also survives power loss.
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
    # Negative cache_size is KiB. store.md: a large cache keeps the random trace-id index in memory.
    conn.execute(f"PRAGMA cache_size={-int(cache_mib) * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def connect_reader(path: str, *, cache_mib: int = 32) -> sqlite3.Connection:
    """A read connection: never takes the write lock, so readers never block the writer (WAL). Prepared
    once here (pragmas, the SQL functions of functions.py), like Datasette's read connections."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA query_only=ON")
    conn.execute(f"PRAGMA cache_size={-int(cache_mib) * 1024}")
    functions.register(conn)
    return conn


def database_bytes(path: str) -> int:
    """Size on disk of the database and its WAL (what `otelite_store_database_bytes` reports)."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total
