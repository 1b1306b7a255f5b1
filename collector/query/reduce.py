"""The engine's numbers, as numpy over point columns sorted by (series, time).

Two stages. `series_cells` turns a query's points into "cells": with a cross-series aggregation one
value per (series, bucket) (the last reading, the mean/min/max/sum/count/quantile/distinct count of the
readings, or the sum of the readings' increases, or for histograms the bucket counts that fell into the
bucket); pooled, every reading is its own cell. `combine` then reduces the cells of each (group, bucket).
PostHog's characterize runs `series_cells` once and `combine` once per candidate key. Every step is
numpy over whole columns (a `reduceat`, a `bincount`, a sort where values must be ordered); nothing
loops per point. Sorting is what costs at scale (millions of cells, once per grouping), so it is
avoided where the result does not need it: cells of one series come in (series, bucket) order already,
and sums, means, counts, minima, maxima and last readings across series fold into a table indexed by
(group, bucket) in one pass (`_reduce`).

Increases (rate, increase, cumulative histograms) follow the OpenTelemetry metrics data model
("Sums", "Resets and Gaps"; "Cumulative streams: handling unknown start time"): a delta point is its own
increase; a cumulative point's increase is the difference to the series' previous reading, except after
a reset, where it is the point's whole value. A reset is seen two ways: the point's start time is after
the previous reading (the stream restarted: `StartTimeUnixNano` changed), or, for monotonic series, the
value dropped. A cumulative point with no previous reading counts its whole value when its start time
lies inside the points read (the range and its look-back): everything since its start was observed,
e.g. the first export of an app that started during the range. A start time equal to the point's time
(or 0) is an unknown start: that first reading only sets the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otelite.collector.query.model import OBSERVATION_FUNCTIONS, Aggregation, BoundsMismatch
from otelite.collector.store.points import Points

_SAME_AS_ACROSS = {"last": "last", "sum": "sum", "avg": "avg", "min": "min", "max": "max", "count": "count",
                   "quantile": "quantile", "distinct": "distinct", "increase": "sum", "rate": "sum",
                   "tally": "tally", "observations": "sum", "observation_sum": "sum"}


@dataclass
class Cells:
    sidx: np.ndarray  # series index per cell
    b: np.ndarray  # bucket index per cell
    value: np.ndarray | None = None  # scalar per cell
    time: np.ndarray | None = None  # pooled cells (raw readings): their times, for `last`
    seq: np.ndarray | None = None  # pooled `tally` cells: write order and whether the reading sets
    sets: np.ndarray | None = None
    vec: np.ndarray | None = None  # explicit histogram: (cells, K) non-cumulative counts
    bounds: tuple | None = None
    exp: "ExpContrib | None" = None
    weight: np.ndarray | None = None  # observation_mean: each cell's number of observations (value: their sum)
    # Explicit histogram cells of more readings, to be added to these (`added_cells`); a cell may be in both.
    also: "Cells | None" = None
    _buckets: np.ndarray | None = None  # used_buckets(), once

    def nbytes(self) -> int:
        """What the cells hold (the point cache's budget counts it when it keeps them: engine.py)."""
        arrays = (self.sidx, self.b, self.value, self.time, self.seq, self.sets, self.vec, self.weight)
        return (sum(a.nbytes for a in arrays if a is not None) + (self.exp.points.nbytes() if self.exp else 0)
                + (self.also.nbytes() if self.also is not None else 0))

    def used_buckets(self, nb: int) -> np.ndarray:
        """The buckets that hold at least one cell, ascending (worked out once: each grouping asks)."""
        if self._buckets is None:
            present = np.zeros(nb, bool)
            for part in self.parts():
                present[part.b] = True
            self._buckets = np.flatnonzero(present)
        return self._buckets

    def parts(self) -> list["Cells"]:
        """These cells and those `also` holds, each without its `also`."""
        out, part = [], self
        while part is not None:
            out.append(part)
            part = part.also
        return out


@dataclass
class ExpContrib:
    """Exponential histogram cells as signed rows of `points` (see `_exp_cells`)."""
    points: Points
    row: np.ndarray
    sign: np.ndarray
    cell: np.ndarray


# --- small helpers ----------------------------------------------------------------------------------------

def bucket_of(time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index of each time (-1 before the grid, len(edges) - 1 from its end on)."""
    step = edges[1] - edges[0] if len(edges) > 1 else 0
    if step > 0 and len(edges) > 2 and (np.diff(edges) == step).all():
        # Equal buckets (every fixed grid): integer arithmetic, the same answer as the search below.
        return np.clip((time - edges[0]) // step, -1, len(edges) - 1)
    return np.searchsorted(edges, time, side="right") - 1


def _starts(key: np.ndarray) -> np.ndarray:
    if key.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))


def _seg_quantile(vals: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile (numpy's default method) of each segment of values sorted within
    segments; a segment holding a NaN gives NaN."""
    pos = q * (counts - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    frac = pos - lo
    a, b = vals[starts + lo], vals[starts + hi]
    with np.errstate(invalid="ignore"):
        out = a + (b - a) * frac
    out[frac == 0] = a[frac == 0]
    has_nan = np.add.reduceat(np.isnan(vals).astype(np.int64), starts) > 0 if vals.size else np.zeros(0, bool)
    out[has_nan] = np.nan
    return out


def _in_order(key: np.ndarray) -> bool:
    """Whether `key` is nondecreasing (the cells of one query come out of the store sorted by series and
    time, so per-series keys usually are). A strided sample answers most "no"s without a full pass."""
    if key.size < 2:
        return True
    sample = key[::max(key.size // 1024, 1)]
    if (sample[1:] < sample[:-1]).any():
        return False
    return bool((key[1:] >= key[:-1]).all())


def _dense_size(key: np.ndarray, bound: int | None = None) -> int | None:
    """The size of a table indexed by key (`bound`, when the caller knows the keys are below it, else
    max(key) + 1), when it is small enough to use instead of sorting (no larger than a few times the
    input), else None. Keys are non-negative (group × buckets + bucket)."""
    size = bound if bound is not None else int(key.max()) + 1
    return size if size <= 4 * key.size + 65536 else None


def _unique_inverse(key: np.ndarray, bound: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(key, return_inverse=True) for non-negative integer keys (below `bound` if given), without
    sorting when their range is small (a presence table): the same unique keys, ascending, and the same
    slot of each key."""
    size = _dense_size(key, bound) if key.size else None
    if size is None:
        return np.unique(key, return_inverse=True)
    present = np.zeros(size, bool)
    present[key] = True
    slot = np.cumsum(present) - 1
    return np.flatnonzero(present), slot[key]


def _ties_in_order(key: np.ndarray, then: np.ndarray) -> bool:
    """For keys in order: whether `then` is nondecreasing within each run of equal keys (a NaN counts as
    out of order, so such input is sorted, NaNs last)."""
    with np.errstate(invalid="ignore"):
        return not ((key[1:] == key[:-1]) & ~(then[1:] >= then[:-1])).any()


def _order(key: np.ndarray, then: np.ndarray | None = None) -> np.ndarray | None:
    """The stable permutation sorting by `key`, ties by `then` (np.lexsort((then, key))), or None when
    the input is already in that order. Keys within 16 bits are ordered by numpy's radix sort (linear)."""
    if _in_order(key) and (then is None or _ties_in_order(key, then)):
        return None
    if int(key.min()) >= 0 and int(key.max()) < 1 << 16:
        first = np.argsort(then, kind="stable") if then is not None else None
        k16 = (key if first is None else key[first]).astype(np.uint16)
        second = np.argsort(k16, kind="stable")
        return second if first is None else first[second]
    return np.lexsort((then, key)) if then is not None else np.argsort(key, kind="stable")


EXP_MAX_WIDTH = 4096  # buckets per sign of a combined exponential distribution (`_exp_combine`)
_SHORT_RUNS = 16  # the longest run of equal keys `_sorted_within_runs` sorts in place of a global sort


def _sorted_within_runs(key: np.ndarray, vals: np.ndarray, starts: np.ndarray) -> np.ndarray | None:
    """`vals` sorted within each run of equal keys (keys in order; the runs start at `starts`) as a stable
    sort with NaNs last would order them (np.lexsort((vals, key))), when no run is longer than
    _SHORT_RUNS (per-series cells hold a few readings): odd-even transposition sort, one vectorized
    compare-exchange of neighbours per round, at most as many rounds as the longest run. Equal values
    never swap, so the order is the stable one. None when a run is longer."""
    longest = int(np.diff(np.append(starts, key.size)).max())
    if longest > _SHORT_RUNS:
        return None
    vals = vals.copy()
    left = np.flatnonzero(key[1:] == key[:-1])  # positions whose right neighbour is in the same run
    phases = (left[left % 2 == 0], left[left % 2 == 1])
    quiet = 0
    for r in range(longest):
        i = phases[r % 2]
        a, b = vals[i], vals[i + 1]
        with np.errstate(invalid="ignore"):
            swap = (a > b) | (np.isnan(a) & ~np.isnan(b))
        if swap.any():
            quiet = 0
            i = i[swap]
            vals[i], vals[i + 1] = b[swap], a[swap]
        else:
            quiet += 1
            if quiet == 2:  # neither phase moved anything: sorted
                break
    return vals


def _reduce(key: np.ndarray, vals: np.ndarray, how: str, q: float | None,
            time: np.ndarray | None = None, seq: np.ndarray | None = None, sets: np.ndarray | None = None,
            bound: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reduce `vals` per distinct key: (unique keys ascending, values). `how`: last | sum | avg | min | max |
    count | quantile | distinct | tally. Keys need not be sorted; `last` takes the latest `time` (ties: the
    later one in the given order), or without times the last value in the given order; `tally` applies the
    values in `seq` order, a value with `sets` replacing the running value (without `seq` it is a sum).

    No sort unless the values must be ordered (quantile, distinct, tally): keys already in order
    (per-series cells) are reduced over their runs with `reduceat`; others through a table indexed by key
    (bincount, ufunc.at), which adds the values of a key in the given order where `reduceat` over sorted
    keys adds them pairwise: float sums may differ in the last bits, every other result is the same.
    `bound`: the keys are below it (saves a pass to find their maximum)."""
    if key.size == 0:
        return key, vals
    if how == "tally" and seq is None:
        how = "sum"
    if how == "tally":  # write order within each key
        order = np.lexsort((seq, key))
        key, vals, sets = key[order], vals[order], sets[order]
        starts = _starts(key)
        return key[starts], _tally(vals, sets, starts, np.diff(np.append(starts, key.size)))
    in_order = _in_order(key)
    if how in ("sum", "avg", "min", "max", "count", "last"):
        if not in_order or (how == "last" and time is not None and not _ties_in_order(key, time)):
            return _reduce_table(key, vals, how, time, bound)
    else:  # quantile, distinct: the values sorted within each key
        within = _sorted_within_runs(key, vals, _starts(key)) if in_order else None
        if within is not None:
            vals = within
        else:
            order = _order(key, vals)
            if order is not None:
                key, vals = key[order], vals[order]
    starts = _starts(key)
    counts = np.diff(np.append(starts, key.size))
    if how == "distinct":
        # Sorted within each key (NaNs last): a value is new where it differs from the one before it in the
        # same key; all NaNs count as one value.
        new = np.ones(key.size, bool)
        with np.errstate(invalid="ignore"):
            new[1:] = (vals[1:] != vals[:-1]) & ~(np.isnan(vals[1:]) & np.isnan(vals[:-1]))
        new[starts] = True
        out = np.add.reduceat(new.astype(np.float64), starts)
    elif how == "last":
        out = vals[starts + counts - 1]
    elif how == "sum":
        out = np.add.reduceat(vals, starts)
    elif how == "avg":
        out = np.add.reduceat(vals, starts) / counts
    elif how == "min":
        out = np.minimum.reduceat(vals, starts)
    elif how == "max":
        out = np.maximum.reduceat(vals, starts)
    elif how == "count":
        out = counts.astype(np.float64)
    else:
        out = _seg_quantile(vals, starts, counts, q)
    return key[starts], out


def _tally(vals: np.ndarray, sets: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per segment of values in write order: the last value that sets, plus every value after it (all of
    them when none sets)."""
    pos = np.arange(vals.size)
    last_set = np.maximum.reduceat(np.where(sets, pos, -1), starts)
    first_kept = np.maximum(last_set, starts)
    kept = pos >= np.repeat(first_kept, counts)
    return np.add.reduceat(np.where(kept, vals, 0.0), starts)


def _reduce_table(key: np.ndarray, vals: np.ndarray, how: str, time: np.ndarray | None, bound: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """`_reduce` for sum | avg | min | max | count | last without sorting the values: each value is folded
    into its key's slot of a table, in the given order. The slots are the keys themselves when their
    range is small (no sort at all), else their ranks (np.unique)."""
    m = _dense_size(key, bound)
    if m is not None:  # a slot for every key in the range; the used ones are those with a count
        slot = key
        counts = np.bincount(slot, minlength=m)
        uniq = used = np.flatnonzero(counts)
    else:
        uniq, slot = np.unique(key, return_inverse=True)
        m = uniq.size
        counts = np.bincount(slot, minlength=m)
        used = slice(None)
    if how in ("sum", "avg", "count"):
        if how == "count":
            return uniq, counts[used].astype(np.float64)
        sums = np.bincount(slot, weights=vals, minlength=m)[used]
        return uniq, sums if how == "sum" else sums / counts[used]
    if how in ("min", "max"):
        out = np.full(m, np.inf if how == "min" else -np.inf)
        with np.errstate(invalid="ignore"):  # a NaN value makes its key's result NaN, as in reduceat
            (np.minimum if how == "min" else np.maximum).at(out, slot, vals)
        return uniq, out[used]
    # last: the largest position among the key's values with its latest time
    pos = np.arange(key.size)
    if time is not None:
        latest = np.full(m, np.iinfo(np.int64).min)
        np.maximum.at(latest, slot, time)
        pos = np.flatnonzero(time == latest[slot])
    last = np.full(m, -1)
    np.maximum.at(last, slot[pos], pos)
    return uniq, vals[last[used]]


# --- stage 1: one value per (series, bucket) ---------------------------------------------------------------

def _previous(sidx: np.ndarray) -> np.ndarray:
    """For each point, whether the point before it (in sorted order) belongs to the same series."""
    has = np.zeros(sidx.size, bool)
    has[1:] = sidx[1:] == sidx[:-1]
    return has


def _shifted(x: np.ndarray, fill) -> np.ndarray:
    """x moved one place later (the previous element of each), `fill` first."""
    return np.concatenate(([fill], x[:-1])) if x.size else x


def _restarts(time: np.ndarray, start: np.ndarray | None, has_prev: np.ndarray, loaded_from: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(restarted, from_start) per point (module docstring): `restarted` when the point's known start is
    after the previous reading; `from_start` when a point without a previous reading started inside the
    points read, so its whole value is its increase."""
    none = np.zeros(time.size, bool)
    if start is None or loaded_from is None:
        return none, none
    known = (start > 0) & (start < time)
    if not known.any():  # e.g. a producer that sends no start times: nothing more to look at
        return none, none
    restarted = has_prev & known & (start > _shifted(time, 0))
    from_start = ~has_prev & known & (start >= loaded_from)
    return restarted, from_start


def increases(sidx: np.ndarray, counter: np.ndarray, delta: np.ndarray | bool, resets: np.ndarray | bool,
              time: np.ndarray | None = None, start: np.ndarray | None = None,
              loaded_from: int | None = None, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per point: (increase, defined). Delta temporality: the value itself. Otherwise the difference to the
    previous reading of the series, or the whole value after a reset: a start time after the previous
    reading, or (where `resets` allows it: monotonic series) a drop. A first reading has an increase only
    when its start time is known and at or after `loaded_from` (module docstring).

    `values`: the increases of this column instead, with the resets still read from `counter` (the sum
    of a histogram's observations restarts when its count does; the sum itself may fall: negative
    observations). `delta` and `resets` per point, or one bool for all (`_per_point`)."""
    if delta is True:  # (_per_point: every series is delta) each reading is its own increase
        return (counter if values is None else values), np.ones(counter.size, bool)
    has_prev = _previous(sidx)
    prev = _shifted(counter, np.nan)
    with np.errstate(invalid="ignore"):
        d = counter - prev
        reset = resets & has_prev & (d < 0)
    if time is not None:
        restarted, from_start = _restarts(time, start, has_prev, loaded_from)
    else:
        restarted = from_start = np.zeros(counter.size, bool)
    if values is not None:
        counter = values
        with np.errstate(invalid="ignore"):
            d = values - _shifted(values, np.nan)
    # d is this function's own array: the whole readings go in place (no copy of every point per rule).
    np.copyto(d, counter, where=reset | restarted | from_start)
    if delta is False:
        return d, has_prev | from_start
    np.copyto(d, counter, where=delta)
    return d, delta | has_prev | from_start


def _per_point(by_series: np.ndarray, sidx: np.ndarray) -> np.ndarray | bool:
    """A per-series flag (temporality is delta, series is monotonic) for each point, or a plain bool when
    every series has the same one (the usual query: one metric, one temporality), which saves a gather
    over every point and a pass per use."""
    if by_series.all():
        return True
    if not by_series.any():
        return False
    return by_series[sidx]


def _observation_cells(pts: Points, sidx: np.ndarray, b: np.ndarray, fn: str, temporality: np.ndarray,
                       nb: int, loaded_from: int | None) -> Cells:
    """Per series and bucket, what the observations recorded in the bucket add up to: their number
    (`observations`: increases of the points' `count`), their sum (`observation_sum`: increases of
    `sum`), or both (`observation_mean`: the sum as the value and the number as its weight, so that
    `combine` divides the group's total sum by its total number). Cumulative points contribute their
    increase over the series' previous reading (a drop in count is a reset), delta points themselves."""
    valid = pts.valid
    s, count, total, time, start, bk = sidx, pts.counter, pts.total, pts.time, pts.start, b
    if not valid.all():
        keep = np.flatnonzero(valid)
        s, count, total, time, bk = s[keep], count[keep], total[keep], time[keep], bk[keep]
        start = start[keep] if start is not None else None
    delta = _per_point(temporality == 1, s)
    resets = True
    d_count, defined = increases(s, count, delta, resets, time, start, loaded_from)
    use = defined & (bk >= 0)
    key = s[use] * nb + bk[use]
    if fn == "observations":
        ukey, vals = _reduce(key, d_count[use], "sum", None)
        return Cells(ukey // nb, ukey % nb, value=vals)
    d_total, _ = increases(s, count, delta, resets, time, start, loaded_from, values=total)
    ukey, vals = _reduce(key, d_total[use], "sum", None)
    if fn == "observation_sum":
        return Cells(ukey // nb, ukey % nb, value=vals)
    _, weight = _reduce(key, d_count[use], "sum", None)
    return Cells(ukey // nb, ukey % nb, value=vals, weight=weight)


def series_cells(pts: Points, sidx: np.ndarray, b: np.ndarray, agg: Aggregation, temporality: np.ndarray,
                 monotonic: np.ndarray, edges: np.ndarray, loaded_from: int | None = None) -> Cells:
    """Cells of one query. `pts` sorted by (series, time), `sidx` its series index, `b` its bucket (-1 for
    look-back predecessors); `temporality`/`monotonic` per series; `edges` the bucket grid; `loaded_from`
    the earliest time the points were read from (increases: module docstring)."""
    nb = len(edges) - 1
    kind = pts.kind
    valid = pts.valid
    fn = agg.fn
    if fn in OBSERVATION_FUNCTIONS:
        return _observation_cells(pts, sidx, b, fn, temporality, nb, loaded_from)
    if fn in ("rate", "increase") and kind == "tally" and pts.seq is not None:
        # A tally (a Trifle key) holds what a bucket counted: its tracks, an assert replacing them
        # (store/metrics.py). That is its increase there; no reading before the bucket matters.
        keep = valid & (b >= 0)
        key, vals = _reduce(sidx[keep] * nb + b[keep], pts.value[keep], "tally", None, seq=pts.seq[keep],
                            sets=pts.sets[keep])
        series, bucket = np.divmod(key, nb)
        if fn == "rate":
            vals = vals / (np.diff(edges) / 1e9)[bucket]
        return Cells(series, bucket, value=vals)
    if fn in ("rate", "increase"):
        s, counter, time, start, bk = sidx, pts.counter, pts.time, pts.start, b
        if not valid.all():  # (the store loads readings only; Points built by hand may have others)
            keep = np.flatnonzero(valid)
            s, counter, time, bk = s[keep], counter[keep], time[keep], bk[keep]
            start = start[keep] if start is not None else None
        delta = _per_point(temporality == 1, s)
        resets = True if kind not in ("number", "set") else _per_point(monotonic, s)
        d, defined = increases(s, counter, delta, resets, time, start, loaded_from)
        use = defined & (bk >= 0)
        key, vals = _reduce(s[use] * nb + bk[use], d[use], "sum", None)
        series, bucket = np.divmod(key, nb)
        if fn == "rate":  # per second of the bucket (a DST day has 23 or 25 hours, months differ)
            vals = vals / (np.diff(edges) / 1e9)[bucket]
        return Cells(series, bucket, value=vals)
    quantile = fn in ("quantile", "histogram_quantile")
    if kind == "histogram" and quantile:
        return _hist_cells(pts, sidx, b, temporality, nb, loaded_from)
    if kind == "exponential_histogram" and quantile:
        return _exp_cells(pts, sidx, b, temporality, nb, loaded_from)
    keep = valid & (b >= 0)
    values = pts.value
    if kind == "summary" and quantile:
        values = summary_quantile(pts.q_level, pts.q_value, agg.q)
    tally = fn == "tally" and pts.seq is not None
    seq, sets = (pts.seq[keep], pts.sets[keep]) if tally else (None, None)
    if agg.across is None:  # pooled: every reading is a cell of its own, reduced per group by `combine`
        return Cells(sidx[keep], b[keep], value=values[keep], time=pts.time[keep], seq=seq, sets=sets)
    if keep.all():  # (the usual case: no copies of the columns)
        key, vals = _reduce(sidx * nb + b, values, fn, agg.q, seq=seq, sets=sets)
    else:
        key, vals = _reduce(sidx[keep] * nb + b[keep], values[keep], fn, agg.q, seq=seq, sets=sets)
    return Cells(*np.divmod(key, nb), value=vals)


def _telescoped_parts(pts: Points, sidx: np.ndarray, b: np.ndarray, temporality: np.ndarray, nb: int,
                      loaded_from: int | None):
    """Distribution cells as signed point rows whose bucket counts add up to each cell's counts.

    Delta series: every point of the cell (+). Cumulative series: the sum of the per-reading increases
    in a cell (module docstring: the difference to the previous reading, or after a reset the reading
    itself) telescopes to: last reading − the reading before the cell's first (none when that first
    reading counts from its start time) + the reading before each reset. So only those rows are ever
    expanded, not every point's buckets.
    Returns (cell keys, [(rows, sign, cell of each row, whether no cell repeats)]): the delta rows, the
    last readings (+), the readings before the first (−), the readings before resets (+)."""
    valid = pts.valid
    if valid.all():  # the store loads readings only: work on the columns themselves, no copies
        rows = None
        s, bk, total, time, start = sidx, b, pts.counter, pts.time, pts.start
    else:
        rows = np.flatnonzero(valid)
        s, bk, total, time = sidx[rows], b[rows], pts.counter[rows], pts.time[rows]
        start = pts.start[rows] if pts.start is not None else None
    delta = temporality[s] == 1
    has_prev = _previous(s)
    prev_total = _shifted(total, np.nan)
    restarted, from_start = _restarts(time, start, has_prev, loaded_from)
    with np.errstate(invalid="ignore"):
        reset = has_prev & ~delta & ((total < prev_total) | restarted)
    idx = np.flatnonzero((delta | has_prev | from_start) & (bk >= 0))
    if idx.size == 0:  # no reading with an increase (e.g. a histogram's first export): no cell
        return np.zeros(0, np.int64), []
    key = s[idx] * nb + bk[idx]
    starts = _starts(key)
    marks = np.zeros(idx.size, np.int64)
    marks[starts] = 1
    cell_of = np.cumsum(marks) - 1
    ends = np.append(starts[1:], idx.size) - 1
    first_pos, last_pos = idx[starts], idx[ends]
    c = np.flatnonzero(~delta[first_pos])
    minus = c[has_prev[first_pos[c]]]  # cells whose first reading has a predecessor to subtract
    dmask = delta[idx]
    rmask = reset[idx]
    parts = [(idx[dmask], 1.0, cell_of[dmask], False), (last_pos[c], 1.0, c, True),
             (first_pos[minus] - 1, -1.0, minus, True), (idx[rmask] - 1, 1.0, cell_of[rmask], False)]
    if rows is not None:
        parts = [(rows[r], sign, cell, unique) for r, sign, cell, unique in parts]
    return key[starts], parts


def _telescoped(pts: Points, sidx: np.ndarray, b: np.ndarray, temporality: np.ndarray, nb: int,
                loaded_from: int | None):
    """_telescoped_parts as one list: (cell keys, rows, signs, cell of each row)."""
    key, parts = _telescoped_parts(pts, sidx, b, temporality, nb, loaded_from)
    if not parts:
        none = np.zeros(0, np.int64)
        return key, none, np.zeros(0), none
    row = np.concatenate([r for r, _, _, _ in parts]).astype(np.int64)
    sign = np.concatenate([np.full(r.size, sg) for r, sg, _, _ in parts])
    cell = np.concatenate([c for _, _, c, _ in parts]).astype(np.int64)
    return key, row, sign, cell


def _hist_cells(pts: Points, sidx: np.ndarray, b: np.ndarray, temporality: np.ndarray, nb: int,
                loaded_from: int | None) -> Cells:
    ids = pts.bounds_id[pts.valid]
    used = ids[:1] if ids.size and ids.min() == ids.max() else np.unique(ids)  # one set of bounds: no sort
    if used.size > 1:
        raise BoundsMismatch("the selected histogram series have different bucket bounds")
    bounds = pts.bounds[int(used[0])] if used.size else ()
    width = len(bounds) + 1
    key, parts = _telescoped_parts(pts, sidx, b, temporality, nb, loaded_from)
    vec = np.zeros((key.size, width), _cell_dtype(pts.counts, parts))
    k = min(width, pts.counts.shape[1])  # a point that sent fewer counts than buckets: the rest are 0
    for row, sign, cell, unique in parts:
        if not row.size:
            continue
        block = pts.counts[row, :k]  # (narrow integer counts become float64 as they are added)
        if unique:  # one row per cell (the cumulative case): whole rows added at once, no scatter
            # Every cell, in order (the usual case: no delta series, every cell has a reading before it):
            # added through a view, without gathering and scattering the cells' rows.
            target = vec[:, :k] if cell.size == key.size else vec[cell, :k]
            if sign > 0:
                target += block
            else:
                target -= block
            if cell.size != key.size:
                vec[cell, :k] = target
        else:  # several rows per cell (delta points, resets): summed per (cell, bucket)
            # Over the cells these rows touch, not all of them: a day's few resets took a bincount the
            # size of every cell (27 MB, 6,700 page faults, 26 ms on the scale file) per query.
            touched, slot = _unique_inverse(cell, key.size)
            flat = (slot[:, None] * k + np.arange(k)[None, :]).ravel()
            sums = np.bincount(flat, weights=(block * sign).ravel(), minlength=touched.size * k)
            vec[touched, :k] += sums.reshape(-1, k).astype(vec.dtype, copy=False)  # (whole numbers in range)
    return Cells(*np.divmod(key, nb), vec=vec, bounds=bounds)


def _cell_dtype(counts: np.ndarray, parts: list) -> np.dtype:
    """The type of a histogram's cell counts: int32 where they are whole numbers no cell's sum can take out
    of its range, else float64. Counts of at most 16 bits (points.narrowed) qualify when every cell adds at
    most (2 + the rows of the parts with several rows a cell) of them, each of either sign: the unique
    parts give a cell one row each. Half the memory of float64: a day's cells of the scale benchmark's
    histogram are 30 MB as float64, which a fresh process's first query faults in (docs/benchmarks.md,
    2026-12-04); the point cache keeps them too."""
    if counts.dtype not in (np.uint8, np.uint16):
        return np.dtype(np.float64)
    rows = 2 + sum(row.size for row, _, _, unique in parts if not unique)
    return np.dtype(np.int32 if rows * int(np.iinfo(counts.dtype).max) < 2**31 else np.float64)


def _exp_cells(pts: Points, sidx: np.ndarray, b: np.ndarray, temporality: np.ndarray, nb: int,
               loaded_from: int | None) -> Cells:
    key, row, sign, cell = _telescoped(pts, sidx, b, temporality, nb, loaded_from)
    return Cells(*np.divmod(key, nb), exp=ExpContrib(pts, row, sign, cell))


def added_cells(a: Cells, b: Cells, nb: int) -> Cells:
    """The cells of two sets of readings together, for functions whose cell is a sum over the readings (the
    increases, bucket counts, observation sums and numbers): a cell in both is added, the others are kept,
    in (series, bucket) order as series_cells gives them, so that `combine` adds the same numbers in the
    same order (engine._two_part_cells). Explicit histogram cells are not merged: `b` becomes a part of the
    result (`Cells.also`), which `combine` sums on its own."""
    if a.time is not None or a.seq is not None or a.exp is not None or b.exp is not None:
        raise ValueError("only cells that are sums over readings can be added")
    if b.sidx.size == 0:
        return a
    if a.sidx.size == 0:
        return b
    if a.vec is not None and a.bounds != b.bounds:
        raise BoundsMismatch("the selected histogram series have different bucket bounds")
    if a.vec is not None:
        # Inserting b's cells among a day's (the rolled hours') copied all of these (31 MB: 24-99 ms of the
        # scale benchmark's 24 h histogram_quantile, docs/benchmarks.md), and bucket counts are whole
        # numbers, whose sums do not depend on the order they are added in.
        return Cells(a.sidx, a.b, vec=a.vec, bounds=a.bounds, also=b if a.also is None else added_cells(a.also, b, nb))
    ka, kb = a.sidx * nb + a.b, b.sidx * nb + b.b
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    rest = np.ones(kb.size, bool)
    rest[ib] = False

    at = np.searchsorted(ka, kb[rest])  # where the cells only `b` has go
    moved = ia + np.searchsorted(at, ia, side="right")  # where a's cells that `b` adds to are then

    def add(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        out = np.insert(x, at, y[rest], axis=0)
        out[moved] += y[ib]
        return out

    return Cells(np.insert(a.sidx, at, b.sidx[rest]), np.insert(a.b, at, b.b[rest]), value=add(a.value, b.value),
                 vec=add(a.vec, b.vec), bounds=a.bounds, weight=add(a.weight, b.weight))


def summary_quantile(levels: np.ndarray, values: np.ndarray, q: float) -> np.ndarray:
    """Per summary point, the value at quantile q, linear between the stated quantiles, clamped outside."""
    n = levels.shape[0]
    if levels.size == 0:
        return np.full(n, np.nan)
    order = np.argsort(np.where(np.isnan(levels), np.inf, levels), axis=1)
    lv = np.take_along_axis(levels, order, 1)
    vv = np.take_along_axis(values, order, 1)
    m = (~np.isnan(lv)).sum(axis=1)
    le = (lv <= q).sum(axis=1)
    lo = np.clip(le - 1, 0, np.maximum(m - 1, 0))
    hi = np.clip(le, 0, np.maximum(m - 1, 0))
    r = np.arange(n)
    l0, l1, v0, v1 = lv[r, lo], lv[r, hi], vv[r, lo], vv[r, hi]
    with np.errstate(all="ignore"):
        frac = np.where(l1 > l0, (q - l0) / (l1 - l0), 0.0)
        out = v0 + (v1 - v0) * np.clip(frac, 0, 1)
    out[frac == 0] = v0[frac == 0]
    out[m == 0] = np.nan
    return out


# --- stage 2: across series -------------------------------------------------------------------------------

def combine(cells: Cells, group: np.ndarray, agg: Aggregation, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce cells over the series of each group → (group, bucket, value), by (group, bucket).
    `group[sidx]` is the group of a series, -1 to leave it out. Without a sort except for quantiles
    and distinct counts (`_reduce`)."""
    bound = (int(group.max()) + 1) * nb if group.size else 0  # keys are below it
    if cells.vec is not None:
        return _combine_counts(cells, group, agg, nb, bound)
    key, inside = _group_keys(cells, group, nb)
    if inside is None:
        value, time = cells.value, cells.time
    else:
        value = cells.value[inside] if cells.value is not None else None
        time = cells.time[inside] if cells.time is not None else None
    if cells.exp is not None:
        key_all = key if inside is None else np.where(inside, group[cells.sidx] * nb + cells.b, -1)
        uniq, vals = _exp_combine(cells.exp, key_all, agg.q)
        return *np.divmod(uniq, nb), vals
    if cells.weight is not None:  # a mean over every observation of the group: total sum / total number
        weight = cells.weight if inside is None else cells.weight[inside]
        ukey, total = _reduce(key, value, "sum", None, bound=bound)
        _, number = _reduce(key, weight, "sum", None, bound=bound)
        with np.errstate(all="ignore"):
            mean = np.where(number > 0, total / number, np.nan)
        return *np.divmod(ukey, nb), mean
    how = agg.across if agg.across is not None else _SAME_AS_ACROSS[agg.fn]
    if how in ("sum", "avg", "count") and time is None and cells.seq is None \
            and cells.b.size == group.size * cells.used_buckets(nb).size and not _in_order(key):
        # (keys in order are reduced over their runs by `_reduce`, whose float sums add pairwise)
        return _combine_full(key, value, group, how, nb, cells.used_buckets(nb))
    seq = cells.seq if inside is None or cells.seq is None else cells.seq[inside]
    sets = cells.sets if inside is None or cells.sets is None else cells.sets[inside]
    ukey, vals = _reduce(key, value, how, agg.q, time, seq, sets, bound)
    return *np.divmod(ukey, nb), vals


def _group_keys(cells: Cells, group: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The (group, bucket) key of each cell whose series has a group, and which cells those are (None:
    every cell)."""
    if cells.sidx.size == 0 or int(group.min()) >= 0:  # every series has a group: no cell is left out
        offset = group * nb  # per series, so the cells need one gather and one addition
        return (offset[cells.sidx] + cells.b if offset.any() else cells.b), None
    g = group[cells.sidx]
    inside = g >= 0
    return g[inside] * nb + cells.b[inside], inside


def _combine_counts(cells: Cells, group: np.ndarray, agg: Aggregation, nb: int, bound: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`combine` of explicit histogram cells: each group's bucket counts per bucket, then the quantile.
    Bucket counts are whole numbers: their sums do not depend on the order of addition, so the parts of
    `cells` (`added_cells`) are summed one after the other, each into the table of every part's keys."""
    keyed = []
    for part in cells.parts():
        key, inside = _group_keys(part, group, nb)
        keyed.append((key, part.vec if inside is None else part.vec[inside]))
    every = keyed[0][0] if len(keyed) == 1 else np.concatenate([key for key, _ in keyed])
    ukey, slot = _unique_inverse(every, bound) if every.size else (every, every)
    width = cells.vec.shape[1]
    summed = np.zeros((width, ukey.size))
    at = 0
    for key, vec in keyed:
        part_slot = slot[at:at + key.size]
        at += key.size
        row = _repeated_row(part_slot)
        if row is not None:
            # Every series of the part with a cell in the same (group, bucket)s, in the same order: one
            # group (no group-by), each series reporting in every bucket, the usual dashboard query. A sum
            # over the series axis, several times faster than the bincounts (a warm 24 h
            # histogram_quantile's largest step).
            summed[:, row] += vec.reshape(-1, row.size, vec.shape[1]).sum(axis=0, dtype=np.float64).T
            continue
        # A bincount per bucket bound, not one over a (cells x bounds) flat index: that index was 16 int64
        # per cell (30 MB for the scale benchmark's 24 h histogram_quantile, memory a fresh process faults in).
        for j in range(width):
            summed[j] += np.bincount(part_slot, weights=vec[:, j], minlength=ukey.size)
    return *np.divmod(ukey, nb), prom_quantile(np.cumsum(summed.T, axis=1), cells.bounds, agg.q)


def _repeated_row(slot: np.ndarray) -> np.ndarray | None:
    """When `slot` is one strictly increasing row repeated (cells of several series, each in the same
    slots), that row; else None."""
    if slot.size < 2:
        return None
    drops = np.flatnonzero(slot[1:] <= slot[:-1])
    width = int(drops[0]) + 1 if drops.size else slot.size
    if slot.size % width:
        return None
    rows = slot.reshape(-1, width)
    return rows[0] if (rows == rows[0]).all() else None


def _combine_full(key: np.ndarray, value: np.ndarray, group: np.ndarray, how: str, nb: int, buckets: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`combine` for sum | avg | count when every series has one cell in every bucket that holds any
    (`buckets`): per-series cells of series reporting more often than the bucket length, the usual case.
    A group then has as many cells in each of those buckets as it has series, so only the sums take a
    pass over the cells (in the given order, as `_reduce_table` adds them). `key`/`value`: the cells of
    the series with a group."""
    sizes = np.bincount(group[group >= 0]) if group.size else np.zeros(0, np.int64)
    present = np.flatnonzero(sizes)  # groups with series, ascending: each has a value in every used bucket
    g, b = np.repeat(present, buckets.size), np.tile(buckets, present.size)
    counts = np.repeat(sizes[present], buckets.size)
    if how == "count":
        return g, b, counts.astype(np.float64)
    sums = np.bincount(key, weights=value, minlength=sizes.size * nb)[g * nb + b]
    return g, b, sums if how == "sum" else sums / counts


def prom_quantile(cum: np.ndarray, bounds: tuple, q: float) -> np.ndarray:
    """Prometheus' histogram_quantile per row of cumulative counts (last column: +Inf): linear inside
    the bucket, the first bucket's lower edge 0, a rank in the overflow bucket clamped to the highest
    bound, empty buckets skipped (a rank never lands in one), no observations → NaN."""
    rows = cum.shape[0]
    k = len(bounds)
    if rows == 0:
        return np.zeros(0)
    if k == 0:
        return np.full(rows, np.nan)
    upper = np.asarray(bounds, dtype=np.float64)
    total = cum[:, -1]
    rank = q * total
    idx = (cum[:, :k] < rank[:, None]).sum(axis=1)
    r = np.arange(rows)
    inner = np.minimum(idx, k - 1)
    lower = np.where(inner > 0, upper[np.maximum(inner - 1, 0)], 0.0)
    prev = np.where(inner > 0, cum[r, np.maximum(inner - 1, 0)], 0.0)
    count = cum[r, inner] - prev
    with np.errstate(all="ignore"):
        out = lower + (upper[inner] - lower) * (rank - prev) / count
    out = np.where(idx >= k, upper[-1], out)
    out = np.where((idx == 0) & (upper[0] <= 0), upper[0], out)
    out[~(total > 0)] = np.nan
    return out


def _ragged_take(flat: np.ndarray, start: np.ndarray, length: np.ndarray):
    """Expand rows of a ragged array: (row number, position within the row, value)."""
    total = int(length.sum())
    rep = np.repeat(np.arange(length.size), length)
    within = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
    return rep, within, flat[np.repeat(start, length) + within]


def _exp_combine(contrib: ExpContrib, cell_key: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Sum the signed rows into (group, bucket) distributions at the smallest scale involved, then take
    the quantile, interpolating exponentially inside a bucket (the buckets are exponential)."""
    key = cell_key[contrib.cell]
    ok = key >= 0
    row, sign, key = contrib.row[ok], contrib.sign[ok], key[ok]
    if key.size == 0:
        return key, np.zeros(0)
    uniq, target = _unique_inverse(key)
    p = contrib.points
    smin = int(p.scale[row].min())
    zero = np.bincount(target, weights=sign * p.zero_count[row], minlength=uniq.size)
    sides = []
    for offset, start, length, flat in ((p.pos_offset, p.pos_start, p.pos_len, p.pos_flat),
                                        (p.neg_offset, p.neg_start, p.neg_len, p.neg_flat)):
        rep, within, vals = _ragged_take(flat, start[row], length[row])
        sides.append((rep, (offset[row][rep] + within) >> (p.scale[row][rep] - smin).astype(np.int64), vals))
    # Points whose buckets lie far apart at one scale (offsets of +-2^31 are valid at scale 20) would span
    # billions of buckets: downscale (index >> 1 per step, the data model's merge) until each sign spans at
    # most EXP_MAX_WIDTH, as an SDK does to fit its max_size. It asked numpy for 32 GiB before.
    while any(idx.size and int(idx.max()) - int(idx.min()) >= EXP_MAX_WIDTH for _, idx, _ in sides):
        smin -= 1
        sides = [(rep, idx >> 1, vals) for rep, idx, vals in sides]
    mats = []
    for rep, idx, vals in sides:
        lo = int(idx.min()) if idx.size else 0
        width = int(idx.max()) - lo + 1 if idx.size else 0
        mat = np.bincount(target[rep] * width + (idx - lo), weights=vals * sign[rep],
                          minlength=uniq.size * width).reshape(uniq.size, width) if width else np.zeros((uniq.size, 0))
        mats.append((lo, mat))
    (plo, pos), (nlo, neg) = mats
    # Ascending value order: negative buckets from the largest index down, the zero bucket, positive up.
    counts = np.hstack([neg[:, ::-1], zero[:, None], pos])
    n_neg, n_pos = neg.shape[1], pos.shape[1]
    neg_idx = nlo + np.arange(n_neg)[::-1]
    pos_idx = plo + np.arange(n_pos)
    cum = np.cumsum(np.maximum(counts, 0), axis=1)
    total = cum[:, -1]
    rank = q * total
    j = np.minimum((cum < rank[:, None]).sum(axis=1), counts.shape[1] - 1)
    r = np.arange(uniq.size)
    prev = np.where(j > 0, cum[r, np.maximum(j - 1, 0)], 0.0)
    with np.errstate(all="ignore"):
        frac = np.clip((rank - prev) / (cum[r, j] - prev), 0, 1)
        out = np.zeros(uniq.size)
        is_neg = j < n_neg
        is_pos = j > n_neg
        ni = neg_idx[np.minimum(j, max(n_neg - 1, 0))] if n_neg else np.zeros(uniq.size)
        pi = pos_idx[np.clip(j - n_neg - 1, 0, max(n_pos - 1, 0))] if n_pos else np.zeros(uniq.size)
        # base**x with base = 2**(2**-smin): 2**(x * 2**-smin), which is inf, not OverflowError, off the doubles.
        out = np.where(is_neg, -np.exp2(np.ldexp(ni + 1 - frac, -smin)), out)
        out = np.where(is_pos, np.exp2(np.ldexp(pi + frac, -smin)), out)
    out[~(total > 0)] = np.nan
    return uniq, out
