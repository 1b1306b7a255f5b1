"""Span reads for the tracing API: typed selections compiled to parameterized SQL, and the queries.

A caller (api/tracing_query.py) validates a request into a `Selection`; `compile_where` turns it into a
WHERE clause and its parameters. Nothing a client sends is ever spliced into SQL text: values, attribute
keys (as JSON paths) and regexes all travel as `?` parameters. Every statement is constrained by
`project_id` (store.md, project isolation).

Query functions take the connection first so they run through `Store.read(fn, *args)`:

    rows, has_more = await store.read(find_spans, selection, SpanOrder("timestamp", True), 100)

Planning notes (measured on 1M spans, see bench/query_tracing.py):
- Root-span lists and root-span sparklines use the partial indexes of migration 0004, which hold only
  spans without a parent (a few percent of rows).
- A trace's spans are found through `span_trace_runs` and its head `span_trace_runs_head` (spans.py: one
  row per trace and commit, each a rowid range): `trace_span_ids` expands the runs into rowids with a
  recursive CTE and the spans are read by rowid. The other indexed terms are written with a unary `+`
  so SQLite starts from the trace. In a database migrated from the per-span `spans_by_trace` index, that
  index is used until its copy into runs is complete (`legacy_trace_index`), since until then it alone
  covers every span.
- A filter no span of the window can meet (a key or string value the hourly attribute rollups do not
  hold for its hours) is answered empty from the rollups (`cannot_match`): otherwise the scan reads every
  span of the window, and on a sidecar's busy hour (1.4M spans) that took 0.7 s.
- Sparklines of all spans and the service picker read the per-service counts the writer keeps by minute
  and 10-second slot (span_counts.py), plus the spans of the partial slots at the window's ends. A sparkline
  with filters that need the span row is one GROUP BY pass over the window's spans; a root-span
  sparkline is one correlated `count(*)` per (bucket, service) over the partial index
  `spans_roots_by_service`, which SQLite counts in C without sorting. A migrated store keeps reading
  `spans_by_service` the old way until its spans are counted (`legacy_service_index`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Iterable, Union

from otelite.collector.store import budget, comparisons
from otelite.collector.store.records import ROLLUP_VALUE_MAX
from otelite.collector.store.span_counts import legacy_service_index, service_counts, service_present_sql
from otelite.collector.store.spans import HEAD, RUNS, legacy_trace_index

OPERATORS = comparisons.OPERATORS
_HOUR_NS = 3_600_000_000_000  # the attribute rollups count per hour (start_ns // _HOUR_NS)
# Span keys a filter may name, with the operators each accepts (ids and names are text, the rest numbers).
_TEXT_OPERATORS = (comparisons.EQUALITY + comparisons.TEXT + comparisons.PATTERN + comparisons.SEMVER
                   + comparisons.PRESENCE)
_NUMBER_OPERATORS = comparisons.EQUALITY + comparisons.NUMERIC + comparisons.PRESENCE
_FLAG_OPERATORS = comparisons.EQUALITY + comparisons.PRESENCE
SPAN_KEYS: dict[str, tuple[str, ...]] = {
    "trace_id": _TEXT_OPERATORS,
    "span_id": _TEXT_OPERATORS,
    "parent_span_id": _TEXT_OPERATORS,
    "name": _TEXT_OPERATORS,
    "service_name": _TEXT_OPERATORS,
    "duration": _NUMBER_OPERATORS,
    "kind": _NUMBER_OPERATORS,
    "status_code": _NUMBER_OPERATORS,
    "is_root_span": _FLAG_OPERATORS,
}
# For exact/is_not the id keys compare the stored BLOB; the text operators read the lower-case hex.
_SPAN_VALUE_SQL = {"trace_id": "s.trace_id", "span_id": "s.span_id", "parent_span_id": "s.parent_span_id",
                   "name": "s.name", "service_name": "s.service_name", "duration": "(s.end_ns - s.start_ns)",
                   "kind": "s.kind", "status_code": "s.status_code",
                   "is_root_span": "(s.parent_span_id IS NULL)"}
_SPAN_TEXT_SQL = {"trace_id": "lower(hex(s.trace_id))", "span_id": "lower(hex(s.span_id))",
                  "parent_span_id": "lower(hex(s.parent_span_id))", "name": "s.name",
                  "service_name": "s.service_name"}
# A span key that can be absent (a root span has no parent): the negative operators match it then.
_SPAN_PRESENT_SQL = {"parent_span_id": "s.parent_span_id"}

SPAN_SELECT = ("s.id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_ns, s.end_ns, "
               "s.status_code, s.status_message, s.attributes, s.events, s.links, s.resource_id, "
               "s.service_name, s.trace_state, s.flags")


@dataclass(frozen=True, slots=True)
class SpanRow:
    id: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: str  # JSON object
    events: str | None  # JSON list
    links: str | None  # JSON list
    resource_id: int
    service_name: str
    trace_state: str
    flags: int


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition. `source` is "span" (key in SPAN_KEYS), "attribute" or "resource" (key = attribute key).

    `values` are already normalized by the caller: bytes for trace_id/span_id with exact/is_not,
    nanoseconds for duration, ints for kind/status_code, text for attribute comparisons, a number for
    gt/lt, and a pattern `regex.compile_regex` accepted (RE2) for regex/not_regex.
    """
    source: str
    key: str
    operator: str
    values: tuple = ()


@dataclass(frozen=True, slots=True)
class Group:
    op: str  # "AND" | "OR"
    items: tuple["Filter | Group", ...]


Condition = Union[Filter, Group]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which spans: one project, an inclusive start-time window, and optional constraints."""
    project_id: int
    start_ns: int | None = None
    end_ns: int | None = None
    services: tuple[str, ...] = ()
    status_codes: tuple[int, ...] = ()
    trace_id: bytes | None = None
    roots_only: bool = False
    where: Condition | None = None


@dataclass(frozen=True, slots=True)
class SpanOrder:
    by: str = "timestamp"  # "timestamp" | "duration"
    descending: bool = True


@dataclass(slots=True)
class Sql:
    text: str
    params: list = field(default_factory=list)


# --- compiling conditions ---------------------------------------------------------------------------------

def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


_PLAIN_KEY = re.compile(r'[^"\\\x00-\x1f]*')


def _attribute_sql(column: str, key: str) -> tuple[Sql, Sql]:
    """(text, json type) expressions of attribute `key` in JSON column `column`.

    The text reads as the API renders attribute values: strings as-is, booleans true/false, numbers and
    nested values as JSON. A key is addressed as a quoted JSON path label (`$."http.method"`, so dots are
    literal). A label is compared with the key as JSON text escapes it and cannot hold a double quote or
    a NUL (a path error), so keys with characters JSON escapes (`"`, `\\`, control characters) go through
    json_each, which compares decoded keys.
    """
    if _PLAIN_KEY.fullmatch(key):
        path = f'$."{key}"'
        text = Sql(f"CASE json_type({column}, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                   f"ELSE CAST(json_extract({column}, ?) AS TEXT) END", [path, path])
        return text, Sql(f"json_type({column}, ?)", [path])
    text = Sql(f"(SELECT CASE je.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
               f"ELSE CAST(je.value AS TEXT) END FROM json_each({column}) AS je WHERE je.key = ?)", [key])
    return text, Sql(f"(SELECT je.type FROM json_each({column}) AS je WHERE je.key = ?)", [key])


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _compare(value: Sql, f: Filter, *, nullable: bool, number: Sql | None = None,
             present: Sql | None = None) -> Sql:
    """`value` compared by f.operator (comparisons.py). Negative operators also match an absent (NULL)
    value; order, range and semver operators never do."""
    op, vals = f.operator, list(f.values)
    if op == "is_set":
        return Sql(f"{present.text} IS NOT NULL", list(present.params)) if present else Sql("1")
    if op == "is_not_set":
        return Sql(f"{present.text} IS NULL", list(present.params)) if present else Sql("0")
    if op in comparisons.EQUALITY:
        if len(vals) == 1:
            inner = Sql(f"{value.text} = ?", [*value.params, vals[0]])
        else:
            inner = Sql(f"{value.text} IN ({_placeholders(len(vals))})", [*value.params, *vals])
        if op == "exact":
            return inner
        return _negate(inner, value, nullable)
    subject = number or value
    if op in comparisons.ORDER:
        return Sql(f"{subject.text} {comparisons.ORDER_SQL[op]} ?", [*subject.params, vals[0]])
    if op == "between":
        return Sql(f"{subject.text} BETWEEN ? AND ?", [*subject.params, vals[0], vals[1]])
    if op == "not_between":  # NULL (not a number) matches neither side
        return Sql(f"({subject.text} < ? OR {subject.text} > ?)",
                   [*subject.params, vals[0], *subject.params, vals[1]])
    if op in comparisons.SEMVER_POINT:
        return Sql(f"otelite_semver_cmp({value.text}, ?) {comparisons.SEMVER_SQL[op]} 0", [*value.params, vals[0]])
    if op in comparisons.SEMVER_RANGE:  # vals: the range's [low, high) as version texts
        return Sql(f"(otelite_semver_cmp({value.text}, ?) >= 0 AND otelite_semver_cmp({value.text}, ?) < 0)",
                   [*value.params, vals[0], *value.params, vals[1]])
    # Text and pattern operators; several values: any of them. icontains is instr, not LIKE, so % and _
    # in the needle are literal; starts/ends_with are LIKE with the needle escaped. Case folding is
    # SQLite's lower() and LIKE (ASCII letters), the same for every text operator.
    parts, params = [], []
    positive = op.removeprefix("not_")
    for v in vals:
        if positive == "icontains":
            parts.append(f"instr(lower({value.text}), lower(?)) > 0")
            params += [*value.params, v]
        elif positive in ("starts_with", "ends_with"):
            pattern = _like_escape(v) + "%" if positive == "starts_with" else "%" + _like_escape(v)
            parts.append(f"lower({value.text}) LIKE lower(?) ESCAPE '\\'")
            params += [*value.params, pattern]
        else:
            parts.append(f"otelite_regexp(?, {value.text})")
            params += [v, *value.params]
    inner = Sql("(" + " OR ".join(parts) + ")", params)
    if op == positive:
        return inner
    return _negate(inner, value, nullable)


def _negate(inner: Sql, value: Sql, nullable: bool) -> Sql:
    if not nullable:
        return Sql(f"NOT ({inner.text})", inner.params)
    return Sql(f"({value.text} IS NULL OR NOT ({inner.text}))", [*value.params, *inner.params])


def compile_filter(f: Filter, project_id: int) -> Sql:
    if f.source == "span":
        text_ops = f.operator in comparisons.TEXT + comparisons.PATTERN + comparisons.SEMVER
        column = _SPAN_TEXT_SQL[f.key] if text_ops else _SPAN_VALUE_SQL[f.key]
        present = _SPAN_PRESENT_SQL.get(f.key)
        return _compare(Sql(column), f, nullable=present is not None,
                        present=Sql(present) if present else None)
    column = "s.attributes" if f.source == "attribute" else "r.attributes"
    text, json_type = _attribute_sql(column, f.key)
    number = Sql(f"otelite_num({text.text})", text.params)
    cond = _compare(text, f, nullable=True, number=number, present=json_type)
    if f.source == "attribute":
        return cond
    # Resource attributes: resolve the (few) matching resources once instead of joining per span.
    return Sql(f"s.resource_id IN (SELECT r.id FROM resources AS r WHERE r.project_id = ? AND {cond.text})",
               [project_id, *cond.params])


def compile_condition(c: Condition, project_id: int) -> Sql:
    if isinstance(c, Filter):
        return compile_filter(c, project_id)
    parts = [compile_condition(item, project_id) for item in c.items]
    if not parts:
        return Sql("1")  # an empty group constrains nothing
    joiner = " AND " if c.op == "AND" else " OR "
    return Sql("(" + joiner.join(p.text for p in parts) + ")", [x for p in parts for x in p.params])


def trace_span_ids(n: int, source: str | None = None) -> str:
    """SELECT of the rowids of every span of `n` traces (parameters: the trace ids), or of the traces that
    the SELECT `source` lists, from their runs. A run may outlive its spans (retention deletes spans
    first): callers also check `trace_id`."""
    traces = source if source is not None else _placeholders(n)
    # Runs are in two tables (spans.py: the head and the merged runs); SQLite pushes the IN term into
    # both arms of the UNION ALL, one primary-key probe a trace each.
    return (f"WITH RECURSIVE ids(id, hi) AS (SELECT lo, hi FROM (SELECT trace_id, lo, hi FROM {RUNS} "
            f"UNION ALL SELECT trace_id, lo, hi FROM {HEAD}) WHERE trace_id IN ({traces}) "
            "UNION ALL SELECT id + 1, hi FROM ids WHERE id < hi) SELECT id FROM ids")


def compile_where(sel: Selection, *, with_time: bool = True, legacy_trace_index: bool = False) -> Sql:
    """The WHERE clause (without the keyword) for `sel` over `spans AS s`. `legacy_trace_index`: look a
    trace up through `spans_by_trace` (a database whose migration to runs is not finished)."""
    # With a trace id, `+` keeps the project/time terms from steering SQLite away from the trace's rows.
    plus = "+" if sel.trace_id is not None else ""
    clauses: list[str] = []
    params: list = []
    if sel.trace_id is not None:
        if not legacy_trace_index:
            clauses.append(f"s.id IN ({trace_span_ids(1)})")
            params.append(sel.trace_id)
        clauses.append("s.trace_id = ?")
        params.append(sel.trace_id)
    clauses.append(f"{plus}s.project_id = ?")
    params.append(sel.project_id)
    if with_time and sel.start_ns is not None:
        clauses.append(f"{plus}s.start_ns >= ?")
        params.append(sel.start_ns)
    if with_time and sel.end_ns is not None:
        clauses.append(f"{plus}s.start_ns <= ?")
        params.append(sel.end_ns)
    if sel.roots_only:
        clauses.append("s.parent_span_id IS NULL")  # the partial indexes' own predicate, word for word
    if sel.services:
        clauses.append(f"s.service_name IN ({_placeholders(len(sel.services))})")
        params += sel.services
    if sel.status_codes:
        clauses.append(f"s.status_code IN ({_placeholders(len(sel.status_codes))})")
        params += sel.status_codes
    if sel.where is not None:
        cond = compile_condition(sel.where, sel.project_id)
        clauses.append(cond.text)
        params += cond.params
    return Sql(" AND ".join(clauses), params)


def compile_span_list(sel: Selection, order: SpanOrder, limit: int, offset: int = 0,
                      after: tuple[int, bytes] | None = None, *, legacy_trace_index: bool = False) -> Sql:
    """SELECT of up to `limit` spans. `after` = (start_ns, span_id) of the last span already seen
    (timestamp order only): the keyset continues strictly past it."""
    where = compile_where(sel, legacy_trace_index=legacy_trace_index)
    text, params = where.text, list(where.params)
    d = "DESC" if order.descending else "ASC"
    if after is not None and order.by == "timestamp":
        lt = "<" if order.descending else ">"
        text += f" AND s.start_ns {lt}= ? AND (s.start_ns {lt} ? OR s.span_id {lt} ?)"
        params += [after[0], after[0], after[1]]
    if order.by == "duration":
        order_sql = f"(s.end_ns - s.start_ns) {d}, s.start_ns {d}, s.span_id {d}, s.id {d}"
    else:
        order_sql = f"s.start_ns {d}, s.span_id {d}, s.id {d}"
    return Sql(f"SELECT {SPAN_SELECT} FROM spans AS s WHERE {text} ORDER BY {order_sql} LIMIT ? OFFSET ?",
               params + [limit, offset])


# --- what the attribute rollups rule out -----------------------------------------------------------------

# Operators a span without the attribute never satisfies (_compare: NEGATIVE and is_not_set match it).
_NEED_PRESENT = frozenset(OPERATORS) - frozenset(comparisons.NEGATIVE) - {"is_not_set"}


def _only_a_string_reads(text: str) -> bool:
    """Whether an attribute whose value reads as `text` must be a string the rollup counts by value: not
    too long, and no number, boolean, null, array or map renders that way (SQLite and Python render
    numbers differently, `1e+20` / `1.0e+20`, so anything that parses as one is left to the scan)."""
    if len(text) > ROLLUP_VALUE_MAX or text in ("true", "false", "null") or text[:1] in ("[", "{"):
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False


def cannot_match(conn: sqlite3.Connection, sel: Selection) -> bool:
    """Whether the hourly attribute rollups (span_attribute_keys / _values, written with the spans in one
    transaction) prove that no span of sel's window meets sel.where, so a query can answer empty
    without reading every span of the window. A filter that only a present attribute satisfies is
    impossible when no span of the window's hours carries its key; `exact` also when none carries any
    of its values (for values only a counted string can read as). An AND needs one impossible member,
    an OR all of them.

    Retention deletes an hour's rollup rows with the first of its expired spans, so an expired span not
    yet deleted may be left out here; no other span is."""
    if sel.where is None:
        return False
    hours = ""
    params: list = []
    if sel.start_ns is not None:
        hours += " AND hour >= ?"
        params.append(sel.start_ns // _HOUR_NS)
    if sel.end_ns is not None:
        hours += " AND hour <= ?"
        params.append(sel.end_ns // _HOUR_NS)

    def carried(kind: str, key: str, values: tuple = ()) -> bool:
        if not values:
            sql = ("SELECT 1 FROM span_attribute_keys WHERE project_id = ? AND attribute_type = ? AND key = ?"
                   f"{hours} LIMIT 1")
            return conn.execute(sql, [sel.project_id, kind, key, *params]).fetchone() is not None
        rows = _value_rows(conn, sel.project_id, kind, key, (sel.start_ns, sel.end_ns))
        if rows is None:
            return False
        sql = f"SELECT 1 FROM ({rows.text}) WHERE value IN ({_placeholders(len(values))}) LIMIT 1"
        return conn.execute(sql, [*rows.params, *values]).fetchone() is not None

    def impossible(c: Condition) -> bool:
        if isinstance(c, Group):
            if not c.items:
                return False
            member = (impossible(item) for item in c.items)
            return any(member) if c.op == "AND" else all(member)
        if c.source == "span" or c.operator not in _NEED_PRESENT:
            return False
        kind = "span" if c.source == "attribute" else "resource"
        if not carried(kind, c.key):
            return True
        if c.operator == "exact" and all(isinstance(v, str) and _only_a_string_reads(v) for v in c.values):
            return not carried(kind, c.key, tuple(c.values))
        return False

    return impossible(sel.where)


# --- queries (run through Store.read) ---------------------------------------------------------------------

def find_spans(conn: sqlite3.Connection, sel: Selection, order: SpanOrder, limit: int, offset: int = 0,
               after: tuple[int, bytes] | None = None) -> tuple[list[SpanRow], bool]:
    """Up to `limit` spans and whether more follow (one extra row is fetched to know)."""
    if cannot_match(conn, sel):
        return [], False
    legacy = sel.trace_id is not None and legacy_trace_index(conn)
    q = compile_span_list(sel, order, limit + 1, offset, after, legacy_trace_index=legacy)
    rows = [SpanRow(*r) for r in conn.execute(q.text, q.params)]
    return rows[:limit], len(rows) > limit


def _time_window(sel: Selection) -> tuple[str, list]:
    """` AND ...` terms keeping a selected trace's spans to the selection's time range. With `+`: the trace
    ids choose the rows (runs), the time must not steer SQLite to the time index (`compile_where`)."""
    window, params = "", []
    if sel.start_ns is not None:
        window += " AND +s.start_ns >= ?"
        params.append(sel.start_ns)
    if sel.end_ns is not None:
        window += " AND +s.start_ns <= ?"
        params.append(sel.end_ns)
    return window, params


def trace_context(conn: sqlite3.Connection, sel: Selection, trace_ids: Iterable[bytes], skip_ids: Iterable[int],
                  per_trace: int) -> list[tuple[SpanRow, bool]]:
    """Other spans of the given traces in sel's window (row ids in `skip_ids` left out): up to `per_trace`
    of each trace, its root first, then the spans that match `sel` (ignoring roots_only), then by start
    time. Each with whether it matches. The span query's prefetchSpans (PostHog ranks a trace's spans
    the same way: is_root_span, matched_filter, timestamp)."""
    ids = list(dict.fromkeys(trace_ids))
    if not ids or per_trace <= 0:
        return []
    skip = list(dict.fromkeys(skip_ids))
    match = compile_where(Selection(sel.project_id, sel.start_ns, sel.end_ns, sel.services, sel.status_codes,
                                    None, False, sel.where))
    window, params = _time_window(sel)
    skip_sql = f" AND s.id NOT IN ({_placeholders(len(skip))})" if skip else ""
    runs = "" if legacy_trace_index(conn) else f"s.id IN ({trace_span_ids(len(ids))}) AND "
    sql = (f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY trace_id ORDER BY parent_span_id IS NULL DESC, "
           f"matched DESC, start_ns, span_id, id) AS rn FROM (SELECT {SPAN_SELECT}, "
           f"CASE WHEN {match.text} THEN 1 ELSE 0 END AS matched FROM spans AS s "
           f"WHERE {runs}s.trace_id IN ({_placeholders(len(ids))}) AND +s.project_id = ?{window}{skip_sql})) "
           f"WHERE rn <= ? ORDER BY trace_id, rn")
    rows = conn.execute(sql, [*match.params, *(ids if runs else []), *ids, sel.project_id, *params, *skip,
                              per_trace])
    return [(SpanRow(*r[:17]), bool(r[17])) for r in rows]


def trace_page(conn: sqlite3.Connection, sel: Selection, offset: int, page: int
               ) -> tuple[list[SpanRow], bool, dict[bytes, int], tuple[int, int] | None]:
    """One page of a trace's spans (start order) matching `sel` (which names the trace), whether more
    follow, the self time of each span id, and the trace's (first start, last end)."""
    assert sel.trace_id is not None
    rows, has_more = find_spans(conn, sel, SpanOrder("timestamp", False), page, offset)
    # Self times and bounds come from the whole trace, whatever the filters kept.
    ids = "" if legacy_trace_index(conn) else f"s.id IN ({trace_span_ids(1)}) AND "
    params = (sel.trace_id,) * (2 if ids else 1) + (sel.project_id,)
    shape = conn.execute(f"SELECT span_id, parent_span_id, start_ns, end_ns FROM spans AS s "
                         f"WHERE {ids}s.trace_id = ? AND +s.project_id = ?", params).fetchall()
    bounds = (min(r[2] for r in shape), max(r[3] for r in shape)) if shape else None
    return rows, has_more, self_times(shape), bounds


def self_times(spans: Iterable[tuple[bytes, bytes | None, int, int]]) -> dict[bytes, int]:
    """span id → its duration minus the union of its children's intervals (clipped to the span).

    `spans` are (span_id, parent_span_id, start_ns, end_ns) of one trace. A child running past its
    parent (async work) only counts while the parent runs, so a self time is never negative.
    """
    spans = list(spans)
    budget.check()  # a trace can hold millions of spans: the read's deadline (collector/store/budget.py)
    children: dict[bytes, list[tuple[int, int]]] = {}
    for span_id, parent, start, end in spans:
        if parent is not None:
            children.setdefault(parent, []).append((start, end))
    out: dict[bytes, int] = {}
    budget.check()
    for span_id, _parent, start, end in spans:
        covered = 0
        cursor = start
        for c_start, c_end in sorted(children.get(span_id, ())):
            c_start, c_end = max(c_start, cursor), min(c_end, end)
            if c_end > c_start:
                covered += c_end - c_start
                cursor = c_end
        out[span_id] = max(end - start - covered, 0)
    return out


def trace_bounds(conn: sqlite3.Connection, project_id: int, trace_ids: Iterable[bytes]
                 ) -> dict[bytes, tuple[int, int]]:
    """trace id → (first span start, last span end) over every stored span of the trace."""
    ids = list(dict.fromkeys(trace_ids))
    if not ids:
        return {}
    runs = "" if legacy_trace_index(conn) else f"id IN ({trace_span_ids(len(ids))}) AND "
    rows = conn.execute(f"SELECT trace_id, min(start_ns), max(end_ns) FROM spans WHERE {runs}trace_id IN "
                        f"({_placeholders(len(ids))}) AND +project_id = ? GROUP BY trace_id",
                        [*ids] * (2 if runs else 1) + [project_id])
    return {t: (lo, hi) for t, lo, hi in rows}


def resource_attributes(conn: sqlite3.Connection, project_id: int, resource_ids: Iterable[int]) -> dict[int, dict]:
    ids = list(dict.fromkeys(resource_ids))
    if not ids:
        return {}
    rows = conn.execute(f"SELECT id, attributes FROM resources WHERE id IN ({_placeholders(len(ids))}) "
                        f"AND project_id = ?", [*ids, project_id])
    return {rid: json.loads(attrs) for rid, attrs in rows}


def span_counts(conn: sqlite3.Connection, sel: Selection, bucket_ns: int, distinct_traces: bool = False
                ) -> list[tuple[int, str, int]]:
    """(bucket start ns, service, count) for each non-empty bucket and service of sel's window, in order.

    Buckets are aligned to multiples of `bucket_ns` since the epoch and clipped to the window, so the
    counts add up to the number of matching spans. `distinct_traces` counts distinct trace ids instead
    (with roots_only: traces that have a root span).
    """
    assert sel.start_ns is not None and sel.end_ns is not None
    if cannot_match(conn, sel):
        return []
    counted = not (sel.roots_only or distinct_traces or sel.where is not None or sel.status_codes
                   or sel.trace_id is not None)
    legacy = legacy_service_index(conn)
    if counted and not legacy:
        counts = service_counts(conn, sel.project_id, sel.start_ns, sel.end_ns, bucket_ns, sel.services)
        return sorted((i * bucket_ns, name, n) for (i, name), n in counts.items() if n)
    legacy_trace = sel.trace_id is not None and legacy_trace_index(conn)
    count = "count(DISTINCT s.trace_id)" if distinct_traces else "count(*)"
    if not (sel.roots_only or legacy):
        # No index holds the spans of one service in time order any more: one pass over the window (its
        # time terms as compile_where writes them, so a trace id still starts from the trace's runs).
        where = compile_where(sel, legacy_trace_index=legacy_trace)
        rows = conn.execute(f"SELECT s.start_ns / ?, s.service_name, {count} FROM spans AS s WHERE {where.text} "
                            "GROUP BY 1, 2", [bucket_ns, *where.params])
        return sorted((i * bucket_ns, name, n) for i, name, n in rows if n)
    # Root spans (the partial index spans_roots_by_service), or a store whose spans are not counted yet:
    # a count per bucket and service, the bucket's time terms in the subquery.
    where = compile_where(sel, with_time=False, legacy_trace_index=legacy_trace)
    services = Sql("SELECT DISTINCT service_name AS name FROM resources WHERE project_id = ?", [sel.project_id])
    if sel.services:
        services.text += f" AND service_name IN ({_placeholders(len(sel.services))})"
        services.params += sel.services
    sql = (
        "WITH RECURSIVE b(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM b WHERE i < ?) "
        f"SELECT b.i, v.name, (SELECT {count} FROM spans AS s WHERE s.service_name = v.name "
        "AND s.start_ns >= max(?, b.i * ?) AND s.start_ns <= min(?, b.i * ? + ?) "
        f"AND {where.text}) AS n FROM b, ({services.text}) AS v")
    params = [sel.start_ns // bucket_ns, sel.end_ns // bucket_ns, sel.start_ns, bucket_ns, sel.end_ns,
              bucket_ns, bucket_ns - 1, *where.params, *services.params]
    return sorted((i * bucket_ns, name, n) for i, name, n in conn.execute(sql, params) if n)


def service_names(conn: sqlite3.Connection, project_id: int, start_ns: int, end_ns: int,
                  search: str | None = None, limit: int = 1000) -> list[str]:
    """Distinct non-empty service names with a span starting in [start_ns, end_ns], ascending.

    Candidates come from the hourly attribute rollup (resource `service.name`); each is confirmed from the
    per-service span counts (span_counts.py: a look at the window's first minute, for a service present
    in it), so the answer is exact to the nanosecond without reading every count of the window. A store
    whose spans are not all counted yet confirms with one probe of spans_by_service.
    """
    rows = _value_rows(conn, project_id, "resource", "service.name", (start_ns, end_ns))
    if rows is None:
        return []
    # Each name once (the rollup has a row per hour), before the confirmation: MATERIALIZED, so that
    # SQLite does not confirm a name once per hour.
    names = Sql(f"SELECT DISTINCT value FROM ({rows.text}) WHERE value <> ''", list(rows.params))
    if search:
        names.text += " AND instr(lower(value), lower(?)) > 0"
        names.params.append(search)
    if legacy_service_index(conn):
        present = Sql("EXISTS (SELECT 1 FROM spans AS s WHERE s.project_id = ? AND s.service_name = v.value "
                      "AND s.start_ns BETWEEN ? AND ?)", [project_id, start_ns, end_ns])
    else:
        present = Sql(*service_present_sql(project_id, start_ns, end_ns, "v.value"))
    sql = (f"WITH names AS MATERIALIZED ({names.text}) SELECT v.value FROM names AS v WHERE {present.text} "
           "ORDER BY v.value LIMIT ?")
    return [r[0] for r in conn.execute(sql, [*names.params, *present.params, limit])]



# The value rollup of a store migrated from the (key, value, hour) key (migration 0010): read beside the
# current table, written no more, emptied by retention.
LEGACY_ROLLUP = "span_attribute_values_legacy"


def legacy_rollup(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (LEGACY_ROLLUP,)).fetchone() is not None


def _value_rows(conn: sqlite3.Connection, project_id: int, kind: str, key: str,
                window: tuple[int | None, int | None] | None) -> Sql | None:
    """SELECT (value, count) of one key's rows of the value rollup in the hours overlapping `window`
    ([start_ns, end_ns], None: open), or None when the rollup holds none of those hours. A value may
    come in several rows (hours, and the legacy table): callers sum or test for existence.

    The rollup is keyed hour first (migration 0010: a commit's upserts stay in the current hour's pages),
    so one key's rows are found with one seek per hour the rollup holds, each hour found from the one
    before (a skip scan): stepping through every hour between the first and the last took seconds, and
    the query's whole budget, once one span started in 2153 (a million empty hours). The legacy table,
    keyed by key first, with one seek on the key."""
    lo, hi = window if window is not None else (None, None)
    lo_hour = lo // _HOUR_NS if lo is not None else None
    hi_hour = hi // _HOUR_NS if hi is not None else None
    parts: list[Sql] = []
    first, last = conn.execute(
        "SELECT (SELECT min(hour) FROM span_attribute_values WHERE project_id = ?1 AND attribute_type = ?2), "
        "(SELECT max(hour) FROM span_attribute_values WHERE project_id = ?1 AND attribute_type = ?2)",
        (project_id, kind)).fetchone()
    if first is not None:
        first = first if lo_hour is None else max(first, lo_hour)
        last = last if hi_hour is None else min(last, hi_hour)
        if first <= last:
            parts.append(Sql(
                "WITH RECURSIVE hours(h) AS (SELECT ? UNION ALL SELECT (SELECT min(hour) FROM span_attribute_values "
                "WHERE project_id = ? AND attribute_type = ? AND hour > hours.h AND hour <= ?) FROM hours "
                "WHERE h IS NOT NULL) "
                "SELECT v.value AS value, v.count AS count FROM hours CROSS JOIN span_attribute_values AS v "
                "WHERE v.project_id = ? AND v.attribute_type = ? AND v.hour = hours.h AND v.key = ?",
                [first, project_id, kind, last, project_id, kind, key]))
    if legacy_rollup(conn):
        legacy = Sql(f"SELECT value, count FROM {LEGACY_ROLLUP} WHERE project_id = ? AND attribute_type = ? "
                     "AND key = ?", [project_id, kind, key])
        for bound, op in ((lo_hour, ">="), (hi_hour, "<=")):
            if bound is not None:
                legacy.text += f" AND hour {op} ?"
                legacy.params.append(bound)
        parts.append(legacy)
    if not parts:
        return None
    # Each part as a subquery: a WITH cannot stand as a member of a compound SELECT.
    return Sql(" UNION ALL ".join(f"SELECT * FROM ({p.text})" for p in parts), [x for p in parts for x in p.params])


def _rollup_terms(hours: tuple[int, int] | None, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
                  column: str = "key") -> tuple[str, list]:
    """SQL terms over an hourly rollup: the hours overlapping [start_ns, end_ns] (`hours`, in ns; None:
    every hour), keys left out (`exclude`) or the only keys wanted (`only`)."""
    sql, params = "", []
    if hours is not None:
        sql += " AND hour BETWEEN ? AND ?"
        params += [hours[0] // _HOUR_NS, hours[1] // _HOUR_NS]
    if exclude:
        sql += f" AND {column} NOT IN ({_placeholders(len(exclude))})"
        params += list(exclude)
    if only is not None:
        sql += f" AND {column} IN ({_placeholders(len(only))})" if only else " AND 0"
        params += list(only)
    return sql, params


def attribute_keys(conn: sqlite3.Connection, project_id: int, attribute_type: str, search: str | None,
                   limit: int, offset: int, *, window: tuple[int, int] | None = None,
                   exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> tuple[list[str], int]:
    """Keys by how many spans carry them (then by name), and how many keys match in all. `window`: only
    spans of the hours overlapping [start_ns, end_ns] (the rollup is hourly); `exclude`: keys left out;
    `only`: the keys wanted (an allowlist)."""
    where = "project_id = ? AND attribute_type = ?"
    params: list = [project_id, attribute_type]
    if search:
        where += " AND instr(lower(key), lower(?)) > 0"
        params.append(search)
    terms, more = _rollup_terms(window, exclude, only)
    where += terms
    params += more
    keys = [r[0] for r in conn.execute(
        f"SELECT key, sum(count) AS n FROM span_attribute_keys WHERE {where} GROUP BY key "
        f"ORDER BY n DESC, key LIMIT ? OFFSET ?", [*params, limit, offset])]
    total = conn.execute(f"SELECT count(DISTINCT key) FROM span_attribute_keys WHERE {where}", params).fetchone()[0]
    return keys, total


def attribute_values(conn: sqlite3.Connection, project_id: int, attribute_type: str, key: str,
                     search: str | None, limit: int, offset: int, *, window: tuple[int, int] | None = None
                     ) -> list[str]:
    """Values of `key` by how many spans carry them (then by value); `window` as in attribute_keys.

    The rollup holds one row per value and hour, so the search runs on the summed values (one test per
    value, not per hour) in a materialized CTE that SQLite cannot flatten back into the scan.
    """
    rows = _value_rows(conn, project_id, attribute_type, key, window)
    if rows is None:
        return []
    params: list = list(rows.params)
    search_sql = ""
    if search:
        search_sql = "WHERE instr(lower(value), lower(?)) > 0 "
        params.append(search)
    return [r[0] for r in conn.execute(
        f"WITH totals AS MATERIALIZED (SELECT value, sum(count) AS n FROM ({rows.text}) GROUP BY value) "
        f"SELECT value FROM totals {search_sql}ORDER BY n DESC, value LIMIT ? OFFSET ?", [*params, limit, offset])]


# --- aggregates of span durations (PostHog's tracing/spans/aggregate and tracing/spans/tree) -------------

DURATION_QUANTILES = (0.5, 0.95, 0.99, 0.999)


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Durations (ns) of the spans of one group: how many, their total, mean and quantiles (exact, linear
    between order statistics as numpy's default), how many ended in error (status 2), and the mean of
    `offset` (the tree's start offset from the parent; 0 when not asked)."""
    group: tuple
    count: int
    total: int
    mean: float
    quantiles: tuple[float, ...]  # DURATION_QUANTILES
    errors: int
    mean_offset: float = 0.0


def _grouped_durations(conn: sqlite3.Connection, source: Sql, group_cols: tuple[str, ...], with_offset: bool,
                       limit: int, offset: int) -> tuple[list[DurationStats], bool]:
    """Run the stats over `source` (a SELECT of the group columns, `d` the duration, `status`, and
    `off` when `with_offset`), groups ordered by total duration (then by the group columns), one page
    of them (`limit` + 1 rows are read to know whether more follow)."""
    cols = ", ".join(group_cols)
    picks = []
    for q in DURATION_QUANTILES:  # the order statistics at floor(q·(n−1)) and the one after it (1-based rn)
        picks.append(f"max(CASE WHEN rn = CAST({q!r} * (n - 1) AS INTEGER) + 1 THEN d END)")
        picks.append(f"max(CASE WHEN rn = CAST({q!r} * (n - 1) AS INTEGER) + 2 THEN d END)")
    off = "avg(off)" if with_offset else "0.0"
    sql = (f"WITH src AS ({source.text}), "
           f"ranked AS (SELECT *, row_number() OVER (PARTITION BY {cols} ORDER BY d) AS rn, "
           f"count(*) OVER (PARTITION BY {cols}) AS n FROM src) "
           # total(), not sum(): a span may last from 1970 to 2262 (valid OTLP), and two of them overflowed
           # sum()'s int64 ("integer overflow", a 500); total()'s double is exact below 2^53 ns (104 days).
           f"SELECT {cols}, max(n), total(d), sum(status = 2), {off}, {', '.join(picks)} FROM ranked "
           f"GROUP BY {cols} ORDER BY total(d) DESC, {cols} LIMIT ? OFFSET ?")
    width = len(group_cols)
    out = []
    for row in conn.execute(sql, source.params + [limit + 1, offset]):
        n, total, errors, mean_offset = row[width], int(row[width + 1]), row[width + 2], row[width + 3]
        picks_row = row[width + 4:]
        quantiles = []
        for i, q in enumerate(DURATION_QUANTILES):
            pos = q * (n - 1)
            lo, hi = picks_row[2 * i], picks_row[2 * i + 1]
            frac = pos - int(pos)
            quantiles.append(float(lo) if hi is None or frac == 0 else lo + (hi - lo) * frac)
        out.append(DurationStats(tuple(row[:width]), n, total, total / n, tuple(quantiles), errors,
                                 float(mean_offset or 0.0)))
    return out[:limit], len(out) > limit


def span_aggregates(conn: sqlite3.Connection, sel: Selection, limit: int, offset: int = 0
                    ) -> tuple[list[DurationStats], bool]:
    """Per (service, span name) of the spans `sel` selects: DurationStats, by total duration, one page."""
    if cannot_match(conn, sel):
        return [], False
    where = compile_where(sel, legacy_trace_index=sel.trace_id is not None and legacy_trace_index(conn))
    source = Sql("SELECT s.service_name AS service_name, s.name AS name, (s.end_ns - s.start_ns) AS d, "
                 f"s.status_code AS status FROM spans AS s WHERE {where.text}", list(where.params))
    return _grouped_durations(conn, source, ("service_name", "name"), False, limit, offset)


_MATCHED = "SELECT trace_id FROM matched"


def span_tree(conn: sqlite3.Connection, sel: Selection, span_name: str, service_name: str | None, limit: int
              ) -> list[DurationStats]:
    """The call tree under a span name: the traces in which a span `sel` selects has that name (and
    service), then every span of those traces in sel's window (of that service only, when given) joined
    to its parent, as DurationStats per (parent service, parent name, service, name) edge. A span without
    a parent, or whose parent is not among those spans, hangs under ('', '<ROOT>'); `mean_offset` is its
    start minus its parent's (0 under the root)."""
    if cannot_match(conn, sel):
        return []
    legacy = legacy_trace_index(conn)
    where = compile_where(sel, legacy_trace_index=legacy)
    matched = Sql(f"SELECT DISTINCT s.trace_id FROM spans AS s WHERE {where.text} AND s.name = ?",
                  [*where.params, span_name])
    scope, scope_params = "", []
    if service_name is not None:
        matched.text += " AND s.service_name = ?"
        matched.params.append(service_name)
        scope, scope_params = " AND s.service_name = ?", [service_name]
    window, window_params = _time_window(sel)
    source = Sql(
        f"WITH matched AS ({matched.text}), "
        "sp AS (SELECT s.trace_id, s.span_id, s.parent_span_id, s.service_name, s.name, s.start_ns, "
        "(s.end_ns - s.start_ns) AS d, s.status_code AS status FROM spans AS s "
        f"WHERE {'' if legacy else f's.id IN ({trace_span_ids(0, _MATCHED)}) AND '}"
        f"s.trace_id IN ({_MATCHED}) AND +s.project_id = ?{window}{scope}) "
        "SELECT coalesce(p.service_name, '') AS parent_service, "
        "CASE WHEN c.parent_span_id IS NULL THEN '<ROOT>' ELSE coalesce(p.name, '<ROOT>') END AS parent_name, "
        "c.service_name AS service_name, c.name AS name, c.d AS d, c.status AS status, "
        "CASE WHEN c.parent_span_id IS NULL OR p.start_ns IS NULL THEN 0 ELSE c.start_ns - p.start_ns END AS off "
        "FROM sp AS c LEFT JOIN sp AS p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id",
        [*matched.params, sel.project_id, *window_params, *scope_params])
    # `WITH` cannot nest inside the stats' own CTE in every SQLite build: wrap it as a subquery.
    source = Sql(f"SELECT * FROM ({source.text})", source.params)
    rows, _ = _grouped_durations(conn, source, ("parent_service", "parent_name", "service_name", "name"), True,
                                 limit, 0)
    return rows
