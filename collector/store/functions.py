"""The SQL functions compiled queries call, registered once when a read connection opens (db.py).

Datasette's habit: a read connection is prepared once (functions, pragmas) and then only runs queries,
so no query registers anything on the hot path.
"""

from __future__ import annotations

import math
import sqlite3

from otelite.collector.store.comparisons import semver_compare, semver_key
from otelite.collector.store.regex import compile_regex


def _regexp(pattern: str | None, value) -> int | None:
    """otelite_regexp(pattern, value): 1 when `pattern` (RE2) matches anywhere in `value`, NULL for NULL.
    Patterns are validated (compile_regex) when a request is parsed, before any query runs."""
    if pattern is None or value is None:
        return None
    return 1 if compile_regex(pattern).search(value if isinstance(value, str) else str(value)) else 0


def _number(value) -> float | None:
    """otelite_num(value): the value as a number when it is one or reads as one, else NULL."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _semver_cmp(value, reference) -> int | None:
    """otelite_semver_cmp(value, reference): -1, 0 or 1 comparing two versions part by part
    (comparisons.semver_key), NULL when either is not a version."""
    a = semver_key(value if isinstance(value, str) else None)
    b = semver_key(reference if isinstance(reference, str) else None)
    if a is None or b is None:
        return None
    return semver_compare(a, b)


def register(conn: sqlite3.Connection) -> None:
    conn.create_function("otelite_regexp", 2, _regexp, deterministic=True)
    conn.create_function("otelite_num", 1, _number, deterministic=True)
    conn.create_function("otelite_semver_cmp", 2, _semver_cmp, deterministic=True)
