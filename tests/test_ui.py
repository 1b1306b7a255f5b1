"""The web UI's server side (issue 18) against a live server: the app on every /ui/... path with a strict
CSP, its files (gzip, ETag, nothing outside the package), the page weight, and GET /api/whoami (the one
endpoint the UI needed that did not exist). The UI itself in a browser: test_ui_browser.py."""

from __future__ import annotations

import fnmatch
import gzip
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from conftest import start_server
from otelite.api.ui import assets

ROOT = Path(__file__).parent.parent
STATIC = ROOT / "api" / "ui" / "static"
OWN_FILES = [p for p in STATIC.rglob("*") if p.is_file() and "vendor" not in p.parts]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ui"))
    yield server
    if server.alive():
        server.kill()


@pytest.fixture(scope="module")
def open_srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("ui-open"), {"auth": {"mode": "none"}})
    yield server
    if server.alive():
        server.kill()


def csp(resp: httpx.Response) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else ""
            for d in (x.strip() for x in resp.headers["Content-Security-Policy"].split(";")) if d}


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/traces", "/ui/traces/4bf92f3577b34da6a3ce929d0e0e4736",
                                  "/ui/metrics?metric=http.server.duration", "/ui/no/such/page"])
def test_every_ui_path_serves_the_app_with_a_strict_csp(srv, path):
    r = httpx.get(srv.http_url + path)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.content == (STATIC / "index.html").read_bytes()
    policy = csp(r)
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in r.headers["Content-Security-Policy"]
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert "X-Request-Id" in r.headers


def test_index_has_nothing_inline():
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)


def test_no_file_builds_html_from_strings_and_ours_reach_nothing_off_the_machine():
    # The vendored uPlot too: it writes legend labels (attacker-controlled metric labels) with textContent.
    for path in STATIC.rglob("*.js"):
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert banned not in text, f"{path.name} uses {banned}"
    for path in OWN_FILES:
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s'\"<>)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} refers to {urls}"


def test_assets_gzip_etag_and_content_types(srv):
    r = httpx.get(f"{srv.http_url}/ui/assets/app.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["content-encoding"] == "gzip" and r.content == (STATIC / "app.js").read_bytes()
    assert "Content-Security-Policy" in r.headers
    plain = httpx.get(f"{srv.http_url}/ui/assets/app.css", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == (STATIC / "app.css").read_bytes()
    assert plain.headers["content-type"] == "text/css; charset=utf-8"
    again = httpx.get(f"{srv.http_url}/ui/assets/app.css", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    vendor = httpx.get(f"{srv.http_url}/ui/assets/vendor/uPlot.esm.js")
    assert vendor.status_code == 200 and vendor.content.startswith(b"/**") and b"export { uPlot as default }" in vendor.content
    lic = httpx.get(f"{srv.http_url}/ui/assets/vendor/uPlot.LICENSE")
    assert lic.status_code == 200 and lic.text.startswith("The MIT License")
    head = httpx.head(f"{srv.http_url}/ui/traces/abc")
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("path", ["/ui/assets/nope.js", "/ui/assets/../../api/app.py", "/ui/assets/%2e%2e/assets.py",
                                  "/ui/assets/vendor/../../routes.py", "/ui/assets/", "/ui/assets/vendor"])
def test_only_the_packaged_files_are_served(srv, path):
    r = httpx.get(srv.http_url + path)
    if r.status_code == 200:  # a path the client normalised back into /ui/ (not an asset): the app itself
        assert r.content == (STATIC / "index.html").read_bytes()
    else:
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert srv.alive()


def test_wrong_methods_are_refused(srv):
    for method, path in (("POST", "/ui/traces"), ("DELETE", "/ui/assets/app.js"), ("PUT", "/api/whoami")):
        r = httpx.request(method, srv.http_url + path, content=b"{}")
        assert r.status_code == 405, (method, path)


def test_root_redirects_to_the_ui(srv):
    r = httpx.get(srv.http_url + "/")
    assert r.status_code == 302 and r.headers["location"] == "/ui/"


def test_page_weight_under_300_kb_gzip(srv):
    files = assets.load()
    weight = assets.page_weight_gzip(files)
    served = 0
    for name in files:
        if name.rsplit(".", 1)[-1] in ("html", "js", "css"):
            r = httpx.get(f"{srv.http_url}/ui/assets/{name}", headers={"Accept-Encoding": "gzip"})
            assert r.status_code == 200
            served += int(r.headers["content-length"])
            assert len(gzip.compress((STATIC / name).read_bytes(), 9)) == pytest.approx(files[name].gzipped.__len__(), abs=32)
    assert served == weight
    print(f"\npage weight: {weight / 1024:.1f} KB gzip (HTML + JS + CSS)")
    assert weight < 300 * 1024


def test_package_data_ships_every_static_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["otelite.api.ui"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            rel = path.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel


# --- GET /api/whoami --------------------------------------------------------------------------------------

def test_whoami_names_the_keys_project_and_scopes(srv):
    admin = srv.admin_key()
    assert srv.cli("projects", "create", "acme", "--timezone", "Europe/Paris").returncode == 0
    made = srv.cli("keys", "create", "--project", "acme", "--scope", "tracing:read", "--name", "ui")
    key = re.search(r"otl_[A-Za-z0-9_-]+", made.stdout).group(0)
    r = httpx.get(f"{srv.http_url}/api/whoami", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["auth"] == "required" and body["scopes"] == ["tracing:read"]
    assert body["project"]["key"] == "acme" and body["project"]["timezone"] == "Europe/Paris"
    assert body["key"]["name"] == "ui" and body["key"]["display"].startswith("otl_") and key not in r.text
    # The project it names is the one the key can read; the default project stays out of reach.
    pid = body["project"]["id"]
    ok = httpx.get(f"{srv.http_url}/api/projects/{pid}/tracing/spans/service-names", headers={"X-API-Key": key})
    assert ok.status_code == 200
    other = httpx.get(f"{srv.http_url}/api/projects/1/tracing/spans/service-names", headers={"X-API-Key": key})
    assert other.status_code == 404
    # The other header forms work as on every route; the admin key is project default with every scope.
    bare = httpx.get(f"{srv.http_url}/api/whoami", headers={"Authorization": admin}).json()
    assert bare["project"]["key"] == "default" and "metrics:read" in bare["scopes"]


def test_whoami_without_a_valid_key_is_401(srv):
    made = srv.cli("keys", "create", "--project", "default", "--scope", "metrics:read", "--name", "gone")
    key = re.search(r"otl_[A-Za-z0-9_-]+", made.stdout).group(0)
    key_id = re.search(r"id (\d+)", made.stdout)
    listed = srv.cli("keys", "list").stdout
    kid = key_id.group(1) if key_id else re.search(r"^\s*(\d+)\s.*gone", listed, re.M).group(1)
    assert srv.cli("keys", "revoke", kid).returncode == 0
    for headers in ({}, {"Authorization": "Bearer otl_nope"}, {"Authorization": f"Bearer {key}"},
                    {"X-API-Key": ""}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = httpx.get(f"{srv.http_url}/api/whoami", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "unauthorized" and "Traceback" not in r.text
    assert srv.alive()


def test_whoami_with_auth_off(open_srv):
    r = httpx.get(f"{open_srv.http_url}/api/whoami")
    assert r.status_code == 200
    body = r.json()
    assert body == {"auth": "none", "project": {"id": 1, "key": "default", "name": body["project"]["name"],
                                                "timezone": "UTC"},
                    "scopes": ["metrics:read", "metrics:write", "tracing:read", "tracing:write",
                               "metric_groups:write", "ingest"], "key": None}
    assert open_srv.cli("projects", "create", "lab").returncode == 0
    lab = httpx.get(f"{open_srv.http_url}/api/whoami", headers={"X-Otelite-Project": "lab"})
    assert lab.status_code == 200 and lab.json()["project"]["key"] == "lab"
    missing = httpx.get(f"{open_srv.http_url}/api/whoami", headers={"X-Otelite-Project": "nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_whoami_is_in_the_openapi_document(srv):
    doc = httpx.get(f"{srv.http_url}/api/schema/").json()
    op = doc["paths"]["/api/whoami"]["get"]
    # 403: X-Otelite-Project from a remote peer (api/auth.py); 429: rate limits apply to every key.
    assert set(op["responses"]) == {"200", "401", "403", "404", "429"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["required"] == [
        "auth", "project", "scopes", "key"]
    assert "/ui/" in doc["paths"]
