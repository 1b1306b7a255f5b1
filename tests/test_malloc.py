"""collector/malloc.py: glibc takes the setting; what the environment sets is left alone."""

from __future__ import annotations

import ctypes
import platform

import pytest

from otelite.collector import malloc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_takes_the_setting(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.tune() is True


def test_the_environment_wins(monkeypatch):
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.tune() is True and calls == [(malloc._M_ARENA_MAX, malloc.ARENA_MAX)]
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert malloc.tune() is True and calls == []


def test_without_mallopt_nothing_happens(monkeypatch):
    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert malloc.tune() is False
