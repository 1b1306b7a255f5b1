"""The `query` bodies of metrics/query and metrics/characterize → validated dataclasses.

Every 400 of posthog-metrics.md's limits list is raised here or (the row count, bucket bounds) by
query.py, always through `api.errors.bad_request` with `attr` naming the field. Times are read by
collector/times.py (PostHog's relative dates: `-30M` minutes, `-3m` months, `-1dStart`); label filters
become the store's `LabelFilter`s (regexes compiled by RE2).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

from otelite.api.errors import bad_request
from otelite.api.posthog import filters
from otelite.api.posthog.metrics import formula as formula_mod
from otelite.api.posthog.metrics.intervals import INTERVALS
from otelite.collector.query.model import GroupKey
from otelite.collector.store.metrics import LabelFilter
from otelite.collector.store.regex import RegexError
from otelite.collector.times import MAX_NS, MIN_NS, NS, TimeError, parse_time

AGGREGATIONS = ("sum", "avg", "min", "max", "count", "p50", "p90", "p95", "p99", "rate", "increase",
                "histogram_quantile")
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
METRIC_TYPES = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
SCOPES = ("resource", "attribute", "auto")
# A filter's `type` in PostHog's property-filter shape names the scope: the attribute and resource
# attribute types of PostHog's span and log filters (posthog/schema.py PropertyFilterType).
FILTER_TYPES = {**{s: s for s in SCOPES}, "span_attribute": "attribute", "log_attribute": "attribute",
                "span_resource_attribute": "resource", "log_resource_attribute": "resource"}
LEGACY_OPS = {"eq": "exact", "neq": "is_not"}  # this API's own `op` names (PostHog's _MetricFilterSerializer)
FILTER_FIELDS = ("key", "value", "op", "operator", "scope", "type", "label")  # label: the UI's display name
GROUP_BY_FIELDS = ("key", "scope")
CLAUSE_FIELDS = ("name", "metricName", "aggregation", "quantile", "metricType", "filters", "groupBy")
QUERY_FIELDS = CLAUSE_FIELDS[1:] + ("interval", "clauses", "formula", "dateFrom", "dateTo")
CHARACTERIZE_FIELDS = ("metricName", "metricType", "anomalyFrom", "anomalyTo", "baselineFrom", "baselineTo",
                       "aggregation", "quantile", "filters", "candidateKeys")
BODY_FIELDS = ("query", "client_query_id", "refresh")  # the last two only steer PostHog's query cache
INERT_FIELDS = ("kind", "version", "tags", "modifiers", "response")  # schema bookkeeping the views ignore
MAX_CLAUSES = 10
MAX_FORMULA = 512
MAX_RANGE_NS = 31 * 86400 * NS
DEFAULT_QUANTILE = 0.95  # histogram_quantile without `quantile` (the spec's characterize default)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Clause:
    name: str
    metric_name: str
    aggregation: str = "sum"
    quantile: float | None = None
    metric_type: str | None = None
    filters: list[LabelFilter] = field(default_factory=list)
    group_by: list[GroupKey] = field(default_factory=list)

    @property
    def q(self) -> float | None:
        """The quantile the aggregation needs (pNN or histogram_quantile), else None."""
        if self.aggregation in PERCENTILES:
            return PERCENTILES[self.aggregation]
        if self.aggregation == "histogram_quantile":
            return self.quantile if self.quantile is not None else DEFAULT_QUANTILE
        return None


@dataclass
class MetricsQuery:
    clauses: list[Clause]
    formula: Any  # parsed formula (formula.Node) or None
    formula_text: str | None
    interval: str
    date_from_ns: int
    date_to_ns: int


@dataclass
class CharacterizeQuery:
    metric_name: str
    metric_type: str | None
    aggregation: str | None
    quantile: float | None
    filters: list[LabelFilter]
    candidate_keys: list[str] | None
    anomaly_from_ns: int
    anomaly_to_ns: int
    baseline_from_ns: int
    baseline_to_ns: int


def _obj(body: Any, fields: tuple[str, ...]) -> dict:
    """The `query` object of a body read by api/posthog/request_body.py (which already decoded a form
    field or string holding it), every field of it understood."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object with a `query` object", attr="query")
    top_level = "query" not in body and ("metricName" in body or "clauses" in body)
    query = body if top_level else body.get("query")
    if not isinstance(query, dict):
        raise bad_request("`query` must be an object", attr="query")
    if not top_level:
        filters.check_fields(body, BODY_FIELDS, "body", "query")
    filters.check_fields(query, fields + INERT_FIELDS + (BODY_FIELDS[1:] if top_level else ()), "query", "query")
    return query


def _time(value: Any, attr: str, tz: dt.tzinfo, now_ns: int, naive_tz: dt.tzinfo | None = None) -> int:
    """An ISO or relative date (collector/times.py; relative dates in `tz`, ISO without an offset in
    `naive_tz`, default `tz`), or epoch seconds as a JSON number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Within the storable range (collector/times.py: years 1677 to 2262), or the bucket grid overflows.
        if not math.isfinite(value) or not MIN_NS <= value * NS <= MAX_NS:
            raise bad_request(f"{attr}: {value!r} is not a time in epoch seconds", attr=attr)
        return int(round(value * NS))
    try:
        return parse_time(value, tz, now_ns, naive_tz=naive_tz)
    except TimeError as e:
        raise bad_request(f"{attr}: {e}", attr=attr) from None


def _aggregation(value: Any, attr: str, default: str | None) -> str | None:
    if value is None:
        return default
    if value not in AGGREGATIONS:
        raise bad_request(f"unknown aggregation {value!r}; expected one of {', '.join(AGGREGATIONS)}", attr=attr)
    return value


def _quantile(value: Any, attr: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise bad_request(f"quantile must be a number strictly between 0 and 1, got {value!r}", attr=attr)
    return float(value)


def _metric_type(value: Any, attr: str) -> str | None:
    if value is None:
        return None
    if value not in METRIC_TYPES:
        raise bad_request(f"unknown metricType {value!r}; expected one of {', '.join(METRIC_TYPES)}", attr=attr)
    return value


def _metric_name(value: Any, attr: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request("metricName must be a non-empty string", attr=attr)
    return value


def _scope(value: Any, path: str, attr: str | None = None) -> str:
    """A label scope: resource, attribute or auto, or the property-filter `type` naming one."""
    if value is None:
        return "auto"
    scope = FILTER_TYPES.get(value) if isinstance(value, str) else None
    if scope is None:
        raise bad_request(f"{path}: unknown scope {value!r}; expected resource, attribute or auto (or a "
                          f"property-filter type: {', '.join(t for t in FILTER_TYPES if t not in SCOPES)})",
                          attr=attr or path)
    return scope


def _filters(value: Any, attr: str) -> list[LabelFilter]:
    """`filters`: each `{key, op, value, scope}` (this API's shape) or `{key, operator, value, type}`
    (PostHog's property-filter shape, as tracing reads it); both spell the same condition, with any
    PropertyOperator that applies to strings and numbers (api/posthog/filters.py). A field that is not
    understood, or `op`/`operator` (`scope`/`type`) that disagree → 400."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("filters must be a list of {key, op, value, scope} or {key, operator, value, type}",
                          attr=attr)
    out = []
    for i, f in enumerate(value):
        path = f"{attr}[{i}]"
        if not isinstance(f, dict) or not isinstance(f.get("key"), str) or not f["key"]:
            raise bad_request(f"{path}: each filter needs a non-empty string `key`", attr=attr)
        filters.check_fields(f, FILTER_FIELDS, path, attr)
        ops = {filters.operator(f[name], f"{path}.{name}", attr, LEGACY_OPS) for name in ("op", "operator")
               if f.get(name) is not None}
        if len(ops) > 1:
            raise bad_request(f"{path}: op {f['op']!r} and operator {f['operator']!r} disagree", attr=attr)
        op = ops.pop() if ops else "exact"
        scopes = {_scope(f[name], f"{path}.{name}", attr) for name in ("scope", "type") if f.get(name) is not None}
        if len(scopes) > 1:
            raise bad_request(f"{path}: scope {f['scope']!r} and type {f['type']!r} disagree", attr=attr)
        scope = scopes.pop() if scopes else "auto"
        values = filters.comparison_values(op, f.get("value"), f"{path}.value", attr)
        if values is None:
            raise bad_request(f"{path}.value: a {op} filter needs a value (a string, number, boolean or a list "
                              f"of them)", attr=attr)
        try:
            out.append(LabelFilter.compare(f["key"], op, values, scope))
        except RegexError as e:  # (comparison_values compiled them already)
            raise bad_request(f"{path}.value: {e}", attr=attr) from None
    return out


def _group_by(value: Any, attr: str) -> list[GroupKey]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("groupBy must be a list of {key, scope}", attr=attr)
    out: list[GroupKey] = []
    for g in value:
        if isinstance(g, str) and g:
            g = {"key": g}
        if not isinstance(g, dict) or not isinstance(g.get("key"), str) or not g["key"]:
            raise bad_request("each groupBy entry needs a non-empty string `key`", attr=attr)
        filters.check_fields(g, GROUP_BY_FIELDS, attr, attr)
        key = GroupKey(g["key"], _scope(g.get("scope"), attr))
        if any(k.key == key.key for k in out):
            raise bad_request(f"groupBy names {key.key!r} twice", attr=attr)
        out.append(key)
    return out


def _clause(c: Any, name: str, attr: str) -> Clause:
    if not isinstance(c, dict):
        raise bad_request("each clause must be an object", attr=attr)
    clause = Clause(
        name=name,
        metric_name=_metric_name(c.get("metricName"), f"{attr}.metricName"),
        aggregation=_aggregation(c.get("aggregation"), f"{attr}.aggregation", "sum"),
        quantile=_quantile(c.get("quantile"), f"{attr}.quantile"),
        metric_type=_metric_type(c.get("metricType"), f"{attr}.metricType"),
        filters=_filters(c.get("filters"), f"{attr}.filters"),
        group_by=_group_by(c.get("groupBy"), f"{attr}.groupBy"),
    )
    return clause


def parse_query(body: Any, tz: dt.tzinfo, now_ns: int) -> MetricsQuery:
    """`{"query": {...}}` of POST metrics/query → MetricsQuery, or a 400."""
    q = _obj(body, QUERY_FIELDS)
    has_name, has_clauses = q.get("metricName") is not None, q.get("clauses") is not None
    if has_name == has_clauses:
        raise bad_request("give exactly one of metricName or clauses", attr="metricName")
    if has_name:
        clauses = [_clause(q, "a", "query")]
        if q.get("formula") is not None:
            raise bad_request("formula requires clauses", attr="formula")
    else:
        for name in CLAUSE_FIELDS[2:]:  # PostHog: "'metricType' applies to the single-clause shorthand"
            if q.get(name) is not None:
                raise bad_request(f"{name} applies to the single-clause shorthand (metricName); with clauses "
                                  f"set it per clause", attr=name)
        raw = q["clauses"]
        if not isinstance(raw, list) or not raw:
            raise bad_request("clauses must be a non-empty list", attr="clauses")
        if len(raw) > MAX_CLAUSES:
            raise bad_request(f"at most {MAX_CLAUSES} clauses are allowed, got {len(raw)}", attr="clauses")
        clauses = []
        for i, c in enumerate(raw):
            name = c.get("name") if isinstance(c, dict) else None
            if name is None:
                name = "abcdefghij"[i]
            if not isinstance(name, str) or not _NAME.match(name):
                raise bad_request(f"clause name {name!r} must be an identifier (letters, digits, _)",
                                  attr=f"clauses[{i}].name")
            if any(x.name == name for x in clauses):
                raise bad_request(f"clause name {name!r} is used twice", attr=f"clauses[{i}].name")
            if isinstance(c, dict):
                filters.check_fields(c, CLAUSE_FIELDS, f"clauses[{i}]", f"clauses[{i}]")
            clauses.append(_clause(c, name, f"clauses[{i}]"))

    formula_text = q.get("formula")
    parsed = None
    if formula_text is not None:
        if not isinstance(formula_text, str) or not formula_text.strip():
            raise bad_request("formula must be a non-empty string", attr="formula")
        if len(formula_text) > MAX_FORMULA:
            raise bad_request(f"formula is longer than {MAX_FORMULA} characters", attr="formula")
        try:
            parsed = formula_mod.parse(formula_text, {c.name for c in clauses})
        except formula_mod.FormulaError as e:
            raise bad_request(f"formula: {e}", attr="formula") from None

    interval = q.get("interval")
    if interval is not None and (not isinstance(interval, str) or interval not in INTERVALS):
        raise bad_request(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}", attr="interval")
    if q.get("dateFrom") is None:
        raise bad_request("dateFrom is required", attr="dateFrom")
    date_from = _time(q["dateFrom"], "dateFrom", tz, now_ns)
    date_to = _time(q["dateTo"], "dateTo", tz, now_ns) if q.get("dateTo") is not None else now_ns
    if date_to <= date_from:
        raise bad_request("dateTo must be after dateFrom", attr="dateTo")
    if date_to - date_from > MAX_RANGE_NS:
        raise bad_request("the range from dateFrom to dateTo is over 31 days", attr="dateFrom")
    return MetricsQuery(clauses, parsed, formula_text, interval or "", date_from, date_to)


def parse_characterize(body: Any, tz: dt.tzinfo, now_ns: int) -> CharacterizeQuery:
    """`{"query": {...}}` of POST metrics/characterize. ISO times without an offset are UTC (spec); relative
    dates are computed in the project's zone `tz` (`-1dStart`: its midnight), as in metrics/query."""
    q = _obj(body, CHARACTERIZE_FIELDS)

    def time(field: str) -> int:
        return _time(q[field], field, tz, now_ns, naive_tz=dt.timezone.utc)

    name = _metric_name(q.get("metricName"), "metricName")
    if q.get("anomalyFrom") is None:
        raise bad_request("anomalyFrom is required", attr="anomalyFrom")
    a_from = time("anomalyFrom")
    a_to = time("anomalyTo") if q.get("anomalyTo") is not None else now_ns
    if a_to <= a_from:
        raise bad_request("anomalyTo must be after anomalyFrom", attr="anomalyTo")
    b_to = time("baselineTo") if q.get("baselineTo") is not None else a_from
    if b_to > a_from:
        raise bad_request("baselineTo must not be after anomalyFrom", attr="baselineTo")
    b_from = time("baselineFrom") if q.get("baselineFrom") is not None \
        else b_to - (a_to - a_from)
    if b_to <= b_from:
        raise bad_request("baselineTo must be after baselineFrom", attr="baselineFrom")
    keys = q.get("candidateKeys")
    if keys is not None:
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise bad_request("candidateKeys must be a list of label keys", attr="candidateKeys")
        keys = list(dict.fromkeys(keys))[:4]
    return CharacterizeQuery(
        metric_name=name, metric_type=_metric_type(q.get("metricType"), "metricType"),
        aggregation=_aggregation(q.get("aggregation"), "aggregation", None),
        quantile=_quantile(q.get("quantile"), "quantile"), filters=_filters(q.get("filters"), "filters"),
        candidate_keys=keys, anomaly_from_ns=a_from, anomaly_to_ns=a_to, baseline_from_ns=b_from,
        baseline_to_ns=b_to)
