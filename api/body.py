"""Reading a REST request body: bounded before and after decompression, read once.

Every REST resource reads its body here (never `req.get_media()` or `req.stream` directly), so no route
buffers more than its limit, a gzip bomb stops at limit + 1 bytes (collector/receivers/compression.py),
and a body that a dispatcher already read to choose a dialect (api/shared_v1.py) is not read twice.

The limit is `api.max_request_body_size` (default 1 MiB) for every route: `BodyLimit`, a middleware of the
app, puts it on `req.context.body_limit` once the route is known and refuses a larger Content-Length
with 413 (in the route's error shape) before any responder runs. A resource that needs another limit
declares `body_limit = <bytes>`; one that reads and bounds its own body in its own protocol's shape (the
OTLP receiver) declares `handles_own_body = True`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import falcon
from falcon.util.uri import parse_query_string

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


class BodyLimit:
    """Middleware: the body limit of the matched route, checked from Content-Length before any responder
    reads (after the auth middleware, so a stranger gets 401 and the error has the route's shape)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit

    async def process_resource(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource,
                               params: dict) -> None:
        if resource is None or getattr(resource, "handles_own_body", False):
            return
        limit = getattr(resource, "body_limit", None) or self._limit
        req.context.body_limit = limit
        if req.content_length is not None and req.content_length > limit:
            raise _too_large(limit)


# A \uD800-\uDFFF escape: JSON allows a lone one, but it is not text (SQLite, UTF-8 and RE2 refuse it).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """JSON text → Python value, or a 400 that says why (never a 500: bad UTF-8, deep nesting, a lone
    surrogate that no later step could encode)."""
    try:
        doc = json.loads(raw)
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        return doc
    except RecursionError:
        raise bad_request(f"{what} is nested too deeply") from None
    except UnicodeEncodeError:
        raise bad_request(f"{what} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text"
                          ) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"{what} is not valid JSON: {e}") from None


async def read_json(req: falcon.asgi.Request, limit: int | None = None, *, empty: Any = None) -> Any:
    """The body as JSON (`empty` when there is no body)."""
    raw = await read_body(req, limit)
    if not raw.strip():
        return empty
    return parse_json(raw)


FORM = "application/x-www-form-urlencoded"


async def read_document(req: falcon.asgi.Request, limit: int | None = None, *, empty: Any = None) -> Any:
    """The body as JSON, or, sent as an HTML form (`curl -d name=value`, Content-Type
    application/x-www-form-urlencoded), as {name: value} (a repeated name: a list of its values)."""
    media = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media != FORM:
        return await read_json(req, limit, empty=empty)
    raw = await read_body(req, limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8") from None
    return parse_query_string(text, keep_blank=True, csv=False) if text.strip() else empty
