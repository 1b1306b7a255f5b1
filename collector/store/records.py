"""Row batches: the contract between normalization and the writer.

A `WriteBatch` is what one OTLP request (or one REST ingest call) becomes: plain tuples in the column
order of the store's INSERT statements, so the writer can hand them to `executemany` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(slots=True)
class SeriesRecord:
    row: tuple  # SERIES_COLUMNS
    labels: list[tuple]  # LABEL_COLUMNS, written once when the series is first seen


@dataclass(slots=True)
class WriteBatch:
    resources: dict[int, tuple] = field(default_factory=dict)  # id → RESOURCE_COLUMNS row
    scopes: dict[int, tuple] = field(default_factory=dict)  # id → SCOPE_COLUMNS row
    spans: list[tuple] = field(default_factory=list)
    # (project_id, attribute_type, key, hour) → count and (..., key, value, hour) → count
    span_attribute_keys: dict[tuple, int] = field(default_factory=dict)
    span_attribute_values: dict[tuple, int] = field(default_factory=dict)
    series: dict[int, SeriesRecord] = field(default_factory=dict)
    series_last_seen: dict[int, int] = field(default_factory=dict)  # series id → newest point time
    points: list[tuple] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def items(self) -> int:
        """What the queue's `items` sizer counts: spans plus data points."""
        return len(self.spans) + len(self.points)
