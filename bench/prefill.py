"""Fill a store to scale for the benchmarks (issue 16): `--spans` spans and `--points` metric points, as
fast as possible, in the layout of the otelite whose code runs it.

    python bench/prefill.py --db big.db --spans 10000000 --points 50000000 [--days 7]

It writes what the writer would have written for bench/ingest.py's own requests (the same generator:
1000-span and 1000-point requests of 20 services and 8,000 series), sent over the last `--days` days:

- spans: the normalized rows of the trace templates with fresh trace and span ids and times moved back,
  written by the writer's own `_write` (rowids, trace index, the attribute rollup with its hours moved
  too), several requests per transaction, with the trace-index merge steps the writer would run;
- points: the series, labels and newest points (hence the series state) through the writer's `_write`;
  the history before them straight into the long-term layout, which is what the writer and its
  background steps would have left there:
  - with chunks (this branch): one chunk per metric and hour, built with chunks.py from the template's
    rows (each series' point repeated at its times), as the compactor would have merged them;
  - without (the release before issue 16): the rows into `metric_points` (and its two indexes) by plain
    executemany, as the writer inserted them.

Runs with whichever checkout's `otelite` is importable: to fill a store for the code before this change,
run this file with that checkout's interpreter (bench/ingest.py --server-root does the same).
PRAGMA synchronous=OFF while filling: a bulk load, not acknowledged data.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import (_fresh_point_rows, _fresh_span_rows, build_metric_template,  # noqa: E402
                          build_trace_template)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

HOUR = 3600 * 10**9
DAY = 24 * HOUR
TEMPLATES = 8


def _writer(path: str, bulk: bool = True):
    """The writer of whichever otelite is importable, its connection opened as `start()` would (without its
    thread). `bulk`: synchronous=OFF and a larger cache, for the prefill; else the server's settings."""
    from otelite.collector.pipeline.batch import BatchProcessorConfig
    from otelite.collector.store.db import connect_writer, prepare_database
    from otelite.collector.store.writer import Writer
    from otelite.exporters.sqlite.config import SqliteExporterConfig
    prepare_database(path)
    cfg = SqliteExporterConfig(path=path)
    w = Writer(path, cfg, BatchProcessorConfig(), retention=False)
    if bulk:
        w._conn = connect_writer(path, cache_mib=512)
        w._conn.execute("PRAGMA synchronous=OFF")
    else:
        w._conn = connect_writer(path, synchronous=cfg.synchronous, cache_mib=cfg.cache_mib,
                                 busy_timeout=cfg.busy_timeout)
    if hasattr(w, "compactor"):  # issue 16's writer: head rowids continue past every one used
        from otelite.collector.store.compactor import last_head_id
        w.compactor.start(w._conn)
        w._head_hi = last_head_id(w._conn)
    if hasattr(w, "_appender"):  # points straight into chunks (appender.py)
        w._appender.start(w._conn)
    if hasattr(w, "run_merge"):  # trace-index runs into a head, merged by background steps (spans.py)
        w.run_merge.start(w._conn)
    return w


def _commit(w, batches: list) -> None:
    """What Writer._commit does with a group, minus the futures: one transaction, then the known ids."""
    from otelite.collector.store.writer import _merge
    merged = _merge(batches)
    conn = w._conn
    w._commit_runs = 0
    conn.execute("BEGIN IMMEDIATE")
    ids = w._write(conn, merged)
    conn.execute("COMMIT")
    for new, known in zip(ids, (w._known_resources, w._known_scopes, w._known_series)):
        known.update(new)
    if hasattr(w, "_stored_seen"):
        w._stored_seen.update(w._pending_seen)
    if hasattr(w, "compactor") and merged.points:
        w.compactor.note_commit(conn, getattr(w, "_commit_head_hi", w._head_hi))
    if hasattr(w, "run_merge"):  # the merge steps the writer would run between commits
        w.run_merge.added(w._commit_runs)
        while w.run_merge.due() and w.run_merge.step(conn):
            pass


def measure(path: str, requests: int, per_commit: int) -> dict:
    """Acknowledged-ingest cost of the storage layer alone: `requests` OTLP requests of each signal (bench/ingest.py's
    generator, fresh ids, current times) through the writer's own transaction code, `per_commit` requests per
    group commit, on the database as it is (empty or prefilled). CPU seconds of this process (the work, whatever
    else the machine runs) and wall seconds. With chunks, compacting what was written (head passes and merges)
    is part of the cost and timed too."""
    from otelite.collector.normalize.otlp import metrics_to_batch, traces_to_batch
    now_ns = time.time_ns()
    rng = random.Random(7)
    w = _writer(path, bulk=False)
    out = {}
    for signal in ("traces", "metrics"):
        if signal == "traces":
            base = [traces_to_batch(ExportTraceServiceRequest.FromString(build_trace_template(v, now_ns).data), 1)
                    for v in range(TEMPLATES)]
            batches = [dataclasses.replace(base[k % TEMPLATES], spans=_fresh_span_rows(base[k % TEMPLATES].spans, rng))
                       for k in range(requests)]
            items = sum(len(b.spans) for b in batches)
        else:
            base = [metrics_to_batch(ExportMetricsServiceRequest.FromString(build_metric_template(v, now_ns).data), 1)
                    for v in range(TEMPLATES)]
            # Each request a later scrape of its series (10 ms apart), as a running app sends them.
            batches = [dataclasses.replace(base[k % TEMPLATES], points=_fresh_point_rows(
                base[k % TEMPLATES].points, (k // TEMPLATES) * 10**7)) for k in range(requests)]
            items = sum(len(b.points) for b in batches)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(batches), per_commit):
            _commit(w, batches[i:i + per_commit])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        compaction_cpu = compaction_wall = 0.0
        if signal == "metrics" and hasattr(w, "compactor"):
            from otelite.collector.store.compactor import Compactor
            comp = Compactor(head_max_age=0, head_max_points=100_000)
            comp.start(w._conn)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            while comp.step(w._conn):
                pass
            compaction_cpu, compaction_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        out[signal] = {"items": items, "cpu_s": cpu, "wall_s": wall, "compaction_cpu_s": compaction_cpu,
                       "compaction_wall_s": compaction_wall,
                       "per_cpu_s": items / (cpu + compaction_cpu), "per_wall_s": items / (wall + compaction_wall)}
        print(f"{signal}: {items:,} items; {out[signal]['per_cpu_s']:,.0f}/CPU-s ({cpu:.2f} s + compaction "
              f"{compaction_cpu:.2f} s), {out[signal]['per_wall_s']:,.0f}/wall-s", flush=True)
    w._conn.close()
    return out


def _shift_rollup(counts: dict, hours: int) -> dict:
    return {k[:-1] + (k[-1] + hours,): n for k, n in counts.items()}


def fill_spans(w, n_spans: int, days: float, now_ns: int, per_commit: int = 8) -> None:
    from otelite.collector.normalize.otlp import traces_to_batch
    base = [traces_to_batch(ExportTraceServiceRequest.FromString(build_trace_template(v, now_ns).data), 1)
            for v in range(TEMPLATES)]
    requests = max(1, n_spans // len(base[0].spans))
    rng = random.Random(16)
    span = days * DAY / requests  # request k is sent at now - days + k * span
    t0 = time.monotonic()
    group = []
    for k in range(requests):
        b = base[k % TEMPLATES]
        shift = int(-days * DAY + k * span)
        rows = _fresh_span_rows(b.spans, rng, shift)
        hours = shift // HOUR
        group.append(dataclasses.replace(b, spans=rows, span_attribute_keys=_shift_rollup(b.span_attribute_keys, hours),
                                         span_attribute_values=_shift_rollup(b.span_attribute_values, hours)))
        if len(group) == per_commit or k == requests - 1:
            _commit(w, group)
            group = []
        if k and k % 500 == 0:
            done = k * len(b.spans)
            print(f"  spans: {done:,} in {time.monotonic() - t0:.0f} s ({done / (time.monotonic() - t0):,.0f}/s)",
                  flush=True)
    print(f"spans: {requests * len(base[0].spans):,} in {time.monotonic() - t0:.0f} s", flush=True)


def fill_points(w, n_points: int, days: float, now_ns: int) -> None:
    from otelite.collector.normalize.otlp import metrics_to_batch
    base = [metrics_to_batch(ExportMetricsServiceRequest.FromString(build_metric_template(v, now_ns).data), 1)
            for v in range(TEMPLATES)]
    t0 = time.monotonic()
    # The newest points (and so the series, their labels and their state) as the writer writes them.
    _commit(w, base)
    per_series = max(1, n_points // sum(len(b.points) for b in base) - 1)  # history points of each series
    step = int(days * DAY / per_series)
    try:
        from otelite.collector.store import chunks  # noqa: F401  (the layout with chunks)
    except ImportError:
        _history_rows(w, base, per_series, step)
    else:  # (outside the try: an ImportError in here is a broken script, not the older layout)
        _history_chunks(w, base, per_series, step, now_ns)
    print(f"points: {(per_series + 1) * sum(len(b.points) for b in base):,} in {time.monotonic() - t0:.0f} s",
          flush=True)


def _history_rows(w, base: list, per_series: int, step: int) -> None:
    """The release before chunks: every point a row of metric_points, inserted as its writer did."""
    from otelite.collector.store.records import POINT_COLUMNS
    sql = f"INSERT INTO metric_points ({', '.join(POINT_COLUMNS)}) VALUES ({', '.join('?' * len(POINT_COLUMNS))})"
    conn = w._conn
    t0 = time.monotonic()
    conn.execute("BEGIN")
    for j in range(per_series, 0, -1):  # oldest first, as they would have arrived
        for b in base:
            conn.executemany(sql, _fresh_point_rows(b.points, -j * step))
        if j % 20 == 0:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            if j % 400 == 0:  # about every 3M points
                done = (per_series - j + 1) * sum(len(b.points) for b in base)
                print(f"  points: {done:,} in {time.monotonic() - t0:.0f} s ({done / (time.monotonic() - t0):,.0f}/s)",
                      flush=True)
    conn.execute("COMMIT")


def _history_chunks(w, base: list, per_series: int, step: int, now_ns: int) -> None:
    """This branch: one chunk per metric and hour, as the compactor leaves a closed hour."""
    from otelite.collector.store import chunks
    from otelite.collector.store.compactor import FINAL_LEVEL, SQL_INSERT_CHUNK
    rows_of: dict[tuple, list] = {}
    for b in base:
        for p in b.points:
            s = b.series[p[1]]
            rows_of.setdefault((s[1], s[2], s[3]), []).append(p)
    newest = min(p[3] for b in base for p in b.points)
    oldest = newest - per_series * step
    conn = w._conn
    t0 = time.monotonic()
    conn.execute("BEGIN")
    written = 0
    for (project_id, name, mtype), rows in rows_of.items():
        one = chunks.block_from_rows(mtype, rows).sorted()  # one point per series
        n_series = len(one)
        # Each series' history: points at oldest + j * step (j < per_series), a per-series offset apart.
        offsets = (one.points.series_id % max(step, 1)).astype(np.int64)
        for hour in range(oldest - oldest % HOUR, newest, HOUR):
            first = max(0, -(-(hour - oldest) // step))
            last = min(per_series, -(-(hour + HOUR - oldest) // step))
            k = last - first
            if k <= 0:
                continue
            block = one.take(np.repeat(np.arange(n_series), k))
            times = oldest + (first + np.tile(np.arange(k), n_series)) * step + np.repeat(offsets, k)
            inside = (times >= hour) & (times < hour + HOUR) & (times < newest)
            block = block.take(inside)
            if not len(block):
                continue
            block.points.time = times[inside]
            conn.execute(SQL_INSERT_CHUNK, (project_id, name, mtype, hour, FINAL_LEVEL, 0, len(block),
                                             int(block.points.time.min()), int(block.points.time.max()),
                                             chunks.encode(block)))
            written += len(block)
        conn.execute("COMMIT")
        conn.execute("BEGIN")
        print(f"  points: {written:,} in {time.monotonic() - t0:.0f} s", flush=True)
    conn.execute("COMMIT")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--spans", type=float, default=10e6)
    ap.add_argument("--points", type=float, default=50e6)
    ap.add_argument("--days", type=float, default=7.0, help="how far back the data goes (default 7)")
    ap.add_argument("--measure", type=int, default=0, metavar="REQUESTS",
                    help="instead of filling: time REQUESTS requests of each signal through the writer (see measure)")
    ap.add_argument("--per-commit", type=int, default=4, help="requests per group commit when measuring")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.measure:
        out = measure(args.db, args.measure, args.per_commit)
        if args.json:
            import json
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    now_ns = time.time_ns()
    w = _writer(args.db)
    t0 = time.monotonic()
    if args.spans:
        fill_spans(w, int(args.spans), args.days, now_ns)
    if args.points:
        fill_points(w, int(args.points), args.days, now_ns)
    w._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    w._conn.close()
    print(f"prefilled {args.db} in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
