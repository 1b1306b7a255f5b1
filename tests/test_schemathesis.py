"""Every operation of the served OpenAPI document, fuzzed by schemathesis (issue 10, item 4).

A live server with an API key and stored traces and metrics (so queries do real work); schemathesis
(the `st` command, from PyPI) loads GET /api/schema/ and runs every operation in it, positive and
negative data, with a fixed seed and a bounded number of examples per operation. The test fails on any
5xx, any status the document does not list for the operation, any undocumented content type, and any
JSON body that does not match its documented schema.

It is generic: it iterates the served document, so an operation a dialect adds (Flux, Trifle,
LaunchDarkly, ...) is fuzzed as soon as its OpenAPI paths are served. A path parameter that names a
project (its name contains `project` or `environment`) is, most of the time, a project that exists,
and `trace_id` a stored trace, so requests get past the 404 to the code behind it; other parameters are
generated from their schemas.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import start_server, trace_request
from metrics_otlp import HOUR, MIN, counter, gauge, histogram

SEED = 20261
# Per operation, positive and negative each. schemathesis' coverage phase (every boundary of every
# schema: ~9,000 cases here) took 2-5 minutes on the 2-core machine, too long for CI; the fuzzing phase
# with 10 examples takes about a minute on a quiet one. One worker: with two, CPython 3.11.7's `ast`
# (which hypothesis uses to describe strategies) failed once with "recursion depth mismatch".
MAX_EXAMPLES = 10
WORKERS = 1
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
PROTOBUF = {"Content-Type": "application/x-protobuf"}
SERVICES = ("checkout", "billing", "search")


def _st() -> str:
    path = Path(sys.executable).with_name("st")
    found = str(path) if path.exists() else shutil.which("st")
    assert found, "schemathesis is missing: pip install -e '.[test]'"
    return found


def _feed(srv) -> list[str]:
    """Traces (a parent and a child per trace, attributes, errors) and metrics of the last hour;
    returns the trace ids."""
    now = time.time_ns()
    trace_ids = []
    for n, service in enumerate(SERVICES):
        req = trace_request(40, seed=n + 1, service=service, start_ns=now - 30 * MIN, with_attribute=True)
        spans = req.resource_spans[0].scope_spans[0].spans
        for i, sp in enumerate(spans):
            a = sp.attributes.add()
            a.key, a.value.string_value = "http.route", ("/checkout", "/search", "/pay")[i % 3]
            sp.end_time_unix_nano = sp.start_time_unix_nano + (i + 1) * 1_000_000
            if i % 7 == 0:
                sp.status.code = 2
            if i % 2:  # every other span is the child of the one before
                sp.trace_id, sp.parent_span_id = spans[i - 1].trace_id, spans[i - 1].span_id
        trace_ids += [sp.trace_id.hex() for sp in spans[::2]]
        r = httpx.post(f"{srv.http_url}/v1/traces", content=req.SerializeToString(), headers=PROTOBUF, timeout=30)
        assert r.status_code == 200, r.text
    start = (now // MIN) * MIN - HOUR
    for n, service in enumerate(SERVICES):
        attrs = [{"http.route": route, "service_name": service} for route in ("/checkout", "/search")]
        points = [(start + i * MIN, a) for i in range(60) for a in attrs]
        for body in (
                gauge("cpu.utilization", [(t, 0.1 * (n + 1) + (t % 7) / 100, a) for t, a in points],
                      resource={"service.name": service}),
                counter("http.server.requests", [(t, 10 * i + n, a) for i, (t, a) in enumerate(points)],
                        resource={"service.name": service}),
                histogram("http.server.duration", [(t, [0.1, 0.5, 1.0], [5, 3, 1 + n, i % 3], a)
                                                   for i, (t, a) in enumerate(points)],
                          resource={"service.name": service})):
            r = httpx.post(f"{srv.http_url}/v1/metrics", content=body.SerializeToString(), headers=PROTOBUF,
                           timeout=30)
            assert r.status_code == 200, r.text
    return trace_ids


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("schemathesis"))
    srv.trace_ids = _feed(srv)
    yield srv
    srv.kill()


def _config(doc: dict, trace_ids: list[str]) -> str:
    """schemathesis.toml: dictionaries of values that exist, bound to the path parameters that name them."""
    names = {p["name"] for ops in doc["paths"].values() for op in ops.values() if isinstance(op, dict)
             for p in op.get("parameters", ()) if p.get("in") == "path"}
    lines = ['[dictionaries.projects]', 'values = ["default", "1"]', '',
             '[dictionaries.traces]', f'values = [{", ".join(repr(t) for t in trace_ids[:5])}]'.replace("'", '"'),
             '', '[parameters]']
    for name in sorted(names):
        if re.search("project|environment", name, re.I):
            lines.append(f'"path.{name}" = {{ dictionary = "projects", probability = 0.9 }}')
        elif name == "trace_id":
            lines.append(f'"path.{name}" = {{ dictionary = "traces", probability = 0.7 }}')
    return "\n".join(lines) + "\n"


def test_every_operation_answers_within_its_documented_contract(fuzzed, tmp_path):
    doc = httpx.get(f"{fuzzed.http_url}/api/schema/", timeout=10).json()
    # Every operation but GET /api/schema/ itself (schemathesis leaves out the document it loaded).
    operations = sum(1 for path, ops in doc["paths"].items() for m in ops
                     if m in ("get", "post", "put", "patch", "delete") and path != "/api/schema/")
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(doc, fuzzed.trace_ids))
    args = [_st(), "--config-file", str(config), "--no-color", "run", f"{fuzzed.http_url}/api/schema/",
            "--checks", ",".join(CHECKS), "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
            "--phases", "examples,fuzzing", "--mode", "all", "--workers", str(WORKERS),
            "--header", f"Authorization: Bearer {fuzzed.admin_key()}", "--suppress-health-check", "all",
            "--request-timeout", "30", "--output-sanitize", "false", "--warnings", "off"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    report = proc.stdout[-30000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, report
    tested = re.search(r"Tested:\s+(\d+)", proc.stdout)
    assert tested and int(tested.group(1)) == operations, report  # every operation of the document
    assert re.search(r"(\d+) generated, \1 passed", proc.stdout), report
    assert fuzzed.alive()
    assert "unhandled error" not in fuzzed.log()  # no 500 hid behind a documented status
