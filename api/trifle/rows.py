"""A Trifle write → the store's rows (records.WriteBatch), written like any other metric (spec README, "One
store"): the key is the metric name, each dot path one `tally` series with the path as its point
attribute `path` (collector/store/metrics.py explains the type), each leaf one point at `at`.

    rows = write_rows(project_id, parse_write(body))

A `track` point adds and an `assert` point (flags records.TALLY_SET) sets; the engine applies a bucket's
points in write order, so an assert replaces only its own leaves in whatever bucket is read later, at any
granularity. Every write also counts on the system key `__system__key__` (`count` and
`keys.<key>`, or `keys.__untracked__`), as tracks, whatever the operation: Trifle::Stats' drivers count
system data on `set` as on `inc`.

Resource and scope are empty (no attributes, no name): a Trifle key carries no service identity, so its
Prometheus family has only the `path` label.
"""

from __future__ import annotations


from otelite.api.trifle.request import SYSTEM_KEY, Write
from otelite.collector.jsontext import dumps_sorted as _dumps_sorted
from otelite.collector.normalize.otlp import fingerprint
from otelite.collector.store.metrics import TALLY
from otelite.collector.store.records import TALLY_SET, WriteBatch

DELTA = 1  # a track is a delta (AggregationTemporality.DELTA); see metrics.py
PATH_LABEL = "path"
_EMPTY = "{}"


def _resource_and_scope(batch: WriteBatch, project_id: int) -> tuple[int, int]:
    # The same fingerprints the OTLP walk gives an empty resource and an empty scope (normalize/otlp.py).
    rid = fingerprint(project_id, _EMPTY, 0, "")
    sid = fingerprint(project_id, "", "", _EMPTY, 0, "")
    batch.resources[rid] = (rid, project_id, _EMPTY, 0, "", "", None, None)
    batch.scopes[sid] = (sid, project_id, "", "", _EMPTY, 0, "")
    return rid, sid


def _add(batch: WriteBatch, project_id: int, rid: int, sid: int, key: str, at_ns: int,
         leaves: dict[str, int | float], flags: int) -> None:
    for path, value in leaves.items():
        attributes = _dumps_sorted({PATH_LABEL: path})
        series_id = fingerprint(project_id, key, TALLY, rid, sid, attributes)
        if series_id not in batch.series:
            batch.series[series_id] = (series_id, project_id, key, TALLY, "", "", DELTA, 0, rid, sid, attributes,
                                       at_ns, at_ns)
        batch.points.append((project_id, series_id, 0, at_ns, value, None, None, None, None, flags, None, None))


def write_rows(project_id: int, write: Write) -> WriteBatch:
    """The rows of one write: the key's leaves, then the system key's counts (module docstring)."""
    batch = WriteBatch()
    rid, sid = _resource_and_scope(batch, project_id)
    flags = TALLY_SET if write.operation == "assert" else 0
    _add(batch, project_id, rid, sid, write.key, write.at_ns, write.leaves, flags)
    _add(batch, project_id, rid, sid, SYSTEM_KEY, write.at_ns, {"count": 1, f"keys.{write.tracked_as}": 1}, 0)
    return batch
