"""Request bodies compressed by the sender (gzip, deflate), decompressed within a byte limit.

One implementation for every transport that takes compressed bodies: OTLP/HTTP (otlp.md, "Transports")
and the REST dialects (Trifle::Stats' driver gzips its POSTs). A decompression bomb stops at limit + 1
bytes; it never allocates what it claims to hold.
"""

from __future__ import annotations

import zlib
from typing import Callable

ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")
_CHUNK = 1 << 16


class BodyTooLarge(Exception):
    """More than `limit` bytes after decompression."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes (after decompression)")
        self.limit = limit


class BadCompression(Exception):
    """The bytes are not valid data of the declared Content-Encoding."""


async def read_limited(stream, limit: int, on_read: Callable[[int], None] | None = None) -> bytes:
    """All of an ASGI request stream (anything with `async read(n)`), raising BodyTooLarge as soon as it
    holds more than `limit` bytes: a sender that lies about (or omits) Content-Length is cut off there.
    `on_read(size)` is told the bytes held so far after each chunk (it may raise to stop reading)."""
    chunks, size = [], 0
    while True:
        chunk = await stream.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        if on_read is not None:
            on_read(size)
        chunks.append(chunk)


def decompress(raw: bytes, content_encoding: str, limit: int) -> bytes:
    """`raw` decoded per `content_encoding` (one of ENCODINGS, lower case) to at most `limit` bytes.

    Raises BodyTooLarge or BadCompression."""
    if content_encoding == "identity":
        if len(raw) > limit:
            raise BodyTooLarge(limit)
        return raw
    # wbits 47 = gzip or zlib header; HTTP "deflate" is zlib-wrapped, but raw deflate is seen too.
    if content_encoding in ("gzip", "x-gzip"):
        out = _inflate(raw, 47, limit, members=True)
    else:
        out = _inflate(raw, 15, limit)
        if out is None:
            out = _inflate(raw, -15, limit)
    if out is None:
        raise BadCompression(f"the body is not valid {content_encoding} data")
    return out


def _inflate(raw: bytes, wbits: int, limit: int, members: bool = False) -> bytes | None:
    """Decompress to at most `limit` bytes in all (a bomb stops at limit + 1); None for invalid data.

    With `members`, read every member of a gzip file (RFC 1952 section 2.2: a gzip file is a series of
    members, and Go's gzip.Reader, which the Collector uses, reads them all); bytes after the last member
    that are not another member make the body invalid rather than being silently ignored.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        d = zlib.decompressobj(wbits)
        try:
            part = d.decompress(raw, limit - size + 1)
        except zlib.error:
            return None
        size += len(part)
        if size > limit or d.unconsumed_tail:
            raise BodyTooLarge(limit)
        if not d.eof:
            return None  # truncated
        parts.append(part)
        raw = d.unused_data
        if not raw or not members:
            return b"".join(parts)
