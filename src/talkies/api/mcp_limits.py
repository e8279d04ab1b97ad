"""The MCP transport's body limit, sized from the upload cap, and an over-limit call answered as a tool error.

`put_file` takes up to `TALKIES_MAX_UPLOAD_BYTES` decoded, so the JSON-RPC body that carries it is about 4/3
of that (base64), plus the envelope. `body_limit()` is that size; the SDK's transport is given it, and
`BodyLimit` reads the body before the SDK does:

- within the limit: the body is replayed to the SDK as it came (the tool itself then refuses decoded
  content over the cap, naming the limit);
- over it: the rest of the body is read and dropped (up to `DRAIN_FACTOR` times the limit, so the client
  is still listening when the answer comes) while `RpcSkeleton` keeps only the request's `id`, `method` and
  tool name, and the answer is the JSON-RPC result of a failed tool call (`isError: true`) naming the
  limit, which an MCP client shows its agent like any other tool error. Past the drain bound, a 413.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENVELOPE_BYTES = 64 * 1024
"""The JSON-RPC envelope around the content: method, ids, the path, other arguments."""
DRAIN_FACTOR = 2
"""An over-limit body is read (and dropped) up to this many times the limit before the answer."""
_KEEP = 256
"""Longest scalar value (id, method, tool name) the skeleton keeps; longer strings are only skipped."""


def body_limit(max_upload_bytes: int) -> int:
    """The largest MCP request body: `max_upload_bytes` as base64 (MIME line breaks, escaped in JSON as
    `\\n`, included), plus the envelope."""
    encoded = 4 * math.ceil(max_upload_bytes / 3)
    return encoded + 2 * math.ceil(encoded / 76) + ENVELOPE_BYTES


class RpcSkeleton:
    """Fed a JSON-RPC request body chunk by chunk, keeps its top-level `id` and `method` and
    `params.name`, in constant memory whatever the size of the other values (long strings are skipped
    with a search for the next quote or backslash, not byte by byte)."""

    def __init__(self) -> None:
        self.stack: list[tuple[str | None, bool]] = []  # (key it sits under, is an object) per container
        self.key: str | None = None  # the key whose value comes next, in the innermost object
        self.expect_key = False
        self.in_string = False
        self.escape = False
        self.text = bytearray()  # the string being read (bounded by _KEEP)
        self.scalar = bytearray()  # the number / literal being read (bounded by _KEEP)
        self.found: dict[str, Any] = {}

    @property
    def done(self) -> bool:
        return len(self.found) == 3

    def feed(self, data: bytes) -> None:
        i, end = 0, len(data)
        while i < end:
            if self.in_string:
                i = self._string_bytes(data, i)
                continue
            self._structural(data[i])
            i += 1

    def _string_bytes(self, data: bytes, i: int) -> int:
        if self.escape:
            self.escape = False
            self._keep(data[i : i + 1])
            return i + 1
        match = _STRING_STOP.search(data, i)
        stop = len(data) if match is None else match.start()
        self._keep(data[i:stop])
        if match is None:
            return stop
        if data[stop] == 0x5C:  # backslash: the next byte is escaped
            self.escape = True
            self._keep(data[stop : stop + 1])
        else:
            self.in_string = False
            self._string_done()
        return stop + 1

    def _keep(self, part: bytes) -> None:
        if len(self.text) <= _KEEP:
            self.text += part[: _KEEP + 1 - len(self.text)]

    def _structural(self, byte: int) -> None:
        if byte == 0x22:  # opening quote
            self._scalar_done()
            self.in_string = True
            self.text.clear()
        elif byte in b"{[":
            self._scalar_done()
            self.stack.append((self.key, byte == 0x7B))
            self.key = None
            self.expect_key = byte == 0x7B
        elif byte in b"}]":
            self._scalar_done()
            if self.stack:
                self.stack.pop()
            self.key = None
            self.expect_key = False
        elif byte == 0x2C:  # comma
            self._scalar_done()
            self.key = None
            self.expect_key = bool(self.stack) and self.stack[-1][1]
        elif byte == 0x3A:  # colon
            self.expect_key = False
        elif byte not in b" \t\r\n" and len(self.scalar) <= _KEEP:
            self.scalar.append(byte)

    def _string_done(self) -> None:
        value = self._decode(bytes(self.text))
        if self.expect_key:
            self.key = value if isinstance(value, str) else None
            self.expect_key = False
        else:
            self._value(value)

    def _scalar_done(self) -> None:
        if self.scalar:
            try:
                value = json.loads(bytes(self.scalar))
            except ValueError:
                value = None
            self._value(value)
            self.scalar.clear()

    def _value(self, value: Any) -> None:
        depth = len(self.stack)
        if depth == 1 and self.stack[0][1] and self.key in ("id", "method"):
            self.found[self.key] = value
        elif depth == 2 and self.stack[1] == ("params", True) and self.key == "name":
            self.found["tool"] = value

    @staticmethod
    def _decode(raw: bytes) -> Any:
        if len(raw) > _KEEP:
            return None
        try:
            return json.loads(b'"' + raw + b'"')
        except ValueError:
            return None


_STRING_STOP = re.compile(rb'["\\]')


def too_large_message(limit: int, max_upload_bytes: int, tool: Any) -> str:
    what = f"the {tool} call" if isinstance(tool, str) else "the request"
    return (
        f"{what} is larger than the MCP body limit ({limit} bytes: TALKIES_MAX_UPLOAD_BYTES = "
        f"{max_upload_bytes} bytes as base64, plus the envelope); stage big files with "
        "PUT /v1/files/{path} over HTTP, or raise TALKIES_MAX_UPLOAD_BYTES"
    )


class BodyLimit:
    """ASGI wrapper of the MCP transport: see the module docstring."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.limit = body_limit(max_upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        trailing: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                trailing = message
                break
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(bytes(body), receive, send)
                return
            if not message.get("more_body", False):
                break
        queued: deque[Message] = deque([{"type": "http.request", "body": bytes(body), "more_body": False}])
        if trailing is not None:
            queued.append(trailing)

        async def replay() -> Message:
            return queued.popleft() if queued else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, head: bytes, receive: Receive, send: Send) -> None:
        skeleton = RpcSkeleton()
        skeleton.feed(head)
        received = len(head)
        complete = False
        while received <= DRAIN_FACTOR * self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            if not skeleton.done:
                skeleton.feed(chunk)
            received += len(chunk)
            if not message.get("more_body", False):
                complete = True
                break
        text = too_large_message(self.limit, self.max_upload_bytes, skeleton.found.get("tool"))
        request_id = skeleton.found.get("id")
        if not complete or request_id is None:
            await _send_json(send, 413, {"detail": text})
            return
        if skeleton.found.get("method") == "tools/call":
            result = {"content": [{"type": "text", "text": text}], "isError": True}
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        else:
            answer = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32600, "message": text}}
        await _send_json(send, 200, answer)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
