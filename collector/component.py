"""What a component is, in the OpenTelemetry Collector's shape: a type, a config class with its defaults and
`validate()`, and (for exporters) a factory of pipeline consumers.

Each component keeps its config beside its code (`collector/receivers/otlp/config.py`,
`exporters/sqlite/config.py`, ...) and declares one `Factory`; `collector/components.py` lists the factories
otelite is built with, and `collector/config.py` loads YAML through that registry without knowing any
component's fields. The field helpers below are the vocabulary a config class uses to tell the loader how
a value is written in YAML: by field metadata, never by field name.

This module imports nothing of otelite's at run time, so every component's config can import it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from otelite.collector.pipeline.consumer import Consumer
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry

KINDS = ("receivers", "processors", "exporters")
SIGNALS = ("traces", "metrics")


class InvalidField(ValueError):
    """Raised by a component's `validate()`: `key` is the dotted path inside the component (``synchronous``,
    ``sending_queue.queue_size``); the loader prefixes the component's own path and the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


# --- field metadata: how the loader reads a field from YAML ----------------------------------------------

def duration(default: float) -> Any:
    """Seconds, written as a Go-style duration (``200ms``, ``1h30m``, ``7d``) or a number of seconds."""
    return field(default=default, metadata={"duration": True})


def byte_size(default: int) -> Any:
    """Bytes, written as a number of bytes or with a unit (``1MiB``, ``512KiB``, ``20MB``)."""
    return field(default=default, metadata={"byte_size": True})


def optional_section(cls: type) -> Any:
    """A nested section that may be absent (None). As in the Collector, ``grpc:`` with nothing under it
    enables the section with its defaults."""
    return field(default_factory=cls, metadata={"optional_section": cls})


def section(cls: type, *, when_given: Callable[[], Any] | None = None) -> Any:
    """A nested section, overlaid onto its defaults; with `when_given`, a file that writes the section
    overlays onto ``when_given()`` instead (the otlp receiver: listing protocols enables only those)."""
    metadata = {"when_given": when_given} if when_given is not None else {}
    return field(default_factory=cls, metadata=metadata)


def mapping_of(cls: type) -> Any:
    """A mapping of names to sections of type `cls` (e.g. rate limits per route class)."""
    return field(default_factory=dict, metadata={"mapping_of": cls})


# --- value types shared by component configs ---------------------------------------------------------------

def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4317`` for IPv6) → (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host, _, port_s = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"expected a port number 0-65535 in {text!r}")
    return host or "0.0.0.0", int(port_s)


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int:
    """A byte size: an integer, or a number with a unit B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB
    (powers of 1024), case-insensitive: ``1MiB`` = 1048576."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 1MiB or 1048576, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, got {value}")
        return value
    text = str(value).strip()
    number = text.rstrip("KMGiBkmgib ")
    unit = text[len(number):].strip().lower()
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in _SIZE_UNITS or not amount >= 0 or amount * _SIZE_UNITS[unit] > 2**62:
        raise ValueError(f"expected a size such as 1MiB or 1048576, got {value!r}")
    return int(amount * _SIZE_UNITS[unit])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(key: str, endpoint: str) -> None:
    """For `validate()`: raise InvalidField(key, ...) unless `endpoint` is HOST:PORT."""
    try:
        parse_endpoint(endpoint)
    except ValueError as e:
        raise InvalidField(key, str(e)) from None


# --- factories and the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Host:
    """What an exporter's factory may build its consumer from (the Collector's `component.Host`)."""

    store: "Store"
    telemetry: "Telemetry"


@dataclass(frozen=True)
class Factory:
    """One component type. `config` builds the defaults (a dataclass; optional `validate()` raising
    InvalidField, optional `listeners()` yielding (key, HOST:PORT)).

    Exporters only: `create_consumer(host, component_id, config)` returns the pipeline consumer of one
    configured instance (collector/pipeline/consumer.py), or None for an exporter that consumes nothing
    (the prometheus exporter renders the store at scrape time). `acknowledges`: this exporter's commit
    is what an acknowledgement promises, so every pipeline must include one.
    """

    kind: str  # "receivers", "processors" or "exporters"
    type: str  # the part of a component id before "/": `sqlite` in `sqlite/main`
    config: Callable[[], Any]
    signals: tuple[str, ...] = SIGNALS
    create_consumer: Callable[[Host, str, Any], "Consumer | None"] | None = None
    acknowledges: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown component kind {self.kind!r}")
        if not set(self.signals) <= set(SIGNALS):
            raise ValueError(f"unknown signals in {self.signals!r}")


class Registry:
    """Component type → Factory, per kind. Immutable: `with_factories` returns an extended copy (tests
    register their own components that way; otelite's are listed in collector/components.py)."""

    def __init__(self, factories: Iterable[Factory]) -> None:
        self._by_kind: dict[str, dict[str, Factory]] = {kind: {} for kind in KINDS}
        for f in factories:
            if f.type in self._by_kind[f.kind]:
                raise ValueError(f"two {f.kind} factories for type {f.type!r}")
            self._by_kind[f.kind][f.type] = f

    def get(self, kind: str, component_type: str) -> Factory | None:
        return self._by_kind[kind].get(component_type)

    def types(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def with_factories(self, *factories: Factory) -> "Registry":
        return Registry([*(f for kind in KINDS for f in self._by_kind[kind].values()), *factories])


def component_type(component_id: str) -> str:
    """Collector component ids are ``type[/name]``."""
    return component_id.split("/", 1)[0]
