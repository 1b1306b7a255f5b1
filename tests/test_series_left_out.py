"""Series rows a decode worker leaves out of a batch (records.SeriesLeftOut): it sent them before, the walker
saw them committed, so the writer needs only their temporalities (collector/pipeline/decode.py, walker.py,
collector/store/writer.py). Real worker processes, real SQLite files, live servers."""

from __future__ import annotations

import asyncio
from array import array

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

from conftest import PipelineHarness
from metrics_otlp import CUMULATIVE, DELTA, MIN, base_ns, counter, gauge, histogram
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.components import BUILTIN
from otelite.collector.config import config_from_mapping
from otelite.collector.normalize.otlp import metrics_to_batch
from otelite.collector.pipeline.decode import note_sent
from otelite.collector.pipeline.ingest import Ingest
from otelite.collector.pipeline.walker import Walker
from otelite.collector.store.points import ReadTransaction, point_rows
from otelite.collector.store.records import SeriesLeftOut, WriteBatch
from otelite.collector.store.store import Store
from otelite.collector.store.writer import SeriesNotStored
from otelite.exporters.sqlite.config import SqliteExporterConfig

T0 = base_ns(3)


def _counter_request(t: int, value: int, temporality: int = CUMULATIVE, hosts: int = 3):
    return counter("requests", [(t, value + i, {"host": f"h{i}"}) for i in range(hosts)], temporality)


def test_a_walk_leaves_out_the_rows_of_series_sent_before():
    req = _counter_request(T0, 5, DELTA)
    whole = metrics_to_batch(req, 1)
    ids = list(whole.series)
    batch = metrics_to_batch(req, 1, rows_sent={ids[0], ids[2], 12345})
    assert list(batch.series) == [ids[1]] and batch.series[ids[1]] == whole.series[ids[1]]
    assert batch.series_left_out.ids.tolist() == [ids[0], ids[2]]
    assert batch.series_left_out.temporalities.tolist() == [DELTA, DELTA]
    assert batch.points == whole.points  # the points all stay
    assert whole.series_left_out is None
    # The worker counts what it sent; bounded: a set that would pass its bound starts again from the batch.
    sent = {12345}
    note_sent(batch, sent, 100)
    assert sent == {ids[1], 12345}
    sent = {1, 2, 3}
    note_sent(whole, sent, 4)
    assert sent == set(ids)


def test_the_walker_lets_a_worker_leave_out_only_series_it_saw_committed():
    body = _counter_request(T0, 1).SerializeToString()
    walker = Walker(1)
    try:
        walker.warm_up()
        first = asyncio.run(walker.metrics(body, 1))
        assert len(first.series) == 3 and first.series_left_out is None
        # The worker has sent these rows, but nothing says they were committed: walked again, whole.
        second = asyncio.run(walker.metrics(body, 1))
        assert second.series == first.series and second.series_left_out is None
        walker.committed(first)
        third = asyncio.run(walker.metrics(body, 1))
        assert third.series == {} and sorted(third.series_left_out.ids) == sorted(first.series)
        assert third.points == first.points
        # Told the store lacked one (writer.SeriesNotStored): whole again.
        walker.forget_committed()
        assert asyncio.run(walker.metrics(body, 1)).series == first.series
        assert asyncio.run(walker.metrics(body, 1, whole=True)).series == first.series
    finally:
        walker.close()


def _store(path) -> Store:
    s = Store(SqliteExporterConfig(path=str(path)), BatchProcessorConfig())
    s.start()
    return s


@pytest.fixture
def store(tmp_path):
    s = _store(tmp_path / "left-out.db")
    yield s
    s.close()


def _query(store: Store, sql: str) -> list[tuple]:
    conn = store.reader()
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _points(store: Store) -> list[tuple]:
    """Every stored point (records.POINT_COLUMNS), in the head or in chunks."""
    conn = store.reader()
    try:
        with ReadTransaction(conn):
            return point_rows(conn, [sid for sid, in conn.execute("SELECT id FROM metric_series")])
    finally:
        conn.close()


class _Everything:
    def __contains__(self, _item) -> bool:
        return True


def _left_out(request) -> WriteBatch:
    """`request`'s rows with every series row left out, as a worker that sent them all before walks it."""
    batch = metrics_to_batch(request, 1, rows_sent=_Everything())
    assert batch.series == {}
    return batch


def test_the_writer_refuses_a_batch_leaving_out_a_series_it_does_not_have(store):
    """Points of a series with no row would be kept under no metric: the batch fails alone with
    SeriesNotStored and nothing of it is stored; a batch with the rows is then stored whole."""
    store.writer.submit(metrics_to_batch(gauge("temp", [(T0, 1.5, {"room": "a"})]), 1)).result(10)
    good = _left_out(gauge("temp", [(T0 + MIN, 2.5, {"room": "a"})]))
    unknown = gauge("temp", [(T0 + MIN, 9.0, {"room": "never-stored"})])
    # Submitted back to back: one group commit, in which the bad batch fails alone.
    futures = [store.writer.submit(good), store.writer.submit(_left_out(unknown))]
    futures[0].result(10)
    with pytest.raises(SeriesNotStored):
        futures[1].result(10)
    assert _query(store, "SELECT count(*) FROM metric_series") == [(1,)]
    assert _query(store, "SELECT value, time_ns FROM metric_series_state") == [(2.5, T0 + MIN)]
    assert [p[4] for p in _points(store)] == [1.5, 2.5]
    store.writer.submit(metrics_to_batch(unknown, 1)).result(10)  # with its row: stored
    assert _query(store, "SELECT count(*) FROM metric_series") == [(2,)]
    assert sorted(p[4] for p in _points(store)) == [1.5, 2.5, 9.0]


def test_a_left_out_series_takes_the_temporality_its_request_gives(tmp_path):
    """The writer keeps each series' temporality from the batch (series_cache.py): a counter that turns
    from cumulative to delta is summed from then on, the same whether its row came along or was left out."""
    requests = [_counter_request(T0, 10, hosts=1), _counter_request(T0 + MIN, 3, DELTA, hosts=1),
                _counter_request(T0 + 2 * MIN, 4, DELTA, hosts=1), _counter_request(T0 + 3 * MIN, 50, hosts=1)]
    states = []
    for leave_out in (False, True):
        store = _store(tmp_path / f"temporality-{leave_out}.db")
        try:
            after = []
            for i, req in enumerate(requests):
                batch = _left_out(req) if leave_out and i else metrics_to_batch(req, 1)
                store.writer.submit(batch).result(10)
                after += _query(store, "SELECT time_ns, value FROM metric_series_state")
            states.append(after)
        finally:
            store.close()
    assert states[0] == states[1]
    # Summed on top of the cumulative value while delta (a series kept as cumulative would read 3, then 4).
    assert [value for _, value in states[1]] == [10, 13, 17, 50]


def test_series_left_out_join_keeps_the_order():
    joined = SeriesLeftOut.join([SeriesLeftOut(array("q", [1, 2]), array("i", [1, 2])),
                                 SeriesLeftOut(array("q", [3]), array("i", [0]))])
    assert (joined.ids.tolist(), joined.temporalities.tolist()) == ([1, 2, 3], [1, 2, 0])


def _requests() -> list:
    """Requests naming the same series again and again, over both transports' bodies: values, a counter
    that turns from cumulative to delta, a new series among known ones, histograms."""
    out = []
    for k in range(6):
        t = T0 + k * MIN
        temporality = CUMULATIVE if k < 3 else DELTA
        out.append(_counter_request(t, 10 * k, temporality, hosts=3 + (k >= 4)))
        out.append(gauge("temp", [(t, 20.0 + k, {"room": "a"}), (t, 30.0 - k, {"room": "b"})]))
        out.append(histogram("latency", [(t, [1.0, 5.0], [k, 1, 2], {"route": "/"})]))
    return out


def _stored(srv) -> tuple:
    return (srv.query("SELECT id, project_id, name, type, unit, description, temporality, is_monotonic, "
                      "resource_id, scope_id, attributes, first_seen_ns FROM metric_series ORDER BY id"),
            srv.query("SELECT * FROM metric_series_state ORDER BY series_id"),
            sorted(srv.point_rows(), key=repr))


def test_a_server_with_decode_workers_stores_what_one_without_them_stores(make_server):
    """The same requests, each sent after the one before was answered (so that later ones leave rows
    out), to a server walking in a worker process and to one walking in its event loop: the same series,
    states and points."""
    with_workers = make_server({"receivers": {"otlp": {"decode_workers": 1,
                                                       "protocols": {"grpc": None, "http": None}}}})
    in_loop = make_server({"receivers": {"otlp": {"decode_workers": 0,
                                                  "protocols": {"grpc": None, "http": None}}}})
    for srv in (with_workers, in_loop):
        with grpc.insecure_channel(srv.grpc_endpoint) as channel:
            stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
            for i, req in enumerate(_requests()):
                if i % 2:
                    stub.Export(req, timeout=10)
                else:
                    r = httpx.post(srv.http_url + "/v1/metrics", content=req.SerializeToString(),
                                   headers={"Content-Type": "application/x-protobuf"})
                    assert r.status_code == 200, r.text
    assert _stored(with_workers) == _stored(in_loop)
    series, states, points = _stored(with_workers)
    assert len(series) == 7 and len(points) == 6 * 3 + 2 + 6 * 2 + 6
    assert "left out of a batch are not stored" not in with_workers.log()  # the writer's guard never fired


def test_ingest_walks_again_whole_a_batch_the_store_refused_for_a_left_out_series(tmp_path):
    """Should the walker believe a series committed that is not (the writer's SeriesNotStored), ingest
    forgets what it believed, walks the request again with every row and stores it: acknowledged once,
    counted accepted once and never refused, its series and points stored."""
    config = config_from_mapping({"exporters": {"sqlite": {"path": str(tmp_path / "ingest.db")}},
                                  "service": {"pipelines": {"metrics": {"receivers": ["otlp"],
                                                                        "exporters": ["sqlite"]}}}},
                                 "left-out.yaml", BUILTIN)
    body = _counter_request(T0, 1).SerializeToString()

    async def run() -> tuple:
        walker = Walker(1)
        walker.warm_up()
        try:
            async with PipelineHarness(config) as h:
                ingest = Ingest(h.pipelines, h.telemetry, walker)
                # The worker sends these rows once; the walker is told, wrongly, that they were committed.
                walker.committed(await walker.metrics(body, 1))
                result = await ingest.export_metrics(body, 1, "http")
                labels = {"receiver": "otlp", "transport": "http"}
                counted = [h.telemetry.registry.get_sample_value(f"otelite_receiver_{n}_metric_points_total",
                                                                 labels) for n in ("accepted", "refused")]
                # What the walker trusts now: series seen committed, from the batch stored whole.
                again = await walker.metrics(body, 1)
                stored = _query(h.store, "SELECT count(*) FROM metric_series"), len(_points(h.store))
                return result, counted, again, *stored
        finally:
            walker.close()

    result, counted, again, series, points = asyncio.run(run())
    assert (result.accepted, result.rejected) == (3, 0)
    assert counted[0] == 3 and not counted[1]
    assert series == [(3,)] and points == 3
    assert again.series == {} and len(again.series_left_out.ids) == 3
