"""Web UI render benchmark (issue 18): a 2,000-span trace's waterfall and a 50 × 1,440-point chart, in
headless Chromium (Debian's chromium + chromium-driver) against a live `otelite serve`.
How to run and what was measured: docs/benchmarks.md, "Web UI".

    python bench/ui_render.py [--repeat 7] [--spans 2000]

What it does:
1. Starts a fresh `otelite serve` (temp database, free ports) and sends one trace of `--spans` spans with
   the OpenTelemetry SDK (tests/ui_browser.py: a root, 20 stages, the rest leaves under them, 10 % with an event).
2. Loads /ui/traces/<trace_id> `--repeat` times in one browser (after a warm-up load) and reads the
   page's own measures: `trace:build` (spans → DOM rows) and `trace:render` (spans arrived → rows laid
   out and painted). Baseline, same run: the time the page waited for POST trace/:id (the API).
3. In the same page, draws the chart module (uPlot) with 50 series × 1,440 points `--repeat` times
   (synthetic data: the metrics API caps one query at 10,000 (bucket, group) rows), timing the draw
   and the next frame. Baseline, same run: 1 series × 1,440 points.
Prints medians and the ratios. Not a test: pytest collects only tests/.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench.common import admin_key, free_port  # noqa: E402
from ui_browser import Browser, missing_browser, send_big_trace  # noqa: E402


CHART_JS = """
const [seriesCount, done] = [arguments[0], arguments[arguments.length - 1]];
import('/ui/assets/chart.js').then(({lineChart}) => {
  const n = 1440, start = Math.floor(Date.now() / 1000) - n * 60;
  const times = Array.from({length: n}, (_, i) => start + i * 60);
  const series = Array.from({length: seriesCount}, (_, s) => ({label: 'series ' + s,
    values: Array.from({length: n}, (_, i) => 100 + s * 10 + 20 * Math.sin(i / 30 + s) + Math.random())}));
  const holder = document.createElement('div');
  document.getElementById('main').append(holder);
  const t0 = performance.now();
  const chart = lineChart(holder, {times, series});
  const drawn = performance.now() - t0;
  requestAnimationFrame(() => { const frame = performance.now() - t0; chart.destroy(); holder.remove();
                                done({drawn, frame}); });
}).catch((e) => done({error: String(e)}));
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--spans", type=int, default=2000)
    args = parser.parse_args()
    if missing_browser():
        sys.exit(missing_browser())
    work = Path(tempfile.mkdtemp(prefix="otelite-bench-ui-"))
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    log = open(work / "otelite.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "otelite.collector.cli", "serve", "--db", str(work / "o.db"),
                               "--http-endpoint", f"127.0.0.1:{http_port}", "--grpc-endpoint",
                               f"127.0.0.1:{free_port()}"], stdout=log, stderr=subprocess.STDOUT, cwd=work)
    browser = None
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        key = admin_key(work / "otelite.log")
        trace_id, _ = send_big_trace(f"{url}/v1/traces", time.time_ns() - 60 * 10**9, args.spans, "bench")
        browser = Browser()
        browser.driver.get(f"{url}/ui/")
        browser.driver.execute_script("sessionStorage.setItem('otelite.apiKey', arguments[0])", key)
        fetch, build, render = [], [], []
        for i in range(args.repeat + 1):
            browser.driver.get(f"{url}/ui/traces/{trace_id}")
            rows = browser.wait_for("#waterfall", 60, attribute="data-ready")
            assert rows.get_attribute("data-ready") == str(args.spans), rows.get_attribute("data-ready")
            f, b, r = browser.driver.execute_script("""
                const api = performance.getEntriesByType('resource').filter(e => e.name.includes('/tracing/spans/trace/'));
                const fetched = performance.getEntriesByName('trace:fetched').at(-1).startTime;
                return [fetched - api[0].startTime, performance.getEntriesByName('trace:build').at(-1).duration,
                        performance.getEntriesByName('trace:render').at(-1).duration];""")
            if i:  # the first load warms the browser's caches and JIT
                fetch.append(f), build.append(b), render.append(r)
        one = [browser.driver.execute_async_script(CHART_JS, 1) for _ in range(args.repeat)]
        fifty = [browser.driver.execute_async_script(CHART_JS, 50) for _ in range(args.repeat)]
    finally:
        if browser:
            browser.close()
        server.terminate()
        server.wait(30)
    med = statistics.median
    print(f"machine: {platform.machine()}, {platform.system()} {platform.release()}, python {platform.python_version()}")
    print(f"{args.spans}-span trace, median of {args.repeat} loads:")
    print(f"  API POST trace/:id (all pages, baseline)  {med(fetch):7.0f} ms")
    print(f"  spans → DOM rows (trace:build)           {med(build):7.0f} ms")
    print(f"  spans arrived → painted (trace:render)   {med(render):7.0f} ms   (issue 18 target < 1000 ms; "
          f"{med(render) / med(fetch):.2f} × the API call)")
    d1, d50 = med([r["drawn"] for r in one]), med([r["drawn"] for r in fifty])
    f1, f50 = med([r["frame"] for r in one]), med([r["frame"] for r in fifty])
    print(f"chart, median of {args.repeat} draws:")
    print(f"  1 series × 1,440 points (baseline)  draw {d1:6.1f} ms, next frame {f1:6.1f} ms")
    print(f"  50 series × 1,440 points            draw {d50:6.1f} ms, next frame {f50:6.1f} ms   "
          f"({d50 / max(d1, 0.1):.1f} × the baseline draw)")


if __name__ == "__main__":
    main()
