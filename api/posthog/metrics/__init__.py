"""The PostHog metrics API (posthog-metrics.md) on the neutral engine (collector/query). PostHog's field
names, aggregation names, limits and JSON shapes live here and nowhere else.

- `request`      — the `query` bodies → validated dataclasses (every 400 of the spec's limits list);
- `intervals`    — PostHog's interval names and the grid each stands for;
- `query`        — clauses → engine queries → ranked, zero-filled results and formulas;
- `formula`      — a tokenizer and recursive-descent evaluator over numpy arrays (no `eval`);
- `characterize` — the anomaly characterization of the spec, with a sturdier onset detector;
- `resources`    — the Falcon resources, OpenAPI paths and `DIALECT`.
"""
