"""What a REST dialect declares, and what it is given, so that `api/app.py` lists dialects in one place.

A dialect (PostHog tracing, PostHog metrics, the Prometheus scrape, later Flux, Trifle, LaunchDarkly) is
one module or package exporting a `DIALECT`: its routes (each resource carries its `RoutePolicy`, so
scopes are declared beside the resource), its OpenAPI paths, and through its policies an `ErrorShape`
(api/errors.py: how an error body looks in that API and which headers a rate-limit decision adds).
Dialects that share `/api/v1/...` (Flux, Trifle) also claim those paths on `Services.shared_v1`. Adding a dialect
touches its own package, the list in `api/app.py` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from otelite.api.errors import ErrorShape  # noqa: F401 - part of what a dialect declares
from otelite.api.shared_v1 import SharedV1

if TYPE_CHECKING:
    import falcon.asgi

    from otelite.collector.config import Config, RateLimitConfig
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.store.keys import KeyStore
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry


@dataclass(frozen=True)
class Services:
    """The dependencies a dialect's resources may be constructed with (Falcon's create_app habit)."""

    config: "Config"
    store: "Store"
    ingest: "Ingest"
    telemetry: "Telemetry"
    keys: "KeyStore"  # project and key look-ups, used from the event loop's thread only
    # Flux and Trifle claim their /api/v1/... paths here (api/shared_v1.py); app.py mounts them at the end.
    shared_v1: SharedV1 = field(default_factory=SharedV1)


@dataclass(frozen=True)
class Dialect:
    name: str
    add_routes: Callable[["falcon.asgi.App", Services], None]
    openapi_paths: Mapping[str, Any] = field(default_factory=dict)
    # Default limits of the dialect's rate classes (its documented limits); `auth.rate_limits` overrides
    # or disables each (api/ratelimit.py).
    rate_limits: Mapping[str, "RateLimitConfig"] = field(default_factory=dict)
