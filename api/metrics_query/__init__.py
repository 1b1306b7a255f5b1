"""The PostHog metrics query engine (posthog-metrics.md), kept apart from the HTTP resources.

Pure modules, each with one concern:
- `timeutil`   — absolute/relative times, the interval names, the bucket grid (timezone-aware);
- `request`    — the `query` body → validated dataclasses (every 400 of the spec's limits list);
- `series`     — which series a clause selects (metric_series + metric_series_labels) and their labels;
- `points`     — loading points into numpy columns, with an incremental per-metric cache;
- `aggregate`  — per-series-per-bucket values, increases, cross-series reduction, histogram quantiles;
- `formula`    — a tokenizer and recursive-descent evaluator over numpy arrays (no `eval`);
- `engine`     — one query end to end (fetch → aggregate → rank → zero-fill → JSON shape);
- `characterize` — the anomaly characterization of the spec, with a sturdier onset detector.
"""
