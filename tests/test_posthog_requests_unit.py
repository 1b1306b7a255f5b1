"""Pure parts of PostHog parity (issue 14): the DRF-like body parser (api/posthog/request_body.py), the
operator vocabulary (api/posthog/filters.py) and the comparisons both stores share
(collector/store/comparisons.py). The live behaviour is in test_posthog_parity.py."""

from __future__ import annotations

import json

import pytest

from otelite.api.errors import ApiError
from otelite.api.posthog import filters
from otelite.api.posthog.request_body import parse_posthog_body
from otelite.collector.store import comparisons as c
from otelite.collector.store.metrics import LabelFilter


def _error(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value


# --- bodies ---------------------------------------------------------------------------------------------

def test_bodies_as_django_rest_reads_them():
    q = {"metricName": "m", "dateFrom": "-1h"}
    assert parse_posthog_body(json.dumps({"query": q}).encode(), "application/json") == {"query": q}
    assert parse_posthog_body(json.dumps({"query": q}).encode(), None) == {"query": q}
    assert parse_posthog_body(json.dumps({"query": q}).encode(), "text/plain; charset=utf-8") == {"query": q}
    assert parse_posthog_body(b"", "application/json") == {} and parse_posthog_body(b"  ", None) == {}
    # JSON-in-JSON and the form field `query=<json>`
    assert parse_posthog_body(json.dumps({"query": json.dumps(q)}).encode(), None) == {"query": q}
    form = "query=" + json.dumps(q).replace(" ", "+").replace("&", "%26")
    assert parse_posthog_body(form.encode(), "application/x-www-form-urlencoded") == {"query": q}
    # A form field holds JSON objects, arrays and literals; other text stays text (a hex id is no number).
    body = parse_posthog_body(b"a=1&a=2&b=true&c=%5B1%5D&d=00ff&e=", "application/x-www-form-urlencoded")
    assert body == {"a": "2", "b": True, "c": [1], "d": "00ff", "e": ""}
    boundary = "XyZ"
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n{json.dumps(q)}\r\n"
                 f"--{boundary}--\r\n").encode()
    assert parse_posthog_body(multipart, f"multipart/form-data; boundary={boundary}") == {"query": q}


@pytest.mark.parametrize("raw,content_type,status,says", [
    (b"{nope", "application/json", "400", "not valid JSON"),
    (b"[1, 2]", "application/json", "400", "must be a JSON object"),
    (b"a,b\n1,2", "text/csv", "415", "text/csv"),
    (b"query: yes", None, "400", "not valid JSON"),
    (b"\xff\xfe", "application/x-www-form-urlencoded", "400", "not UTF-8"),
    ("&".join(f"f{i}=1" for i in range(101)).encode(), "application/x-www-form-urlencoded", "400", "100 fields"),
    (b"--X\r\nContent-Disposition: form-data; name=\"query\"; filename=\"q.json\"\r\n\r\n{}\r\n--X--\r\n",
     "multipart/form-data; boundary=X", "400", "is a file"),
    (b"garbage", "multipart/form-data; boundary=X", "400", "multipart"),
    (b"x", "multipart/form-data", "400", "multipart"),
])
def test_bodies_refused_with_a_reason(raw, content_type, status, says):
    e = _error(parse_posthog_body, raw, content_type)
    assert e.status.startswith(status) and says in e.message, e.message


# --- operators ------------------------------------------------------------------------------------------

def test_operator_names_and_aliases():
    assert filters.operator("starts_with", "f", "f") == "starts_with"
    assert filters.operator("in", "f", "f") == "exact" and filters.operator("not_in", "f", "f") == "is_not"
    assert filters.operator("min", "f", "f") == "gte" and filters.operator("max", "f", "f") == "lte"
    assert filters.operator("icontains_multi", "f", "f") == "icontains"
    assert filters.operator("eq", "f", "f", {"eq": "exact"}) == "exact"
    assert "unknown operator 'eq'" in _error(filters.operator, "eq", "f", "f").message  # metrics' own name only
    for refused in filters.REFUSED:
        assert "not supported" in _error(filters.operator, refused, "f", "f").message
    assert "unknown operator" in _error(filters.operator, None, "f", "f").message


def test_values_are_normalized_per_operator():
    assert filters.comparison_values("exact", [True, 200, 1.5, "x", "x"], "v", "a") == ("true", "200", "1.5", "x")
    assert filters.comparison_values("exact", [], "v", "a") is None
    assert filters.comparison_values("is_set", None, "v", "a") == ()
    assert filters.comparison_values("gte", "10", "v", "a") == (10,)
    assert filters.comparison_values("between", ["1", 2.5], "v", "a") == (1, 2.5)
    assert filters.comparison_values("semver_tilde", "~1.2.3", "v", "a") == ("1.2.3", "1.3.0")
    assert filters.comparison_values("semver_wildcard", "1.2.3.*", "v", "a") == ("1.2.3.0", "1.2.4.0")
    for op, raw, says in (("between", [1], "[low, high]"), ("between", [3, 1], "low <= high"),
                          ("gt", [1, 2], "one number"), ("gt", "ten", "needs a number"),
                          ("semver_gt", "v-one", "not a version"), ("semver_caret", 5, "one version string"),
                          ("regex", "(a)\\1", "invalid regex"), ("exact", [{"a": 1}], "string or number")):
        assert says in _error(filters.comparison_values, op, raw, "v", "a").message, op


# --- comparisons ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,value,bounds", [
    ("semver_tilde", "~1.2.3", ((1, 2, 3), (1, 3, 0))),
    ("semver_tilde", "~1", ((1, 0, 0), (2, 0, 0))),
    ("semver_caret", "^1.2.3", ((1, 2, 3), (2, 0, 0))),
    ("semver_caret", "^0.2.3", ((0, 2, 3), (0, 3, 0))),
    ("semver_caret", "^0.0.3", ((0, 0, 3), (0, 0, 4))),
    ("semver_wildcard", "1.*", ((1, 0, 0), (2, 0, 0))),
    ("semver_wildcard", "1.2.*", ((1, 2, 0), (1, 3, 0))),
])
def test_semver_ranges_are_posthogs(op, value, bounds):
    assert c.semver_range(op, value) == bounds


def test_semver_keys():
    assert c.semver_key("v1.10.0-rc.1+build.5") == (1, 10, 0)
    assert c.semver_key("2") == (2, 0, 0) and c.semver_key("1.2.3.4") == (1, 2, 3, 4)
    assert c.semver_key("1.x") is None and c.semver_key("") is None and c.semver_key(None) is None
    assert c.semver_compare((1, 10, 0), (1, 5, 0)) == 1 and c.semver_compare((1, 2, 3), (1, 2, 3, 0)) == 0


def test_label_filters_over_label_texts():
    labels = ["Web-1", "db-1", None, "10", "1.10.0", ""]

    def mask(op, values):
        return LabelFilter.compare("k", op, values).mask(labels).tolist()

    assert mask("starts_with", ("web",)) == [True, False, False, False, False, False]
    assert mask("not_ends_with", ("-1",)) == [False, False, True, True, True, True]  # missing reads as ""
    assert mask("gt", (5,)) == [False, False, False, True, False, False]
    assert mask("not_between", (0, 5)) == [False, False, False, True, False, False]  # not numbers: no match
    assert mask("semver_gt", ("1.5.0",)) == [False, False, False, True, True, False]  # "10" is version 10.0.0
    assert mask("is_set", ()) == [True, True, False, True, True, True]
    assert mask("regex", ("^d", "^W")) == [True, True, False, False, False, False]
    assert mask("exact", ("",)) == [False, False, True, False, False, True]
    with pytest.raises(ValueError):
        LabelFilter.compare("k", "like", ("x",))
