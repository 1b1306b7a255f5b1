"""Pure parts of the LaunchDarkly metric-groups dialect (request parsing, patch rules, representation) and
its store functions on a real SQLite file (issue 13). The live behaviour is in test_launchdarkly.py."""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import replace

import pytest

from otelite.api.errors import ApiError
from otelite.api.launchdarkly import patch as jp
from otelite.api.launchdarkly.representation import metric_fields, render_group
from otelite.api.launchdarkly.request import (EXPAND_PATTERN, FILTER_PATTERN, KEY_PATTERN, SORT_PATTERN,
                                              parse_create, parse_expand, parse_filter, parse_sort, slug,
                                              validate_key)
from otelite.collector.store import metric_groups as mg
from otelite.collector.store.keys import create_project
from otelite.collector.store.metric_groups import (GroupMetric, GroupOrder, GroupSelection, MetricGroup,
                                                   MetricSnapshot)
from otelite.collector.store.metrics import METRIC_TYPES, metric_catalog
from store_rows import batch, open_store, write

VALID_FILTERS = [
    "", "   ", "query equals 'checkout'", "query equals \"a b\"", "query equals ['a', \"b\"]", "query equals []",
    "query equals 'it\\'s'", "query equals 'back\\\\slash'", "kind equals 'funnel'", "kind equals \"standard\"",
    "kind anyOf ['funnel','standard']", "kind anyOf [ ]", "maintainerIds anyOf ['m-1', 'm-2']",
    "maintainerTeamKey equals 'team'", "experimentStatus equals 'not_started'", "hasConnections equals false",
    "hasConnections equals true", "query equals 'x'  and  kind equals 'funnel'",
    " kind equals 'funnel' and hasConnections equals false and query equals ['a'] ",
]
INVALID_FILTERS = [
    "query", "query equals", "query equals x", "query equals 'x", "query contains 'x'", "colour equals 'red'",
    "kind equals 'weekly'", "kind equals ['funnel']", "kind anyOf 'funnel'", "maintainerIds equals 'm'",
    "maintainerIds anyOf [1]", "maintainerTeamKey equals ['t']", "experimentStatus equals 'paused'",
    "hasConnections equals 'true'", "hasConnections equals yes", "query equals 'a' and", "and query equals 'a'",
    "query equals 'a' or kind equals 'funnel'", "query equals 'a'and kind equals 'funnel'",
    "query\tequals 'a'", "query equals 'a\\b'", "query equals ['a' 'b']", "query equals ['a',]",
    "query  equals  true", "query equals 'a' 'b'",
]


def _parses(text: str) -> bool:
    try:
        parse_filter(text, 1)
        return True
    except ApiError as e:
        assert e.status.startswith("400") and e.attr == "filter" and "filter" in e.message
        return False


def _mutations(texts: list[str], n: int, seed: int = 13) -> list[str]:
    rng = random.Random(seed)
    alphabet = " '\"[],\\andqueryqkindfunnelanyOftruefalse-\t\n"
    out = []
    for _ in range(n):
        t = list(rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(0, len(t))
            action = rng.random()
            if action < 0.4 and t:
                del t[min(i, len(t) - 1)]
            elif action < 0.8:
                t.insert(i, rng.choice(alphabet))
            elif t:
                t[min(i, len(t) - 1)] = rng.choice(alphabet)
        out.append("".join(t))
    return out


def test_filter_parser_and_published_pattern_agree():
    """The OpenAPI document publishes FILTER_PATTERN; the parser must accept exactly its language, or a
    fuzzer (and a client reading the schema) would be told one thing and served another."""
    for text in VALID_FILTERS:
        assert _parses(text) and re.fullmatch(FILTER_PATTERN, text), text
    for text in INVALID_FILTERS:
        assert not _parses(text) and not re.fullmatch(FILTER_PATTERN, text), text
    for text in _mutations(VALID_FILTERS + INVALID_FILTERS, 3000):
        assert _parses(text) == bool(re.fullmatch(FILTER_PATTERN, text)), repr(text)


def test_filter_selections():
    s = parse_filter("query equals ['Ünï Code', 'x'] and kind anyOf ['funnel', 'standard'] and kind equals 'funnel' "
                     "and maintainerIds anyOf ['a', 'b'] and maintainerIds anyOf ['b']", 7)
    assert s == GroupSelection(7, ((("ünï", "code"), ("x",)),), ("funnel",), ("b",), False)
    assert parse_filter("hasConnections equals false", 1).nothing is False
    for clause in ("hasConnections equals true", "maintainerTeamKey equals 't'", "experimentStatus equals 'running'"):
        assert parse_filter(clause, 1).nothing is True, clause


def test_error_names_the_clause():
    with pytest.raises(ApiError) as e:
        parse_filter("kind equals 'funnel' and colour equals 'red' and query equals 'x'", 1)
    assert "colour equals 'red'" in e.value.message and "kind equals" not in e.value.message


@pytest.mark.parametrize("pattern, parse, samples", [
    (SORT_PATTERN, parse_sort, ["name", "-name", "createdAt,-connectionCount", "name,name", "", "Name", "name,",
                                " name", "-", "--name", "name;createdAt"]),
    (EXPAND_PATTERN, parse_expand, ["", "experiments", "experimentCount,experiments", "members", "experiments,",
                                    " experiments", "experiments,experiments"]),
    (KEY_PATTERN, validate_key, ["a", "A.b_c-9", "-a", "a b", "", "a/b", "a" * 256, "a" * 257, "é", "a\n"]),
])
def test_other_patterns_match_their_parsers(pattern, parse, samples):
    for text in samples:
        try:
            parse(text)
            ok = True
        except ApiError:
            ok = False
        assert ok == bool(re.fullmatch(pattern, text)), text


def test_create_body():
    key, fields = parse_create({"name": "Déjà Vu — Group 2", "kind": "standard", "maintainerId": "m",
                                "tags": ["x"], "metrics": [{"key": "a"}, {"key": "b", "nameInGroup": "B"}],
                                "unknown": "ignored, as LaunchDarkly ignores unknown fields"})
    assert key == "d-j-vu-group-2" == slug("Déjà Vu — Group 2")
    assert [(m.key, m.name_in_group) for m in fields.metrics] == [("a", None), ("b", "B")]
    with pytest.raises(ApiError) as e:
        parse_create({"name": "n", "kind": "funnel", "maintainerId": "m", "tags": [], "metrics": [{"key": "a"}]})
    assert "metrics[0].nameInGroup" in e.value.message


def _snapshot(name: str, metric_type: str) -> MetricSnapshot:
    return MetricSnapshot(name, metric_type, "ms", "", 2, metric_type == "sum", 1, 2)


FIELDS_BY_TYPE = [
    ("gauge", True, "average"), ("sum", True, "sum"), ("histogram", True, "average"),
    ("exponential_histogram", True, "average"), ("summary", True, "average"), ("distribution", True, "average"),
    ("set", False, "sum"), ("tally", True, "sum"),
]


def test_every_stored_type_has_its_fields_decided():
    """A type added to the store (OTLP, Flux, Trifle, ...) must be mapped here too, not fall to a default."""
    assert sorted(t for t, _, _ in FIELDS_BY_TYPE) == sorted(METRIC_TYPES)


@pytest.mark.parametrize("metric_type, numeric, aggregation", FIELDS_BY_TYPE)
def test_metric_fields_by_type(metric_type, numeric, aggregation):
    fields = metric_fields("m/1", _snapshot("m/1", metric_type), "proj")
    assert fields == {"key": "m/1", "name": "m/1", "kind": "custom", "isNumeric": numeric,
                      "unitAggregationType": aggregation,
                      "_links": {"self": {"href": "/api/v2/metrics/proj/m%2F1", "type": "application/json"}}}


def _group(**changes) -> MetricGroup:
    base = dict(uuid="u-1", key="g", name="G", kind="funnel", description=None, maintainer_id="m", tags=("t",),
                metrics=(GroupMetric("cpu", "CPU", _snapshot("cpu", "gauge")),), version=3, created_ms=10,
                modified_ms=20)
    base.update(changes)
    return MetricGroup(**base)


def test_live_catalog_wins_over_the_snapshot_and_the_snapshot_stands_in():
    group = _group()
    stored = render_group(group, {}, "p")["metrics"][0]
    assert stored["unitAggregationType"] == "average"
    live = render_group(group, {"cpu": _snapshot("cpu", "sum")}, "p")["metrics"][0]
    assert live["unitAggregationType"] == "sum"


def test_version_tests_and_immutable_fields():
    before = {**render_group(_group(), {}, "p"), "maintainerId": "m"}
    jp.check_version_tests([{"op": "test", "path": "/_version", "value": 3}], 3)
    for value in (2, 3.0, True, "3"):
        with pytest.raises(ApiError) as e:
            jp.check_version_tests([{"op": "test", "path": "/_version", "value": value}], 3)
        assert e.value.code == "optimistic_locking_error"
    # A test after an operation that touched /_version is left to the immutability check (400, not 409).
    jp.check_version_tests([{"op": "replace", "path": "/_version", "value": 9},
                            {"op": "test", "path": "/_version", "value": 9}], 3)
    after = jp.apply(before, [{"op": "replace", "path": "/_version", "value": 9}])
    with pytest.raises(ApiError) as e:
        jp.patched_fields(before, after)
    assert e.value.code == "invalid_request" and "_version" in e.value.message
    assert before["_version"] == 3  # the library worked on a copy
    changed = jp.patched_fields(before, jp.apply(before, [{"op": "replace", "path": "/maintainer/key", "value": "z"}]))
    assert changed.maintainer_id == "z"


def test_what_a_patch_adds_is_bounded():
    """`copy` of an array into itself doubles the document; 100 of them would need 2**100 values. The bound
    stops it at the operation that crosses MAX_ADDED_VALUES, having done at most that much work."""
    before = {**render_group(_group(), {}, "p"), "maintainerId": "m"}
    doubling = [{"op": "copy", "from": "/tags", "path": "/tags/-"}] * 100
    with pytest.raises(ApiError) as e:
        jp.apply(before, doubling)
    crossing = next(i for i in range(100) if 2 ** (i + 2) - 2 > jp.MAX_ADDED_VALUES)  # op i copies 2**(i+1) values
    assert e.value.code == "invalid_request" and f"patch[{crossing}] (copy" in e.value.message
    assert before["tags"] == ["t"]  # the stored document is untouched
    # Just under the bound applies, whichever operation adds the values.
    many = [f"t{i}" for i in range(jp.MAX_ADDED_VALUES - 1)]  # the list counts as one value
    assert len(jp.apply(before, [{"op": "replace", "path": "/tags", "value": many}])["tags"]) == len(many)
    with pytest.raises(ApiError):
        jp.apply(before, [{"op": "replace", "path": "/tags", "value": [*many, "one more"]}])


def test_a_patch_applies_the_same_twice():
    """A write function may run again (Writer.submit_write): applying must not change the operations."""
    before = {**render_group(_group(), {}, "p"), "maintainerId": "m"}
    ops = [{"op": "add", "path": "/metrics/-", "value": {"key": "mem", "nameInGroup": "Memory"}},
           {"op": "remove", "path": "/metrics/1/nameInGroup"}]
    first = jp.apply(before, ops)
    assert first["metrics"][1] == {"key": "mem"} and jp.apply(before, ops) == first


@pytest.mark.parametrize("body, names", [
    ({"op": "add"}, "patch"), ({"patch": "x"}, "patch"), ({"merge": {}}, "merge"), ({"instructions": []}, "semantic"),
    ([1], "patch[0]"), ([{"op": "move", "path": "/a"}], "from"), ({"comment": 5, "patch": []}, "comment"),
    ([{"op": "test", "path": "/a"}] * 101, "100"),
])
def test_patch_bodies_rejected(body, names):
    with pytest.raises(ApiError) as e:
        jp.parse_patch_body(body)
    assert names in e.value.message


# --- store -----------------------------------------------------------------------------------------------------

def test_store_functions_on_a_real_file(tmp_path):
    store = open_store(tmp_path, "groups.db")
    try:
        write(store, batch(1, "cpu", "gauge", [(100, 1.0, {"h": "a"})]), batch(1, "cpu", "sum", [(200, 1, {})]),
              batch(2, "other", "gauge", [(100, 1.0, {})]))
        conn = store.reader()
        snaps = mg.metric_snapshots(conn, 1, ["cpu", "other", "cpu"])
        assert list(snaps) == ["cpu"] and snaps["cpu"].type == "sum" and snaps["cpu"].first_seen_ns == 100
        # What the catalog says of the metric, read more cheaply (no labels).
        latest = max(metric_catalog(conn, 1, "cpu"), key=lambda e: e.last_seen_ns)
        assert snaps["cpu"] == MetricSnapshot("cpu", latest.type, latest.unit, latest.description, latest.temporality,
                                              latest.monotonic, 100, latest.last_seen_ns)

        def group(key: str, name: str, kind: str, created: int, maintainer: str = "m") -> MetricGroup:
            return _group(uuid=f"u-{name}", key=key, name=name, kind=kind, maintainer_id=maintainer, version=1,
                          created_ms=created, modified_ms=created,
                          metrics=(GroupMetric("cpu", "c", snaps["cpu"]),))

        store.write_sync(lambda c: mg.insert_group(c, 1, group("b", "beta Ünï", "funnel", 2)))
        with pytest.raises(sqlite3.IntegrityError):  # another constraint is not reported as a duplicate key
            same_uuid = replace(group("c", "C", "funnel", 2), uuid="u-beta Ünï")
            store.write_sync(lambda c: mg.insert_group(c, 1, same_uuid))
        store.write_sync(lambda c: mg.insert_group(c, 1, group("a", "Alpha", "standard", 1, "x")))
        store.write_sync(lambda c: create_project(c, "second"))
        store.write_sync(lambda c: mg.insert_group(c, 2, replace(group("a", "Other project", "funnel", 3),
                                                                 uuid="u-other")))
        with pytest.raises(mg.MetricGroupExists):
            store.write_sync(lambda c: mg.insert_group(c, 1, group("a", "again", "funnel", 4)))

        assert mg.find_group(conn, 1, "b") == group("b", "beta Ünï", "funnel", 2)
        assert mg.find_group(conn, 3, "b") is None

        def keys(order=(), **selection) -> list[str]:
            rows, total = mg.list_groups(conn, GroupSelection(1, **selection), order, 10, 0)
            assert total == len(rows)
            return [g.key for g in rows]

        assert keys() == ["a", "b"]
        assert keys((GroupOrder("name", True),)) == ["b", "a"]
        assert keys(queries=((("ünï",),),)) == ["b"]
        assert keys(queries=((("zzz",), ("alpha",)),)) == ["a"]
        assert keys(kinds=("funnel",)) == ["b"] and keys(kinds=()) == []
        assert keys(maintainer_ids=("x",)) == ["a"]
        assert keys(nothing=True) == []
        assert mg.list_groups(conn, GroupSelection(1), (), 1, 1)[0][0].key == "b"

        newer = _group(key="b", name="B2", version=2, modified_ms=30, metrics=())
        assert store.write_sync(lambda c: mg.update_group(c, 1, newer, 5)) is False  # stale version: untouched
        assert store.write_sync(lambda c: mg.update_group(c, 1, newer, 1)) is True
        got = mg.find_group(conn, 1, "b")
        assert (got.name, got.version, got.uuid, got.created_ms) == ("B2", 2, "u-beta Ünï", 2)
        assert store.write_sync(lambda c: mg.delete_group(c, 1, "b")) is True
        assert store.write_sync(lambda c: mg.delete_group(c, 1, "b")) is False
        assert mg.find_group(conn, 2, "a").name == "Other project"
        conn.close()
    finally:
        store.close()
