"""Headless Chromium for the web UI's tests and bench/ui_render.py: Debian's chromium + chromium-driver
driven by selenium, plus the checks every browser test needs (which requests left the page, CSP errors).

Chromium is started so that it talks to nothing but the page under test: background networking, component
updates, sync and QUIC are off (without those flags it tries to reach Google, which a closed network
refuses), and every run gets a fresh profile.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("OTELITE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OTELITE_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
                  "--window-size=1440,1000"]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() and os.access(path, os.X_OK)):
            return f"{path} is not installed (apt-get install chromium chromium-driver; .ci/run does)"
    return None


def artifacts_dir() -> Path:
    """Where screenshots go: $OTELITE_TEST_ARTIFACTS, else a folder under the system temp dir (never the repo)."""
    path = Path(os.environ.get("OTELITE_TEST_ARTIFACTS") or Path(tempfile.gettempdir()) / "otelite-test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """One Chromium (and its chromedriver) with a throwaway profile."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="otelite-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        # The CDP network log: every request the page makes, to prove none leaves the machine.
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(60)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def wait_for(self, css: str, timeout: float = 15.0, *, attribute: str | None = None):
        """The first element matching `css` (that has `attribute`, if given), waiting up to `timeout`."""
        from selenium.webdriver.common.by import By

        deadline = time.monotonic() + timeout
        while True:
            found = self.driver.find_elements(By.CSS_SELECTOR, css)
            if found and (attribute is None or found[0].get_attribute(attribute) is not None):
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {css}{f'[{attribute}]' if attribute else ''} after {timeout} s; page text:\n"
                                     + self.driver.find_element(By.TAG_NAME, "body").text[:2000])
            time.sleep(0.05)

    def requested_urls(self) -> list[str]:
        """URLs of every request sent since the last call (CDP Network.requestWillBeSent)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / name
        self.driver.save_screenshot(str(path))
        return path


def send_big_trace(endpoint: str, start_ns: int, n: int = 2000, service: str = "bulk") -> tuple[str, list[str]]:
    """One trace of exactly `n` spans sent with the OpenTelemetry SDK to `endpoint` (OTLP/HTTP /v1/traces):
    a root, 20 stages under it and the other spans as leaves under the stages, 1 µs apart, every tenth
    leaf with an event. Returns the trace id and the span ids in the waterfall's expected (depth-first,
    start-ordered) order."""
    from opentelemetry import trace as otel_trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    stages = 20
    assert n > stages
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=30),
                                                   max_export_batch_size=512))
    tracer = provider.get_tracer("otelite-ui")
    root = tracer.start_span("bulk root", start_time=start_ns)
    order = [root]
    leaves, extra = divmod(n - 1 - stages, stages)
    t = start_ns
    for i in range(stages):
        t += 1000
        stage = tracer.start_span(f"stage {i}", context=otel_trace.set_span_in_context(root), start_time=t)
        order.append(stage)
        for j in range(leaves + (1 if i < extra else 0)):
            t += 1000
            leaf = tracer.start_span(f"step {i}.{j}", context=otel_trace.set_span_in_context(stage), start_time=t,
                                     attributes={"i": i, "j": j})
            if j % 10 == 0:
                leaf.add_event("tick", timestamp=t + 200)
            leaf.end(end_time=t + 500)
            order.append(leaf)
        stage.end(end_time=t + 800)
    root.end(end_time=t + 1000)
    provider.shutdown()
    assert len(order) == n
    return format(root.get_span_context().trace_id, "032x"), [format(s.get_span_context().span_id, "016x") for s in order]
