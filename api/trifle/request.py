"""Trifle requests → typed values, as pure functions whose errors name the field (trifle.md).

Each parser checks in the order Trifle's controllers do and raises the `ApiError` Trifle would answer
(400 `{"errors": {"detail"}}`, 422 `{"errors": {"status": "error", "error", ...}}`): the query's checks
are key, from, to, granularity (400 each), mode (400), slices (422), value_path (400), aggregator
(422, aggregate mode only), then the wildcard check (422); the unknown-path check needs the data and is
the resource's (resources.py).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from otelite.api.errors import bad_request
from otelite.api.trifle.errors import unprocessable
from otelite.api.trifle.values import ValuesError, check_text, flatten
from otelite.collector.query.grid import CalendarGrid
from otelite.collector.times import UTC, TimeError, check_range, parse_iso

SYSTEM_KEY = "__system__key__"  # Trifle's system key: every write counted per key (trifle.md)
UNTRACKED = "__untracked__"  # what the system key counts an `untracked` write as
OPERATIONS = ("track", "assert")
MODES = ("aggregate", "timeline", "category")
AGGREGATORS = ("max", "mean", "min", "sum")  # sorted, as Trifle lists them in its messages

_GRANULARITY = re.compile(r"\A([0-9]+)(s|m|h|d|w|mo|q|y)\Z")  # ASCII digits, as Elixir's \d
_GRANULARITY_HELP = ("granularity must be <N><unit> with N ≥ 1 and unit one of s, m, h, d, w, mo, q, y "
                     "(e.g. 1m, 33m, 1h, 1d, 1w, 1mo, 1q, 1y)")
_INTEGER = re.compile(r"\A[+-]?[0-9]+\Z")  # Elixir's Integer.parse with nothing left over
_OTHER_ZONE = dt.timezone(dt.timedelta(hours=1, minutes=7))  # tells an offset-less time apart
# Unicode's White_Space: what Elixir's String.trim removes (Python's str.strip also removes \x1c-\x1f).
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
               "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def trim(text: str) -> str:
    return text.strip(WHITE_SPACE)


@dataclass(frozen=True)
class Granularity:
    text: str  # as the client wrote it, trimmed (echoed in `timeframe.granularity`)
    count: int
    unit: str  # s m h d w mo q y

    def grid(self, zone: dt.tzinfo) -> CalendarGrid:
        """Trifle's alignment in the project's zone (collector/query/grid.py)."""
        return CalendarGrid(self.count, self.unit, zone)


@dataclass(frozen=True)
class Write:
    """POST /api/v1/metrics: one track or assert of a key's leaves at one instant."""

    key: str
    at_ns: int
    leaves: dict[str, int | float]  # dot path → number
    operation: str  # track | assert
    untracked: bool

    @property
    def tracked_as(self) -> str:
        """The name the system key counts this write under."""
        return UNTRACKED if self.untracked else self.key


@dataclass(frozen=True)
class SeriesRequest:
    """GET /api/v1/metrics: every bucket of a key from floor(from) to floor(to)."""

    key: str
    from_ns: int
    to_ns: int
    granularity: Granularity


@dataclass(frozen=True)
class QueryRequest(SeriesRequest):
    """POST /api/v1/metrics/query."""

    mode: str  # aggregate | timeline | category
    slices: int
    value_path: str
    aggregator: str | None  # aggregate mode only


# --- pieces ----------------------------------------------------------------------------------------------

def _string(value: Any) -> str | None:
    """A non-empty trimmed string, or None (Trifle's `fetch_param`: anything else is a 400)."""
    if not isinstance(value, str):
        return None
    return trim(value) or None


def _required_key(value: Any) -> str:
    key = _string(value)
    if key is None:
        raise bad_request("key must be a non-empty string", attr="key")
    _checked_text(key, "key")
    return key


def _checked_text(text: str, field: str) -> None:
    try:
        check_text(text, field)
    except ValuesError as e:
        raise bad_request(str(e), attr=field) from None


def parse_instant(value: Any, field: str) -> int:
    """An ISO 8601 time with an offset (Trifle parses with `DateTime.from_iso8601`, which needs one)."""
    text = _string(value)
    if text is None:
        raise bad_request(f"{field} must be an ISO 8601 time with an offset, e.g. 2026-01-24T00:00:00Z",
                          attr=field)
    ns = parse_iso(text, UTC)
    if ns is None:
        raise bad_request(f"{field} is not an ISO 8601 time: {text!r}", attr=field)
    if parse_iso(text, _OTHER_ZONE) != ns:  # the zone it is read in changed it: no offset was given
        raise bad_request(f"{field} needs an offset (Z or ±hh:mm): {text!r}", attr=field)
    try:
        return check_range(ns, text)  # a point's time is a 64-bit nanosecond count in the store
    except TimeError as e:
        raise bad_request(f"{field}: {e}", attr=field) from None


def parse_granularity(value: Any) -> Granularity:
    text = _string(value)
    m = _GRANULARITY.match(text) if text is not None else None
    if m is None or int(m.group(1)) < 1:
        raise bad_request(_GRANULARITY_HELP, attr="granularity")
    return Granularity(text, int(m.group(1)), m.group(2))


# --- POST /api/v1/metrics --------------------------------------------------------------------------------

def parse_write(body: Any) -> Write:
    """Checked as Trifle's `MetricsController.create`: key, at, values present, then at parsed; then what
    otelite adds (every leaf a number, operation, untracked). Nothing is stored unless all of it holds."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object {key, at, values, operation?, untracked?}")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise bad_request("key must be a non-empty string", attr="key")
    _checked_text(key, "key")
    at = body.get("at")
    if not isinstance(at, str) or not at:
        raise bad_request("at must be an ISO 8601 time with an offset, e.g. 2026-01-24T10:00:00Z", attr="at")
    values = body.get("values")
    if values is None:
        raise bad_request("values is required: a map whose leaves are numbers", attr="values")
    at_ns = parse_instant(at, "at")
    if not isinstance(values, dict):
        raise bad_request("values must be a map (nested maps allowed) whose leaves are numbers", attr="values")
    try:
        leaves = flatten(values)
    except ValuesError as e:
        raise bad_request(str(e), attr="values") from None
    operation = body.get("operation")
    if operation is None:
        operation = "track"
    if operation not in OPERATIONS:  # exactly as Trifle::Stats' API driver writes them
        raise bad_request(f"operation must be track or assert, got {json.dumps(operation)}", attr="operation")
    untracked = body.get("untracked")
    if untracked is not None and not isinstance(untracked, bool):
        raise bad_request(f"untracked must be true or false, got {json.dumps(untracked)}", attr="untracked")
    return Write(key, at_ns, leaves, operation, bool(untracked))


# --- GET /api/v1/metrics ---------------------------------------------------------------------------------

def parse_series_params(params: Mapping[str, Any]) -> SeriesRequest:
    """`key` (optional: the system key), `from`, `to`, `granularity`, as Trifle's `MetricsController.index`
    checks them. An empty key is a 400, not the system key."""
    key = params.get("key")
    if key is None:
        key = SYSTEM_KEY
    else:
        key = _required_key(key)
    return SeriesRequest(key, parse_instant(params.get("from"), "from"), parse_instant(params.get("to"), "to"),
                         parse_granularity(params.get("granularity")))


# --- POST /api/v1/metrics/query --------------------------------------------------------------------------

def _mode(body: Mapping[str, Any]) -> str:
    value = body.get("mode")
    if value is None:
        value = body.get("format")  # Trifle's alias
    if isinstance(value, bool):
        value = str(value).lower()  # an Elixir atom: compared by its name, so it is simply unknown
    text = trim(value).lower() if isinstance(value, str) else None
    if text not in MODES:
        raise bad_request("mode (or format) must be aggregate, timeline or category", attr="mode")
    return text


def parse_slices(value: Any) -> int:
    """Trifle's `resolve_slices`: absent (or false) → 1; a whole number ≥ 1 given as an integer, a float or
    a string; anything else → 422."""
    if value is None or value is False:
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and value >= 1 and value == int(value):
        return int(value)
    if isinstance(value, str) and _INTEGER.match(trim(value)) and int(trim(value)) >= 1:
        return int(trim(value))
    raise unprocessable("slices must be a positive integer.")


def parse_aggregator(value: Any) -> str:
    """Trifle's `resolve_aggregator`: trimmed, case-insensitive; its three 422s."""
    options = ", ".join(AGGREGATORS)
    if value is None:
        raise unprocessable(f"Aggregator must be provided (options: {options}).")
    if not isinstance(value, str):  # true/false too (trifle.md: any non-string)
        raise unprocessable("Aggregator must be a string.")
    name = trim(value).lower()
    if name not in AGGREGATORS:
        raise unprocessable(f"Unsupported aggregator {json.dumps(value, ensure_ascii=False)}.",
                            allowed=list(AGGREGATORS))
    return name


def check_no_wildcard(path: str) -> None:
    if "*" in path:
        raise unprocessable(f"Wildcards are not supported in value_path {json.dumps(path, ensure_ascii=False)}")


def parse_query(body: Any) -> QueryRequest:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object {key, from, to, granularity, mode, value_path, ...}")
    key = _required_key(body.get("key"))
    from_ns = parse_instant(body.get("from"), "from")
    to_ns = parse_instant(body.get("to"), "to")
    granularity = parse_granularity(body.get("granularity"))
    mode = _mode(body)
    slices = parse_slices(body.get("slices"))
    value_path = _string(body.get("value_path"))
    if value_path is None:
        raise bad_request("value_path must be a non-empty string (a dot path such as count or country.US)",
                          attr="value_path")
    aggregator = parse_aggregator(body.get("aggregator")) if mode == "aggregate" else None
    check_no_wildcard(value_path)
    return QueryRequest(key, from_ns, to_ns, granularity, mode, slices, value_path, aggregator)
