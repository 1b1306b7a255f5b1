"""The trace index's head and its merge (collector/store/spans.py, `RunMerge`) on real SQLite files written by
the real writer: every span is covered by exactly one run in exactly one of the two tables before, during and
after a merge pass, also with spans arriving in the middle of a pass and after a kill -9, and a trace looked
up by its id gives every one of its spans at every step."""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter

from lanes import Lanes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otelite.collector.normalize.otlp import traces_to_batch
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store import tracing as st
from otelite.collector.store.db import connect_reader, connect_writer
from otelite.collector.store.spans import HEAD, RUNS, RunMerge, expire_runs, insert_spans, next_span_id
from otelite.collector.store.store import Store
from otelite.exporters.sqlite.config import CompactionConfig, RetentionConfig, SqliteExporterConfig

T0 = 1_767_225_600 * 10**9


def _request(traces: list[int], seed: int, per_trace: int = 3) -> ExportTraceServiceRequest:
    """`per_trace` spans of each trace number in `traces` (a trace's spans may come in several requests)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "svc"
    ss = rs.scope_spans.add()
    for t in traces:
        for i in range(per_trace):
            sp = ss.spans.add()
            sp.trace_id = t.to_bytes(16, "big")
            sp.span_id = ((seed * 1_000_003 + t) * 31 + i + 1 & (1 << 64) - 1).to_bytes(8, "big")
            sp.name = "op"
            sp.start_time_unix_nano = T0 + seed * 10**6 + i
            sp.end_time_unix_nano = T0 + seed * 10**6 + i + 1000
    return req


def _trace_number(rng: random.Random) -> int:
    # Trace ids spread over the key space (high bytes vary), so a pass's slices each hold some.
    return rng.randrange(1, 400) << 100 | rng.randrange(1 << 32)


def _covering(conn: sqlite3.Connection) -> Counter:
    """span rowid → how many runs of the two tables cover it, for runs whose trace id is the span's."""
    covered: Counter = Counter()
    trace_of = dict(conn.execute("SELECT id, trace_id FROM spans"))
    for table in (RUNS, HEAD):
        for trace_id, lo, hi in conn.execute(f"SELECT trace_id, lo, hi FROM {table}"):
            for i in range(lo, hi + 1):
                if trace_of.get(i) == trace_id:
                    covered[i] += 1
    return covered


def _assert_index_exact(conn: sqlite3.Connection) -> None:
    covered = _covering(conn)
    ids = [i for (i,) in conn.execute("SELECT id FROM spans")]
    assert {i: covered[i] for i in ids} == {i: 1 for i in ids}
    keys = Counter(k for table in (RUNS, HEAD) for k in conn.execute(f"SELECT trace_id, lo FROM {table}"))
    assert set(keys.values()) <= {1}, "a run is in both tables"


def _assert_lookups(conn: sqlite3.Connection, traces: list[bytes]) -> None:
    """Each trace's spans through its runs (tracing.py) against a scan of the spans table."""
    found = st.trace_bounds(conn, 1, traces)
    for t in traces:
        rows = conn.execute("SELECT min(start_ns), max(end_ns) FROM spans NOT INDEXED WHERE trace_id = ?",
                            (t,)).fetchone()
        assert found.get(t) == (rows if rows[0] is not None else None), t.hex()
    ids = conn.execute(f"SELECT count(*) FROM spans AS s WHERE s.id IN ({st.trace_span_ids(len(traces))}) "
                       f"AND s.trace_id IN ({', '.join('?' * len(traces))})", traces * 2).fetchone()[0]
    scan = conn.execute(f"SELECT count(*) FROM spans NOT INDEXED WHERE trace_id IN ({', '.join('?' * len(traces))})",
                        traces).fetchone()[0]
    assert ids == scan


def _merge_all(merge: RunMerge, conn: sqlite3.Connection) -> None:
    """Steps while a merge is due (merge_at=1: until the head is empty), within a bound."""
    for _ in range(10_000):
        if not merge.due():
            return
        merge.step(conn)
    raise AssertionError("the merge never finished")


def _write(path: str, requests: int, rng: random.Random, *, head_runs: int = 10**9, step_rows: int = 20_000) -> Store:
    config = SqliteExporterConfig(path=path, retention=RetentionConfig(traces=0, metrics=0),  # fixed times
                                  compaction=CompactionConfig(step_rows=step_rows, trace_head_runs=head_runs))
    store = Store(config, BatchProcessorConfig())
    store.start()
    futures = []
    for seed in range(requests):
        traces = [_trace_number(rng) for _ in range(rng.randrange(1, 30))]
        futures.append(store.writer.submit(traces_to_batch(_request(traces, seed, rng.randrange(1, 5)), 1)))
    for f in futures:
        f.result(timeout=30)
    return store


def test_a_merge_pass_moves_every_run_once_and_lookups_answer_at_every_step(tmp_path):
    path = str(tmp_path / "runs.db")
    rng = random.Random(16)
    _write(path, 120, rng).close()  # no merge: everything in the head
    conn = connect_writer(path)
    head = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0]
    assert head > 500 and conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0] == 0
    traces = [t for (t,) in conn.execute("SELECT DISTINCT trace_id FROM spans")]
    sample = rng.sample(traces, 60)
    merge = RunMerge(step_rows=97, merge_at=1)
    merge.start(conn)
    assert merge.head_runs == head and merge.due()
    steps, later = 0, 0
    while steps == 0 or merge.in_pass:  # one pass
        assert steps < 1000 and merge.step(conn)
        steps += 1
        if steps % 2 == 0:
            # Spans arriving in the middle of a pass: new traces, and more spans of traces already stored
            # (their new runs land in the head, ahead of the cursor or behind it).
            conn.execute("BEGIN IMMEDIATE")
            more = traces_to_batch(_request(rng.sample([int.from_bytes(t, "big") for t in traces], 5)
                                            + [_trace_number(rng)], 1000 + steps), 1)
            runs = insert_spans(conn, more.spans)
            conn.execute("COMMIT")
            merge.added(runs)
            later += runs
        _assert_index_exact(conn)
        _assert_lookups(conn, sample)
    assert steps >= head // 97
    # What arrived behind the cursor waits in the head for the next pass, and is counted for it.
    left = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0]
    assert 0 < left < later and merge.head_runs == left
    _merge_all(merge, conn)  # the next pass
    assert conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0] == 0
    _assert_index_exact(conn)
    _assert_lookups(conn, sample)
    conn.close()


def test_a_failed_step_moves_nothing_and_the_same_slice_goes_next(tmp_path):
    path = str(tmp_path / "fail.db")
    _write(path, 30, random.Random(2)).close()
    conn = connect_writer(path)
    merge = RunMerge(step_rows=40, merge_at=1)
    merge.start(conn)
    merge.step(conn)
    merge.step(conn)
    before = conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0]
    # The next step fails half way through its transaction (a trigger of this connection only).
    conn.execute(f"CREATE TEMP TRIGGER fail AFTER INSERT ON {RUNS} BEGIN SELECT RAISE(ABORT, 'injected'); END")
    try:
        merge.step(conn)
        raise AssertionError("the step did not fail")
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")  # what the writer does with a background step that raised
    conn.execute("DROP TRIGGER fail")
    assert conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0] == before
    _assert_index_exact(conn)
    assert merge.in_pass and merge.step(conn)
    assert conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0] == before + 40
    _merge_all(merge, conn)
    _assert_index_exact(conn)
    conn.close()


def test_retention_deletes_the_runs_of_deleted_spans_from_both_tables_in_bounded_steps(tmp_path):
    path = str(tmp_path / "expire.db")
    rng = random.Random(8)
    _write(path, 60, rng).close()
    conn = connect_writer(path)
    merge = RunMerge(step_rows=50, merge_at=1)
    merge.start(conn)
    _merge_all(merge, conn)
    conn.close()
    _write(path, 60, rng).close()  # these runs stay in the head
    conn = connect_writer(path)
    merged = conn.execute(f"SELECT max(hi) FROM {RUNS}").fetchone()[0]
    newest = conn.execute("SELECT max(id) FROM spans").fetchone()[0]
    cut = merged + (newest - merged) // 2  # spans before it are deleted (as retention does, oldest first)
    with conn:
        conn.execute("DELETE FROM spans WHERE id < ?", (cut,))
    passes = 0
    more = True
    while more and passes < 10_000:
        with conn:
            more = expire_runs(conn, 7)
        passes += 1
    assert not more and passes > 10
    for table in (RUNS, HEAD):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE hi < ?", (cut,)).fetchone()[0] == 0, table
    assert conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0] > 0  # the runs that still cover spans
    _assert_index_exact(conn)
    # Rowids are never reused, also once every span is gone and only runs remember them (spans.py).
    with conn:
        conn.execute("DELETE FROM spans")
    assert next_span_id(conn) == newest + 1
    conn.close()


def test_the_writer_merges_its_head_between_commits(tmp_path):
    path = str(tmp_path / "live.db")
    store = _write(path, 300, random.Random(5), head_runs=200, step_rows=64)
    merge = store.writer.run_merge
    deadline = time.monotonic() + 30
    while merge.due() and time.monotonic() < deadline:  # the idle writer goes on with its steps
        time.sleep(0.01)
    store.close()
    assert not merge.due() and merge.steps >= 10
    conn = connect_reader(path)
    head = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0]
    merged = conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0]
    assert merged > 2000 and head < 200
    _assert_index_exact(conn)
    traces = [t for (t,) in conn.execute("SELECT DISTINCT trace_id FROM spans ORDER BY random() LIMIT 80")]
    _assert_lookups(conn, traces)
    conn.close()


def test_kill_9_during_merges_keeps_every_acknowledged_span_once_and_findable(tmp_path, make_server):
    path = tmp_path / "kill.db"
    config = {"exporters": {"sqlite": {"retention": {"traces": 0, "metrics": 0},
                                       "compaction": {"step_rows": 40, "trace_head_runs": 60}}}}
    srv = make_server(config=config, db=path)
    rngs = [random.Random(lane) for lane in range(4)]  # request n from lane n % 4: its own trace ids
    lanes = Lanes(srv.http_url + "/v1/traces",
                  lambda n: _request([_trace_number(rngs[n % 4]) for _ in range(8)], n).SerializeToString()).start()
    deadline = time.monotonic() + 30
    merged = head = 0
    while time.monotonic() < deadline:  # merges under way: runs in both tables
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            merged = conn.execute(f"SELECT count(*) FROM {RUNS}").fetchone()[0]
            head = conn.execute(f"SELECT count(*) FROM {HEAD}").fetchone()[0]
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
        if merged > 500 and head > 0:
            break
        time.sleep(0.01)
    srv.kill()
    lanes.stop()
    acked = lanes.acked
    assert merged > 500 and head > 0, "the merges never got going"
    restarted = make_server(config=config, db=path)
    restarted.stop()
    conn = connect_reader(str(path))
    per_request = Counter((start - T0) // 10**6 for (start,) in conn.execute("SELECT start_ns FROM spans"))
    assert acked and {n: per_request[n] for n in acked} == {n: 24 for n in acked}
    assert set(per_request.values()) == {24}  # unacknowledged requests: whole or absent
    _assert_index_exact(conn)
    traces = [t for (t,) in conn.execute("SELECT DISTINCT trace_id FROM spans ORDER BY random() LIMIT 200")]
    _assert_lookups(conn, traces)
    conn.close()
