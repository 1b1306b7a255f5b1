"""Export-log entries of metrics → remote-write time series, with the scrape's translation.

Each entry's OTLP request is normalized again (the same walk that stored it, so the same series ids), and
every point becomes the samples the scrape would show for its series at that moment:

- names, labels and types from `exporters.prometheus.collect.translate_series` (the one OTel →
  Prometheus mapping), bucket bounds as `le` texts by `exposition.float_label`, exponential histograms
  as explicit buckets by `collect.exponential_buckets`;
- delta sums and histograms as running totals, folded by `collector.store.series_state.accumulate` (the
  function the writer uses for the scrape's state) in commit order, starting from the totals the store had
  where this exporter's cursor began (export_log.reconcile). The totals are committed with the cursor, so
  after a restart the same entries fold into the same values: a request sent again carries identical
  samples, which a Prometheus receiver stores once;
- remote-write 1.0 "Ordering": samples of a label set go in time order (Converter._place): a point not
  newer than the last sample sent for its label set is left out (counted `out_of_order`), except that a
  running total is never left behind (it replaces or follows that sample);
- a point flagged "no recorded value" becomes a stale marker (1.0 "Stale Markers");
- metrics the REST dialects wrote (entries holding rows, export_log.decode_rows) go the same way: Flux
  gauges as gauges, Flux counters and Trifle tallies as their running totals (a tally's assert replaces
  it), and, once per request at the newest point of the series, a Flux distribution as a summary (`_count`
  and `_sum` running over every observation, quantiles over the observations of the `flux_window` before
  that point, read from the store) and a set as a gauge of its distinct members in that window: what the
  scrape shows at that moment when its `metric_expiration` equals `flux_window`.

    converter = Converter(config)
    need = converter.walk(entries)                       # normalize; say which state must be loaded
    converter.load(totals_rows, last_sent_rows, need, window_values)  # export_log.load_state, .window_values
    build = converter.build(need)                        # WriteRequests and the state after them
    converter.commit(build.state)                        # once the cursor moved (delivered or dropped)
"""

from __future__ import annotations

import json
import struct
from array import array
from dataclasses import dataclass, field
from itertools import accumulate as running
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from otelite.collector.normalize.otlp import fingerprint
from otelite.collector.pipeline.walker import SLICE_ITEMS, walk_metrics
from otelite.collector.store.export_log import LAST_SENT, TOTALS, decode_rows
from otelite.collector.store.metrics import DISTRIBUTION, SET
from otelite.collector.store.records import SlicedBatch, WriteBatch
from otelite.collector.store.series_state import accumulate, count_observations, is_accumulated, state_row
from otelite.exporters.prometheus import translation as tr
from otelite.exporters.prometheus.collect import (distinct_members, distribution_quantiles, exponential_buckets,
                                                  translate_series)
from otelite.exporters.prometheus.exposition import COUNTER, GAUGE, HISTOGRAM, SUMMARY, float_label
from otelite.exporters.prometheusremotewrite.proto import TimeSeries, WriteRequest

if TYPE_CHECKING:
    from otelite.collector.store.export_log import Entry
    from otelite.exporters.prometheusremotewrite.config import PrometheusRemoteWriteExporterConfig

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]  # 1.0 "Stale Markers"
_NO_RECORDED_VALUE = 1
_MEMORY_MAX = 1_000_000  # state entries kept in memory; beyond it they are read again from the store
_NAN = float("nan")


class _Samples:
    """The samples of one label set in a build, when it has more than one: times (ms) and values in two
    arrays, 16 bytes a sample. As (time, value) tuples in a list they took ~120 bytes each: ~100 MB for the
    largest valid request (900,000 gauge points of distinct milliseconds) until the WriteRequests were
    built. A label set with one sample (the usual export: every series once) keeps its one tuple
    (`_add_sample`), smaller than the list it had."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array("q")
        self.values = array("d")  # (a float's bits as they are: the stale marker's NaN keeps its payload)

    def __len__(self) -> int:
        return len(self.times)

    def add(self, ts: int, value: float, replace: bool = False) -> None:
        """Append, or with `replace` overwrite the last sample when it is at `ts` (Converter._place)."""
        if replace and self.times and self.times[-1] == ts:
            self.values[-1] = value
        else:
            self.times.append(ts)
            self.values.append(value)

    def in_order(self) -> Iterator[tuple[int, float]]:
        """By time, samples of one time in the order added (1.0 "Ordering"; `Converter._place` adds them so)."""
        t = np.frombuffer(self.times, np.int64)
        if (t[1:] >= t[:-1]).all():
            return zip(self.times, self.values)
        order = np.argsort(t, kind="stable")
        return zip(t[order].tolist(), np.frombuffer(self.values, np.float64)[order].tolist())


@dataclass
class _Series:
    """A series translated once: its Prometheus type and names, its labels, the key of its label set."""

    type: str
    name: str  # family name with the namespace (counters without `_total`)
    labels: list[tuple[str, str]]  # without __name__, sorted, empty values left out
    key: int  # fingerprint of name and labels: remote-write ordering is per label set


@dataclass
class Need:
    """What `walk` found: the normalized entries, and the state keys not yet in memory."""

    # One per entry; a large request's parts stay compressed (records.SlicedBatch) and are read one at a
    # time (_parts), so forwarding it takes the memory of one part's rows, not of all of them.
    batches: list[WriteBatch | SlicedBatch]
    totals: list[int]
    last_sent: list[int]
    # Flux distributions and sets: series id → (since, until) ns, the window before its newest point
    windows: dict[int, tuple[int, int]] = field(default_factory=dict)
    window_values: dict[int, list] = field(default_factory=dict)  # what load() was given for `windows`


@dataclass
class Build:
    requests: list[bytes] = field(default_factory=list)  # serialized WriteRequests, each ≤ max size
    state: dict[str, dict[int, tuple]] = field(default_factory=lambda: {TOTALS: {}, LAST_SENT: {}})
    items: int = 0  # OTLP data points the entries carry
    out_of_order: int = 0  # points whose sample was left out
    samples: int = 0


class Converter:
    def __init__(self, config: "PrometheusRemoteWriteExporterConfig") -> None:
        self._config = config
        self._external = sorted(config.external_labels.items())
        self._series: dict[int, _Series | None] = {}
        self._targets: dict[int, tuple[list[tuple[str, str]], int] | None] = {}
        # The committed state (what the store has beside the cursor), loaded on demand.
        self._totals: dict[int, tuple | None] = {}
        self._last_sent: dict[int, int | None] = {}
        self._window_ns = int(config.flux_window * 1e9)

    # -- state ---------------------------------------------------------------------------------------
    def walk(self, entries: list["Entry"]) -> Need:
        batches = [decode_rows(e.payload) if e.holds_rows() else walk_metrics(e.payload, e.project_id, SLICE_ITEMS)
                   for e in entries]
        totals, keys = set(), set()
        newest: dict[int, int] = {}
        for b in _parts(batches):
            for sid, row in b.series.items():
                if _keeps_total(row[3], row[6]) and sid not in self._totals:
                    totals.add(sid)
                s = self._translate(b, sid)
                if s is not None and s.key not in self._last_sent:
                    keys.add(s.key)
            for p in b.points:
                sid = p[1]
                if b.series[sid][3] in _WINDOWED and p[3] > newest.get(sid, -1 << 63):
                    newest[sid] = p[3]
            if self._config.target_info.enabled:
                for rid in b.resources:
                    target = self._target(b, rid)
                    if target is not None and target[1] not in self._last_sent:
                        keys.add(target[1])
        windows = {sid: (t - self._window_ns, t) for sid, t in newest.items()}
        return Need(batches, sorted(totals), sorted(keys), windows)

    def load(self, totals: dict[int, tuple], last_sent: dict[int, tuple], need: Need,
             window_values: dict[int, list] | None = None) -> None:
        need.window_values = window_values or {}
        if len(self._totals) + len(need.totals) > _MEMORY_MAX:
            self._totals.clear()
        if len(self._last_sent) + len(need.last_sent) > _MEMORY_MAX:
            self._last_sent.clear()
        for sid in need.totals:
            found = totals.get(sid)
            self._totals[sid] = found[1] if found else None
        for key in need.last_sent:
            found = last_sent.get(key)
            self._last_sent[key] = found[0] if found else None

    def commit(self, state: dict[str, dict[int, tuple]] | None) -> None:
        """The cursor moved with `state`: it is what the store now has."""
        if not state:
            return
        for sid, (_, total) in state.get(TOTALS, {}).items():
            self._totals[sid] = total
        for key, (time_ms, _) in state.get(LAST_SENT, {}).items():
            self._last_sent[key] = time_ms

    # -- conversion -------------------------------------------------------------------------------------
    def fold(self, need: Need) -> Build:
        """Running totals only (entries dropped unsent): later samples stay exact."""
        out = Build()
        totals = out.state[TOTALS]
        for b in _parts(need.batches):
            out.items += len(b.points)
            for p in b.points:
                sid = p[1]
                kind, temporality = b.series[sid][3], b.series[sid][6]
                if _keeps_total(kind, temporality) and _counts(kind, p):
                    prev = totals[sid][1] if sid in totals else self._totals.get(sid)
                    totals[sid] = (None, _fold(kind, prev, p))
        return out

    def build(self, need: Need) -> Build:
        out = Build()
        sent = out.state[LAST_SENT]
        by_labels: dict[tuple, _Samples | tuple[int, float]] = {}
        windowed: dict[int, tuple[WriteBatch, list[int]]] = {}  # series id → (a batch with it, point times ms)
        for entry in need.batches:
            newest: dict[int, int] = {}  # resource id → newest point time (ms) of the entry, for target_info
            holders: dict[int, WriteBatch] = {}  # resource id → a part that has it
            for b in _parts([entry]):
                out.items += len(b.points)
                holders.update(dict.fromkeys(b.resources, b))
                self._build_points(b, out, by_labels, windowed, newest)
            if self._config.target_info.enabled:
                for rid, ts in newest.items():
                    target = self._target(holders[rid], rid)
                    if target is None:
                        continue
                    labels, key = target
                    last = sent[key][0] if key in sent else self._last_sent.get(key)
                    if last is None or ts > last:
                        sent[key] = (ts, None)
                        _add_sample(by_labels, labels, ts, 1.0, False)
        self._build_windowed(out, by_labels, windowed, need)
        out.requests = self._requests(by_labels)
        out.samples = sum(1 if type(v) is tuple else len(v) for v in by_labels.values())
        return out

    def _build_points(self, b: WriteBatch, out: Build, by_labels: dict, windowed: dict, newest: dict[int, int]
                      ) -> None:
        """The samples of `b`'s points (`windowed` gathers the Flux kinds' point times for later; `newest`
        the newest sample time per resource, for target_info)."""
        totals, sent = out.state[TOTALS], out.state[LAST_SENT]
        for p in b.points:
            sid = p[1]
            series_row = b.series[sid]
            kind, temporality = series_row[3], series_row[6]
            flags = p[9]
            if kind in _WINDOWED:  # one sample per request, after the loop
                if kind == DISTRIBUTION and _counts(kind, p):
                    prev = totals[sid][1] if sid in totals else self._totals.get(sid)
                    totals[sid] = (None, _fold(kind, prev, p))
                windowed.setdefault(sid, (b, []))[1].append(p[3] // 1_000_000)
                continue
            running_total = _keeps_total(kind, temporality) and _counts(kind, p)
            if running_total:
                prev = totals[sid][1] if sid in totals else self._totals.get(sid)
                row = _fold(kind, prev, p)
                totals[sid] = (None, row)
            else:
                row = state_row(p)
            s = self._translate(b, sid)
            if s is None:
                continue
            place = self._place(p[3] // 1_000_000, s.key, sent, running_total)
            if place is None:
                out.out_of_order += 1
                continue
            ts, replace = place
            sent[s.key] = (ts, None)
            rid = series_row[8]
            if ts > newest.get(rid, -1):
                newest[rid] = ts
            _emit(by_labels, s, _samples(s, row, flags & _NO_RECORDED_VALUE), ts, replace)

    def _build_windowed(self, out: Build, by_labels: dict, windowed: dict, need: Need) -> None:
        """Flux distributions and sets: one sample per request at the series' newest point (module doc)."""
        totals, sent = out.state[TOTALS], out.state[LAST_SENT]
        for sid, (b, times) in windowed.items():
            s = self._translate(b, sid)
            if s is None:
                continue
            kind = b.series[sid][3]
            place = self._place(max(times), s.key, sent, kind == DISTRIBUTION)
            if place is None:
                out.out_of_order += len(times)
                continue
            ts, replace = place
            sent[s.key] = (ts, None)
            values = need.window_values.get(sid, ())
            if kind == SET:
                samples = [(s.name, (), float(distinct_members(values)))]
            else:
                total = totals[sid][1] if sid in totals else self._totals.get(sid)
                samples = [(s.name, (("quantile", q),), v) for q, v in distribution_quantiles(values)]
                if total is not None:
                    samples += [(f"{s.name}_count", (), float(total[5])), (f"{s.name}_sum", (), _number(total[6]))]
            _emit(by_labels, s, samples, ts, replace)

    def _place(self, ts: int, key: int, sent: dict, running_total: bool) -> tuple[int, bool] | None:
        """When a sample of label set `key` for a point at `ts` (ms) is sent, and whether it replaces the
        sample this request already has at that time; None: it is left out (remote-write 1.0 "Ordering":
        samples of a series in order, none at a time already sent).

        A point at the time of the last sample this request holds for the series replaces it (of two
        points at one time the later commit wins, as on the scrape). A running total (a delta, a tally, a
        distribution's observation) is never left out: what it adds is in the total from the time of its
        point on, so when that time is already sent (points within one millisecond, Trifle's whole-second
        `at`, a late delta) the new total replaces this request's last sample or, already sent, follows it
        by 1 ms, and Prometheus shows the total the scrape shows. Other points are left out."""
        here = key in sent
        last = sent[key][0] if here else self._last_sent.get(key)
        if last is None or ts > last:
            return ts, False
        if here and (running_total or ts == last):
            return last, True
        if running_total:
            return last + 1, False
        return None

    def _requests(self, by_labels: dict[tuple, _Samples | tuple[int, float]]) -> list[bytes]:
        """WriteRequests of at most max_batch_size_bytes; each series whole, in one request."""
        limit = self._config.max_batch_size_bytes
        requests: list[bytes] = []
        current = WriteRequest()
        size = 0
        for labels, samples in by_labels.items():
            ts = TimeSeries()
            for name, value in labels:
                label = ts.labels.add()
                label.name, label.value = name, value
            for t, v in (samples,) if type(samples) is tuple else samples.in_order():
                sample = ts.samples.add()
                sample.timestamp, sample.value = t, v
            n = ts.ByteSize() + 6
            if size and size + n > limit:
                requests.append(current.SerializeToString())
                current, size = WriteRequest(), 0
            current.timeseries.append(ts)
            size += n
        if size:
            requests.append(current.SerializeToString())
        return requests

    # -- translation, cached per series -----------------------------------------------------------------
    def _translate(self, b: WriteBatch, sid: int) -> _Series | None:
        if sid in self._series:
            return self._series[sid]
        if len(self._series) > _MEMORY_MAX:
            self._series.clear()
        row = b.series[sid]
        # SERIES_COLUMNS: name 2, type 3, unit 4, description 5, monotonic 7, resource 8, scope 9, attrs 10
        resource = json.loads(b.resources[row[8]][2])
        scope = b.scopes[row[9]]
        attributes = json.loads(row[10])
        if self._config.resource_to_telemetry_conversion.enabled:
            attributes = {**resource, **attributes}  # the point's own attribute wins, as in the Collector
        t = translate_series(row[2], row[3], row[4], row[5], bool(row[7]), resource, (scope[2], scope[3]),
                             attributes)
        if t is None:
            s = None
        else:
            name = f"{self._config.namespace}_{t.family}" if self._config.namespace else t.family
            labels = self._labels(t.labels)
            s = _Series(t.type, name, labels, fingerprint(name, tr.render_labels(labels)))
        self._series[sid] = s
        return s

    def _target(self, b: WriteBatch, rid: int) -> tuple[tuple, int] | None:
        """target_info's labels (with __name__) and key for a resource with non-identifying attributes."""
        if rid in self._targets:
            return self._targets[rid]
        resource = json.loads(b.resources[rid][2])
        target = None
        if any(k not in tr.IDENTIFYING_RESOURCE_ATTRIBUTES for k in resource):
            name = f"{self._config.namespace}_target_info" if self._config.namespace else "target_info"
            labels = self._labels(tr.target_info_labels(resource))
            target = (_with_name(name, labels, ()), fingerprint(name, tr.render_labels(labels)))
        self._targets[rid] = target
        return target

    def _labels(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """1.0 "Labels": no empty values; external labels where the series has no label of that name."""
        out = {k: v for k, v in pairs if v != ""}
        for k, v in self._external:
            out.setdefault(k, v)
        return sorted(out.items())


_WINDOWED = (DISTRIBUTION, SET)


def _parts(batches: list[WriteBatch | SlicedBatch]) -> Iterator[WriteBatch]:
    """The WriteBatches of `batches` in order, a large request's parts one at a time."""
    for b in batches:
        if isinstance(b, SlicedBatch):
            yield from b.batches()
        else:
            yield b


def _emit(by_labels: dict[tuple, _Samples | tuple[int, float]], s: _Series, samples: list, ts: int,
          replace: bool) -> None:
    for name, extra, value in samples:
        _add_sample(by_labels, _with_name(name, s.labels, extra), ts, value, replace)


def _add_sample(by_labels: dict[tuple, _Samples | tuple[int, float]], labels: tuple, ts: int, value: float,
                replace: bool) -> None:
    """Add a sample of `labels` (`_Samples.add`): a label set's first is a (time, value) tuple, a second
    makes it a _Samples."""
    held = by_labels.get(labels)
    if held is None or (type(held) is tuple and replace and held[0] == ts):
        by_labels[labels] = (ts, value)
    elif type(held) is tuple:
        both = by_labels[labels] = _Samples()
        both.add(*held)
        both.add(ts, value)
    else:
        held.add(ts, value, replace)


def _keeps_total(kind: str, temporality: int) -> bool:
    """Series whose samples are running totals: delta sums, histograms and tallies, Flux distributions."""
    return kind == DISTRIBUTION or is_accumulated(kind, temporality)


def _counts(kind: str, p: tuple) -> bool:
    """Whether point `p` changes its series' running total (a delta without a value, an observation
    without one, adds nothing), as series_state does."""
    return p[4] is not None if kind == DISTRIBUTION else not p[9] & _NO_RECORDED_VALUE


def _fold(kind: str, prev: tuple | None, p: tuple) -> tuple:
    if kind == DISTRIBUTION:
        return _without_exemplars(count_observations(prev, [p]))
    return _without_exemplars(accumulate(kind, prev, [p]))


def _with_name(name: str, labels: list[tuple[str, str]], extra: tuple) -> tuple:
    """The full, sorted label set (label names sorted as 1.0 requires, `__name__` among them)."""
    return tuple(sorted([("__name__", name), *labels, *extra]))


def _without_exemplars(row: tuple) -> tuple:
    return row[:-1] + (None,)


def _number(v: Any) -> float:
    return _NAN if v == "NaN" else float(v)


def _samples(s: _Series, row: tuple, stale: int) -> list[tuple[str, tuple, float]]:
    """(sample name, extra labels, value) of a STATE_COLUMNS row, as the scrape would show them."""
    _, _, _, _, value, count, total, _, _, _, buckets, _ = row
    name = s.name
    if s.type in (COUNTER, GAUGE):
        sample = f"{name}_total" if s.type == COUNTER else name
        if stale:
            return [(sample, (), STALE_NAN)]
        return [] if value is None else [(sample, (), _number(value))]
    parsed = json.loads(buckets) if buckets else None
    if s.type == HISTOGRAM:
        if parsed is None:
            bounds, counts = [], []
        elif "bounds" in parsed:
            bounds, counts = parsed["bounds"], parsed["counts"]
        else:
            pairs = exponential_buckets(parsed)
            bounds, counts = [b for b, _ in pairs], [c for _, c in pairs]
        if stale or count is None:
            bucket_values = [STALE_NAN] * len(bounds)
            out = [(f"{name}_count", (), STALE_NAN), (f"{name}_sum", (), STALE_NAN)]
            inf = STALE_NAN
        else:
            bucket_values = list(running(counts[:len(bounds)])) if counts else []
            out = [(f"{name}_count", (), float(count))]
            if total is not None:
                out.append((f"{name}_sum", (), _number(total)))
            inf = float(count)
        for bound, c in zip(bounds, bucket_values):
            out.append((f"{name}_bucket", (("le", float_label(bound)),), float(c)))
        out.append((f"{name}_bucket", (("le", "+Inf"),), inf))
        return out
    if s.type == SUMMARY:
        quantiles = parsed.get("quantiles", []) if parsed else []
        if stale or count is None:
            return [(f"{name}_count", (), STALE_NAN), (f"{name}_sum", (), STALE_NAN)] + [
                (name, (("quantile", float_label(q)),), STALE_NAN) for q, _ in quantiles]
        out = [(f"{name}_count", (), float(count))]
        if total is not None:
            out.append((f"{name}_sum", (), _number(total)))
        out += [(name, (("quantile", float_label(q)),), _number(v)) for q, v in quantiles]
        return out
    return []

