"""LaunchDarkly metric groups (issue 13, metric-groups.md) against a live otelite, driven by LaunchDarkly's
own generated client (`launchdarkly-api`, MetricsBetaApi): its strict pydantic models parse every response,
so a wrong type, a missing required field or an enum value it does not know fails the test. Raw HTTP
(httpx) covers what that client cannot send (bad bodies, other headers) and the error shapes.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from urllib.parse import quote

import httpx
import launchdarkly_api
import pytest
from launchdarkly_api.api.metrics_beta_api import MetricsBetaApi
from launchdarkly_api.exceptions import (ApiException, BadRequestException, ConflictException, ForbiddenException,
                                         NotFoundException, UnauthorizedException)
from launchdarkly_api.models import (InvalidRequestErrorRep, MetricGroupCollectionRep, MetricGroupPost,
                                     MetricGroupRep, MetricInMetricGroupInput, NotFoundErrorRep, PatchOperation,
                                     PatchWithComment, RateLimitedErrorRep)

import metrics_otlp as mo
from conftest import start_server

BASE = "/api/v2/projects/{}/metric-groups"
# Metrics of every kind otelite stores, each sent through its own API (the `env` fixture), and the
# LaunchDarkly fields each maps to (representation.py).
EXPECTED_METRIC_FIELDS = {
    "cpu.usage": (True, "average"),  # OTLP gauge
    "http.requests": (True, "sum"),  # OTLP monotonic cumulative sum
    "latency": (True, "average"),  # OTLP histogram
    "checkout.amount": (True, "average"),  # Flux distribution
    "visitors": (False, "sum"),  # Flux set
    "orders.placed": (True, "sum"),  # Flux counter
    "users.online": (True, "average"),  # Flux gauge
    "event::signup": (True, "sum"),  # Trifle key (tally)
}


def _created_key(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return re.search(r"^(otl_[A-Za-z0-9_-]+)$", proc.stdout, re.M).group(1)


def _send(server, req) -> None:
    r = httpx.post(server.http_url + "/v1/metrics", content=req.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert r.status_code == 200, r.text


def _send_flux(server, metrics: list[dict]) -> None:
    """Through Flux's batch endpoint (flux.md), as BrainzLab's SDK sends them."""
    r = httpx.post(server.http_url + "/api/v1/metrics/batch", json={"metrics": metrics},
                   headers={"Authorization": f"Bearer {server.admin_key()}"}, timeout=10)
    assert r.status_code == 200 and r.json()["data"]["rejected"] == 0, r.text


def _send_trifle(server, key: str, values: dict) -> None:
    """A Trifle::Stats track (trifle.md)."""
    r = httpx.post(server.http_url + "/api/v1/metrics", json={"key": key, "at": mo.iso(mo.base_ns(1)),
                                                              "values": values},
                   headers={"Authorization": f"Bearer {server.admin_key()}"}, timeout=10)
    assert r.status_code == 201, r.text


class Env:
    def __init__(self, server) -> None:
        self.server = server
        self.url = server.http_url
        self.admin = server.admin_key()
        self.reader = _created_key(server.cli("keys", "create", "--project", "default", "--scope", "metrics:read"))
        assert server.cli("projects", "create", "acme").returncode == 0
        self.acme = _created_key(server.cli("keys", "create", "--project", "acme", "--scope", "metrics:read",
                                            "--scope", "metric_groups:write"))

    def api(self, key: str | None = None, *, bearer: bool = False) -> MetricsBetaApi:
        config = launchdarkly_api.Configuration(host=self.url)
        config.api_key["ApiKey"] = key or self.admin
        if bearer:
            config.api_key_prefix["ApiKey"] = "Bearer"
        return MetricsBetaApi(launchdarkly_api.ApiClient(config))

    def http(self, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if key != "":
            headers.setdefault("Authorization", key or self.admin)
        return httpx.request(method, self.url + path, headers=headers, timeout=20, **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    server = start_server(tmp_path_factory.mktemp("launchdarkly"))
    try:
        t = mo.base_ns(1)
        _send(server, mo.gauge("cpu.usage", [(t, 0.5, {"host": "a"})]))
        _send(server, mo.counter("http.requests", [(t, 10, {"route": "/"})]))
        _send(server, mo.histogram("latency", [(t, [1.0, 5.0], [1, 2, 3], {})]))
        _send(server, mo.gauge("queue.depth", [(t, 3, {})]))
        _send(server, mo.gauge("ephemeral", [(t, 1, {})]))
        _send_flux(server, [{"name": "checkout.amount", "type": "distribution", "value": 12.5},
                            {"name": "visitors", "type": "set", "value": "alice"},
                            {"name": "orders.placed", "type": "counter", "value": 1},
                            {"name": "users.online", "type": "gauge", "value": 234}])
        _send_trifle(server, "event::signup", {"count": 1, "country": {"US": 1}})
        yield Env(server)
    finally:
        server.stop()


def _post(key: str, name: str, kind: str = "funnel", metrics=("cpu.usage", "http.requests"), maintainer="m-1",
          tags=("checkout",), description: str | None = None) -> MetricGroupPost:
    return MetricGroupPost(key=key, name=name, kind=kind, maintainer_id=maintainer, tags=list(tags),
                           description=description,
                           metrics=[MetricInMetricGroupInput(key=m, name_in_group=f"step {i}")
                                    for i, m in enumerate(metrics, 1)])


def _ops(*ops: tuple) -> list[PatchOperation]:
    """(op, path[, value]) tuples as the client's PatchOperation models."""
    return [PatchOperation(op=op, path=path, **({"value": rest[0]} if rest else {})) for op, path, *rest in ops]


def _patch_with_from(api: MetricsBetaApi, project: str, key: str, ops: list[dict]) -> MetricGroupRep:
    """A patch through LaunchDarkly's client machinery (auth, headers, strict response models) whose
    operations are plain dicts: the client's PatchOperation model has only op/path/value, no `from`, so it
    cannot carry a move or copy (RFC 6902 needs `from`)."""
    request = api._patch_metric_group_serialize(project_key=project, metric_group_key=key, patch_operation=ops,
                                                _request_auth=None, _content_type=None, _headers=None,
                                                _host_index=0)
    response = api.api_client.call_api(*request)
    response.read()
    return api.api_client.response_deserialize(response, {"200": "MetricGroupRep",
                                                          "400": "InvalidRequestErrorRep"}).data


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body
    return body["message"]


# --- the client, end to end -----------------------------------------------------------------------------------

def test_create_get_patch_delete_with_launchdarkly_client(env):
    api = env.api()
    before = time.time_ns() // 1_000_000
    created = api.create_metric_group("default", _post("funnel-a", "Checkout funnel", description="steps",
                                                       metrics=list(EXPECTED_METRIC_FIELDS)))
    assert isinstance(created, MetricGroupRep)
    assert created.key == "funnel-a" and created.kind == "funnel" and created.version == 1
    assert created.description == "steps" and created.tags == ["checkout"]
    assert before <= created.creation_date == created.last_modified <= time.time_ns() // 1_000_000
    assert created.maintainer.key == "m-1" and created.maintainer.kind == "member" and created.maintainer.member is None
    assert created.links["self"].href == "/api/v2/projects/default/metric-groups/funnel-a"
    assert created.links["parent"].href == "/api/v2/projects/default"
    assert created.experiments is None and created.experiment_count is None  # only when expanded
    # Each metric from the store's catalog, in the order given.
    assert [m.key for m in created.metrics] == list(EXPECTED_METRIC_FIELDS)
    for m in created.metrics:
        assert (m.is_numeric, m.unit_aggregation_type) == EXPECTED_METRIC_FIELDS[m.key], m
        assert m.name == m.key and m.kind == "custom"
        assert m.links["self"].href == f"/api/v2/metrics/default/{quote(m.key, safe='')}"
    assert [m.name_in_group for m in created.metrics] == [f"step {i}" for i in range(1, len(created.metrics) + 1)]

    got = api.get_metric_group("default", "funnel-a", expand="experiments,experimentCount")
    assert got.experiments == [] and got.experiment_count == 0
    assert got.id == created.id and got.metrics == created.metrics

    # test / replace / remove / add with the client's models, all or nothing.
    patched = api.patch_metric_group("default", "funnel-a", _ops(
        ("test", "/_version", 1),
        ("replace", "/name", "Checkout funnel v2"),
        ("remove", "/description"),
        ("add", "/tags/-", "revenue"),
        ("add", "/metrics/-", {"key": "queue.depth", "nameInGroup": "queue"}),
    ))
    assert patched.version == 2 and patched.last_modified > created.last_modified
    assert patched.creation_date == created.creation_date and patched.id == created.id
    assert patched.name == "Checkout funnel v2" and patched.description is None
    assert patched.metrics[-1].key == "queue.depth" and patched.metrics[-1].name_in_group == "queue"
    assert patched.metrics[-1].unit_aggregation_type == "average"
    # move / copy (and remove, test) in one patch.
    patched = _patch_with_from(api, "default", "funnel-a", [
        {"op": "test", "path": "/_version", "value": 2},
        {"op": "move", "from": "/metrics/1", "path": "/metrics/0"},  # the second metric first
        {"op": "copy", "from": "/tags/0", "path": "/tags/-"},
        {"op": "copy", "from": "/name", "path": "/description"},
        {"op": "remove", "path": "/metrics/2"},
    ])
    assert isinstance(patched, MetricGroupRep) and patched.version == 3
    assert patched.tags == ["checkout", "revenue", "checkout"] and patched.description == "Checkout funnel v2"
    keys = list(EXPECTED_METRIC_FIELDS)
    assert [m.key for m in patched.metrics] == [keys[1], keys[0], *keys[3:], "queue.depth"]
    assert api.get_metric_group("default", "funnel-a") == patched  # stored as answered

    # LaunchDarkly's {comment, patch} wrapper.
    with_comment = env.http("PATCH", BASE.format("default") + "/funnel-a", json=PatchWithComment(
        comment="rename", patch=_ops(("replace", "/name", "Renamed"))).to_dict())
    assert with_comment.status_code == 200, with_comment.text
    assert MetricGroupRep.from_json(with_comment.text).version == 4

    assert api.delete_metric_group("default", "funnel-a") is None
    with pytest.raises(NotFoundException) as e:
        api.get_metric_group("default", "funnel-a")
    assert isinstance(e.value.data, NotFoundErrorRep) and e.value.data.code == "not_found"
    with pytest.raises(NotFoundException):
        api.delete_metric_group("default", "funnel-a")


def test_list_filter_sort_expand_and_pages(env):
    api = env.api()
    specs = [("lst-b", "Beta signup", "funnel", "m-1"), ("lst-a", "Alpha checkout", "standard", "m-2"),
             ("lst-c", "Gamma Ünïcode", "standard", "m-1"), ("lst-d", "delta checkout", "funnel", "m-3")]
    for key, name, kind, maintainer in specs:
        api.create_metric_group("default", _post(key, name, kind, maintainer=maintainer, tags=["list"]))

    def keys(**params) -> list[str]:
        page = api.get_metric_groups("default", **params)
        assert isinstance(page, MetricGroupCollectionRep)
        return [g.key for g in page.items if g.key.startswith("lst-")]

    assert keys() == ["lst-b", "lst-a", "lst-c", "lst-d"]  # creation order by default
    assert keys(sort="name") == ["lst-a", "lst-b", "lst-d", "lst-c"]  # case-insensitive
    assert keys(sort="-name") == ["lst-c", "lst-d", "lst-b", "lst-a"]
    assert keys(sort="-createdAt") == ["lst-d", "lst-c", "lst-a", "lst-b"]
    assert keys(sort="connectionCount,-createdAt") == ["lst-d", "lst-c", "lst-a", "lst-b"]

    assert keys(filter="query equals 'checkout'") == ["lst-a", "lst-d"]
    assert keys(filter="query equals 'CHECKOUT delta'") == ["lst-d"]  # every word, any case
    assert keys(filter="query equals 'ünï'") == ["lst-c"]  # Unicode case folding
    assert keys(filter="query equals 'lst-b'") == ["lst-b"]  # the key too
    assert keys(filter="query equals ['alpha', 'gamma']") == ["lst-a", "lst-c"]
    assert keys(filter="kind equals 'funnel'") == ["lst-b", "lst-d"]
    assert keys(filter="kind anyOf ['funnel', 'standard'] and query equals 'checkout'") == ["lst-a", "lst-d"]
    assert keys(filter="maintainerIds anyOf ['m-1', 'm-3']") == ["lst-b", "lst-c", "lst-d"]
    assert keys(filter="maintainerIds anyOf ['m-1'] and kind equals 'standard'") == ["lst-c"]
    assert keys(filter="hasConnections equals false") == ["lst-b", "lst-a", "lst-c", "lst-d"]
    assert keys(filter="hasConnections equals true") == []
    assert keys(filter="experimentStatus equals 'not_started'") == []
    assert keys(filter="maintainerTeamKey equals 'team-x'") == []

    page = api.get_metric_groups("default", filter="query equals 'lst'", sort="name", limit=3, offset=1,
                                 expand="experiments")
    assert [g.key for g in page.items] == ["lst-b", "lst-d", "lst-c"] and page.total_count == 4
    assert all(g.experiments == [] and g.experiment_count is None for g in page.items)
    hrefs = {name: link.href for name, link in page.links.items()}
    assert hrefs["parent"] == "/api/v2/projects/default"
    assert "offset=1" in hrefs["self"] and "limit=3" in hrefs["self"] and "sort=name" in hrefs["self"]
    assert "offset=0" in hrefs["prev"] and "next" not in hrefs
    # Following `next` walks the same selection.
    first = env.http("GET", BASE.format("default"), params={"filter": "query equals 'lst'", "limit": 2}).json()
    following = env.http("GET", first["_links"]["next"]["href"]).json()
    assert [g["key"] for g in first["items"] + following["items"]] == ["lst-b", "lst-a", "lst-c", "lst-d"]
    assert api.get_metric_groups("default", filter="query equals 'lst'", limit=50).total_count == 4


@pytest.mark.parametrize("params, names", [
    ({"limit": "51"}, "limit"), ({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"), ({"offset": "-1"}, "offset"),
    ({"sort": "popularity"}, "sort"), ({"expand": "members"}, "expand"),
    ({"filter": "query equals 'x' and colour equals 'red'"}, "colour equals 'red'"),
    ({"filter": "kind equals 'weekly'"}, "kind equals 'weekly'"),
    ({"filter": "kind contains 'fun'"}, "kind contains 'fun'"),
    ({"filter": "query equals 'unclosed"}, "query equals 'unclosed"),
    ({"filter": "query equals 'a' or kind equals 'funnel'"}, "query equals 'a'"),
    ({"filter": "experimentStatus equals 'paused'"}, "experimentStatus equals 'paused'"),
    ({"filter": "hasConnections equals 'maybe'"}, "hasConnections equals 'maybe'"),
])
def test_list_rejects_what_it_cannot_answer(env, params, names):
    message = _error(env.http("GET", BASE.format("default"), params=params), 400, "invalid_request")
    assert names in message


def test_list_errors_reach_the_client_models(env):
    with pytest.raises(BadRequestException) as e:
        env.api().get_metric_groups("default", limit=51)
    assert isinstance(e.value.data, InvalidRequestErrorRep) and "limit" in e.value.data.message


@pytest.fixture(scope="module")
def one_group(env) -> str:
    env.api().create_metric_group("default", _post("get-one", "Get one"))
    return "get-one"


@pytest.mark.parametrize("params", [
    {"expand": "members"}, {"expand": "experiments,"}, {"expand": ["experiments", "experimentCount"]},  # twice
])
def test_get_one_rejects_what_it_cannot_answer(env, one_group, params):
    path = BASE.format("default") + f"/{one_group}"
    assert "expand" in _error(env.http("GET", path, params=params), 400, "invalid_request")
    with pytest.raises(BadRequestException) as e:
        env.api().get_metric_group("default", one_group, expand="experiments,members")
    assert isinstance(e.value.data, InvalidRequestErrorRep) and "members" in e.value.data.message


@pytest.mark.parametrize("key", ["a" * 3000, "no such group", "..", "%2e%2e", "%00", "é", "-"])
def test_every_operation_on_a_group_that_cannot_exist_is_404(env, key):
    """Keys no group can have (too long, spaces, dots, NUL, ...) are simply not found, on every operation."""
    path = BASE.format("default") + "/" + key
    for method, body in (("GET", None), ("PATCH", []), ("DELETE", None)):
        _error(env.http(method, path, json=body), 404, "not_found")
    assert env.server.alive()


# --- create --------------------------------------------------------------------------------------------------

def _group_count(env) -> int:
    return env.api().get_metric_groups("default", limit=1).total_count


def test_create_validates_against_the_store(env):
    api = env.api()
    count = _group_count(env)
    with pytest.raises(BadRequestException) as e:
        api.create_metric_group("default", _post("bad-metric", "x", metrics=("cpu.usage", "no.such.metric")))
    assert "no.such.metric" in e.value.data.message and "metrics[1]" in e.value.data.message
    with pytest.raises(NotFoundException):
        api.get_metric_group("default", "bad-metric")

    api.create_metric_group("default", _post("dup", "First"))
    with pytest.raises(ConflictException) as e:
        api.create_metric_group("default", _post("dup", "Second"))
    assert e.value.status == 409 and json.loads(e.value.body)["code"] == "conflict"
    assert api.get_metric_group("default", "dup").name == "First"
    assert _group_count(env) == count + 1


def _body(**changes) -> dict:
    body = {"key": "raw-group", "name": "Raw group", "kind": "funnel", "maintainerId": "m-9", "tags": [],
            "metrics": [{"key": "cpu.usage", "nameInGroup": "cpu"}]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize("body, names", [
    (_body(metrics=[{"key": "cpu.usage"}]), "metrics[0].nameInGroup"),  # funnels need nameInGroup
    (_body(kind="weekly"), "kind"),
    (_body(name=""), "name"),
    (_body(name=...), "name"),
    (_body(tags=...), "tags"),
    (_body(maintainerId=...), "maintainerId"),
    (_body(tags=[1]), "tags[0]"),
    (_body(metrics=[]), "metrics"),
    (_body(metrics="cpu.usage"), "metrics"),
    (_body(metrics=[{"key": "cpu.usage", "nameInGroup": "a"}, {"key": "cpu.usage", "nameInGroup": "b"}]),
     "metrics[1].key"),
    (_body(key="has space"), "key"),
    (_body(key=None), "key"),
    (_body(key=..., name="!!!"), "key"),
    ([_body()], "JSON object"),
])
def test_create_rejects_invalid_bodies(env, body, names):
    count = _group_count(env)
    message = _error(env.http("POST", BASE.format("default"), json=body), 400, "invalid_request")
    assert names in message
    assert _group_count(env) == count


def test_create_edge_bodies(env):
    # Not JSON, nested too deeply, too large: 400 / 400 / 413, nothing stored, the server still answers.
    count = _group_count(env)
    _error(env.http("POST", BASE.format("default"), content=b"{not json"), 400, "invalid_request")
    _error(env.http("POST", BASE.format("default"), content=b"[" * 100_000), 400, "invalid_request")
    _error(env.http("POST", BASE.format("default"), content=b" " * (2 << 20)), 413, "payload_too_large")
    assert _group_count(env) == count
    # Older clients omit the key: a slug of the name. A standard group needs no nameInGroup.
    r = env.http("POST", BASE.format("default"), json=_body(key=..., name="My Standard Group!", kind="standard",
                                                              metrics=[{"key": "latency"}]))
    assert r.status_code == 201, r.text
    group = MetricGroupRep.from_json(r.text)
    assert group.key == "my-standard-group" and group.metrics[0].name_in_group is None


# --- patch ---------------------------------------------------------------------------------------------------

@pytest.fixture
def group(env):
    api = env.api()
    key = f"patch-{time.time_ns()}"
    api.create_metric_group("default", _post(key, "Patch me"))
    return key


@pytest.mark.parametrize("ops, names", [
    ([("test", "/name", "Other")], "test failed"),
    ([("replace", "/_version", 7)], "_version"),
    ([("replace", "/_creationDate", 1)], "_creationDate"),
    ([("remove", "/_links")], "_links"),
    ([("add", "/_site", {"href": "x"})], "_site"),
    ([("replace", "/key", "renamed")], "key"),
    ([("add", "/colour", "red")], "colour"),
    ([("replace", "/kind", "weekly")], "kind"),
    ([("replace", "/tags", "one")], "tags"),
    ([("remove", "/metrics/0/nameInGroup")], "metrics[0].nameInGroup"),  # still a funnel
    ([("replace", "/metrics/0/name", "CPU")], "metrics[0].name"),  # comes from the metric
    ([("replace", "/metrics/1/unitAggregationType", "average")], "metrics[1].unitAggregationType"),
    ([("add", "/metrics/-", {"key": "no.such.metric", "nameInGroup": "x"})], "no.such.metric"),
    ([("replace", "/maintainer", {"key": "m-2", "kind": "team"})], "maintainer"),
    ([("replace", "/name", "ok"), ("remove", "/nowhere")], "patch[1]"),  # all or nothing
    ([("replace", "/metrics", [])], "metrics"),
])
def test_patch_rejections_change_nothing(env, group, ops, names):
    api = env.api()
    before = api.get_metric_group("default", group)
    with pytest.raises(BadRequestException) as e:
        api.patch_metric_group("default", group, _ops(*ops))
    assert isinstance(e.value.data, InvalidRequestErrorRep) and names in e.value.data.message, e.value.data
    assert api.get_metric_group("default", group) == before


def test_patch_stale_version_and_edge_bodies(env, group):
    api = env.api()
    api.patch_metric_group("default", group, _ops(("replace", "/name", "v2")))
    with pytest.raises(ConflictException) as e:
        api.patch_metric_group("default", group, _ops(("test", "/_version", 1), ("replace", "/name", "lost")))
    assert '"optimistic_locking_error"' in e.value.body
    path = BASE.format("default") + f"/{group}"
    _error(env.http("PATCH", path, json=[{"op": "test", "path": "/_version", "value": True}]), 409,
           "optimistic_locking_error")  # true is not the integer 1 or 2
    _error(env.http("PATCH", path, json={"comment": "x", "instructions": [{"kind": "x"}]}), 400, "invalid_request")
    _error(env.http("PATCH", path, json=[{"op": "replace", "path": "/name", "value": "x"}],
                    headers={"Content-Type": "application/json; domain-model=launchdarkly.semanticpatch"}),
           400, "invalid_request")
    _error(env.http("PATCH", path, json=[{"op": "frobnicate", "path": "/name"}]), 400, "invalid_request")
    _error(env.http("PATCH", path, json=[{"op": "add", "path": "/name"}]), 400, "invalid_request")
    _error(env.http("PATCH", path, content=b"[{"), 400, "invalid_request")
    got = api.get_metric_group("default", group)
    assert got.name == "v2" and got.version == 2
    # The maintainer through LaunchDarkly's input name, and a patch that changes nothing keeps the version.
    assert api.patch_metric_group("default", group, _ops(("replace", "/maintainerId", "m-7"))).maintainer.key == "m-7"
    unchanged = api.patch_metric_group("default", group, _ops(("test", "/name", "v2")))
    assert unchanged.version == 3 and unchanged.maintainer.key == "m-7"
    _error(env.http("PATCH", BASE.format("default") + "/no-such-group", json=[]), 404, "not_found")


def test_concurrent_patches_one_wins_nothing_lost(env, group):
    """Eight clients test the same _version at once: exactly one wins, the others get 409; then eight
    patches without a test all apply (each adds a tag): none is lost."""
    barrier = threading.Barrier(8)
    outcomes: list[object] = []

    def contend(i: int) -> None:
        api = env.api()
        barrier.wait()
        try:
            outcomes.append(api.patch_metric_group("default", group, _ops(("test", "/_version", 1),
                                                                          ("replace", "/name", f"winner {i}"))))
        except ApiException as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes if isinstance(o, MetricGroupRep)]
    assert len(wins) == 1 and sorted(o for o in outcomes if isinstance(o, int)) == [409] * 7
    final = env.api().get_metric_group("default", group)
    assert final.version == 2 and final.name == wins[0].name

    def add_tag(i: int) -> None:
        barrier.wait()
        outcomes.append(env.api().patch_metric_group("default", group, _ops(("add", "/tags/-", f"t{i}"))).version)

    outcomes.clear()
    threads = [threading.Thread(target=add_tag, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = env.api().get_metric_group("default", group)
    assert sorted(outcomes) == list(range(3, 11)) and final.version == 10
    assert sorted(final.tags) == sorted(["checkout"] + [f"t{i}" for i in range(8)])


def test_a_patch_that_doubles_the_group_is_refused(env, group):
    """30 copies of an array into itself would build 2**30 values on the writer's thread: refused at the
    operation that crosses the bound (patch.MAX_ADDED_VALUES), nothing changes, and ingest goes on."""
    path = BASE.format("default") + f"/{group}"
    before = env.http("GET", path).json()
    message = _error(env.http("PATCH", path, json=[{"op": "copy", "from": "/tags", "path": "/tags/-"}] * 30), 400,
                     "invalid_request")
    assert "patch[13] (copy" in message and "more than 20000 values" in message
    assert env.http("GET", path).json() == before
    _send(env.server, mo.gauge("after.doubling", [(mo.base_ns(1), 1.0, {})]))
    assert env.api().create_metric_group("default", _post(f"{group}-after", "After",
                                                          metrics=("after.doubling",))).version == 1


# --- retention ------------------------------------------------------------------------------------------------

def _point_count(server, name: str) -> int:
    """How many points the store holds for `name`, as Flux's metric detail reports them (flux.md)."""
    r = httpx.get(f"{server.http_url}/api/v1/metrics/{name}", headers={"Authorization": f"Bearer {server.admin_key()}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["data_points"]


def test_retention_of_a_member_metric(tmp_path):
    """issue 13 item 6, with the server's own retention: it deletes a metric's expired points, not the metric
    (its series stay in the catalog), so a group that holds the metric shows it exactly as before, and the
    metric can still be put in a new group."""
    server = start_server(tmp_path, {"exporters": {"sqlite": {"retention": {"metrics": "1d",
                                                                            "check_interval": "1s"}}}})
    try:
        _send(server, mo.gauge("expiring", [(mo.base_ns(72), 1.0, {"host": "a"})]))  # 3 days old
        _send(server, mo.gauge("kept", [(mo.base_ns(1), 2.0, {})]))
        config = launchdarkly_api.Configuration(host=server.http_url)
        config.api_key["ApiKey"] = server.admin_key()
        api = MetricsBetaApi(launchdarkly_api.ApiClient(config))
        created = api.create_metric_group("default", _post("with-expiring", "Expiring", metrics=("expiring", "kept")))
        assert created.metrics[0].key == "expiring" and created.metrics[0].unit_aggregation_type == "average"
        deadline = time.monotonic() + 60
        while _point_count(server, "expiring") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _point_count(server, "expiring") == 0 and _point_count(server, "kept") == 1
        assert api.get_metric_group("default", "with-expiring") == created
        assert api.get_metric_groups("default").items[0].metrics == created.metrics
        again = api.create_metric_group("default", _post("expiring-again", "Again", metrics=("expiring",)))
        assert again.metrics[0] == created.metrics[0]
    finally:
        server.stop()


def test_a_metric_whose_series_are_gone_still_renders(env):
    """Should a metric's series ever be deleted (by hand here; retention deletes only points), the group
    keeps each metric's last-known catalog entry and renders the metric from it."""
    api = env.api()
    created = api.create_metric_group("default", _post("keeps-ephemeral", "Keeps", metrics=("ephemeral", "latency")))
    conn = sqlite3.connect(env.server.db, timeout=10)
    try:
        with conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM metric_series WHERE name = 'ephemeral'")]
            assert ids
            for table, column in (("metric_points", "series_id"), ("metric_series_state", "series_id"),
                                  ("metric_series_labels", "series_id"), ("metric_series", "id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({','.join('?' * len(ids))})", ids)
    finally:
        conn.close()
    assert api.get_metric_group("default", "keeps-ephemeral").metrics == created.metrics
    listed = api.get_metric_groups("default", filter="query equals 'keeps-ephemeral'").items
    assert listed[0].metrics == created.metrics
    # Other edits keep it; it cannot be added again to another group (the store no longer has it).
    patched = _patch_with_from(api, "default", "keeps-ephemeral",
                               [{"op": "move", "from": "/metrics/0", "path": "/metrics/1"}])
    assert [m.key for m in patched.metrics] == ["latency", "ephemeral"] and patched.metrics[1] == created.metrics[0]
    with pytest.raises(BadRequestException) as e:
        api.create_metric_group("default", _post("wants-ephemeral", "x", metrics=("ephemeral",)))
    assert "ephemeral" in e.value.data.message


# --- auth, projects, headers -------------------------------------------------------------------------------------

def test_auth_scopes_and_project_isolation(env):
    env.api().create_metric_group("default", _post("private", "Default's group"))
    path = BASE.format("default")
    # LaunchDarkly's raw token, Bearer, and any LD-API-Version (or none).
    assert env.api(bearer=True).get_metric_group("default", "private").key == "private"
    # The project by id as well as by key (README); links name it by key.
    assert env.api().get_metric_group("1", "private").links["self"].href == path + "/private"
    for version in ("beta", "20240415", "20160426", "anything", None):
        headers = {"LD-API-Version": version} if version else {}
        r = env.http("GET", path + "/private", headers=headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")

    # 401 without a key or with a bad one, in the client's error models.
    _error(env.http("GET", path, key=""), 401, "unauthorized")
    with pytest.raises(UnauthorizedException) as e:
        env.api("otl_not-a-real-key").get_metric_groups("default")
    assert e.value.data.code == "unauthorized"

    # A read-only key reads but cannot write: 403, and nothing changes.
    reader = env.api(env.reader)
    assert reader.get_metric_group("default", "private").version == 1
    with pytest.raises(ForbiddenException) as e:
        reader.create_metric_group("default", _post("by-reader", "x"))
    assert e.value.data.code == "forbidden" and "metric_groups:write" in e.value.data.message
    with pytest.raises(ForbiddenException):
        reader.patch_metric_group("default", "private", _ops(("replace", "/name", "x")))
    with pytest.raises(ForbiddenException):
        reader.delete_metric_group("default", "private")
    assert env.api().get_metric_group("default", "private").version == 1

    # Projects: unknown → 404; another project's → 404 (the same answer); groups never cross projects.
    acme = env.api(env.acme)
    for call in (lambda: acme.get_metric_groups("default"), lambda: acme.get_metric_group("default", "private"),
                 lambda: acme.delete_metric_group("default", "private"),
                 lambda: env.api().get_metric_groups("nope"), lambda: env.api().get_metric_groups("acme")):
        with pytest.raises(NotFoundException) as e:
            call()
        assert e.value.data.code == "not_found"
    # acme's groups and metrics are its own: default's group is not found there, default's metrics cannot
    # be grouped there until acme stores one of that name, and the same key then does not clash.
    with pytest.raises(NotFoundException):
        acme.get_metric_group("acme", "private")
    with pytest.raises(BadRequestException):
        acme.create_metric_group("acme", _post("private", "Acme's", metrics=("cpu.usage",)))
    _send_to_acme(env)
    acme.create_metric_group("acme", _post("private", "Acme's", metrics=("cpu.usage",)))
    assert acme.get_metric_groups("acme").total_count == 1
    assert env.api().get_metric_group("default", "private").name == "Default's group"
    env.api().delete_metric_group("default", "private")
    assert acme.get_metric_group("acme", "private").name == "Acme's"

    # 405 in LaunchDarkly's shape; any other /api/v2 path 404s in it too.
    _error(env.http("PUT", path + "/private", json={}), 405, "method_not_allowed")
    _error(env.http("GET", path + "/a%2Fb"), 404, "not_found")
    assert "X-Ratelimit-Route-Remaining" not in env.http("GET", path).headers  # no limit configured


def _send_to_acme(env) -> None:
    request = mo.gauge("cpu.usage", [(mo.base_ns(1), 1.0, {})])
    r = httpx.post(env.url + "/v1/metrics", content=request.SerializeToString(),
                   headers={"Content-Type": "application/x-protobuf", "X-Otelite-Project": "acme"}, timeout=10)
    assert r.status_code == 200, r.text


def test_openapi_document_has_full_schemas(env):
    doc = httpx.get(env.url + "/api/schema/", timeout=10).json()
    collection = doc["paths"]["/api/v2/projects/{projectKey}/metric-groups"]
    item = doc["paths"]["/api/v2/projects/{projectKey}/metric-groups/{metricGroupKey}"]
    assert set(collection) == {"get", "post"} and set(item) == {"get", "patch", "delete"}
    for op in (*collection.values(), *item.values()):
        for status, response in op["responses"].items():
            if status != "204":
                assert response["content"]["application/json"]["schema"]["type"] == "object", (op, status)
    assert collection["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == \
        ["name", "kind", "maintainerId", "tags", "metrics"]
    assert "oneOf" in item["patch"]["requestBody"]["content"]["application/json"]["schema"]
    assert {p["name"] for p in collection["get"]["parameters"]} >= {"filter", "sort", "expand", "limit", "offset"}
    # The statuses each operation can answer (reads: a query budget's 503; any route: the body limit's 413).
    assert "503" in collection["get"]["responses"] and "503" in item["get"]["responses"]
    assert all("413" in op["responses"] for op in (*collection.values(), *item.values()))

    # Live answers carry what the document says they must (the client's models check the types).
    def schema(op: dict, status: str) -> dict:
        return op["responses"][status]["content"]["application/json"]["schema"]

    env.api().create_metric_group("default", _post("documented", "Documented"))
    listed = env.http("GET", BASE.format("default"), params={"expand": "experiments,experimentCount"}).json()
    got = env.http("GET", BASE.format("default") + "/documented").json()
    missing = env.http("GET", BASE.format("default") + "/undocumented").json()
    assert set(schema(collection["get"], "200")["required"]) <= set(listed)
    for group_doc in (got, *listed["items"]):
        assert set(schema(item["get"], "200")["required"]) <= set(group_doc)
        for metric in group_doc["metrics"]:
            assert set(schema(item["get"], "200")["properties"]["metrics"]["items"]["required"]) <= set(metric)
    assert set(schema(item["get"], "404")["required"]) == set(missing)


def test_rate_limit_headers_and_429(tmp_path):
    server = start_server(tmp_path, {"auth": {"rate_limits": {"read": {"requests": 3, "per": "1m"},
                                                              "write": {"requests": 1, "per": "1m"}}}})
    try:
        key, url = server.admin_key(), server.http_url + BASE.format("default")
        headers = {"Authorization": key}
        remaining = []
        for _ in range(3):
            r = httpx.get(url, headers=headers, timeout=10)
            assert r.status_code == 200
            remaining.append(int(r.headers["X-Ratelimit-Route-Remaining"]))
            assert int(r.headers["X-Ratelimit-Reset"]) > time.time() * 1000  # epoch milliseconds
        assert remaining == [2, 1, 0]
        r = httpx.get(url, headers=headers, timeout=10)
        assert _error(r, 429, "rate_limited") and int(r.headers["Retry-After"]) >= 1
        assert r.headers["X-Ratelimit-Route-Remaining"] == "0" and int(r.headers["X-Ratelimit-Reset"]) > 0
        config = launchdarkly_api.Configuration(host=server.http_url)
        config.api_key["ApiKey"] = key
        # Left to itself the client (urllib3) would sleep Retry-After and retry; here it reports the 429.
        config.retries = False
        with pytest.raises(ApiException) as e:
            MetricsBetaApi(launchdarkly_api.ApiClient(config)).get_metric_groups("default")
        assert e.value.status == 429 and isinstance(e.value.data, RateLimitedErrorRep)
        assert e.value.data.code == "rate_limited"
        # Writes have their own class: the first is allowed (and reports 0 left), the next is refused.
        r = httpx.delete(url + "/nothing", headers=headers, timeout=10)
        assert r.status_code == 404 and r.headers["X-Ratelimit-Route-Remaining"] == "0"
        _error(httpx.delete(url + "/nothing", headers=headers, timeout=10), 429, "rate_limited")
        assert server.alive()
    finally:
        server.stop()
