"""Request bodies of the PostHog APIs, read as Django REST framework reads them (both APIs share this).

PostHog's views read `request.data`, which DRF fills from the body by its parsers (JSONParser,
FormParser, MultiPartParser): a JSON object, or form fields. PostHog's own API docs show
`curl -d query=...`, a form field holding the JSON query. So, after `api.body.read_body` (bounded,
decompressed, read once):

- `application/json` (or any `+json` type): the JSON object; not JSON → 400.
- `application/x-www-form-urlencoded`, `multipart/form-data`: the fields (the last value of a repeated
  field, as `QueryDict.get`); a field whose text is a JSON object, array, `true`, `false` or `null` is that
  value (a form field cannot hold anything else), other text stays text (numbers are read by the field's
  own parser, so a hex trace id is never mistaken for a number). A file part → 400: nothing here reads files.
- no Content-Type, or any other: the body when it parses as a JSON object (clients that forget the header),
  else 415 for a declared type (DRF's UnsupportedMediaType) or 400 when none was declared.
- in every case a `query` given as text holding a JSON object is that object (`query=<json>` as a form
  field, or JSON-in-JSON).

An empty body is `{}`. Anything but an object at the top → 400. Errors are `ApiError`s, rendered in
PostHog's shape by the route's ErrorShape.
"""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import parse_qsl

import falcon
import falcon.media

from otelite.api.body import parse_json, read_body
from otelite.api.errors import ApiError, bad_request

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
MAX_FORM_FIELDS = 100
_MULTIPART = falcon.media.MultipartFormHandler()
_MULTIPART.parse_options.max_body_part_count = MAX_FORM_FIELDS


async def read_posthog_body(req: falcon.asgi.Request) -> dict:
    """The request body as DRF's `request.data` would hold it (module docstring)."""
    return parse_posthog_body(await read_body(req), req.get_header("Content-Type"))


def parse_posthog_body(raw: bytes, content_type: str | None) -> dict:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not raw.strip():
        return {}
    if media == FORM:
        body = _form(raw)
    elif media == MULTIPART:
        body = _multipart(raw, content_type or "")
    elif media == JSON or media.endswith("+json"):
        body = parse_json(raw)
    else:
        body = _sniff_json(raw, media)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object, e.g. {\"query\": {...}}")
    query = body.get("query")
    if isinstance(query, str):
        decoded = _json_value(query)
        if isinstance(decoded, dict):
            body["query"] = decoded
    return body


def _sniff_json(raw: bytes, media: str) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        if media:
            raise ApiError(falcon.HTTP_415, "unsupported_media_type",
                           f"Unsupported media type \"{media}\" in request: send application/json, "
                           f"application/x-www-form-urlencoded or multipart/form-data") from None
        raise bad_request(f"request body is not valid JSON (and no Content-Type says otherwise): {e}") from None
    return value


def _json_value(text: str) -> Any:
    """A form field's text as the JSON it holds when it is an object, array, true, false or null."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[") or stripped in ("true", "false", "null"):
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            return text
    return text


def _fields(pairs: list[tuple[str, str]]) -> dict:
    if len(pairs) > MAX_FORM_FIELDS:
        raise bad_request(f"the form has more than {MAX_FORM_FIELDS} fields")
    return {name: _json_value(value) for name, value in pairs}  # the last of a repeated field wins


def _form(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the form body is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise bad_request(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    return _fields(pairs)


def _multipart(raw: bytes, content_type: str) -> dict:
    pairs = []
    try:
        for part in _MULTIPART.deserialize(io.BytesIO(raw), content_type, len(raw)):
            if part.filename is not None:
                raise bad_request(f"form field {part.name!r} is a file; these endpoints read no files",
                                  attr=part.name)
            pairs.append((part.name or "", part.get_data().decode("utf-8")))
    except falcon.MediaMalformedError as e:
        raise bad_request(f"malformed multipart/form-data body: {e.description or e.title}") from None
    except falcon.HTTPError as e:  # a missing boundary, too many parts, an oversized part
        raise bad_request(f"unreadable multipart/form-data body: {e.description or e.title}") from None
    except UnicodeDecodeError:
        raise bad_request("a multipart form field is not UTF-8 text") from None
    return _fields(pairs)
