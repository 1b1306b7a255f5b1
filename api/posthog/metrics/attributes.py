"""GET metrics/attributes and metrics/attribute_values: the filter bar's key and value autocomplete
(PostHog's products/metrics MetricsViewSet.attributes / .attribute_values and their query runners).

- attributes: `search` (case-insensitive substring of the key), `dateFrom`/`dateTo` (default the last
  7 days), `limit` (1–1000, default 100), `offset`, and `metricName` to list one metric's keys (PostHog's
  runner takes it; its view does not pass it yet); `excluded_properties` (a JSON list of keys to leave
  out) and `properties` (keys separated by commas: only these), which PostHog's taxonomic filter sends
  with every page it loads (with `offset`). → `{"results": [{"name", "attribute_count"}], "count"}`, point
  and resource attribute keys merged, most frequent first; `service.name` and `service_name` are one key,
  `service_name`, listed first whenever the search matches it.
- attribute_values: `key` (required), `value` (substring), the same window, `limit`, `offset` and `metricName` →
  `{"results": [{"id", "name", "count"}]}`, a value equal to the search first, then most frequent.

`attribute_count` and `count` count series that reported in the window (PostHog counts data points from
an hourly rollup otelite does not keep; the order they give is the same idea: how common the key is).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass

from otelite.api.errors import bad_request
from otelite.api.posthog.metrics.request import _time
from otelite.api.posthog.filters import key_list
from otelite.api.posthog.tracing_query import parse_int
from otelite.collector.store import metrics as sm
from otelite.collector.times import MIN_NS, NS

SERVICE_KEYS = ("service_name", "service.name")  # one key: the OTel service name (PostHog's _SERVICE_NAME_KEYS)
DEFAULT_LOOKBACK_NS = 7 * 86400 * NS
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


@dataclass(frozen=True)
class AttributeQuery:
    project_id: int
    search: str
    metric_name: str | None
    from_ns: int
    to_ns: int
    limit: int
    key: str | None = None  # attribute_values only
    offset: int = 0
    exclude: tuple[str, ...] = ()  # attributes only: excluded_properties
    only: tuple[str, ...] | None = None  # attributes only: properties


def parse(params: dict, project_id: int, tz: dt.tzinfo, now_ns: int, *, values: bool) -> AttributeQuery:
    """The query string of either endpoint (`params`: name → text) → AttributeQuery, or a 400."""
    allowed = ("key", "value", "dateFrom", "dateTo", "limit", "offset", "metricName") if values else \
        ("search", "dateFrom", "dateTo", "limit", "offset", "metricName", "excluded_properties", "properties")
    for name in params:
        if name not in allowed:
            raise bad_request(f"unknown query parameter {name!r} (expected {', '.join(allowed)})", attr=name)
    key = params.get("key")
    if values and not key:
        raise bad_request("key is required: the attribute key to list values for", attr="key")
    to_ns = _time(params["dateTo"], "dateTo", tz, now_ns) if params.get("dateTo") else now_ns
    from_ns = _time(params["dateFrom"], "dateFrom", tz, now_ns) if params.get("dateFrom") \
        else max(to_ns - DEFAULT_LOOKBACK_NS, MIN_NS)
    if to_ns <= from_ns:
        raise bad_request("dateTo must be after dateFrom", attr="dateTo")
    limit = parse_int(params.get("limit"), field="limit", default=LIMIT_DEFAULT, minimum=1, maximum=LIMIT_MAX)
    offset = parse_int(params.get("offset"), field="offset", default=0)
    search = (params.get("value") if values else params.get("search")) or ""
    exclude = key_list(params.get("excluded_properties"), "excluded_properties", json_list=True) or ()
    only = key_list(params.get("properties"), "properties", json_list=False)
    return AttributeQuery(project_id, search.strip(), params.get("metricName") or None, from_ns, to_ns, limit, key,
                          offset, exclude, only)


def _service_key(keys: tuple[str, ...]) -> bool:
    return any(k in SERVICE_KEYS for k in keys)


def attribute_keys(conn: sqlite3.Connection, q: AttributeQuery) -> dict:
    window = {"seen_from_ns": q.from_ns, "seen_to_ns": q.to_ns}
    wanted = None if q.only is None else tuple(dict.fromkeys(q.only + (SERVICE_KEYS if _service_key(q.only) else ())))
    end = q.offset + q.limit
    rows = sm.label_key_counts(conn, q.project_id, q.metric_name, search=q.search or None, keys=wanted,
                               limit=end + len(SERVICE_KEYS) + len(q.exclude), **window)
    results = [{"name": k, "attribute_count": n} for k, n in rows if k not in SERVICE_KEYS and k not in q.exclude]
    needle = q.search.lower()
    service_wanted = (q.only is None or _service_key(q.only)) and not _service_key(q.exclude)
    if service_wanted and any(needle in k for k in SERVICE_KEYS):
        services = sm.label_key_counts(conn, q.project_id, q.metric_name, keys=SERVICE_KEYS, **window)
        # No series with a service name: no count (PostHog shows None rather than 0 then).
        results.insert(0, {"name": "service_name", "attribute_count": sum(n for _, n in services) or None})
    results = results[q.offset:end]
    return {"results": results, "count": len(results)}


def attribute_values(conn: sqlite3.Connection, q: AttributeQuery) -> dict:
    keys = SERVICE_KEYS if q.key in SERVICE_KEYS else (q.key,)
    exact = q.search.lower()
    end = q.offset + q.limit
    rows = sm.label_value_counts(conn, q.project_id, keys, q.metric_name, search=q.search or None,
                                 limit=max(LIMIT_MAX, end) if exact else end, seen_from_ns=q.from_ns,
                                 seen_to_ns=q.to_ns)
    if exact:  # PostHog: ORDER BY lower(value) = lower(search) DESC, count DESC, value
        rows.sort(key=lambda r: r[0].lower() != exact)
    return {"results": [{"id": v, "name": v, "count": n} for v, n in rows[q.offset:end]]}
