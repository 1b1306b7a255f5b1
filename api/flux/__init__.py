"""BrainzLab Flux (seed 003, spec flux.md): ingest of gauges, counters, distributions and sets into the one
store, events, and list/get/query over every metric, under `/flux/api/v1/...` and the `/api/v1/...` paths
shared with Trifle."""

from otelite.api.dialect import Dialect
from otelite.api.flux.common import RATE_LIMITS
from otelite.api.flux.openapi import openapi_paths
from otelite.api.flux.resources import add_routes

DIALECT = Dialect("flux", add_routes, openapi_paths(), RATE_LIMITS)
