"""The metric-group operations, as functions of a connection: reads run through `Store.read`, writes
through `Store.write` (so each read-check-write — the metric keys exist, the key is free, the version is
the one the patch read — is one atomic step on the writer's thread). They compose the store's functions
(collector/store/metric_groups.py) with the pure parts (request, patch, representation); no SQL here.

Write functions may run more than once (Writer.submit_write): the ids and clocks they use are chosen by
the caller, and everything else they decide comes from the database they are given.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Mapping

import falcon

from otelite.api.errors import ApiError, bad_request
from otelite.api.launchdarkly import patch as jp
from otelite.api.launchdarkly.representation import metric_fields, render_group
from otelite.api.launchdarkly.request import GroupFields, ListQuery
from otelite.collector.store import metric_groups as store
from otelite.collector.store.keys import Project
from otelite.collector.store.metric_groups import GroupMetric, MetricGroup, MetricSnapshot


def not_found(key: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "not_found", f"metric group {key!r} not found")


def _known_metrics(conn: sqlite3.Connection, project: Project, keys: list[str],
                   where: Mapping[str, int]) -> dict[str, MetricSnapshot]:
    """The catalog entries of `keys`; a 400 naming the first key the project's store does not know."""
    live = store.metric_snapshots(conn, project.id, keys)
    for key in keys:
        if key not in live:
            raise bad_request(f"metrics[{where[key]}].key: no metric {key!r} is stored in project {project.key!r}",
                              attr="metrics")
    return live


def _metrics(fields: GroupFields, snapshots: Mapping[str, MetricSnapshot]) -> tuple[GroupMetric, ...]:
    return tuple(GroupMetric(m.key, m.name_in_group, snapshots.get(m.key)) for m in fields.metrics)


def create(conn: sqlite3.Connection, project: Project, key: str, fields: GroupFields, uuid: str,
           now_ms: int) -> dict:
    keys = [m.key for m in fields.metrics]
    live = _known_metrics(conn, project, keys, {k: i for i, k in enumerate(keys)})
    group = MetricGroup(uuid, key, fields.name, fields.kind, fields.description, fields.maintainer_id, fields.tags,
                        _metrics(fields, live), 1, now_ms, now_ms)
    try:
        store.insert_group(conn, project.id, group)
    except store.MetricGroupExists:
        raise ApiError(falcon.HTTP_409, "conflict",
                       f"a metric group with key {key!r} already exists in project {project.key!r}") from None
    return render_group(group, live, project.key)


def get(conn: sqlite3.Connection, project: Project, key: str, expand: tuple[str, ...]) -> dict | None:
    group = store.find_group(conn, project.id, key)
    if group is None:
        return None
    live = store.metric_snapshots(conn, project.id, [m.key for m in group.metrics])
    return render_group(group, live, project.key, expand)


def page(conn: sqlite3.Connection, project: Project, query: ListQuery) -> tuple[list[dict], int]:
    groups, total = store.list_groups(conn, query.selection, query.order, query.limit, query.offset)
    live = store.metric_snapshots(conn, project.id, [m.key for g in groups for m in g.metrics])
    return [render_group(g, live, project.key, query.expand) for g in groups], total


def patch_document(group: MetricGroup, live: Mapping[str, MetricSnapshot], project_key: str) -> dict:
    """What a patch applies to: the representation, and `maintainerId` (LaunchDarkly's input name)."""
    return {**render_group(group, live, project_key), "maintainerId": group.maintainer_id}


def patch(conn: sqlite3.Connection, project: Project, key: str, ops: list[dict], now_ms: int) -> dict:
    group = store.find_group(conn, project.id, key)
    if group is None:
        raise not_found(key)
    live = store.metric_snapshots(conn, project.id, [m.key for m in group.metrics])
    before = patch_document(group, live, project.key)
    jp.check_version_tests(ops, group.version)
    after = jp.apply(before, ops)
    fields = jp.patched_fields(before, after)

    known = {m.key: m.snapshot for m in group.metrics}
    added = [m.key for m in fields.metrics if m.key not in known]
    live.update(_known_metrics(conn, project, added, {m.key: i for i, m in enumerate(fields.metrics)}))
    snapshots = {k: live.get(k) or known.get(k) for k in (m.key for m in fields.metrics)}
    jp.derived_fields_unchanged(after, {k: metric_fields(k, s, project.key) for k, s in snapshots.items()})

    changed = replace(group, name=fields.name, kind=fields.kind, description=fields.description,
                      maintainer_id=fields.maintainer_id, tags=fields.tags, metrics=_metrics(fields, snapshots))
    if _same_content(changed, group):
        return render_group(group, live, project.key)  # nothing changed: no new version
    # _lastModified advances even when two changes fall in one millisecond (issue 13: both advance).
    changed = replace(changed, version=group.version + 1, modified_ms=max(now_ms, group.modified_ms + 1))
    if not store.update_group(conn, project.id, changed, group.version):
        # Unreachable while this function runs inside one write (the row cannot change under it); kept so
        # that a caller running it elsewhere gets a conflict, never a lost update.
        raise ApiError(falcon.HTTP_409, "conflict", f"metric group {key!r} changed while it was being patched")
    return render_group(changed, live, project.key)


def _same_content(a: MetricGroup, b: MetricGroup) -> bool:
    def refs(g: MetricGroup) -> list:
        return [(m.key, m.name_in_group) for m in g.metrics]
    return (a.name, a.kind, a.description, a.maintainer_id, a.tags, refs(a)) == \
           (b.name, b.kind, b.description, b.maintainer_id, b.tags, refs(b))


def delete(conn: sqlite3.Connection, project: Project, key: str) -> None:
    if not store.delete_group(conn, project.id, key):
        raise not_found(key)
