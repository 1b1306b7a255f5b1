"""The store's live series → Prometheus metric families (prometheus.md).

One scrape is one read of the latest state of the live series (`collector.store.metrics.live_series_states`:
one row per series seen within `metric_expiration`, kept current by the writer): its cost depends on the
number of live series, never on history (Flux distributions and sets add a read of their observations
within the expiry window: their summary quantiles and distinct members). This module only translates and
renders; every read goes through the store's metrics reader.
Everything about a series that cannot change (its Prometheus name, type and rendered labels) is
translated once and cached by series id; a fingerprinted series, resource or scope never changes.

    collector = StoreCollector(expiration_s=300, telemetry=telemetry)
    body = await store.read(collector.scrape, project_id, openmetrics)  # collect + generate_latest
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from bisect import bisect_left
from itertools import accumulate
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from otelite.collector.store import budget
from otelite.collector.store import metrics as sm
from otelite.exporters.prometheus import translation as tr
from otelite.exporters.prometheus.exposition import (COUNTER, GAUGE, HISTOGRAM, INFO, SUMMARY, Family, float_label,
                                             generate_latest)

if TYPE_CHECKING:
    from otelite.collector.telemetry import Telemetry

log = logging.getLogger("otelite.prometheus")

_NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK: a staleness marker, not exposed
_CACHE_MAX = 500_000  # series translations kept; cleared (and rebuilt on demand) beyond this
_EXEMPLAR_LABELS_MAX = 128  # OpenMetrics: label names and values of an exemplar, in characters
TARGET = "target"  # the info family `target_info` (one sample per job/instance with resource attributes)
_TARGET_HELP = "Target metadata"
# Sample names a family occupies in OpenMetrics (a superset of text 0.0.4's): two families claiming one
# name cannot both be exposed.
_CLAIMS = {COUNTER: ("", "_total", "_created"), HISTOGRAM: ("", "_bucket", "_count", "_sum", "_created"),
           SUMMARY: ("", "_count", "_sum", "_created"), GAUGE: ("",), INFO: ("", "_info")}


class _Series(NamedTuple):
    """What never changes about a series: its family and its rendered labels (read by position)."""
    family: str  # the OpenMetrics family name (counters without `_total`)
    type: str
    help: str
    unit: str
    labels: str
    resource_id: int
    shape: int  # how the state's value columns read: _NUMBER, _EXPLICIT, _EXPONENTIAL, _SUMMARY


_NUMBER, _EXPLICIT, _EXPONENTIAL, _SUMMARY, _OBSERVATIONS, _MEMBERS = range(6)
_SHAPES = {"gauge": _NUMBER, "sum": _NUMBER, "histogram": _EXPLICIT, "exponential_histogram": _EXPONENTIAL,
           "summary": _SUMMARY, sm.DISTRIBUTION: _OBSERVATIONS, sm.SET: _MEMBERS,
           sm.TALLY: _NUMBER}
# prometheus.md: a Flux distribution is a summary with these quantiles over its expiry window's observations.
DISTRIBUTION_QUANTILES = (0.5, 0.9, 0.95, 0.99)
_WINDOW_WHEN_NEVER_EXPIRING_NS = 300 * 10**9  # the window of distributions and sets when series never expire



class StoreCollector:
    """Builds metric families from a read connection. Thread-safe; one scrape at a time does the work."""

    def __init__(self, expiration_s: float = 300.0, telemetry: "Telemetry | None" = None) -> None:
        self.expiration_ns = int(expiration_s * 1e9)  # 0: series never expire
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._series: dict[int, _Series | None] = {}  # None: a type Prometheus has no family for
        self._resources: dict[int, dict[str, Any]] = {}
        self._scopes: dict[int, tuple[str, str]] = {}
        self._targets: dict[int, str | None] = {}  # resource id → target_info labels (None: nothing to add)
        self._le: dict[float, str] = {}  # bucket bound → `le` text
        self._bounds: dict[str, tuple[list[str], list[float]]] = {}  # bounds JSON → (le texts, bounds)
        self._layouts: dict[tuple, tuple[list[str], list[float], bool]] = {}  # exponential layouts
        self._warned: set[str] = set()
        self._built: dict[int, tuple] = {}  # series id → (state row, openmetrics, sample) of the last scrape
        self._memos: dict[bool, dict] = {False: {}, True: {}}  # generate_latest's memo, per format
        self._shared: set[int] = set()  # series whose family and labels another series also has
        self._owners: dict[tuple[str, str], int] = {}  # (family, labels) → the first series id seen

    def collect(self, conn: sqlite3.Connection, project_id: int = 1, openmetrics: bool = False,
                now_ns: int | None = None) -> list[Family]:
        """The families of `project_id`'s live series, sorted by name; exemplars only for OpenMetrics."""
        with self._lock:
            return self._collect(conn, project_id, openmetrics, time.time_ns() if now_ns is None else now_ns)

    def scrape(self, conn: sqlite3.Connection, project_id: int = 1, openmetrics: bool = False,
               now_ns: int | None = None) -> bytes:
        """`collect` and render in one go, reusing the text of samples that did not change."""
        with self._lock:
            families = self._collect(conn, project_id, openmetrics, time.time_ns() if now_ns is None else now_ns)
            budget.check()  # the read's deadline (collector/store/budget.py), before rendering
            memo = self._memos[openmetrics]
            body = generate_latest(families, openmetrics, memo)
            if len(memo) > 2 * len(self._built) + 1000:  # forget the text of samples no longer current
                current = {id(entry[2]) for entry in self._built.values()}
                self._memos[openmetrics] = {k: v for k, v in memo.items() if k in current}
            return body

    def _collect(self, conn: sqlite3.Connection, project_id: int, openmetrics: bool, now_ns: int) -> list[Family]:
        cutoff = now_ns - self.expiration_ns if self.expiration_ns > 0 else -(1 << 63)
        rows = sm.live_series_states(conn, project_id, cutoff)  # sm.LIVE_STATE_COLUMNS
        cache = self._series
        unknown = [r[0] for r in rows if r[0] not in cache]
        budget.check()
        if unknown:
            self._translate(conn, unknown)
            budget.check()
        # family name → [type, help, unit, samples]
        families: dict[str, list] = {}
        conflicts: set[str] = set()
        resources: set[int] = set()
        shared = self._shared
        # Flux distributions and sets are summarized over the window's observations (read once per scrape).
        windowed = [r[0] for r in rows if (t := cache.get(r[0])) is not None and t.shape >= _OBSERVATIONS]
        window = sm.recent_observations(conn, windowed, now_ns - (self.expiration_ns or _WINDOW_WHEN_NEVER_EXPIRING_NS)
                                        ) if windowed else {}
        newest: dict[tuple[str, str], tuple[int, tuple]] = {}  # (family, labels) → (time_ns, sample)
        built = self._built
        get_series, get_family, get_built, add_resource = cache.get, families.get, built.get, resources.add
        for row in rows:
            sid = row[0]
            s = get_series(sid)
            if s is None or row[5] & _NO_RECORDED_VALUE:
                continue
            family, typ, _, _, labels, rid, _ = s
            fam = get_family(family)
            if fam is None:
                fam = families[family] = [typ, s[2], s[3], []]
            elif fam[0] != typ:
                conflicts.add(family)
                continue
            # A series whose state has not changed since the last scrape reuses its sample as built then.
            prev = get_built(sid)
            if s.shape >= _OBSERVATIONS:  # its window moves with time: built every scrape
                sample = _observed(s, row, window.get(sid, ()))
            elif prev is not None and prev[0] == row and prev[1] is openmetrics:
                sample = prev[2]
            else:
                value = row[2]
                if s[6] == _NUMBER and not (openmetrics and row[7]) and value.__class__ is not str:
                    sample = (labels, value, None) if value is not None else None  # the common case, inline
                else:
                    sample = self._sample(s, row, openmetrics)
                built[sid] = (row, openmetrics, sample)
            if sample is None:
                continue
            add_resource(rid)
            if sid in shared:
                # Another series has the same name and labels after translation (e.g. resources that
                # differ only in attributes that are not labels): the newest one is shown.
                key = (family, labels)
                seen = newest.get(key)
                if seen is not None and seen[0] > row[1]:
                    continue
                newest[key] = (row[1], sample)
                if seen is not None:
                    continue  # replaced below
            fam[3].append(sample)
        if newest:
            by_family: dict[str, dict[str, tuple]] = {}
            for (family, labels), (_, sample) in newest.items():
                by_family.setdefault(family, {})[labels] = sample
            for family, chosen in by_family.items():
                fam = families[family]
                fam[3] = [x for x in fam[3] if x[0] not in chosen] + list(chosen.values())
        if len(built) > 2 * len(rows) + 1000:  # forget series that are no longer live
            live = {r[0] for r in rows}
            self._built = {k: v for k, v in built.items() if k in live}
        if not families:
            return []
        replaced = self._add_targets(conn, families, resources)
        dropped = _clashes(families) | conflicts
        self._count_dropped(dropped | replaced)
        out = []
        for name in sorted(families):
            if name in dropped:
                continue
            typ, help_, unit, samples = families[name]
            if not samples:
                continue  # e.g. only points without a recorded value
            samples.sort(key=_first)
            out.append(Family(name, typ, help_, unit, samples))
        return out

    def _sample(self, s: _Series, row: tuple, openmetrics: bool) -> tuple | None:
        """A state row → the sample shape exposition.py renders (None: nothing to show)."""
        _, _, value, count, total, _, buckets, exemplars = row
        shape = s.shape
        if shape == _NUMBER:
            if value is None:
                return None
            if value.__class__ is str:
                value = float(value)  # "NaN", kept as text by the store
            ex = _counter_exemplar(exemplars) if openmetrics and exemplars and s.type == COUNTER else None
            return (s.labels, value, ex)
        if count is None:
            return None
        if shape == _EXPLICIT:
            return self._explicit(s.labels, count, total, buckets, exemplars if openmetrics else None)
        if shape == _EXPONENTIAL:
            return self._exponential(s.labels, count, total, buckets, exemplars if openmetrics else None)
        return _summary(s.labels, count, total, buckets)

    # -- translation, cached per series ---------------------------------------------------------------
    def _translate(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        if len(self._series) + len(ids) > _CACHE_MAX:
            self._series.clear()
            self._built.clear()
            self._memos = {False: {}, True: {}}
            self._shared.clear()
            self._owners.clear()
            self._targets.clear()
            self._resources.clear()
            self._scopes.clear()
        rows = sm.series_definitions(conn, ids)
        self._load(conn, "resources", {r.resource_id for r in rows} - self._resources.keys())
        self._load(conn, "scopes", {r.scope_id for r in rows} - self._scopes.keys())
        for sid, name, otel_type, unit, description, monotonic, rid, scope_id, attributes in rows:
            s = self._series[sid] = self._translate_one(name, otel_type, unit, description, monotonic,
                                                        self._resources.get(rid, {}), rid,
                                                        self._scopes.get(scope_id, ("", "")), attributes)
            if s is not None:
                owner = self._owners.setdefault((s.family, s.labels), sid)
                if owner != sid:
                    self._shared.update((owner, sid))

    def _translate_one(self, name: str, otel_type: str, unit: str, description: str, monotonic: bool,
                       resource: dict, rid: int, scope: tuple[str, str], attributes: dict) -> _Series | None:
        t = translate_series(name, otel_type, unit, description, monotonic, resource, scope, attributes)
        if t is None:
            return None
        return _Series(t.family, t.type, t.help, t.unit, tr.render_labels(t.labels), rid, _SHAPES[otel_type])

    def _load(self, conn: sqlite3.Connection, table: str, ids: set[int]) -> None:
        if not ids:
            return
        if table == "resources":
            self._resources.update(sm.resource_attributes(conn, list(ids)))
        else:
            self._scopes.update(sm.scope_names(conn, list(ids)))

    def _add_targets(self, conn: sqlite3.Connection, families: dict[str, list], resources: set[int]) -> set[str]:
        """Add the `target_info` family; returns {'target'} when it displaced an application's family."""
        labels_seen: set[str] = set()
        for rid in resources:
            labels = self._targets.get(rid, "")
            if labels == "":
                labels = self._targets[rid] = self._target_labels(conn, rid)
            if labels is not None:
                labels_seen.add(labels)
        if not labels_seen:
            return set()
        displaced = {TARGET} if TARGET in families else set()  # an application metric named `target`
        families[TARGET] = [INFO, _TARGET_HELP, "", [(labels, 1, None) for labels in labels_seen]]
        return displaced

    def _target_labels(self, conn: sqlite3.Connection, rid: int) -> str | None:
        resource = self._resources.get(rid)
        if resource is None:
            self._load(conn, "resources", {rid})
            resource = self._resources.get(rid, {})
        if not any(k not in tr.IDENTIFYING_RESOURCE_ATTRIBUTES for k in resource):
            return None
        return tr.render_labels(tr.target_info_labels(resource))

    # -- values ------------------------------------------------------------------------------------------
    def _le_text(self, bound: float) -> str:
        text = self._le.get(bound)
        if text is None:
            if len(self._le) > 100_000:
                self._le.clear()
            text = self._le[bound] = float_label(bound)
        return text

    def _explicit(self, labels: str, count: int, total: float | None, buckets: str | None,
                  exemplars: str | None) -> tuple:
        """An explicit-bucket histogram's state → (labels, les, cumulative counts, count, sum, exemplars)."""
        if not buckets:
            return (labels, [], [], count, total, None)
        # The store writes `{"bounds":[...],"counts":[...]}` compactly (normalize/otlp.py, series_state.py):
        # split it by hand, twice as fast as json.loads, and cache each distinct bounds list's `le` texts.
        head, sep, tail = buckets.partition('],"counts":[')
        cached = self._bounds.get(head) if sep else None
        if cached is None:
            if not sep or not head.startswith('{"bounds":['):
                b = json.loads(buckets)
                bounds, counts = b["bounds"], b["counts"]
                les = [self._le_text(x) for x in bounds]
                cum = list(accumulate(counts[:len(bounds)])) if counts else []
                return (labels, les if cum else [], cum, count, total,
                        _bucket_exemplars(exemplars, bounds) if exemplars else None)
            bounds = [float(x) for x in head[11:].split(",")] if len(head) > 11 else []
            if len(self._bounds) > 10_000:
                self._bounds.clear()
            cached = self._bounds[head] = ([self._le_text(x) for x in bounds], bounds)
        les, bounds = cached
        counts = tail[:-2]
        if not counts:
            return (labels, [], [], count, total, None)
        cum = list(accumulate(map(int, counts.split(",", len(les))[:len(les)])))
        return (labels, les, cum, count, total, _bucket_exemplars(exemplars, bounds) if exemplars else None)

    def _exponential(self, labels: str, count: int, total: float | None, buckets: str | None,
                     exemplars: str | None) -> tuple:
        if not buckets:
            return (labels, [], [], count, total, None)
        b = json.loads(buckets)
        neg, pos = b.get("negative") or _NO_BUCKETS, b.get("positive") or _NO_BUCKETS
        ncounts = neg["counts"]
        n = len(ncounts)
        while n and not ncounts[n - 1]:
            n -= 1
        zero_count = b.get("zero_count", 0)
        zero = bool(zero_count or b.get("zero_threshold") or n)
        # The bounds depend only on the layout; series of one histogram usually share it.
        key = (b["scale"], b.get("zero_threshold"), zero, neg["offset"], n, pos["offset"], len(pos["counts"]))
        layout = self._layouts.get(key)
        if layout is None:
            pairs = exponential_buckets(b)
            bounds = [p[0] for p in pairs]
            simple = len(pairs) == n + zero + len(pos["counts"])  # no bucket folded into the zero bucket
            if len(self._layouts) > 10_000:
                self._layouts.clear()
            layout = self._layouts[key] = ([self._le_text(x) for x in bounds], bounds, simple)
        les, bounds, simple = layout
        if simple:
            counts = ncounts[n - 1::-1] if n else []
            if zero:
                counts.append(zero_count)
            counts += pos["counts"]
        else:
            counts = [p[1] for p in exponential_buckets(b)]
        return (labels, les, list(accumulate(counts)), count, total,
                _bucket_exemplars(exemplars, bounds) if exemplars else None)

    def _count_dropped(self, names: set[str]) -> None:
        if not names:
            return
        if self._telemetry is not None:
            self._telemetry.dropped_families.inc(len(names))
        new = names - self._warned
        if new:
            self._warned |= new
            log.warning("left out of the Prometheus scrape, because two metrics need the same name with "
                        "different types: %s", ", ".join(sorted(new)))


class SeriesTranslation(NamedTuple):
    """What a series is called in Prometheus: its family (counters without `_total`), type, help, unit
    and sorted label pairs (point attributes, scope, job, instance)."""
    family: str
    type: str
    help: str
    unit: str
    labels: list[tuple[str, str]]


def translate_series(name: str, otel_type: str, unit: str, description: str, monotonic: bool,
                     resource: dict, scope: tuple[str, str], attributes: dict) -> SeriesTranslation | None:
    """The one OTel → Prometheus mapping of a series, for the scrape and for remote-write alike
    (prometheus.md, "Translation"); None for a type Prometheus has no family for."""
    if otel_type == "sum":
        # A Flux counter is a non-monotonic DELTA sum (decrements are negative deltas); prometheus.md
        # still shows it as a counter of its running total (metrics.py, FLUX_SCOPE).
        typ = COUNTER if monotonic or scope[0] == sm.FLUX_SCOPE else GAUGE
    elif otel_type in ("gauge", sm.SET):
        typ = GAUGE
    elif otel_type in ("histogram", "exponential_histogram"):
        typ = HISTOGRAM
    elif otel_type in ("summary", sm.DISTRIBUTION):
        typ = SUMMARY
    elif otel_type == sm.TALLY:
        # prometheus.md: a Trifle key is one family, its dot paths the `path` label (point attribute).
        # A gauge: the state is every track added and each assert replacing it, which can go down.
        typ = GAUGE
    else:
        return None
    is_gauge = otel_type == "gauge"  # `1` → `_ratio` for OpenTelemetry gauges only
    if otel_type == sm.TALLY:
        name, description = tr.tally_name(name), description or tr.tally_help(name)
    full = tr.metric_name(name, unit, counter=typ == COUNTER, gauge=is_gauge)
    family = full[:-len("_total")] if typ == COUNTER else full
    pairs = tr.label_pairs(attributes, tr.reserved_labels(typ))
    scope_name, scope_version = scope
    if scope_name:
        pairs.append((tr.SCOPE_NAME, scope_name))
    if scope_version:
        pairs.append((tr.SCOPE_VERSION, scope_version))
    pairs += tr.job_instance(resource)
    pairs.sort()
    # Every family gets a HELP line (promtool's lint asks for one): the description, else the name the
    # application gave the metric (issue 10).
    return SeriesTranslation(family, typ, description or name, tr.family_unit(family, unit, gauge=is_gauge), pairs)


_NO_BUCKETS = {"offset": 0, "counts": []}


_first = itemgetter(0)  # a sample's labels


def _summary(labels: str, count: int | None, total: float | None, buckets: str | None) -> tuple | None:
    if count is None:
        return None
    quantiles = json.loads(buckets).get("quantiles", []) if buckets else []
    return (labels, [(float_label(q), float(v)) for q, v in quantiles], count, total)


def distinct_members(values) -> int:
    """A Flux set's value: its distinct members among `values` (the window's points)."""
    return len({v if v.__class__ is str else str(v) for v in values})


def distribution_quantiles(values) -> list[tuple[str, float]]:
    """A Flux distribution's (quantile label, value) pairs over `values` (the window's observations)."""
    if values:
        observed = np.asarray(values, dtype=np.float64)
        quantiles = np.percentile(observed, [q * 100 for q in DISTRIBUTION_QUANTILES]).tolist()
    else:
        quantiles = [math.nan] * len(DISTRIBUTION_QUANTILES)
    return [(float_label(q), v) for q, v in zip(DISTRIBUTION_QUANTILES, quantiles)]


def _observed(s: _Series, row: tuple, values) -> tuple | None:
    """A Flux distribution as a summary (quantiles of the window's observations, `_count`/`_sum` of every
    observation: the running totals in its state) or a set as a gauge of the window's distinct members."""
    if s.shape == _MEMBERS:
        return (s.labels, distinct_members(values), None)
    if row[3] is None:
        return None
    total = float(row[4]) if row[4] is not None else None
    return (s.labels, distribution_quantiles(values), row[3], total)


def _clashes(families: dict[str, list]) -> set[str]:
    """Families whose sample names collide with another family's (e.g. a gauge `x_count` beside a
    histogram `x`, or a gauge `x_total` beside a counter `x`): all of them are dropped, so the outcome does
    not depend on which arrived first. `target_info` always stays."""
    owner: dict[str, str] = {}
    out: set[str] = set()
    for name, fam in families.items():
        for suffix in _CLAIMS[fam[0]]:
            claimed = name + suffix
            other = owner.get(claimed)
            if other is None:
                owner[claimed] = name
            elif other != name:
                out.update(n for n in (name, other) if n != TARGET)
    return out


def exponential_buckets(b: dict) -> list[tuple[float, int]]:
    """An exponential histogram's buckets → (upper bound, count) pairs in ascending order of bound.

    Bucket `i` of scale `s` holds (base**i, base**(i+1)] with base = 2**(2**-s); negative buckets mirror
    it, and the zero bucket ends at `zero_threshold`.
    """
    scale = b["scale"]
    out: list[tuple[float, int]] = []
    neg = b.get("negative") or {"offset": 0, "counts": []}
    pos = b.get("positive") or {"offset": 0, "counts": []}
    ncounts = list(neg["counts"])
    while ncounts and not ncounts[-1]:
        ncounts.pop()  # empty buckets at the most negative end add nothing (SDKs send zero-filled arrays)
    for k in range(len(ncounts) - 1, -1, -1):
        out.append((-_power(neg["offset"] + k, scale), ncounts[k]))
    zero_count, zero_threshold = b.get("zero_count", 0), float(b.get("zero_threshold", 0) or 0)
    if zero_count or zero_threshold or ncounts:
        out.append((zero_threshold, zero_count))
    for k, c in enumerate(pos["counts"]):
        bound = _power(pos["offset"] + k + 1, scale)
        if out and bound <= out[-1][0]:
            out[-1] = (out[-1][0], out[-1][1] + c)  # inside the zero bucket's range
        else:
            out.append((bound, c))
    return out


def _power(index: int, scale: int) -> float:
    """base**index = 2**(index * 2**-scale), computed without rounding the exponent."""
    try:
        if scale <= 0:
            # (past scale -11 every index but 0 is off the doubles: no 2^31-bit shift for a stored scale of
            # -2^31, which the receivers now reject but an older store may hold)
            return math.ldexp(1.0, index << min(-scale, 11))
        return math.exp2(math.ldexp(index, -scale))  # index / 2**scale, exactly, without 1 << scale
    except OverflowError:
        return math.inf if index > 0 else 0.0


def _exemplar_labels(ex: dict) -> str:
    pairs = []
    size = 0
    for k in ("trace_id", "span_id"):
        v = ex.get(k)
        if v:
            pairs.append((k, v))
            size += len(k) + len(v)
    for k, v in tr.label_pairs(ex.get("filtered_attributes") or {}, ("trace_id", "span_id")):
        if size + len(k) + len(v) > _EXEMPLAR_LABELS_MAX:
            break  # OpenMetrics caps an exemplar's labels; trace and span ids come first
        pairs.append((k, v))
        size += len(k) + len(v)
    return tr.render_labels(pairs)


def _exemplar(ex: dict) -> tuple:
    v = ex.get("value", 0)
    return (_exemplar_labels(ex), float(v) if type(v) is str else v, ex.get("time_ns") or None)


def _counter_exemplar(text: str) -> tuple | None:
    exs = json.loads(text)
    if not exs:
        return None
    return _exemplar(max(exs, key=lambda e: e.get("time_ns") or 0))


def _bucket_exemplars(text: str, bounds: list[float]) -> dict[int, tuple]:
    """Each exemplar on the bucket its value falls in (`le` ≥ value); the newest one per bucket."""
    chosen: dict[int, dict] = {}
    for ex in json.loads(text):
        v = ex.get("value", 0)
        v = float(v) if type(v) is str else v
        if v != v:
            continue
        i = bisect_left(bounds, v)
        cur = chosen.get(i)
        if cur is None or (ex.get("time_ns") or 0) >= (cur.get("time_ns") or 0):
            chosen[i] = ex
    return {i: _exemplar(ex) for i, ex in chosen.items()}
