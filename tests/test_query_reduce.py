"""The engine's sort-free reductions (collector/query/reduce.py) against plain per-key references computed
here in Python: every result that does not depend on the order of additions must come out identical,
bit for bit (minimum, maximum, count, last, distinct, quantile, including NaNs and signed zeros); float
sums and means to rounding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from otelite.collector.query.reduce import _order, _reduce, _sorted_within_runs, _unique_inverse, bucket_of


def _nan_last(x: float) -> tuple:
    return (math.isnan(x), 0.0 if math.isnan(x) else x)


def _reference(key: np.ndarray, vals: np.ndarray, how: str, q: float | None, time: np.ndarray | None):
    """Per distinct key, ascending: the reduction of its values in their given order."""
    positions: dict[int, list[int]] = {}
    for i, k in enumerate(key.tolist()):
        positions.setdefault(k, []).append(i)
    keys = sorted(positions)
    values = vals.tolist()
    out = []
    for k in keys:
        pos = positions[k]
        v = [values[i] for i in pos]
        has_nan = any(math.isnan(x) for x in v)
        if how == "count":
            out.append(float(len(v)))
        elif how in ("sum", "avg"):
            total = math.fsum(v) if not has_nan else math.nan
            out.append(total if how == "sum" else total / len(v))
        elif how in ("min", "max"):
            out.append(math.nan if has_nan else (min(v) if how == "min" else max(v)))
        elif how == "last":
            last = max(pos, key=lambda i: (int(time[i]), i)) if time is not None else pos[-1]
            out.append(float(vals[last]))
        elif how == "distinct":
            out.append(float(len({x for x in v if not math.isnan(x)}) + has_nan))
        elif has_nan:
            out.append(math.nan)
        else:  # quantile: linear between order statistics (numpy's default method)
            v.sort()
            h = q * (len(v) - 1)
            lo = math.floor(h)
            out.append(v[lo] if h == lo else v[lo] + (v[lo + 1] - v[lo]) * (h - lo))
    return np.array(keys, dtype=np.int64), np.array(out)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _cases(seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        n = int(rng.integers(1, 1500))
        key_range = int(rng.choice([1, 7, 300, 70_000, 10**9]))  # dense tables and the np.unique fallback
        key = rng.integers(0, key_range, n)
        if rng.random() < 0.4:
            key = np.sort(key)  # per-series cells come in key order: the no-sort paths
        vals = rng.standard_normal(n).round(int(rng.integers(0, 3)))  # rounding makes ties
        vals[rng.random(n) < 0.03] = np.nan
        zeros = vals == 0
        vals[zeros] = np.where(rng.random(int(zeros.sum())) < 0.5, -0.0, 0.0)
        time = rng.integers(0, 30, n)
        yield key, vals, time


@pytest.mark.parametrize("how", ["min", "max", "count", "last", "distinct", "quantile"])
def test_order_independent_reductions_are_exact(how):
    for key, vals, time in _cases(21):
        q = 0.9 if how == "quantile" else None
        t = time if how == "last" else None
        got_key, got = _reduce(key, vals, how, q, t)
        want_key, want = _reference(key, vals, how, q, t)
        assert _same_bits(got_key, want_key)
        if how in ("min", "max"):  # the minimum of 0.0 and -0.0 may be either
            assert np.array_equal(got, want, equal_nan=True)
        else:
            assert _same_bits(got, want), how


@pytest.mark.parametrize("how", ["sum", "avg"])
def test_sums_and_means_to_rounding(how):
    for key, vals, time in _cases(22):
        got_key, got = _reduce(key, vals, how, None)
        want_key, want = _reference(key, vals, how, None, None)
        assert _same_bits(got_key, want_key)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_last_without_times_is_the_last_in_the_given_order():
    key = np.array([3, 1, 3, 1, 2])
    vals = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    assert _reduce(key, vals, "last", None)[1].tolist() == [40.0, 50.0, 30.0]
    # With times: the latest, and among equal times the later one in the given order.
    time = np.array([5, 9, 5, 1, 0])
    assert _reduce(key, vals, "last", None, time)[1].tolist() == [20.0, 50.0, 30.0]


def test_sorted_within_runs_is_a_stable_sort_with_nans_last():
    rng = np.random.default_rng(23)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        key = np.sort(rng.integers(0, int(rng.integers(1, 300)), n))
        vals = rng.integers(-2, 3, n).astype(float)
        vals[rng.random(n) < 0.15] = np.nan
        zeros = vals == 0
        vals[zeros] = np.where(rng.random(int(zeros.sum())) < 0.5, -0.0, 0.0)
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        got = _sorted_within_runs(key, vals, starts)
        runs = np.diff(np.append(starts, n))
        if runs.max() > 16:
            assert got is None  # left to a full sort
            continue
        want = np.concatenate([np.array(sorted(vals[s:s + r].tolist(), key=_nan_last))
                               for s, r in zip(starts.tolist(), runs.tolist())])
        assert got.tobytes() == want.tobytes()  # the same values, signed zeros in their stable order


def test_order_is_lexsort():
    rng = np.random.default_rng(24)
    for key_range in (1, 50, 65_535, 65_536, 10**9):  # radix (16 bits) and the general sort
        key = rng.integers(0, key_range, 5000)
        then = rng.integers(-3, 3, 5000).astype(float)
        then[rng.random(5000) < 0.1] = np.nan
        identity = np.arange(key.size)
        by_both, by_key = _order(key, then), _order(key)  # None: already in order
        assert np.array_equal(identity if by_both is None else by_both, np.lexsort((then, key)))
        assert np.array_equal(identity if by_key is None else by_key, np.argsort(key, kind="stable"))
    ordered = np.array([1, 1, 2, 5])
    assert _order(ordered) is None and _order(ordered, np.array([0.0, 1.0, 0.0, 0.0])) is None
    assert np.array_equal(_order(ordered, np.array([1.0, 0.0, 0.0, 0.0])), [1, 0, 2, 3])


def test_unique_inverse_is_np_unique():
    rng = np.random.default_rng(25)
    for key_range in (1, 100, 10**12):
        key = rng.integers(0, key_range, 3000)
        want_uniq, want_inverse = np.unique(key, return_inverse=True)
        uniq, inverse = _unique_inverse(key)
        assert np.array_equal(uniq, want_uniq) and np.array_equal(inverse, want_inverse)


def test_bucket_of_equal_and_unequal_buckets():
    rng = np.random.default_rng(26)
    equal = 1_700_000_000 * 10**9 + 300 * 10**9 * np.arange(289, dtype=np.int64)
    unequal = np.cumsum(np.r_[1_700_000_000 * 10**9, rng.integers(1, 10**12, 50)])  # e.g. calendar months
    for edges in (equal, unequal, equal[:2]):
        t = rng.integers(int(edges[0]) - 10**12, int(edges[-1]) + 10**12, 20_000)
        t = np.concatenate([t, edges, edges - 1, edges + 1])
        assert np.array_equal(bucket_of(t, edges), np.searchsorted(edges, t, side="right") - 1)


def _grid_cells(rng, series: int, nb: int, empty_buckets: int):
    """Per-series cells with a value in every bucket but the last `empty_buckets` (say, the current bucket
    that no series has reported into yet); some values NaN."""
    from otelite.collector.query.reduce import Cells
    used = nb - empty_buckets
    sidx = np.repeat(np.arange(series), used)
    b = np.tile(np.arange(used), series)
    value = rng.standard_normal(sidx.size) * 10.0 ** rng.integers(-3, 6, sidx.size)
    value[rng.random(sidx.size) < 0.01] = np.nan
    return Cells(sidx, b, value=value)


@pytest.mark.parametrize("how", ["sum", "avg", "count"])
def test_full_grid_combine_is_the_general_reduction_bit_for_bit(how):
    """combine's shortcut when every series has a cell in every used bucket (counts from group sizes)
    gives exactly what the general table reduction gives, groups left out (-1) included."""
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import Cells, combine
    rng = np.random.default_rng(5)
    for _ in range(40):
        series, nb = int(rng.integers(1, 60)), int(rng.integers(1, 30))
        cells = _grid_cells(rng, series, nb, int(rng.integers(0, min(nb, 3))))
        group = rng.integers(-1 if rng.random() < 0.3 else 0, int(rng.integers(1, 8)), series)
        if rng.random() < 0.2:
            group[:] = 0  # the aggregate
        agg = Aggregation("avg", across=how)
        got = combine(cells, group, agg, nb)
        # The same cells with one dropped (no longer a full grid): the general path, then the dropped
        # cell's (group, bucket) compared apart.
        general = combine(Cells(np.append(cells.sidx, 0), np.append(cells.b, 0), value=np.append(cells.value, 0.0)),
                          group, agg, nb)
        if group[0] >= 0:  # the extra cell (series 0, bucket 0, value 0.0) changes only its own count
            at = np.flatnonzero((general[0] == group[0]) & (general[1] == 0))
            if how != "sum":
                general = tuple(np.delete(x, at) for x in general)
                got = tuple(np.delete(x, np.flatnonzero((got[0] == group[0]) & (got[1] == 0))) for x in got)
        for a, b in zip(got, general):
            assert _same_bits(a, b), how


def test_full_grid_matches_a_per_group_reference():
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import combine
    rng = np.random.default_rng(6)
    cells = _grid_cells(rng, 12, 5, 1)
    cells.value = np.nan_to_num(cells.value)
    group = np.array([0, 1, 0, 2, -1, 1, 0, 2, 2, -1, 0, 1])
    g, b, v = combine(cells, group, Aggregation("avg", across="avg"), 5)
    assert g.tolist() == [k for k in (0, 1, 2) for _ in range(4)] and b.tolist() == [0, 1, 2, 3] * 3
    matrix = cells.value.reshape(12, 4)
    for gi, bi, vi in zip(g, b, v):
        members = [s for s in range(12) if group[s] == gi]
        assert vi == pytest.approx(sum(matrix[s, bi] for s in members) / len(members), rel=1e-12)


# --- increases: one flag for all series, or one per point ----------------------------------------------------

def _counter_points(rng: np.random.Generator, n_series: int = 3, n: int = 40):
    """Points of `n_series` counter series sorted by (series, time), with drops and restarts in them."""
    from otelite.collector.store.points import Points
    sidx = np.repeat(np.arange(n_series), n)
    time = np.tile(np.arange(n, dtype=np.int64) * 10 + 100, n_series)
    counter = np.cumsum(rng.integers(0, 5, sidx.size)).astype(np.float64)
    counter[rng.random(sidx.size) < 0.1] = 0.0  # drops
    start = np.where(rng.random(sidx.size) < 0.1, time - 1, 50).astype(np.int64)  # some restarts
    pts = Points("number", sidx.astype(np.int64), time, np.ones(sidx.size, bool), counter, counter, start)
    return pts, sidx


@pytest.mark.parametrize("delta,resets", [(True, True), (False, True), (False, False), (True, False)])
def test_increases_with_one_flag_for_all_equal_those_with_a_flag_per_point(delta, resets):
    from otelite.collector.query.reduce import increases
    pts, sidx = _counter_points(np.random.default_rng(5))
    n = sidx.size
    for values in (None, pts.counter * 1.5 - 7):
        one = increases(sidx, pts.counter, delta, resets, pts.time, pts.start, 120, values=values)
        each = increases(sidx, pts.counter, np.full(n, delta), np.full(n, resets), pts.time, pts.start, 120,
                         values=values)
        assert np.array_equal(one[0], each[0], equal_nan=True) and np.array_equal(one[1], each[1])


@pytest.mark.parametrize("fn", ["rate", "increase", "observations"])
def test_cells_of_series_with_different_flags_are_each_series_alone(fn):
    """Series are independent: a query over a delta, a cumulative monotonic and a cumulative non-monotonic
    series gives each the cells it gets alone (the per-point flags), whatever the others are."""
    from dataclasses import replace
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import series_cells
    pts, sidx = _counter_points(np.random.default_rng(9))
    if fn == "observations":
        pts = replace(pts, kind="summary", total=pts.counter * 2.0)
    edges = np.arange(160, 581, 60, dtype=np.int64)  # the first readings are look-back predecessors
    b = bucket_of(pts.time, edges)
    temporality, monotonic = np.array([1, 2, 2]), np.array([True, True, False])
    agg = Aggregation(fn)
    together = series_cells(pts, sidx, b, agg, temporality, monotonic, edges, 100)
    for i in range(3):
        keep = sidx == i
        alone = series_cells(pts.take(keep), np.zeros(int(keep.sum()), np.int64), b[keep], agg, temporality[i:i + 1],
                             monotonic[i:i + 1], edges, 100)
        mine = together.sidx == i
        assert np.array_equal(together.b[mine], alone.b)
        assert np.array_equal(together.value[mine], alone.value, equal_nan=True), (fn, i)


# --- explicit histograms: cell counts as int32 when they cannot leave its range ---------------------------------

def _histogram_points(rng: np.random.Generator, n_series: int, n: int, top: int):
    """Cumulative histogram readings of `n_series` series sorted by (series, time), bucket counts below
    `top` (a count drops now and then: resets), as whole-number float64 counts."""
    from otelite.collector.store.points import Points
    sidx = np.repeat(np.arange(n_series), n)
    time = np.tile(np.arange(n, dtype=np.int64) * 10 + 100, n_series)
    counts = (rng.integers(0, top, (sidx.size, 4)) // 2).astype(np.float64)
    counter = counts.sum(axis=1)
    start = np.full(sidx.size, 50, np.int64)
    pts = Points("histogram", sidx.astype(np.int64), time, np.ones(sidx.size, bool), counter, counter, start,
                 total=counter * 1.5)
    pts.bounds, pts.bounds_id, pts.counts = ((1.0, 2.0, 5.0),), np.zeros(sidx.size, np.int32), counts
    return pts, sidx


@pytest.mark.parametrize("top,want", [(200, np.int32), (60_000, np.int32), (1 << 20, np.float64)])
def test_histogram_cells_of_narrow_counts_are_the_float64_cells(top, want):
    """Whole-number counts of at most 16 bits give int32 cells (half the memory), the very numbers float64
    counts give, with resets, delta series (several rows a cell) and each grouping's quantiles alike."""
    from dataclasses import replace
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import combine, series_cells
    from otelite.collector.store.points import narrowed
    rng = np.random.default_rng(11)
    pts, sidx = _histogram_points(rng, 6, 50, top)
    narrow = replace(pts, counts=narrowed(pts.counts))
    edges = np.arange(160, 641, 60, dtype=np.int64)  # (the readings before 160: look-back predecessors)
    b = bucket_of(pts.time, edges)
    temporality, monotonic = np.array([2, 1, 2, 2, 1, 2]), np.ones(6, bool)
    agg = Aggregation("histogram_quantile", q=0.9, across="sum")
    wide_cells = series_cells(pts, sidx, b, agg, temporality, monotonic, edges, 100)
    narrow_cells = series_cells(narrow, sidx, b, agg, temporality, monotonic, edges, 100)
    assert wide_cells.vec.dtype == np.float64 and narrow_cells.vec.dtype == want
    assert np.array_equal(narrow_cells.vec, wide_cells.vec)
    for group in (np.zeros(6, np.int64), np.array([0, 1, 0, 2, -1, 1])):
        got, ref = combine(narrow_cells, group, agg, len(edges) - 1), combine(wide_cells, group, agg, len(edges) - 1)
        assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(got, ref))


@pytest.mark.parametrize("every_cell", [False, True])
@pytest.mark.parametrize("group", [[0, 1, 0, -1, 2, 1, 0, 2, 2], [0] * 9, [0, 0, -1, 0, 0, 0, 0, 0, 0]])
def test_histogram_combine_adds_each_groups_bucket_counts(every_cell, group):
    """combine's sums (per bound, or over the series axis where every series has the same cells) against a
    loop over the cells, with the newest hours' cells as a second part (`Cells.also`)."""
    from otelite.collector.query.model import Aggregation
    from otelite.collector.query.reduce import Cells, combine, prom_quantile
    rng = np.random.default_rng(12)
    nb, series = 7, 9
    sidx, b = np.repeat(np.arange(series), nb - 2), np.tile(np.arange(nb - 2), series)
    keep = np.ones(sidx.size, bool) if every_cell else rng.random(sidx.size) < 0.8
    cells = Cells(sidx[keep], b[keep], vec=rng.integers(0, 30, (int(keep.sum()), 4)).astype(np.int32),
                  bounds=(1.0, 2.0, 5.0))
    newest_sidx, newest_b = np.repeat(np.arange(series), 2), np.tile([nb - 3, nb - 1], series)  # (one shared bucket)
    cells.also = Cells(newest_sidx, newest_b, vec=rng.integers(0, 30, (newest_sidx.size, 4)).astype(np.float64),
                       bounds=(1.0, 2.0, 5.0))
    group = np.array(group)
    g, bk, v = combine(cells, group, Aggregation("histogram_quantile", q=0.5, across="sum"), nb)
    sums: dict = {}
    for part in (cells, cells.also):
        for s, bucket, row in zip(part.sidx.tolist(), part.b.tolist(), part.vec):
            if group[s] >= 0:
                sums[(int(group[s]), bucket)] = sums.get((int(group[s]), bucket), 0) + row.astype(np.float64)
    assert list(zip(g.tolist(), bk.tolist())) == sorted(sums)
    want = prom_quantile(np.cumsum(np.array([sums[k] for k in sorted(sums)]), axis=1), cells.bounds, 0.5)
    assert np.array_equal(v, want, equal_nan=True)


def test_histogram_cell_type_falls_back_to_float64_where_a_sum_could_leave_int32():
    from otelite.collector.query.reduce import _cell_dtype
    none = np.zeros(0, np.int64)
    unique = [(np.arange(5), 1.0, np.arange(5), True), (np.arange(5), -1.0, np.arange(5), True)]
    several = lambda n: unique + [(np.arange(n), 1.0, np.zeros(n, np.int64), False)]  # noqa: E731
    assert _cell_dtype(np.zeros((5, 4), np.uint16), unique) == np.int32
    assert _cell_dtype(np.zeros((5, 4), np.uint16), several(30_000)) == np.int32  # 30,002 x 65,535 < 2**31
    assert _cell_dtype(np.zeros((5, 4), np.uint16), several(40_000)) == np.float64
    assert _cell_dtype(np.zeros((5, 4), np.uint8), several(8_000_000)) == np.int32
    assert _cell_dtype(np.zeros((5, 4), np.uint32), unique) == np.float64
    assert _cell_dtype(np.zeros((5, 4), np.float64), [(none, 1.0, none, True)]) == np.float64
