"""LaunchDarkly's metric groups API (seed 001, metric-groups.md): `DIALECT` for api/app.py."""

from otelite.api.launchdarkly.resources import DIALECT

__all__ = ["DIALECT"]
