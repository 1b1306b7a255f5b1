"""collector/malloc.py: glibc takes the settings; what the environment sets is left alone."""

from __future__ import annotations

import ctypes
import platform

import pytest

from otelite.collector import malloc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_both_settings(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert malloc.tune() is True


def test_the_environment_wins(monkeypatch):
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert malloc.tune() is True
    assert calls == [(malloc._M_MMAP_THRESHOLD, malloc.MMAP_THRESHOLD)]
    calls.clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert malloc.tune() is True and calls == []


def test_without_mallopt_nothing_happens(monkeypatch):
    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert malloc.tune() is False
