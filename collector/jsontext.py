"""Compact JSON text: the one encoding of the store's JSON columns (attributes, buckets, events, ...).

`dumps` and `dumps_sorted` give exactly what `json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)`
(`sort_keys=True` for the second) gives, which the stored series fingerprints depend on
(normalize/otlp.py hashes the attribute text): tests/test_jsontext.py compares them on every kind of value.

Why not `JSONEncoder.encode`: it builds its C encoder anew on every call (json/encoder.py, `iterencode`),
about 3 µs that were most of the cost of encoding a small attribute object, and the normalizer encodes one
or two per span and per data point (issue 16's ingest profile). Here the C encoder is built once.

There is no check for circular references (JSONEncoder's `check_circular`): every value encoded is built
from a protobuf message or parsed JSON, which cannot hold a cycle; a cycle would raise RecursionError
instead of ValueError. Without the C accelerator (not CPython), the plain encoder is used.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Callable

__all__ = ["dumps", "dumps_sorted"]


def _compact(sort_keys: bool) -> Callable[[Any], str]:
    plain = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    if c_make_encoder is None:
        return plain.encode
    # The arguments JSONEncoder.iterencode passes for these options (markers None: see the docstring).
    chunks = c_make_encoder(None, plain.default, encode_basestring, None, ":", ",", sort_keys, False, True)
    join = "".join

    def encode(value: Any) -> str:
        return join(chunks(value, 0))

    return encode


dumps = _compact(sort_keys=False)
dumps_sorted = _compact(sort_keys=True)
