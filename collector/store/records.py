"""Row batches: the contract between normalization and the writer.

A `WriteBatch` is what one OTLP request (or one REST ingest call) becomes: plain tuples in the column
order of the store's INSERT statements, so the writer can hand them to `executemany` untouched.
"""

from __future__ import annotations

import json
import math
import pickle
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any
from otelite.collector.jsontext import dumps_sorted as _dumps_sorted

# Column orders (keep in step with writer.py's statements).
RESOURCE_COLUMNS = ("id", "project_id", "attributes", "dropped_attributes_count", "schema_url",
                    "service_name", "service_namespace", "service_instance_id")
SCOPE_COLUMNS = ("id", "project_id", "name", "version", "attributes", "dropped_attributes_count", "schema_url")
SPAN_COLUMNS = ("project_id", "trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind",
                "start_ns", "end_ns", "status_code", "status_message", "attributes", "events", "links",
                "dropped_attributes_count", "dropped_events_count", "dropped_links_count", "resource_id",
                "scope_id", "service_name")
SERIES_COLUMNS = ("id", "project_id", "name", "type", "unit", "description", "temporality", "is_monotonic",
                  "resource_id", "scope_id", "attributes", "first_seen_ns", "last_seen_ns")
LABEL_COLUMNS = ("project_id", "key", "value", "source", "series_id")
POINT_COLUMNS = ("project_id", "series_id", "start_ns", "time_ns", "value", "count", "sum", "min", "max",
                 "flags", "buckets", "exemplars")
# `flags` bit of a `tally` point (collector/store/metrics.py) that sets the value instead of adding to it
# (Trifle's `assert`). Bit 0 is OTel's FLAG_NO_RECORDED_VALUE; OTel defines no other bit.
TALLY_SET = 2


INT64_MAX = (1 << 63) - 1  # SQLite's INTEGER


def stored_number(value: int | float) -> int | float | None:
    """A JSON number as the store keeps it: an integer within int64 as it is, a larger one as the nearest
    double (SQLite's INTEGER is 64-bit), None for a number no double holds (a 400-digit integer, whose
    float() raised OverflowError, or NaN and the infinities, which Python's JSON parser accepts)."""
    if isinstance(value, int):
        if -INT64_MAX - 1 <= value <= INT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:
            return None
    return value if math.isfinite(value) else None


# Span attribute values longer than this are counted in the hourly rollup by key only (ids, SQL, URLs with
# payloads): the normalizer writes the rollup, the span reader trusts it (tracing.py, cannot_match).
ROLLUP_VALUE_MAX = 256



def label_text(value: Any) -> str:
    """How an attribute value reads as a label / picker value: strings as-is, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _dumps_sorted(value)


def series_labels(series_row: tuple, resource_attributes_json: str) -> list[tuple]:
    """LABEL_COLUMNS rows of a series: its point attributes and its resource's attributes.

    Built by the writer only for series it has not stored yet, so requests that repeat known series
    (nearly all of them) carry no label rows through the queue or a decode worker's pipe."""
    series_id, project_id = series_row[0], series_row[1]
    labels = [(project_id, k, label_text(v), "point", series_id)
              for k, v in json.loads(series_row[10]).items()]
    labels += [(project_id, k, label_text(v), "resource", series_id)
               for k, v in json.loads(resource_attributes_json).items()]
    return labels


@dataclass(slots=True)
class SeriesLeftOut:
    """The series a batch's points name whose SERIES_COLUMNS rows its decode worker left out: it sent them
    with an earlier batch, which the walker saw committed (pipeline/walker.py). A stored series' row is
    never written again (INSERT OR IGNORE), so of it the writer needs only what may change from one request
    to the next and that it keeps: the temporality (series_cache.py).

    Why: a sidecar's requests name the same series again and again, and their rows were most of a metrics
    batch's pickle (1000 points of the benchmark: 177 of 322 kB; 0.7 ms to dump in the worker, 0.5 ms to
    load on the server, docs/benchmarks.md). Two arrays pickle as their bytes."""

    ids: array  # 'q': series ids
    temporalities: array  # 'i': each one's aggregation temporality (an OTLP enum, int32)

    @classmethod
    def join(cls, parts: "list[SeriesLeftOut]") -> "SeriesLeftOut":
        ids, temporalities = array("q"), array("i")
        for part in parts:
            ids.extend(part.ids)
            temporalities.extend(part.temporalities)
        return cls(ids, temporalities)


@dataclass(slots=True)
class WriteBatch:
    resources: dict[int, tuple] = field(default_factory=dict)  # id → RESOURCE_COLUMNS row
    scopes: dict[int, tuple] = field(default_factory=dict)  # id → SCOPE_COLUMNS row
    spans: list[tuple] = field(default_factory=list)
    # (project_id, attribute_type, key, hour) → count and (..., key, value, hour) → count
    span_attribute_keys: dict[tuple, int] = field(default_factory=dict)
    span_attribute_values: dict[tuple, int] = field(default_factory=dict)
    series: dict[int, tuple] = field(default_factory=dict)  # id → SERIES_COLUMNS row
    points: list[tuple] = field(default_factory=list)
    # Index in `points` → that histogram point's bucket counts as int64 bytes, from the OTLP walk, which
    # has them at hand: packing a commit's points into chunks (appender.py) reads them instead of parsing
    # the `buckets` JSON again. Optional: a point without an entry has its JSON parsed.
    bucket_counts: dict[int, bytes] = field(default_factory=dict)
    # Series its points name that have no row in `series`: stored already (SeriesLeftOut). None: every
    # series the points name has its row here (every batch but a decode worker's).
    series_left_out: SeriesLeftOut | None = None
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def items(self) -> int:
        """What the queue's `items` sizer counts: spans plus data points."""
        return len(self.spans) + len(self.points)


@dataclass(slots=True)
class SlicedBatch:
    """A large request walked part by part (normalize/split.py): each part's WriteBatch pickled and
    compressed (zlib level 1: 900,000 gauge points' 36 MB of pickles take 4 MB, in 0.2 s), so the process
    holds a compact copy of the rows and unpickles one part at a time. The writer stores all the parts in
    one transaction, so the request is committed (and acknowledged) or refused as a whole."""

    parts: list[bytes]  # zlib(pickle(WriteBatch))
    items: int  # spans plus data points of all the parts (the queue's `items` sizer)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def batches(self):
        """The parts' WriteBatches, one at a time."""
        for part in self.parts:
            yield pickle.loads(zlib.decompress(part))
