"""Reading a REST request body: bounded before and after decompression, read once.

Every REST resource reads its body here (never `req.get_media()` or `req.stream` directly), so no route
buffers more than its limit, a gzip bomb stops at limit + 1 bytes (collector/receivers/compression.py),
and a body that a dispatcher already read to choose a dialect (api/shared_v1.py) is not read twice.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from otelite.api.errors import ApiError, bad_request
from otelite.collector.receivers.compression import (ENCODINGS, BadCompression, BodyTooLarge, decompress,
                                                      read_limited)

DEFAULT_LIMIT = 1 << 20  # bytes after decompression (issue 10: every REST route, 1 MiB by default)


def _too_large(limit: int) -> ApiError:
    return ApiError(falcon.HTTP_413, "payload_too_large",
                    f"the request body is over the limit of {limit} bytes (after decompression)")


async def read_body(req: falcon.asgi.Request, limit: int | None = None) -> bytes:
    """The decompressed body (b"" when empty). 413 above `limit`, refused from Content-Length before reading;
    415 for an unknown Content-Encoding; 400 for bytes that are not valid data of their encoding."""
    cached = req.context.get("raw_body")
    if cached is not None:
        return cached
    if limit is None:
        limit = req.context.get("body_limit") or DEFAULT_LIMIT
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    encoding = (req.get_header("Content-Encoding") or "identity").strip().lower()
    if encoding not in ENCODINGS:
        raise ApiError(falcon.HTTP_415, "unsupported_media_type",
                       f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    try:
        # The compressed bytes are bounded by the same limit as the decompressed ones.
        body = decompress(await read_limited(req.stream, limit), encoding, limit)
    except BodyTooLarge:
        raise _too_large(limit) from None
    except BadCompression as e:
        raise bad_request(str(e)) from None
    req.context.raw_body = body
    return body


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """JSON text → Python value, or a 400 that says why (never a 500: bad UTF-8, deep nesting)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise bad_request(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"{what} is not valid JSON: {e}") from None


async def read_json(req: falcon.asgi.Request, limit: int | None = None, *, empty: Any = None) -> Any:
    """The body as JSON (`empty` when there is no body)."""
    raw = await read_body(req, limit)
    if not raw.strip():
        return empty
    return parse_json(raw)
