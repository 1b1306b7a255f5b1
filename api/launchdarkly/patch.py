"""JSON Patch (RFC 6902) on a metric group, with the `jsonpatch` library (metric-groups.md, "Patch").

The patch applies to the group's representation (what a GET shows, plus `maintainerId`, LaunchDarkly's
input name for the maintainer), so a client can `test` any field it reads. The result must still be a
metric group: fields starting with `_` and `key` are unchanged, no unknown field appeared, and the
editable fields validate as on create (request.group_fields). What each metric shows besides `key` and
`nameInGroup` comes from the metric itself and cannot be edited (the caller checks it once it knows the
metrics; `derived_fields_unchanged`).

A `test` of `/_version` that fails is a 409 `optimistic_locking_error` (the group changed since the client
read it); any other failed `test` or an operation that cannot apply is a 400. All or nothing: the library
works on a copy, and nothing is stored unless every operation applied and the result validated.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import falcon
import jsonpatch
import jsonpointer

from otelite.api.errors import ApiError, bad_request
from otelite.api.launchdarkly.request import GroupFields, group_fields

OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
MAX_OPERATIONS = 100
MAX_COMMENT = 4096
# Values (objects, arrays and scalars, counted one each) a patch may add to a group, `copy` included. A
# group at its limits (request.py) is about 1,500; without a bound, a patch of 30 `copy` operations that
# each copy an array into itself would double the document 30 times on the writer's thread.
MAX_ADDED_VALUES = 20_000
_EDITABLE = ("name", "kind", "description", "tags", "metrics", "maintainer", "maintainerId")
_MISSING = object()


def parse_patch_body(body: Any) -> list[dict]:
    """A JSON Patch array, or LaunchDarkly's `{comment, patch}` wrapper (the comment is accepted; otelite
    keeps no audit log to show it in). Each operation is checked for the members RFC 6902 requires."""
    if isinstance(body, dict):
        if "patch" not in body:
            if "instructions" in body:
                raise bad_request("metric groups take a JSON Patch, not a semantic patch (instructions)")
            if "merge" in body:
                raise bad_request("metric groups take a JSON Patch, not a JSON merge patch (merge)")
            raise bad_request("the request body must be a JSON Patch array or {comment, patch}", attr="patch")
        comment = body.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise bad_request(f"comment must be a string of at most {MAX_COMMENT} characters", attr="comment")
        ops = body["patch"]
    else:
        ops = body
    if not isinstance(ops, list):
        raise bad_request("the request body must be a JSON Patch array or {comment, patch}", attr="patch")
    if len(ops) > MAX_OPERATIONS:
        raise bad_request(f"the patch has more than {MAX_OPERATIONS} operations", attr="patch")
    for i, op in enumerate(ops):
        where = f"patch[{i}]"
        if not isinstance(op, dict):
            raise bad_request(f"{where} must be an object {{op, path, value}}", attr="patch")
        if op.get("op") not in OPERATIONS:
            raise bad_request(f"{where}.op must be one of {', '.join(OPERATIONS)}", attr="patch")
        if not isinstance(op.get("path"), str):
            raise bad_request(f"{where}.path must be a JSON Pointer string", attr="patch")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"{where}: {op['op']} needs a value", attr="patch")
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise bad_request(f"{where}: {op['op']} needs from (a JSON Pointer string)", attr="patch")
    return ops


def _touches(pointer: Any, field: str) -> bool:
    return isinstance(pointer, str) and (pointer == field or pointer.startswith(field + "/") or pointer == "")


def check_version_tests(ops: list[dict], version: int) -> None:
    """409 when a `test` of /_version (before anything that touches it) names another version."""
    for op in ops:
        if op["op"] == "test" and op["path"] == "/_version":
            value = op["value"]
            if type(value) is not int or value != version:
                raise ApiError(falcon.HTTP_409, "optimistic_locking_error",
                               f"the metric group is at _version {version}, not {value!r}: it changed since it "
                               f"was read; fetch it again and retry")
        elif _touches(op["path"], "/_version") or _touches(op.get("from"), "/_version"):
            return  # what follows tests a changed document; the immutability check answers that


def _count_values(value: Any, limit: int) -> int:
    """How many values `value` holds (itself included), counting no further than limit + 1."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _added(document: Any, op: dict, limit: int) -> int:
    """Values the operation will put into the document: its value, or for `copy` what it copies."""
    if op["op"] in ("add", "replace"):
        return _count_values(op["value"], limit)
    if op["op"] == "copy":
        return _count_values(jsonpointer.resolve_pointer(document, op["from"]), limit)
    return 0  # test, remove and move add nothing


def apply(document: dict, ops: list[dict]) -> Any:
    """The patched copy of `document`. The library applies the operations one at a time to one copy, only
    so that an error can name the operation that failed; nothing is kept unless all of them apply. What the
    operations add is bounded (MAX_ADDED_VALUES), so the work a patch costs the writer is bounded too."""
    # One copy, patched in place. The library copies each value it inserts (add, replace, copy), so the
    # operations stay as sent and a write function that runs again (Writer.submit_write) applies the same.
    document = copy.deepcopy(document)
    budget = MAX_ADDED_VALUES
    for i, op in enumerate(ops):
        try:
            budget -= _added(document, op, budget)
            if budget < 0:
                raise bad_request(f"patch[{i}] ({op['op']} {op['path']!r}): the patch adds more than "
                                  f"{MAX_ADDED_VALUES} values to the metric group", attr="patch")
            document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise bad_request(f"patch[{i}]: test failed: the value at {op['path']!r} is not the one given",
                              attr="patch") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            reason = str(e)
            if len(reason) > 160:  # the library's messages may quote the whole document
                reason = "the path does not exist in the metric group or cannot be used here"
            raise bad_request(f"patch[{i}] ({op['op']} {op['path']!r}) cannot be applied: {reason}",
                              attr="patch") from None
    return document


def _maintainer_id(before: Mapping[str, Any], after: Mapping[str, Any]) -> Any:
    """The maintainer after the patch: through `maintainerId` or `maintainer.key` (kind stays member)."""
    maintainer = after.get("maintainer", _MISSING)
    if not isinstance(maintainer, dict) or set(maintainer) != {"key", "kind"} or maintainer["kind"] != "member":
        raise bad_request("maintainer must be {key, kind: \"member\"} (otelite knows no teams)", attr="maintainer")
    by_object, by_id = maintainer["key"], after.get("maintainerId", _MISSING)
    if by_id is _MISSING:
        raise bad_request("maintainerId cannot be removed; replace it instead", attr="maintainerId")
    old = before["maintainerId"]
    if by_object != old and by_id != old and by_object != by_id:
        raise bad_request("maintainer.key and maintainerId name different maintainers", attr="maintainerId")
    return by_id if by_id != old else by_object


def patched_fields(before: Mapping[str, Any], after: Any) -> GroupFields:
    """Validate the patched document as a metric group and return its editable fields."""
    if not isinstance(after, dict):
        raise bad_request("the patched metric group must be a JSON object", attr="patch")
    for field, value in before.items():
        if field.startswith("_") and after.get(field, _MISSING) != value:
            raise bad_request(f"{field} cannot be changed (fields starting with _ are read-only)", attr=field)
    if after.get("key", _MISSING) != before["key"]:
        raise bad_request("key cannot be changed", attr="key")
    for field in after:
        if field not in before and field not in _EDITABLE:
            what = "is read-only" if field.startswith("_") else "is not a field of a metric group"
            raise bad_request(f"{field} {what}", attr=field)
    return group_fields(after, maintainer_id=_maintainer_id(before, after))


def derived_fields_unchanged(after: Mapping[str, Any], shown: Mapping[str, Mapping[str, Any]]) -> None:
    """Each metric's fields other than key/nameInGroup must be absent or what the metric shows (`shown`:
    metric key → metric_fields); they describe the metric, not its place in the group."""
    for i, entry in enumerate(after["metrics"]):
        derived = shown[entry["key"]]
        for field, value in entry.items():
            if field in ("key", "nameInGroup"):
                continue
            if field not in derived or derived[field] != value:
                raise bad_request(f"metrics[{i}].{field} comes from the metric and cannot be changed in a group",
                                  attr="metrics")

