"""Benchmarks (not tests: pytest collects only tests/). See docs/benchmarks.md."""
