"""The engine's typed input and output. Nothing here knows a dialect: no request field names, no JSON.

    query = Query(SeriesSelection(project_id, "http.server.duration"), start_ns, end_ns,
                  FixedGrid(60 * NS), Aggregation("histogram_quantile", q=0.95), group_by=(GroupKey("route"),))
    result = await store.read(evaluate, store.point_cache, query)
    for s in result.series:
        s.labels, s.starts(result.edges), s.values
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from otelite.collector.query.grid import Grid
from otelite.collector.store.metrics import SeriesSelection

# How the readings of a bucket become one value (`Aggregation.fn`):
#   last        the reading with the latest time
#   sum avg min max count    over the readings (count: how many readings)
#   quantile    exact, over the readings, linear between order statistics (numpy's default method);
#               over histogram and exponential histogram series it is `histogram_quantile`
#   distinct    how many distinct readings (a set's members: its cardinality per bucket)
#   increase    the sum of each reading's increase over the series' previous reading (reduce.increases)
#   rate        increase per second of the bucket
#   histogram_quantile  the quantile of the merged bucket counts (Prometheus' interpolation for explicit
#               buckets, exponential interpolation for exponential ones); histogram series only
#   tally       the readings applied in write order: a reading that sets (a `tally` series' assert,
#               store/metrics.py) replaces the running value, the others add to it; readings of other
#               types all add (= sum)
#   observations        the number of observations recorded in the bucket (histograms, exponential
#               histograms, summaries: increases of their `count`, cumulative or delta like `increase`)
#   observation_sum     the sum of those observations (increases of their `sum`)
#   observation_mean    their mean: the group's observation_sum / its observations, over every series
#               of the group at once (a weighted mean, not a mean of per-series means); NaN without any
OBSERVATION_FUNCTIONS = ("observations", "observation_sum", "observation_mean")
FUNCTIONS = ("last", "sum", "avg", "min", "max", "count", "quantile", "distinct", "increase", "rate",
             "histogram_quantile", "tally") + OBSERVATION_FUNCTIONS
# How the per-series values of a group combine (`Aggregation.across`), when they are computed per series.
ACROSS = ("sum", "avg", "min", "max", "count", "quantile", "distinct")
DISTRIBUTION_TYPES = ("histogram", "exponential_histogram")
OBSERVED_TYPES = ("histogram", "exponential_histogram", "summary")  # points that carry a count and a sum
MIN_LOOKBACK_NS = 300 * 1_000_000_000


class QueryError(ValueError):
    """A query the data cannot answer; the message says why in neutral terms (dialects add field names)."""


class TooManyBuckets(QueryError):
    """The grid over the range has more buckets than `Query.max_buckets`."""


class UnsupportedAggregation(QueryError):
    """The aggregation has no meaning for the metric's type (e.g. histogram_quantile of a gauge)."""


class BoundsMismatch(QueryError):
    """Explicit histograms with different bucket bounds cannot be merged."""


@dataclass(frozen=True)
class Aggregation:
    """One value per (group, bucket).

    `across` None: `fn` is applied to every reading of the group's series in the bucket together
    (pooled: Flux's and Trifle's semantics, e.g. an exact p95 over every observation). `across` set: `fn`
    gives one value per series and bucket, then `across` combines the series of the group (PostHog's two
    stages: `sum` = Aggregation("last", across="sum")). For increase, rate and histogram_quantile the two
    are the same (increases add up; bucket counts merge).
    """

    fn: str
    q: float | None = None  # the quantile of `quantile` / `histogram_quantile`, in (0, 1)
    across: str | None = None

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise ValueError(f"unknown aggregation {self.fn!r}")
        if self.across is not None and self.across not in ACROSS:
            raise ValueError(f"unknown cross-series aggregation {self.across!r}")
        needs_q = self.fn in ("quantile", "histogram_quantile") or self.across == "quantile"
        if needs_q and (self.q is None or not 0 < self.q < 1):
            raise ValueError("a quantile aggregation needs q strictly between 0 and 1")

    @property
    def differences(self) -> bool:
        """Whether values come from differences between readings (and so need a look-back)."""
        return self.fn in ("increase", "rate") + OBSERVATION_FUNCTIONS


class GroupKey(NamedTuple):
    """A label key to group by, read in `scope` (store/metrics.py: auto, attribute or resource)."""

    key: str
    scope: str = "auto"


@dataclass(frozen=True)
class Query:
    selection: SeriesSelection
    start_ns: int  # the first bucket is the one holding start_ns
    end_ns: int  # readings before end_ns count; the last bucket is the one holding end_ns - 1
    grid: Grid
    aggregation: Aggregation
    group_by: tuple[GroupKey, ...] = ()
    # Readings this long before the first bucket are read too, as predecessors of the first readings in
    # the range (increases, cumulative histograms). None: max(grid.nominal_ns, 5 min) when needed.
    lookback_ns: int | None = None
    max_buckets: int = 100_000  # more → TooManyBuckets
    group_limit: int | None = None  # keep the groups with the most series (ties by labels)


@dataclass
class SeriesResult:
    """One group: its labels, and a value for each bucket where it has one (bucket indices ascending).
    Values may be NaN (e.g. a quantile of no observations); buckets without data are absent."""

    labels: dict[str, str]
    buckets: np.ndarray  # int64 indices into Result.edges
    values: np.ndarray  # float64

    def starts(self, edges: np.ndarray) -> np.ndarray:
        return edges[self.buckets]


@dataclass
class Result:
    metric_type: str | None  # None: no such metric
    edges: np.ndarray  # int64, len = buckets + 1
    series: list[SeriesResult] = field(default_factory=list)  # groups with data, in group order

    @property
    def bucket_starts(self) -> np.ndarray:
        return self.edges[:-1]
