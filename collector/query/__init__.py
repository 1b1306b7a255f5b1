"""The metrics engine every dialect queries through (independent of any dialect: no HTTP, no JSON).

- `model`  — typed input (`Query`: selection, range, grid, `Aggregation`, group-by keys) and output
             (`Result`: series of labels, bucket indices and values), and the engine's errors;
- `grid`   — bucket grids: fixed-width, or calendar-aligned in a project's zone (Trifle's granularities);
- `reduce` — the numbers: per-series cells, increases from OTel start times, exact percentiles, distinct
             counts, histogram quantiles, cross-series combination;
- `engine` — one query end to end over the store's readers (collector/store/metrics.py, points.py).
"""
