"""The comparisons a filter can ask of one value, shared by the span reader (compiled to SQL in
tracing.py) and the metrics reader (evaluated over label texts in metrics.py). No SQL here.

The vocabulary is PostHog's property-filter operators (posthog/schema.py `PropertyOperator`, rendered by
posthog/hogql/property.py) that apply to strings and numbers. Callers normalize values first (dialects
parse requests; see api/posthog/filters.py):

- equality  `exact`/`is_not`: the value is one of / none of `values` (texts).
- text      `icontains`, `starts_with`, `ends_with` and their `not_` forms: case-insensitive (PostHog
            renders them as ILIKE '%v%', 'v%', '%v'); several values mean any of them (none for `not_`).
- pattern   `regex`/`not_regex`: RE2 (regex.py), a search anywhere in the text; several: any / none.
- order     `gt`, `gte`, `lt`, `lte` against one number; `between`/`not_between` against [low, high]
            (inclusive; not_between = below low or above high). A value that is not a number matches
            none of them (ClickHouse compares NULL to nothing).
- semver    `semver_eq` ... `semver_wildcard`: versions compared as numbers part by part
            (`semver_key`); tilde, caret and wildcard are ranges (PostHog's bounds). A value that is not a
            version matches none of them.
- presence  `is_set`/`is_not_set`.

What a *missing* value means is the caller's: the span reader lets the negative operators (NEGATIVE) match
a span without the attribute, the metrics reader reads a missing label as "" (Prometheus).
"""

from __future__ import annotations

import math
import re

EQUALITY = ("exact", "is_not")
TEXT = ("icontains", "not_icontains", "starts_with", "not_starts_with", "ends_with", "not_ends_with")
PATTERN = ("regex", "not_regex")
ORDER = ("gt", "gte", "lt", "lte")
RANGE = ("between", "not_between")
SEMVER_POINT = ("semver_eq", "semver_neq", "semver_gt", "semver_gte", "semver_lt", "semver_lte")
SEMVER_RANGE = ("semver_tilde", "semver_caret", "semver_wildcard")
PRESENCE = ("is_set", "is_not_set")
OPERATORS = EQUALITY + TEXT + PATTERN + ORDER + RANGE + SEMVER_POINT + SEMVER_RANGE + PRESENCE
NUMERIC = ORDER + RANGE
SEMVER = SEMVER_POINT + SEMVER_RANGE
# Operators that hold for a value that is absent (a span without the attribute).
NEGATIVE = ("is_not", "not_icontains", "not_starts_with", "not_ends_with", "not_regex")
ORDER_SQL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
SEMVER_SQL = {"semver_eq": "=", "semver_neq": "<>", "semver_gt": ">", "semver_gte": ">=", "semver_lt": "<",
              "semver_lte": "<="}

_VERSION_PART = re.compile(r"^\d{1,9}$")


def number(text: str | None) -> float | None:
    """A value as a number when it reads as a finite one, else None."""
    if text is None:
        return None
    try:
        f = float(text)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def semver_key(text: str | None) -> tuple[int, ...] | None:
    """A version's parts as integers (`v1.2.3-rc.1+build` → (1, 2, 3)), at least three of them (`1.2` →
    (1, 2, 0)); None when it is not a version. A pre-release or build suffix is dropped, as PostHog's
    parse_semver does."""
    if text is None:
        return None
    base = text.strip()
    if base[:1] in ("v", "V"):
        base = base[1:]
    base = base.split("+", 1)[0].split("-", 1)[0]
    parts = base.split(".")
    if not parts or not all(_VERSION_PART.match(p) for p in parts):
        return None
    key = tuple(int(p) for p in parts)
    return key + (0,) * (3 - len(key)) if len(key) < 3 else key


def semver_compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """-1, 0 or 1, the shorter version padded with zeros."""
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def semver_range(op: str, value: str) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """[low, high) of a tilde (`~1.2.3`: ≥1.2.3 <1.3.0; `~1`: ≥1.0.0 <2.0.0), caret (`^1.2.3`: <2.0.0;
    `^0.2.3`: <0.3.0; `^0.0.3`: <0.0.4) or wildcard (`1.*`, `1.2.*`, `1.2.3.*`) range; None when `value`
    is not one."""
    text = value.strip().lstrip("~^").strip()
    if op == "semver_wildcard":
        text = text.rstrip("*").rstrip(".")
        base = text.split("-", 1)[0]
        parts = base.split(".")
        if not text or not all(_VERSION_PART.match(p) for p in parts) or len(parts) > 3:
            return None
        ints = [int(p) for p in parts]
        if len(ints) == 3:  # 1.2.3.* → [1.2.3.0, 1.2.4.0)
            return (ints[0], ints[1], ints[2], 0), (ints[0], ints[1], ints[2] + 1, 0)
        low = tuple(ints) + (0,) * (3 - len(ints))
        high = list(low)
        high[len(ints) - 1] += 1
        return low, tuple(high)
    key = semver_key(text)
    if key is None:
        return None
    major, minor, patch = key[:3]
    given = len(text.split("-", 1)[0].split("."))
    if op == "semver_tilde":
        if given < 2:
            return (major, 0, 0), (major + 1, 0, 0)
        return (major, minor, patch), (major, minor + 1, 0)
    # caret: the leftmost non-zero part may not change
    if major > 0:
        return (major, minor, patch), (major + 1, 0, 0)
    if minor > 0:
        return (0, minor, patch), (0, minor + 1, 0)
    return (0, 0, patch), (0, 0, patch + 1)


def holds(op: str, text: str | None, values: tuple) -> bool:
    """Whether `op` holds for one value (None: absent) against normalized `values` — text for equality,
    text and pattern operators (compiled RE2 patterns for the pattern operators), numbers for order and
    range, a version text for the semver point operators and [low, high) version texts for the ranges. The metrics reader uses this; the span reader compiles the same rules to SQL."""
    if op == "is_set":
        return text is not None
    if op == "is_not_set":
        return text is None
    if text is None:
        return op in NEGATIVE
    if op in EQUALITY:
        return (text in values) == (op == "exact")
    if op in TEXT:
        subject = text.lower()
        test = {"icontains": str.__contains__, "starts_with": str.startswith, "ends_with": str.endswith}[
            op.removeprefix("not_")]
        hit = any(test(subject, v.lower()) for v in values)
        return hit != op.startswith("not_")
    if op in PATTERN:
        hit = any(p.search(text) is not None for p in values)
        return hit == (op == "regex")
    if op in ORDER or op in RANGE:
        n = number(text)
        if n is None:
            return False
        if op in RANGE:
            inside = values[0] <= n <= values[1]
            return inside if op == "between" else not inside
        bound = values[0]
        return {"gt": n > bound, "gte": n >= bound, "lt": n < bound, "lte": n <= bound}[op]
    key = semver_key(text)
    if key is None:
        return False
    if op in SEMVER_RANGE:  # values: the range's [low, high) as version texts (semver_range)
        low, high = semver_key(values[0]), semver_key(values[1])
        return semver_compare(key, low) >= 0 and semver_compare(key, high) < 0
    c = semver_compare(key, semver_key(values[0]))
    return {"semver_eq": c == 0, "semver_neq": c != 0, "semver_gt": c > 0, "semver_gte": c >= 0,
            "semver_lt": c < 0, "semver_lte": c <= 0}[op]
