"""Trifle values: nested maps of numbers ⇄ dot paths (Trifle::Stats' Packer), as pure functions.

    >>> flatten({"count": 1, "country": {"US": 1}})
    {'count': 1, 'country.US': 1}
    >>> unflatten({"count": 1, "country.US": 1})
    {'count': 1, 'country': {'US': 1}}

`flatten` joins keys with "." (a key that itself contains a dot reads back as nesting, as in Trifle) and
refuses any leaf that is not a finite number. `unflatten` nests again; where one bucket holds both a
leaf `a` and a map `a.b...`, the map wins (Trifle's `unpack` deep-merges in storage order, and a path
always sorts before its descendants).
"""

from __future__ import annotations

from typing import Any

from otelite.collector.store.records import stored_number


class ValuesError(ValueError):
    """A `values` map that cannot be stored; the message names the path."""


def _number(value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "null" if value is None else "a boolean" if isinstance(value, bool) else \
            "a string" if isinstance(value, str) else "a list" if isinstance(value, list) else type(value).__name__
        raise ValuesError(f"values.{path} must be a number, got {kind}")
    stored = stored_number(value)
    if stored is None:
        raise ValuesError(f"values.{path} must be a finite number within a double's range")
    return stored


def check_text(text: str, what: str) -> None:
    """Refuse text SQLite cannot store as UTF-8 (a lone surrogate from a JSON `\\ud800` escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValuesError(f"{what} is not valid Unicode (a lone surrogate)") from None


def flatten(values: dict) -> dict[str, int | float]:
    """Nested maps → {dot path: number}; ValuesError for a non-numeric leaf (nothing is half-accepted).
    Iterative, so any nesting the JSON parser accepted is fine. An empty map adds no path."""
    out: dict[str, int | float] = {}
    # Depth first in document order, as Packer.pack recurses: of two spellings of one path
    # ({"a.b": 1, "a": {"b": 2}}) the later one wins.
    stack: list[tuple[str | None, Any]] = [(None, iter(values.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            path = key if prefix is None else f"{prefix}.{key}"
            if isinstance(value, dict):
                stack.append((path, iter(value.items())))
                break
            check_text(path, f"the path {path!r}")
            out[path] = _number(value, path)
        else:
            stack.pop()
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{dot path: value} → nested maps (module docstring for a leaf that is also a map)."""
    out: dict[str, Any] = {}
    for path in sorted(flat):
        *parents, last = path.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}  # a map replaces a leaf of the same path
            node = child
        if not isinstance(node.get(last), dict):
            node[last] = flat[path]
    return out
