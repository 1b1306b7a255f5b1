"""PostHog's property-filter operators and values, as both PostHog APIs read them.

A PostHog property filter is `{key, value, operator, type}` (posthog/schema.py: SpanPropertyFilter and its
siblings; `operator` is a `PropertyOperator`). Tracing filters (tracing_query.py) and metrics filters
(metrics/request.py) both read the operator and its value here, so an operator means the same in both:

- every PropertyOperator that applies to strings and numbers is accepted (comparisons.py says what each
  does), and the aliases PostHog renders the same way: `in`/`not_in` are `exact`/`is_not` with a list,
  `icontains_multi`/`not_icontains_multi` are `icontains`/`not_icontains` with a list, `min`/`max` are
  `gte`/`lte` (posthog/hogql/property.py renders MIN as >= and MAX as <=);
- the PropertyOperators that do not apply to telemetry values are refused with the reason (REFUSED);
- anything else → 400 naming the operator.

Values: equality, text and pattern operators take a string, number or boolean, or a list of them (any of
them; none for the negative forms); order operators one number; between/not_between [low, high];
semver operators one version (ranges: `~1.2`, `^0.3.1`, `1.2.*`). Booleans read as `true`/`false`, numbers
as JSON writes them, the way attribute values are compared as text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from otelite.api.errors import bad_request
from otelite.collector.store import comparisons
from otelite.collector.store.regex import RegexError, compile_regex

ALIASES = {"in": "exact", "not_in": "is_not", "icontains_multi": "icontains",
           "not_icontains_multi": "not_icontains", "min": "gte", "max": "lte"}
REFUSED = {
    "is_date_exact": "date comparisons of attribute values are not supported; narrow the time with the "
                     "query's date range",
    "is_date_before": "date comparisons of attribute values are not supported; narrow the time with the "
                      "query's date range",
    "is_date_after": "date comparisons of attribute values are not supported; narrow the time with the "
                     "query's date range",
    "is_cleaned_path_exact": "it applies PostHog's per-team path-cleaning rules, which otelite does not have",
    "flag_evaluates_to": "it tests feature-flag evaluations, which telemetry does not carry",
}
OPERATORS = comparisons.OPERATORS + tuple(ALIASES)
_INTEGER = re.compile(r"\s*-?\d+\s*")


def operator(value: Any, path: str, attr: str, aliases: dict[str, str] | None = None) -> str:
    """The canonical operator (comparisons.OPERATORS) a request names, or a 400 naming it."""
    table = {**ALIASES, **(aliases or {})}
    if isinstance(value, str):
        if value in comparisons.OPERATORS:
            return value
        if value in table:
            return table[value]
        if value in REFUSED:
            raise bad_request(f"{path}: operator {value!r} is not supported: {REFUSED[value]}", attr=attr)
    accepted = ", ".join(list(comparisons.OPERATORS) + list(table))
    raise bad_request(f"{path}: unknown operator {value!r} (expected one of {accepted})", attr=attr)


def items(raw: Any) -> list:
    """A filter value as a list of its non-null items (a scalar is a list of one)."""
    values = raw if isinstance(raw, list) else [raw]
    return [v for v in values if v is not None]


def text(v: Any, path: str, attr: str) -> str:
    """A value as attribute text is compared: strings as-is, booleans true/false, numbers as JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)) and math.isfinite(v):
        return json.dumps(v)
    raise bad_request(f"{path}: expected a string or number (or a boolean), got {v!r}", attr=attr)


def number(v: Any, path: str, op: str, attr: str) -> float | int:
    if isinstance(v, str):
        try:
            v = int(v) if _INTEGER.fullmatch(v) else float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad_request(f"{path}: {op} needs a number, got {v!r}", attr=attr)
    return as_sql_number(v)


def as_sql_number(v: int | float) -> int | float:
    """An integer beyond 64 bits as a float: SQLite takes no larger integer, and compares a float with the
    stored integers all the same (10**30 is above every duration either way)."""
    return float(v) if isinstance(v, int) and not -2**63 <= v < 2**63 else v


def numbers(op: str, values: list, path: str, attr: str, convert=None) -> tuple:
    """One number (order operators) or [low, high] (range operators), each through `convert` if given."""
    want = 2 if op in comparisons.RANGE else 1
    if len(values) != want:
        shape = "[low, high]" if want == 2 else "one number"
        raise bad_request(f"{path}: {op} takes {shape}, got {values!r}", attr=attr)
    out = tuple((convert or number)(v, path, op, attr) for v in values)
    if want == 2 and out[0] > out[1]:
        raise bad_request(f"{path}: {op} needs low <= high, got {values!r}", attr=attr)
    return out


def semver(op: str, values: list, path: str, attr: str) -> tuple[str, ...]:
    """A semver operator's version (point operators) or its range's [low, high) as version texts."""
    if len(values) != 1 or not isinstance(values[0], str):
        raise bad_request(f"{path}: {op} takes one version string, got {values!r}", attr=attr)
    if op in comparisons.SEMVER_RANGE:
        bounds = comparisons.semver_range(op, values[0])
        if bounds is None:
            raise bad_request(f"{path}: {values[0]!r} is not a version range for {op}", attr=attr)
        return tuple(".".join(map(str, b)) for b in bounds)
    if comparisons.semver_key(values[0]) is None:
        raise bad_request(f"{path}: {values[0]!r} is not a version (e.g. 1.2.3) for {op}", attr=attr)
    return (values[0],)


def check_patterns(patterns: tuple[str, ...], path: str, attr: str) -> None:
    for p in patterns:
        try:
            compile_regex(p)  # RE2, as every client-supplied pattern (collector/store/regex.py)
        except RegexError as e:
            raise bad_request(f"{path}: {e}", attr=attr) from None


def comparison_values(op: str, raw: Any, path: str, attr: str) -> tuple | None:
    """The normalized values of a comparison of attribute or label text (comparisons.py), or None when
    the filter gives none (`is_set`/`is_not_set` take none)."""
    if op in comparisons.PRESENCE:
        return ()
    values = items(raw)
    if not values:
        return None
    if op in comparisons.NUMERIC:
        return numbers(op, values, path, attr)
    if op in comparisons.SEMVER:
        return semver(op, values, path, attr)
    texts = tuple(dict.fromkeys(text(v, path, attr) for v in values))
    if op in comparisons.PATTERN:
        check_patterns(texts, path, attr)
    return texts


def check_fields(obj: dict, allowed: tuple[str, ...], path: str, attr: str) -> None:
    """400 naming the first field of `obj` that is not in `allowed` (a field that is not understood
    could change the answer, so it is refused rather than ignored)."""
    for name in obj:
        if name not in allowed:
            raise bad_request(f"{path}: unknown field {name!r} (expected {', '.join(allowed)})", attr=attr)


MAX_PICKER_KEYS = 1000  # keys one excluded_properties / properties parameter may name


def key_list(value: str | None, field: str, *, json_list: bool) -> tuple[str, ...] | None:
    """The keys a picker request names: `excluded_properties` (a JSON list, as PostHog's taxonomic filter
    sends it with every page) or `properties` (keys separated by commas); None when not given."""
    if value is None or value.strip() in ("", "null", "undefined"):
        return None
    if json_list:
        try:
            keys = json.loads(value)
        except ValueError:
            keys = None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise bad_request(f"{field}: expected a JSON list of attribute keys, got {value[:100]!r}", attr=field)
    else:
        keys = [k.strip() for k in value.split(",") if k.strip()]
    if len(keys) > MAX_PICKER_KEYS:
        raise bad_request(f"{field}: at most {MAX_PICKER_KEYS} keys", attr=field)
    return tuple(dict.fromkeys(keys))
