"""A stored metric group → LaunchDarkly's `MetricGroupRep` (metric-groups.md, "Schemas").

Each metric of a group is shown from what the store knows of it (collector/store/metric_groups.py,
`metric_snapshots`): the live catalog entry when the metric is still stored, else the snapshot kept in the
group's row when it was last written, so a metric retention deleted still renders (issue 13, item 6).

LaunchDarkly's metric fields from the catalog:
- `name`: the metric's name in the store (otelite has no separate display name; the key is that name).
- `kind`: always `custom` (a metric an application reports, not a page view or click).
- `isNumeric`: true for every type whose readings are numbers; false for a Flux set, whose readings are
  members (LaunchDarkly: a non-numeric custom metric counts conversions, not values).
- `unitAggregationType`: `sum` for sums (OTLP and Flux counters), Flux sets and Trifle tallies (a key's
  tracked values add up per bucket), whose per-unit figure is a total; `average` for gauges, histograms,
  summaries and distributions, whose readings are averaged.
"""

from __future__ import annotations

from typing import Iterable, Mapping
from urllib.parse import quote

from otelite.collector.store.metric_groups import GroupMetric, MetricGroup, MetricSnapshot
from otelite.collector.store.metrics import SET, TALLY

JSON = "application/json"
_SUMMED_TYPES = ("sum", SET, TALLY)


def link(href: str) -> dict:
    return {"href": href, "type": JSON}


def project_href(project_key: str) -> str:
    return f"/api/v2/projects/{quote(project_key, safe='')}"


def collection_href(project_key: str) -> str:
    return f"{project_href(project_key)}/metric-groups"


def group_href(project_key: str, key: str) -> str:
    return f"{collection_href(project_key)}/{quote(key, safe='')}"


def metric_fields(key: str, snapshot: MetricSnapshot | None, project_key: str) -> dict:
    """Everything a group shows of one metric except `nameInGroup` (all read-only in a group)."""
    out: dict = {"key": key, "name": snapshot.name if snapshot else key, "kind": "custom"}
    if snapshot is not None:
        out["isNumeric"] = snapshot.type != SET
        out["unitAggregationType"] = "sum" if snapshot.type in _SUMMED_TYPES else "average"
    out["_links"] = {"self": link(f"/api/v2/metrics/{quote(project_key, safe='')}/{quote(key, safe='')}")}
    return out


def current_snapshot(metric: GroupMetric, live: Mapping[str, MetricSnapshot]) -> MetricSnapshot | None:
    """The catalog's entry now, else the one kept in the group (the metric is no longer stored)."""
    return live.get(metric.key) or metric.snapshot


def render_metric(metric: GroupMetric, live: Mapping[str, MetricSnapshot], project_key: str) -> dict:
    out = metric_fields(metric.key, current_snapshot(metric, live), project_key)
    if metric.name_in_group is not None:
        out["nameInGroup"] = metric.name_in_group
    return out


def render_group(group: MetricGroup, live: Mapping[str, MetricSnapshot], project_key: str,
                 expand: Iterable[str] = ()) -> dict:
    out: dict = {
        "_id": group.uuid,
        "key": group.key,
        "name": group.name,
        "kind": group.kind,
    }
    if group.description is not None:
        out["description"] = group.description
    out.update({
        "_links": {"parent": link(project_href(project_key)), "self": link(group_href(project_key, group.key))},
        "tags": list(group.tags),
        "_creationDate": group.created_ms,
        "_lastModified": group.modified_ms,
        # otelite has no member directory: the id as given, never an invented `_member` (metric-groups.md).
        "maintainer": {"key": group.maintainer_id, "kind": "member"},
        "metrics": [render_metric(m, live, project_key) for m in group.metrics],
        "_version": group.version,
    })
    # otelite runs no experiments (metric-groups.md): the expansions are truthful and empty.
    if "experiments" in expand:
        out["experiments"] = []
    if "experimentCount" in expand:
        out["experimentCount"] = 0
    return out
