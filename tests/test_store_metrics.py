"""The store's metrics reader (collector/store/metrics.py) on a real SQLite file: selections and label
filters, label keys and values, the metric catalog, names, project isolation."""

from __future__ import annotations

import numpy as np
import pytest

from otelite.collector.store import metrics as sm
from otelite.collector.store.metrics import DISTRIBUTION, SET, LabelFilter, SeriesSelection
from otelite.collector.store.regex import RegexError
from otelite.collector.times import NS
from store_rows import CUMULATIVE, batch, open_store, write

T = 1_750_000_000 * NS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(tmp_path_factory.mktemp("reader"))
    write(s,
          batch(1, "http.requests", "sum", [(T, 1, {"route": "/a", "code": "200"}), (T, 2, {"route": "/b", "code": "500"}),
                                            (T + NS, 3, {"route": "/a", "code": "500"})],
                temporality=CUMULATIVE, monotonic=True, unit="{request}", description="Requests",
                resource={"service.name": "web", "region": "eu"}),
          batch(1, "http.requests", "sum", [(T + 5 * NS, 4, {"route": "/c"})], temporality=CUMULATIVE, monotonic=True,
                unit="{request}", description="Requests (v2)", resource={"service.name": "api", "region": "us"}),
          batch(1, "latency", DISTRIBUTION, [(T + 2 * NS, 12.5, {"route": "/a"}), (T + 3 * NS, 13.5, {"route": "/a"})]),
          batch(1, "visitors", SET, [(T + 4 * NS, "u1", {}), (T + 4 * NS, "u2", {})]),
          # the same name as a gauge, seen later: the name's current type
          batch(1, "latency", "gauge", [(T + 9 * NS, 1.0, {"route": "/z"})]),
          batch(2, "other.project", "gauge", [(T, 1.0, {"route": "/secret"})]))
    yield s
    s.close()


@pytest.fixture
def conn(store):
    c = store.reader()
    yield c
    c.close()


def routes(conn, series) -> list[str]:
    return sorted(v or "" for v in sm.label_values(conn, series, "route"))


def test_selection_and_filters(conn):
    all_ = sm.select_series(conn, SeriesSelection(1, "http.requests"))
    assert all_.type == "sum" and len(all_) == 4 and all_.complete
    assert all_.temporality.tolist() == [2] * 4 and all_.monotonic.all()
    eq = sm.select_series(conn, SeriesSelection(1, "http.requests", filters=(LabelFilter.equals("code", ["500"]),)))
    assert routes(conn, eq) == ["/a", "/b"] and not eq.complete
    # A series without the key has the label "": neq keeps it, eq "" finds it.
    assert routes(conn, sm.select_series(conn, SeriesSelection(
        1, "http.requests", filters=(LabelFilter.equals("code", ["200"], negate=True),)))) == ["/a", "/b", "/c"]
    assert routes(conn, sm.select_series(conn, SeriesSelection(
        1, "http.requests", filters=(LabelFilter.equals("code", [""]),)))) == ["/c"]
    regex = LabelFilter.matches("route", "^/[ab]$")
    assert routes(conn, sm.select_series(conn, SeriesSelection(1, "http.requests", filters=(regex,)))) == ["/a", "/a", "/b"]
    not_regex = LabelFilter.matches("route", "a", negate=True)
    assert routes(conn, sm.select_series(conn, SeriesSelection(1, "http.requests", filters=(not_regex,)))) == ["/b", "/c"]
    # Scopes: region is a resource attribute; service_name reads the resource's service.name.
    by_region = SeriesSelection(1, "http.requests", filters=(LabelFilter.equals("region", ["us"], "resource"),))
    assert routes(conn, sm.select_series(conn, by_region)) == ["/c"]
    as_attribute = SeriesSelection(1, "http.requests", filters=(LabelFilter.equals("region", ["us"], "attribute"),))
    assert len(sm.select_series(conn, as_attribute)) == 0
    service = SeriesSelection(1, "http.requests", filters=(LabelFilter.equals("service_name", ["web"]),))
    assert routes(conn, sm.select_series(conn, service)) == ["/a", "/a", "/b"]
    with pytest.raises(RegexError, match="invalid regex"):
        LabelFilter.matches("route", "(?<=x)y")  # look-behind: not RE2


def test_type_resolution_and_isolation(conn):
    assert sm.select_series(conn, SeriesSelection(1, "latency")).type == "gauge"  # seen last
    dist = sm.select_series(conn, SeriesSelection(1, "latency", DISTRIBUTION))
    assert dist.type == DISTRIBUTION and routes(conn, dist) == ["/a"]
    missing = sm.select_series(conn, SeriesSelection(1, "other.project"))
    assert missing.type is None and len(missing) == 0
    assert sm.select_series(conn, SeriesSelection(2, "other.project")).type == "gauge"
    assert "/secret" not in sm.label_key_values(conn, 1, "route")


def test_label_keys_and_values(conn):
    assert sm.label_keys(conn, 1, "http.requests") == ["region", "route", "service.name", "code"]
    assert sm.label_keys(conn, 1, "http.requests", scope="attribute") == ["route", "code"]
    assert sm.label_keys(conn, 1, "http.requests", scope="resource", search="SERV") == ["service.name"]
    assert sm.label_key_values(conn, 1, "route", "http.requests") == ["/a", "/b", "/c"]
    assert sm.label_key_values(conn, 1, "route") == ["/a", "/b", "/c", "/z"]
    assert sm.label_key_values(conn, 1, "region", scope="resource", search="S") == ["us"]
    assert sm.label_key_values(conn, 1, "route", limit=1) == ["/a"]


def test_catalog(conn):
    catalog = {(m.name, m.type): m for m in sm.metric_catalog(conn, 1, with_point_counts=True)}
    assert list(catalog) == [("http.requests", "sum"), ("latency", DISTRIBUTION), ("latency", "gauge"),
                             ("visitors", SET)]
    req = catalog[("http.requests", "sum")]
    # Unit and description are those of the most recently seen series.
    assert (req.unit, req.description, req.temporality, req.monotonic) == ("{request}", "Requests (v2)", 2, True)
    assert req.attribute_keys == ("code", "route") and req.resource_keys == ("region", "service.name")
    assert (req.first_seen_ns, req.last_seen_ns, req.series_count, req.point_count) == (T, T + 5 * NS, 4, 4)
    assert catalog[("visitors", SET)].point_count == 2 and catalog[("visitors", SET)].attribute_keys == ()
    one = sm.metric_catalog(conn, 1, "latency", DISTRIBUTION)
    assert len(one) == 1 and one[0].point_count is None and one[0].last_seen_ns == T + 3 * NS
    assert sm.metric_catalog(conn, 1, "nope") == []
    assert [m.name for m in sm.metric_catalog(conn, 2)] == ["other.project"]


def test_names_and_has_metrics(conn):
    assert sm.metric_names(conn, 1) == [("latency", "gauge"), ("http.requests", "sum"), ("visitors", "set")]
    assert sm.metric_names(conn, 1, "HTTP") == [("http.requests", "sum")]
    assert sm.metric_names(conn, 1, limit=1) == [("latency", "gauge")]
    assert sm.has_metrics(conn, 1) and sm.has_metrics(conn, 2) and not sm.has_metrics(conn, 3)


def _counted_from_series_labels(conn, series) -> list[tuple[str, int, int]]:
    """series_label_key_counts' answer the long way: every label of every series, counted in Python."""
    seen: dict[str, list[str]] = {}
    for labels in sm.series_labels(conn, series.ids.tolist()).values():
        for key, value in labels.items():
            seen.setdefault(key, []).append(value)
    return sorted((key, len(values), len(set(values))) for key, values in seen.items())


def test_label_key_counts_match_the_labels_of_the_series(tmp_path):
    s = open_store(tmp_path)
    try:
        write(s,
              # `region` both as a point attribute and a resource attribute: the point attribute wins.
              batch(1, "jobs", "gauge", [(T, 1.0, {"region": "eu", "queue": "a"}), (T, 1.0, {"region": "us", "queue": "b"})],
                    resource={"service.name": "worker", "region": "ap"}),
              batch(1, "jobs", "gauge", [(T, 1.0, {"queue": "a"})], resource={"service.name": "cron", "region": "ap"}),
              # A label literally called service_name wins over the resource's service.name.
              batch(1, "jobs", "gauge", [(T, 1.0, {"queue": "c", "service_name": "own"})],
                    resource={"service.name": "worker"}),
              batch(1, "jobs", "gauge", [(T, 1.0, {"queue": "d"})], resource={}),  # no service at all
              # Another metric and another project with the same keys must not be counted.
              batch(1, "other", "gauge", [(T, 1.0, {"queue": "zzz", "extra": "1"})]),
              batch(2, "jobs", "gauge", [(T, 1.0, {"queue": "secret"})]))
        conn = s.reader()
        try:
            jobs = sm.select_series(conn, SeriesSelection(1, "jobs"))
            counts = sm.series_label_key_counts(conn, jobs)
            assert [tuple(c) for c in counts] == _counted_from_series_labels(conn, jobs)
            by_key = {c.key: c for c in counts}
            assert by_key["region"] == ("region", 3, 3)  # eu, us (point), ap (resource)
            assert by_key["service_name"] == ("service_name", 4, 3)  # worker, cron, own
            assert by_key["queue"] == ("queue", 5, 4) and "extra" not in by_key
            # A subset (e.g. the series reporting in a window) counts only its own labels.
            subset = jobs.subset(np.array([q in ("a", "d") for q in sm.label_values(conn, jobs, "queue")]))
            counted = _counted_from_series_labels(conn, subset)
            assert [tuple(c) for c in sm.series_label_key_counts(conn, subset)] == counted
            assert sm.series_label_key_counts(conn, jobs.subset(np.zeros(len(jobs), bool))) == []
            # label_values of a subset: in the subset's order, nothing from other metrics or projects.
            assert sorted(sm.label_values(conn, subset, "queue")) == ["a", "a", "d"]
            assert sm.label_values(conn, jobs, "region", "resource").count("ap") == 3  # the two of worker, the one of cron
            assert sm.label_values(conn, jobs, "region", "resource").count(None) == 2
        finally:
            conn.close()
    finally:
        s.close()
