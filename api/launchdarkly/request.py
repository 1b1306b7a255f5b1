"""Pure parsing of metric-group requests (metric-groups.md): the create body, and the list's `filter`,
`sort`, `expand`, `limit` and `offset`. Every error is a 400 naming the field (or the filter clause).

The filter grammar is LaunchDarkly's (clauses joined by ` and `, each `field operator value`); it is
spelled out, and published as a pattern, in the filter section below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from otelite.api.errors import bad_request
from otelite.collector.store.metric_groups import KINDS, GroupOrder, GroupSelection

# LaunchDarkly keys: a letter or digit, then letters, digits, '.', '_' or '-'.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$"
_KEY = re.compile(KEY_PATTERN)
MAX_NAME = 256
MAX_DESCRIPTION = 4096
MAX_TAGS = 100
MAX_TAG = 256
MAX_METRICS = 100  # per group: bounds the catalog look-ups a write does on the writer's thread
MAX_METRIC_KEY = 1024
MAX_LIMIT = 50
DEFAULT_LIMIT = 20
MAX_OFFSET = 2**31 - 1
MAX_FILTER = 4096

EXPANSIONS = ("experiments", "experimentCount")
EXPAND_PATTERN = r"^((experiments|experimentCount)(,(experiments|experimentCount))*)?$"
SORTS = {"name": "name", "createdAt": "created", "connectionCount": "connections"}
SORT_PATTERN = r"^-?(name|createdAt|connectionCount)(,-?(name|createdAt|connectionCount))*$"
EXPERIMENT_STATUSES = ("not_started", "running", "stopped", "started")


# --- create -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricRef:
    key: str
    name_in_group: str | None


@dataclass(frozen=True)
class GroupFields:
    """The editable fields of a group, validated (create body, or a group after a patch)."""

    name: str
    kind: str
    description: str | None
    maintainer_id: str
    tags: tuple[str, ...]
    metrics: tuple[MetricRef, ...]


def slug(name: str) -> str:
    """Older clients omit `key` (metric-groups.md): the name, lower-cased, runs of other characters → '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:256]


def _string(value: Any, field: str, *, max_len: int, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string", attr=field)
    if required and not value:
        raise bad_request(f"{field} must not be empty", attr=field)
    if len(value) > max_len:
        raise bad_request(f"{field} is longer than {max_len} characters", attr=field)
    return value


def validate_key(key: Any, field: str = "key") -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise bad_request(f"{field} must be 1-256 characters of letters, digits, '.', '_' or '-', starting "
                          f"with a letter or digit", attr=field)
    return key


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise bad_request("tags must be an array of strings", attr="tags")
    if len(value) > MAX_TAGS:
        raise bad_request(f"tags has more than {MAX_TAGS} entries", attr="tags")
    return tuple(_string(t, f"tags[{i}]", max_len=MAX_TAG) for i, t in enumerate(value))


def _metrics(value: Any, kind: str, where: str = "metrics") -> tuple[MetricRef, ...]:
    if not isinstance(value, list):
        raise bad_request(f"{where} must be an array of {{key, nameInGroup}}", attr="metrics")
    if not value:
        raise bad_request(f"{where} must name at least one metric", attr="metrics")
    if len(value) > MAX_METRICS:
        raise bad_request(f"{where} has more than {MAX_METRICS} metrics", attr="metrics")
    out, seen = [], set()
    for i, entry in enumerate(value):
        field = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise bad_request(f"{field} must be an object {{key, nameInGroup}}", attr="metrics")
        key = _string(entry.get("key"), f"{field}.key", max_len=MAX_METRIC_KEY)
        name_in_group = _string(entry.get("nameInGroup"), f"{field}.nameInGroup", max_len=MAX_NAME,
                                required=kind == "funnel")
        if key in seen:
            raise bad_request(f"{field}.key: metric {key!r} is already in the group", attr="metrics")
        seen.add(key)
        out.append(MetricRef(key, name_in_group))
    return tuple(out)


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise bad_request(f"kind must be one of {', '.join(KINDS)}", attr="kind")
    return value


def group_fields(body: Mapping[str, Any], *, maintainer_id: Any, where: str = "metrics") -> GroupFields:
    """The editable fields of `body` (a create body or a patched representation), validated."""
    kind = _kind(body.get("kind"))
    return GroupFields(
        name=_string(body.get("name"), "name", max_len=MAX_NAME),
        kind=kind,
        description=_string(body.get("description"), "description", max_len=MAX_DESCRIPTION, required=False),
        maintainer_id=_string(maintainer_id, "maintainerId", max_len=MAX_NAME),
        tags=_tags(body.get("tags")),
        metrics=_metrics(body.get("metrics"), kind, where),
    )


def parse_create(body: Any) -> tuple[str, GroupFields]:
    """MetricGroupPost → (key, fields). Unknown fields are ignored, as LaunchDarkly ignores them."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object (MetricGroupPost)")
    for required in ("name", "kind", "maintainerId", "tags", "metrics"):
        if required not in body:
            raise bad_request(f"{required} is required", attr=required)
    fields = group_fields(body, maintainer_id=body.get("maintainerId"))
    if "key" in body:
        key = validate_key(body["key"])
    else:
        key = slug(fields.name)
        if not key:
            raise bad_request("key is required (the name has no letters or digits to make one from)", attr="key")
    return key, fields


# --- list ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListQuery:
    selection: GroupSelection
    order: tuple[GroupOrder, ...]
    expand: tuple[str, ...]
    limit: int
    offset: int


def _single(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, list):
        raise bad_request(f"{name} is given more than once", attr=name)
    return value


def _integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    text = _single(params, name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise bad_request(f"{name} must be a whole number from {low} to {high}", attr=name)
    value = int(text)
    if not low <= value <= high:
        raise bad_request(f"{name} must be from {low} to {high}, got {value}", attr=name)
    return value


def parse_expand(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    parts = text.split(",")
    for part in parts:
        if part not in EXPANSIONS:
            raise bad_request(f"expand: unknown field {part!r}; metric groups expand {', '.join(EXPANSIONS)}",
                              attr="expand")
    return tuple(dict.fromkeys(parts))


def parse_sort(text: str | None) -> tuple[GroupOrder, ...]:
    if text is None:
        return ()
    out = []
    for part in text.split(","):
        field = part[1:] if part.startswith("-") else part
        if field not in SORTS:
            raise bad_request(f"sort: unknown field {part!r}; sort by {', '.join(SORTS)} (prefix - to reverse)",
                              attr="sort")
        out.append(GroupOrder(SORTS[field], part.startswith("-")))
    return tuple(out)


def parse_get(params: Mapping[str, Any]) -> tuple[str, ...]:
    """A single group's query: only `expand`."""
    return parse_expand(_single(params, "expand"))


def parse_list(params: Mapping[str, Any], project_id: int) -> ListQuery:
    filter_text = _single(params, "filter")
    return ListQuery(
        selection=parse_filter(filter_text or "", project_id),
        order=parse_sort(_single(params, "sort")),
        expand=parse_expand(_single(params, "expand")),
        limit=_integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        offset=_integer(params, "offset", 0, 0, MAX_OFFSET),
    )


# --- filter -------------------------------------------------------------------------------------------------
#
# The grammar, also as FILTER_PATTERN (the OpenAPI document's pattern for `filter`; a unit test checks that
# the parser and the pattern agree): clauses joined by ' and ' (spaces, not other whitespace), each
# `field operator value`, where a value is a quoted string ('...' or "..."; inside, a backslash escapes the
# quote or a backslash), a list of quoted strings `['a', 'b']`, or the bare word true/false.

_SQ = r"'(?:[^'\\]|\\['\\])*'"
_DQ = r'"(?:[^"\\]|\\["\\])*"'
_S = f"(?:{_SQ}|{_DQ})"


def _list(item: str) -> str:
    return rf"\[ *(?:{item}(?: *, *{item})*)? *\]"


def _one_of(values: tuple[str, ...]) -> str:
    words = "|".join(values)
    return f"(?:'(?:{words})'|\"(?:{words})\")"


_KIND = _one_of(KINDS)
_CLAUSE = "|".join([
    rf"query +equals +(?:{_S}|{_list(_S)})",
    rf"kind +equals +{_KIND}",
    rf"kind +anyOf +{_list(_KIND)}",
    rf"maintainerIds +anyOf +{_list(_S)}",
    rf"maintainerTeamKey +equals +{_S}",
    rf"experimentStatus +equals +{_one_of(EXPERIMENT_STATUSES)}",
    r"hasConnections +equals +(?:true|false)",
])
FILTER_PATTERN = rf"^ *(?:(?:{_CLAUSE})(?: +and +(?:{_CLAUSE}))*)? *$"


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: str | bool | tuple[str, ...]
    text: str  # as written, for error messages


class _FilterError(Exception):
    pass


_WORD = re.compile(r"[A-Za-z0-9_.:-]+")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def spaces(self, at_least: int = 0, what: str = "a space") -> None:
        start = self.pos
        while self.peek() == " ":
            self.pos += 1
        if self.pos - start < at_least:
            raise _FilterError(f"expected {what}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def word(self, what: str) -> str:
        m = _WORD.match(self.text, self.pos)
        if not m:
            raise _FilterError(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def quoted(self) -> str:
        quote_char, out = self.text[self.pos], []
        self.pos += 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == quote_char:
                return "".join(out)
            if c == "\\":
                escaped = self.peek()
                if escaped not in (quote_char, "\\"):
                    raise _FilterError(f"a backslash in a quoted value escapes only {quote_char} or \\")
                self.pos += 1
                c = escaped
            out.append(c)
        raise _FilterError("a quoted value is not closed")

    def scalar(self) -> str | bool:
        if self.peek() in ("'", '"'):
            return self.quoted()
        m = _WORD.match(self.text, self.pos)
        if m and m.group(0) in ("true", "false"):
            self.pos = m.end()
            return m.group(0) == "true"
        raise _FilterError("expected a value: a 'quoted string', a ['list'] or true/false")

    def value(self) -> str | bool | tuple[str, ...]:
        if self.peek() != "[":
            return self.scalar()
        self.pos += 1
        self.spaces()
        items: list[str] = []
        if self.peek() == "]":
            self.pos += 1
            return ()
        while True:
            if self.peek() not in ("'", '"'):
                raise _FilterError("list items are 'quoted strings'")
            items.append(self.quoted())
            self.spaces()
            if self.peek() == ",":
                self.pos += 1
                self.spaces()
                continue
            if self.peek() == "]":
                self.pos += 1
                return tuple(items)
            raise _FilterError("expected ',' or ']' in a list")


def _clause_text(text: str, start: int) -> str:
    """The clause starting at `start`, for messages: up to the next ' and ' (or the end)."""
    rest = text[start:].strip(" ")
    m = re.search(r" +and +", rest)
    return rest[:m.start()] if m else rest


def split_clauses(text: str) -> list[Clause]:
    if len(text) > MAX_FILTER:
        raise bad_request(f"filter is longer than {MAX_FILTER} characters", attr="filter")
    scanner, clauses = _Scanner(text), []
    scanner.spaces()
    if scanner.at_end():
        return clauses
    while True:
        start = scanner.pos
        try:
            field = scanner.word("a field name")
            scanner.spaces(1, "a space after the field name")
            op = scanner.word("an operator (equals, anyOf)")
            scanner.spaces(1, "a space after the operator")
            value = scanner.value()
            clause_end = scanner.pos
            between = scanner.pos
            scanner.spaces()
            if not scanner.at_end():
                if scanner.pos == between or scanner.word("' and ' between clauses") != "and":
                    raise _FilterError("clauses must be joined by ' and '")
                scanner.spaces(1, "a clause after ' and '")
                if scanner.at_end():
                    raise _FilterError("a clause must follow ' and '")
        except _FilterError as e:
            raise bad_request(f"filter clause {_clause_text(text, start)!r}: {e}", attr="filter") from None
        clauses.append(Clause(field, op, value, text[start:clause_end]))
        if scanner.at_end():
            return clauses


def _clause_error(clause: Clause, message: str):
    return bad_request(f"filter clause {clause.text!r}: {message}", attr="filter")


def _text(clause: Clause) -> str:
    if not isinstance(clause.value, str):
        raise _clause_error(clause, f"{clause.field} {clause.op} takes a 'quoted string'")
    return clause.value


def _texts(clause: Clause, *, single: bool) -> tuple[str, ...]:
    """A ['list'] of strings, or (with `single`) also one 'string'."""
    if isinstance(clause.value, tuple):
        return clause.value
    if single and isinstance(clause.value, str):
        return (clause.value,)
    raise _clause_error(clause, f"{clause.field} {clause.op} takes " + ("a 'string' or " if single else "")
                        + "a ['list', 'of strings']")


def _intersect(current: tuple[str, ...] | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    return allowed if current is None else tuple(v for v in current if v in allowed)


# The operators each field supports (LaunchDarkly's "Filtering metric groups" table).
FILTER_FIELDS = {"query": ("equals",), "kind": ("equals", "anyOf"), "maintainerIds": ("anyOf",),
                 "maintainerTeamKey": ("equals",), "experimentStatus": ("equals",), "hasConnections": ("equals",)}


def parse_filter(text: str, project_id: int) -> GroupSelection:
    queries: list[tuple[tuple[str, ...], ...]] = []
    kinds: tuple[str, ...] | None = None
    maintainers: tuple[str, ...] | None = None
    nothing = False
    for clause in split_clauses(text):
        ops = FILTER_FIELDS.get(clause.field)
        if ops is None:
            raise _clause_error(clause, f"unknown field {clause.field!r}; filter on {', '.join(FILTER_FIELDS)}")
        if clause.op not in ops:
            raise _clause_error(clause, f"{clause.field} supports {' and '.join(ops)}, not {clause.op!r}")
        if clause.field == "query":
            # "Fuzzy" (LaunchDarkly): every word of one of the texts occurs in the key or the name.
            queries.append(tuple(tuple(t.casefold().split()) for t in _texts(clause, single=True)))
        elif clause.field == "kind":
            values = (_text(clause),) if clause.op == "equals" else _texts(clause, single=False)
            bad = [v for v in values if v not in KINDS]
            if bad:
                raise _clause_error(clause, f"kind is one of {', '.join(KINDS)}, not {bad[0]!r}")
            kinds = _intersect(kinds, values)
        elif clause.field == "maintainerIds":
            maintainers = _intersect(maintainers, _texts(clause, single=False))
        elif clause.field == "maintainerTeamKey":
            _text(clause)
            nothing = True  # maintainers are members; no group has a maintainer team
        elif clause.field == "experimentStatus":
            if _text(clause) not in EXPERIMENT_STATUSES:
                raise _clause_error(clause, f"experimentStatus is one of {', '.join(EXPERIMENT_STATUSES)}")
            nothing = True  # otelite runs no experiments, so no group is in one with any status
        elif clause.field == "hasConnections":
            if not isinstance(clause.value, bool):
                raise _clause_error(clause, "hasConnections equals true or false (unquoted)")
            nothing = nothing or clause.value  # no group is connected to an experiment or guarded rollout
    return GroupSelection(project_id, tuple(queries), kinds, maintainers, nothing)
