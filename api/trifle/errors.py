"""Trifle's error bodies (trifle.md; Trifle's `TrifleApi.ErrorJSON` and the query controller's 422s).

401 and 403 carry Trifle's fixed details; a 422 is `{"errors": {"status": "error", "error": message,
...extra}}` (e.g. `available_paths`); every other status is `{"errors": {"detail": message}}`.
"""

from __future__ import annotations

import falcon

from otelite.api.errors import ApiError, ErrorShape

BAD_TOKEN = "Bad token"
FORBIDDEN = "Forbidden"


def _render(e: ApiError) -> dict:
    if e.code == "unauthorized":
        return {"errors": {"detail": BAD_TOKEN}}
    if e.code == "forbidden":
        return {"errors": {"detail": FORBIDDEN}}
    if e.status == falcon.HTTP_422:
        return {"errors": {"status": "error", "error": e.message, **e.extra}}
    return {"errors": {"detail": e.message, **e.extra}}


ERRORS = ErrorShape("trifle", _render)


def unprocessable(message: str, **extra) -> ApiError:
    """A 422 as Trifle's query controller answers it."""
    return ApiError(falcon.HTTP_422, "unprocessable", message, extra=extra)
