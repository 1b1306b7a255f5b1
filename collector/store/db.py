"""Opening the SQLite file: migrations once, then one writer connection and any number of readers."""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlite_utils import Database

from otelite.collector.store import budget, functions
from otelite.collector.store.migrations import migrate

log = logging.getLogger("otelite.store")

# CPython's sqlite3 (3.11) passes every parameter that is not an exact int, float, str or bytearray
# through its adapter protocol (Modules/_sqlite/cursor.c `need_adapt`), None and bytes included: with no
# adapter registered for the type, each such parameter looks for `__adapt__` and `__conform__` and clears
# the AttributeErrors, 0.4-0.9 µs a parameter here, while an int takes ~0.1. The writer binds millions of
# them (a gauge's state row has six Nones; a span has its trace id, span id and parent id, a root span's
# parent being None): registering an adapter turns that into a dict lookup and a C call that returns the
# value itself. `{}.get` returns None for None, and `bytes.__bytes__` an exact bytes object itself (a
# subclass is not looked up under `bytes`), so what SQLite is given is the same NULL or BLOB.
# (Process-wide, as every sqlite3 adapter is; it changes no value.)
sqlite3.register_adapter(type(None), {}.get)
sqlite3.register_adapter(bytes, bytes.__bytes__)


# The database holds every project's telemetry and the API keys' hashes: readable by its owner only.
# SQLite creates the -wal and -shm files with the database file's permissions, so creating the database
# 0600 makes all three 0600 whatever the process umask.
FILE_MODE = 0o600


def create_private(path: str) -> bool:
    """Create an empty database file at `path` readable and writable by its owner only (FILE_MODE).
    False when it already existed (its permissions are then left as its owner set them)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask; this is not
    finally:
        os.close(fd)
    return True


def prepare_database(path: str) -> int:
    """Create (0600) or migrate the file at `path` (WAL mode) and return its schema version.

    Raises migrations.SchemaTooNewError for a file written by a newer otelite.
    """
    if path != ":memory:" and not path.startswith("file:"):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        if create_private(path):  # the path SQLite opens, as given
            log.info("created the database %s (mode 0600)", path)
    conn = sqlite3.connect(path)
    try:
        # WAL is a property of the file: set once here, every later connection inherits it (store.md).
        conn.execute("PRAGMA journal_mode=WAL")
        return migrate(Database(conn))
    finally:
        conn.close()


# The writer's page cache by default (exporters.sqlite.cache_mib; why 16: exporters/sqlite/config.py).
WRITER_CACHE_MIB = 16


def connect_writer(path: str, *, synchronous: str = "NORMAL", cache_mib: int = WRITER_CACHE_MIB,
                   busy_timeout: float = 5.0, autocheckpoint_pages: int | None = None) -> sqlite3.Connection:
    """The single writer's connection; transactions are managed explicitly (BEGIN IMMEDIATE/COMMIT).
    `autocheckpoint_pages`: the WAL size at which a commit checkpoints itself (SQLite's default 1000; the
    server's writer leaves checkpoints to checkpoint.py and keeps this only as a safety net)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (kill -9); FULL also survives power loss.
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
    # Negative cache_size is KiB. store.md: a large cache keeps the random trace-id index in memory.
    conn.execute(f"PRAGMA cache_size={-int(cache_mib) * 1024}")
    conn.execute("PRAGMA temp_store=MEMORY")
    # Debian's SQLite is built with SECURE_DELETE on: every page a delete frees is written out again as
    # zeros. Dropping a migrated store's 24.8M-entry service index took 4-18 s of the writer's time so
    # (docs/benchmarks.md, 2026-12-04 17:55), 0.8 s with FAST, which still zeroes deleted rows on the pages
    # a write rewrites anyway; only whole freed pages keep their bytes until reused (the file is 0600).
    conn.execute("PRAGMA secure_delete=FAST")
    if autocheckpoint_pages is not None:
        conn.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint_pages)}")
    return conn


def connect_reader(path: str, *, cache_mib: int = 32) -> sqlite3.Connection:
    """A read connection: never takes the write lock, so readers never block the writer (WAL). Prepared
    once here (pragmas, the SQL functions of functions.py), like Datasette's read connections."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA query_only=ON")
    conn.execute(f"PRAGMA cache_size={-int(cache_mib) * 1024}")
    functions.register(conn)
    budget.install(conn)  # a read's deadline (Store.read) interrupts its statements
    return conn


# What a reader's page cache is held to while it reads payloads it will not read again (passing_through).
PASSING_CACHE_KIB = 2048


@contextmanager
def passing_through(conn: sqlite3.Connection) -> Iterator[None]:
    """Reads of many BLOB pages the caller decodes once and keeps (a query's first load of a metric's
    rollups or chunks: the point cache holds them after) with the connection's page cache held small,
    then set back. Through a reader's 32 MiB cache, a day's rollups filled ~24 MiB of it with pages no
    later query reads again, memory a fresh process's first query faults in (docs/benchmarks.md,
    2026-12-04). Shrinking the cache drops the pages it held over the small size (tracing queries read
    them again from the OS's cache); it works inside a read transaction, which it leaves as it is."""
    (before,) = conn.execute("PRAGMA cache_size").fetchone()
    conn.execute(f"PRAGMA cache_size={-PASSING_CACHE_KIB}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={int(before)}")


def database_bytes(path: str) -> int:
    """Size on disk of the database and its WAL (what `otelite_store_database_bytes` reports)."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total
