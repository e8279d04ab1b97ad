"""Find and rewrite the `model` of a request body without re-encoding anything else.

A request for an external server is routed by its `model`, and with `useModelName` that one value is
replaced before the body goes on. Everything else must reach the server byte for byte, and a multipart
upload must stream, so:

- `FormModelFinder` runs python-multipart over the body as it arrives and says when the `model` field
  has been read (the bytes seen so far are kept by the caller, the rest is never looked at);
- `replace_form_model` rewrites that field inside the bytes read so far (the field is the last part
  that ended in them), leaving the envelope, the other parts and their headers exactly as sent;
- `json_model_span` finds the top-level `model` string of a JSON object, so it can be replaced in place.
"""

from __future__ import annotations

import json
import re
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_MODEL_BYTES = 1024
"""A longer `model` value is no model name; the finder stops looking for it."""


class FormModelFinder:
    """Feed multipart chunks; `model` is set (as sent) once the first `model` field has ended."""

    def __init__(self, boundary: bytes) -> None:
        self.model: str | None = None
        self.model_bytes: bytes | None = None
        self._field = bytearray()
        self._value = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._in_model = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = []
        self._value.clear()
        self._in_model = False

    def _header_end(self) -> None:
        self._headers.append((bytes(self._header_field).lower(), bytes(self._header_value)))
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        disposition = dict(self._headers).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        self._in_model = options.get(b"name") == b"model" and b"filename" not in options

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._in_model and self.model is None and len(self._value) <= MAX_MODEL_BYTES:
            self._value.extend(data[start:end])

    def _end(self) -> None:
        if self._in_model and self.model is None:
            self.model_bytes = bytes(self._value)
            self.model = self.model_bytes.decode("utf-8", "replace")

    def feed(self, chunk: bytes) -> bool:
        """Parse `chunk`; True once the model field is known."""
        if self.model is None:
            self._parser.write(chunk)
        return self.model is not None


def form_boundary(content_type: str) -> bytes | None:
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        return None
    return params.get(b"boundary") or None


_PART_HEADERS = re.compile(rb"\r\n\r\n")


def replace_form_model(data: bytes, boundary: bytes, old: bytes, new: bytes) -> bytes | None:
    """`data` (the body up to and including the end of the first `model` field) with that field's
    value replaced; None when the field cannot be located exactly (the caller then refuses)."""
    delimiter = b"--" + boundary
    start = 0
    while True:
        at = data.find(delimiter, start)
        if at < 0:
            return None
        head_start = at + len(delimiter) + 2  # past "\r\n"
        head_end = data.find(b"\r\n\r\n", head_start)
        if head_end < 0:
            return None
        headers = data[head_start:head_end].split(b"\r\n")
        value_start = head_end + 4
        if _is_model_part(headers):
            value_end = value_start + len(old)
            if data[value_start:value_end] != old or not data.startswith(b"\r\n" + delimiter, value_end):
                return None
            return data[:value_start] + new + data[value_end:]
        start = value_start


def _is_model_part(headers: list[bytes]) -> bool:
    for line in headers:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-disposition":
            _, options = parse_options_header(value.strip())
            return options.get(b"name") == b"model" and b"filename" not in options
    return False


def json_model_span(body: bytes) -> tuple[str, int, int] | None:
    """(model, start, end) of the top-level `"model": "<string>"` value in a JSON object body (the span
    covers the quoted string); None when the body is not such an object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    i = ws.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("{", i):
        return None
    i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
    found: tuple[str, int, int] | None = None
    try:
        while not text.startswith("}", i):
            key, i = decoder.raw_decode(text, i)
            i = ws.match(text, i).end()  # type: ignore[union-attr]
            if not text.startswith(":", i):
                return None
            i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
            value, end = decoder.raw_decode(text, i)
            if key == "model" and isinstance(value, str) and found is None:
                found = (value, len(text[:i].encode()), len(text[:end].encode()))
            i = ws.match(text, end).end()  # type: ignore[union-attr]
            if text.startswith(",", i):
                i = ws.match(text, i + 1).end()  # type: ignore[union-attr]
            elif not text.startswith("}", i):
                return None
    except json.JSONDecodeError:
        return None
    return found


def replace_json_model(body: bytes, span: tuple[str, int, int], new: str) -> bytes:
    _, start, end = span
    return body[:start] + json.dumps(new, ensure_ascii=False).encode() + body[end:]
