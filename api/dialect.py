"""What a REST dialect declares, and what it is given, so that `api/app.py` lists dialects in one place.

A dialect (PostHog tracing, PostHog metrics, the Prometheus scrape, later Flux, Trifle, LaunchDarkly) is
one module or package exporting a `DIALECT`: its routes (each resource carries its `RoutePolicy`, so
scopes are declared beside the resource), its OpenAPI paths, and through its policies an `ErrorShape`
(how an error body looks in that API and which headers a rate-limit decision adds). Adding a dialect
touches its own package, the list in `api/app.py` and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    import falcon.asgi

    from otelite.api.errors import ApiError
    from otelite.api.ratelimit import Decision
    from otelite.collector.config import Config
    from otelite.collector.pipeline.ingest import Ingest
    from otelite.collector.store.keys import KeyStore
    from otelite.collector.store.store import Store
    from otelite.collector.telemetry import Telemetry


def _no_headers(decision: "Decision") -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class ErrorShape:
    """How one API writes its errors (auth.md: "errors come in each API's own shape")."""

    name: str
    render: Callable[["ApiError"], dict]
    # Headers every rate-limited response of this API carries (LaunchDarkly sends its remaining count on
    # success too); Retry-After is added by the middleware to every 429, whatever the shape.
    rate_limit_headers: Callable[["Decision"], dict[str, str]] = _no_headers


@dataclass(frozen=True)
class Services:
    """The dependencies a dialect's resources may be constructed with (Falcon's create_app habit)."""

    config: "Config"
    store: "Store"
    ingest: "Ingest"
    telemetry: "Telemetry"
    keys: "KeyStore"  # project and key look-ups, used from the event loop's thread only


@dataclass(frozen=True)
class Dialect:
    name: str
    add_routes: Callable[["falcon.asgi.App", Services], None]
    openapi_paths: Mapping[str, Any] = field(default_factory=dict)
