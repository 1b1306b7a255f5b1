"""The Trifle dialect (trifle.md): Trifle's metrics API over the one store.

    POST /api/v1/metrics          track / assert nested values        (also /trifle/api/v1/metrics)
    GET  /api/v1/metrics          a key's values per bucket
    POST /api/v1/metrics/query    aggregate / timeline / category

request.py parses, rows.py turns a write into store rows, series.py reads a key's buckets through the
neutral engine, formatters.py computes Trifle's answers, resources.py serves them, errors.py and
openapi.py say how they look.
"""

from otelite.api.dialect import Dialect
from otelite.api.trifle.openapi import OPENAPI_PATHS
from otelite.api.trifle.resources import add_routes

DIALECT = Dialect("trifle", add_routes, OPENAPI_PATHS)
