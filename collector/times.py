"""Times in one place: config durations (and, as the dialects move here, ISO 8601 and relative dates).

Every surface that reads a time or a duration from a user (the config file, the REST dialects) parses it
here, so `-5m` or `30s` mean one thing throughout otelite.
"""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0, "w": 604800.0,
}


def parse_duration(text: str | int | float) -> float:
    """Parse a Go-style duration (``200ms``, ``1h30m``) extended with ``d`` and ``w``, to seconds.

    A bare number is seconds, so ``retention: 3600`` means what it says.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 5s or 7d, got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"duration must not be negative, got {text!r}")
        return float(text)
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"expected a duration such as 5s or 7d, got {text!r}")
    return total
