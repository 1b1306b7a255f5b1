"""Trifle's aggregators and formatters over a key's buckets (series.BucketTable), as pure functions.

They follow Trifle::Stats (the Elixir library Trifle's app runs: `Aggregator.{Sum,Mean,Min,Max}`,
`Formatter.{Timeline,Category}`) and the app's `Trifle.Metrics.Query` (tables):

- Slicing: n buckets, size = n div slices; the oldest n − size·slices buckets are dropped and the rest
  split into `slices` chunks of `size`. An aggregator given more slices than buckets works on all of them
  as one chunk; the formatters cannot (Trifle's chunking fails), which the caller reports (`SlicesError`).
- sum: the values of a chunk, missing ones ignored, as a float (0.0 for none); mean: their sum over their
  count (0 when there is none); min / max: None when there is none.
- timeline: every bucket of the chunk as {at, value}, a missing value 0.0.
- category: a path naming a map expands one level to its children; each child summed over the chunk's
  buckets as floats (a child that is itself a map adds 0.0), keyed by its full dot path.

    >>> import numpy as np
    >>> aggregate(np.array([10.0, 15.0, 8.0, 12.0]), "sum", 2)
    [25.0, 20.0]
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from otelite.api.trifle.series import BucketTable


class SlicesError(ValueError):
    """More slices than buckets for a formatter."""


def _chunks(n: int, slices: int) -> list[slice]:
    """Trifle's slicing of n buckets (module docstring); [] for no buckets."""
    if n == 0:
        return []
    size = n // slices if slices > 1 else n
    if size == 0:
        return [slice(0, n)]
    first = n - size * slices if slices > 1 else 0
    return [slice(start, start + size) for start in range(first, n, size)]


def _sum(x: np.ndarray) -> float:
    return float(x[~np.isnan(x)].sum())


def _mean(x: np.ndarray) -> float | int:
    present = x[~np.isnan(x)]
    return float(present.sum() / present.size) if present.size else 0


def _min(x: np.ndarray) -> float | None:
    present = x[~np.isnan(x)]
    return float(present.min()) if present.size else None


def _max(x: np.ndarray) -> float | None:
    present = x[~np.isnan(x)]
    return float(present.max()) if present.size else None


AGGREGATORS: dict[str, Callable[[np.ndarray], float | int | None]] = {
    "sum": _sum, "mean": _mean, "min": _min, "max": _max}


def aggregate(column: np.ndarray, aggregator: str, slices: int) -> list[float | int | None]:
    """One value per slice of a path's column (NaN: missing)."""
    fn = AGGREGATORS[aggregator]
    return [fn(column[s]) for s in _chunks(len(column), slices)]


def _formatter_chunks(n: int, slices: int) -> list[slice]:
    if slices > 1 and n // slices == 0:
        raise SlicesError(f"{slices} slices of {n} buckets")
    return _chunks(n, slices)


def timeline(table: BucketTable, path: str, slices: int, ats: list[str]) -> dict:
    """{path: [{at, value}, ...]} (slices 1) or {path: [[...], ...]} (module docstring); {} without buckets.
    `ats`: the bucket starts as text."""
    n = len(table)
    if n == 0:
        return {}
    column = table.columns.get(path, np.full(n, np.nan))
    values = np.where(np.isnan(column), 0.0, column).tolist()
    chunks = [[{"at": ats[i], "value": values[i]} for i in range(s.start, s.stop)]
              for s in _formatter_chunks(n, slices)]
    return {path: chunks[0] if slices == 1 else chunks}


def category_paths(table: BucketTable, path: str) -> list[str]:
    """The paths a category path resolves to: a map's children (one level), else the path itself."""
    prefix = path + "."
    children = sorted({p[len(prefix):].split(".", 1)[0] for p in table.columns if p.startswith(prefix)})
    return [prefix + child for child in children] if children else [path]


def category(table: BucketTable, path: str, slices: int) -> tuple[dict | list, list[str]]:
    """({resolved path: total}, or a list of them per slice) and the resolved paths; ({}, []) without
    buckets."""
    n = len(table)
    if n == 0:
        return {}, []
    resolved = category_paths(table, path)
    chunks = _formatter_chunks(n, slices)
    totals = []
    for s in chunks:
        totals.append({p: _sum(table.columns[p][s]) if p in table.columns else 0.0 for p in resolved})
    return (totals[0] if slices == 1 else totals), resolved


def table(buckets: BucketTable, paths: list[str], ats: list[str]) -> dict | None:
    """Trifle's `tabularize_series`: `{"columns": ["at", *paths], "rows": [[at, value or null], ...]}`,
    one row per bucket, oldest first; None when no path is given. `ats`: the bucket starts as text."""
    if not paths:
        return None
    n = len(buckets)
    columns = [[None if v != v else v for v in buckets.columns.get(p, np.full(n, np.nan)).tolist()]
               for p in paths]
    return {"columns": ["at", *paths], "rows": [[at, *row] for at, *row in zip(ats, *columns)]}
