"""collector/osthread.py: the collector's threads carry their names in the OS (Linux), where top, ps and
/proc show them."""

import sys
import threading
import time
from pathlib import Path

import pytest

from otelite.collector import osthread
from otelite.collector.osthread import NamedThread
from otelite.collector.pipeline.batch import BatchProcessorConfig
from otelite.collector.store.store import Store
from otelite.exporters.sqlite.config import SqliteExporterConfig

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_NAME) is Linux's")


def _os_names() -> set[str]:
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}


def test_a_named_thread_takes_its_name_in_the_os_first_15_bytes():
    seen = {}

    def read_own_name():
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = NamedThread(target=read_own_name, name="otelite-a-long-thread-name")
    t.start()
    t.join(10)
    assert seen["comm"] == "otelite-a-long-"  # the kernel keeps 15 bytes


def test_start_returns_once_the_thread_carries_its_name(monkeypatch):
    real = osthread.name_os_thread

    def slow_naming(name):  # (as on a busy machine: the new thread is scheduled late)
        time.sleep(0.3)
        return real(name)

    monkeypatch.setattr(osthread, "name_os_thread", slow_naming)
    stop = threading.Event()
    t = NamedThread(target=stop.wait, name="otelite-slow", daemon=True)
    t.start()
    try:
        assert "otelite-slow" in _os_names()
    finally:
        stop.set()
        t.join(10)


def test_the_store_threads_are_named_in_the_os(tmp_path):
    store = Store(SqliteExporterConfig(path=str(tmp_path / "s.db")), BatchProcessorConfig())
    store.start()
    try:
        assert {"otelite-writer", "otelite-checkpo"} <= _os_names()
    finally:
        store.close()
