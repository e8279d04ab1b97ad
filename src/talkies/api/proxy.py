"""Route the audio endpoints' requests for `process` models to their servers (ASGI middleware).

`POST /v1/audio/transcriptions`, `/translations`, `/speech`, `/v1/audio/voices` (JSON or multipart) and
`GET /v1/audio/voices?model=` name their model in the body or the query. This middleware reads just
enough of the body to find it (a multipart upload up to the end of its `model` field, a JSON body whole)
and then either replays what it read to the application (a built-in model: nothing changes) or sends
the request on to the model's server through `ProxyService`: the bytes as the client sent them, except
the `model` value when the entry sets `useModelName`, the rest of an upload streamed as it arrives, and
the server's answer streamed back with its status and headers. A server's 5xx is wrapped in our error
envelope naming the model; everything else is returned as is.

It sits inside the auth and request-context middleware, so auth, the access log and the request id apply;
the upload cap (TALKIES_MAX_UPLOAD_BYTES) is enforced while reading, and the pool's queue and
concurrency limit apply when the model is acquired. It is installed only when the registry has a
`process` model, so a registry without one pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from talkies.api.errors import envelope, error_response
from talkies.api.proxy_bodies import (
    FormModelFinder,
    form_boundary,
    json_model_span,
    replace_form_model,
    replace_json_model,
)
from talkies.api.proxy_headers import request_headers, response_headers
from talkies.api.uploads import FORM_OVERHEAD_BYTES, too_large
from talkies.errors import BadRequestError, ClientDisconnectedError, TalkiesError
from talkies.registry import ModelSpec
from talkies.registry.schema import Modality
from talkies.services.proxy import ProxyService, UpstreamHead

log = logging.getLogger(__name__)

FORM_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/voices"})
JSON_PATHS = frozenset({"/v1/audio/speech", "/v1/audio/voices"})
VOICES_PATH = "/v1/audio/voices"
ROUTED = FORM_PATHS | JSON_PATHS
KIND: dict[str, Modality] = {
    "/v1/audio/transcriptions": "asr",
    "/v1/audio/translations": "asr",
    "/v1/audio/speech": "tts",
    "/v1/audio/voices": "tts",
}
"""Whose default model an empty `model` means on each path."""
MAX_JSON_BYTES = 4 * 1024 * 1024
"""A JSON body larger than this is not looked into (it goes to the application, which answers it)."""
SPILL_BYTES = 1024 * 1024
KEEP_TAIL_BYTES = 256 * 1024
"""Bytes of a form read while looking for `model` kept in memory; older ones go to a temporary file."""
ERROR_EXCERPT_BYTES = 16 * 1024


class _Prefix:
    """The body bytes read while looking for the model: memory, spilling old bytes to a temporary file."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.memory = bytearray()
        self.spill: IO[bytes] | None = None
        self.size = 0

    async def add(self, chunk: bytes) -> None:
        self.memory += chunk
        self.size += len(chunk)
        if len(self.memory) > SPILL_BYTES:
            old = bytes(self.memory[:-KEEP_TAIL_BYTES])
            del self.memory[:-KEEP_TAIL_BYTES]
            if self.spill is None:
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                self.spill = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="proxy-")  # noqa: SIM115 (closed by close())
            await anyio.to_thread.run_sync(self.spill.write, old)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.spill is not None:
            await anyio.to_thread.run_sync(self.spill.seek, 0)
            while block := await anyio.to_thread.run_sync(self.spill.read, SPILL_BYTES):
                yield block
        if self.memory:
            yield bytes(self.memory)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


class ProcessModelRouter:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ROUTED:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._route(scope, receive, tracked_send)
        except TalkiesError as exc:
            if started:
                raise
            await error_response(exc)(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy: ProxyService = scope["app"].state.proxy
        method, path = scope["method"], scope["path"]
        headers = Headers(scope=scope)
        if method == "GET" and path == VOICES_PATH:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            names = [v for k, v in query if k == "model"]
            spec = proxy.process_spec(names[-1] if names else None, KIND[path])
            if spec is None:
                await self.app(scope, receive, send)
                return
            if spec.use_model_name:
                query = [(k, spec.use_model_name if k == "model" else v) for k, v in query]
            _note_model(scope, spec)
            await _forward(proxy, spec, scope, receive, send, query=query, body=None, body_done=None)
            return
        if method != "POST":
            await self.app(scope, receive, send)
            return
        ctype = headers.get("content-type", "")
        boundary = form_boundary(ctype)
        if boundary is not None and path in FORM_PATHS:
            await self._route_form(proxy, boundary, scope, receive, send)
        elif boundary is None and path in JSON_PATHS and "json" in ctype.lower():
            await self._route_json(proxy, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # --- multipart --------------------------------------------------------------------------------------

    async def _route_form(
        self, proxy: ProxyService, boundary: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        settings = proxy.settings
        limit = settings.max_upload_bytes + FORM_OVERHEAD_BYTES
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(settings.max_upload_bytes)
        prefix = _Prefix(settings.data_dir / "tmp")
        try:
            finder = FormModelFinder(boundary)
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnectedError("client disconnected while sending the form")
                chunk = message.get("body", b"")
                more = bool(message.get("more_body", False))
                await prefix.add(chunk)
                if prefix.size > limit:
                    raise too_large(settings.max_upload_bytes)
                try:
                    if finder.feed(chunk):
                        break
                except FormParserError:
                    break  # the application's own reader answers a malformed form
            spec = proxy.process_spec(finder.model, KIND[scope["path"]])
            if spec is None:
                await self.app(scope, _replay(prefix, receive, more), send)
                return
            _note_model(scope, spec)
            if spec.use_model_name and finder.model_bytes is not None:
                new = spec.use_model_name.encode()
                rewritten = replace_form_model(bytes(prefix.memory), boundary, finder.model_bytes, new)
                if rewritten is None:
                    raise BadRequestError(
                        "could not rewrite the form's 'model' field for its server", param="model"
                    )
                delta = len(new) - len(finder.model_bytes)
                prefix.memory = bytearray(rewritten)
            else:
                delta = 0
            length = int(declared) + delta if declared is not None and declared.isdigit() else None
            body_done = asyncio.Event()
            body = _form_body(prefix, receive, more, limit, prefix.size, body_done, settings.max_upload_bytes)
            await _forward(proxy, spec, scope, receive, send, body=body, length=length, body_done=body_done)
        finally:
            prefix.close()

    # --- JSON -------------------------------------------------------------------------------------------

    async def _route_json(self, proxy: ProxyService, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError("client disconnected while sending the body")
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > MAX_JSON_BYTES:
                break
        span = None if more else json_model_span(bytes(body))
        spec = proxy.process_spec(span[0], KIND[scope["path"]]) if span else None
        if spec is None or span is None:
            await self.app(scope, _replay_bytes(bytes(body), receive, more), send)
            return
        _note_model(scope, spec)
        data = bytes(body)
        if spec.use_model_name:
            data = replace_json_model(data, span, spec.use_model_name)
        await _forward(proxy, spec, scope, receive, send, body=data, length=len(data), body_done=None)


def _note_model(scope: Scope, spec: ModelSpec) -> None:
    scope.setdefault("state", {})["model"] = spec.slug


def _replay_bytes(data: bytes, receive: Receive, more: bool) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": more}
        return await receive()

    return replay


def _replay(prefix: _Prefix, receive: Receive, more: bool) -> Receive:
    """A receive channel that gives the bytes already read again, then the rest of the body."""
    chunks = prefix.chunks()
    exhausted = False

    async def replay() -> Message:
        nonlocal exhausted
        if not exhausted:
            chunk = await anext(chunks, None)
            if chunk is not None:
                return {"type": "http.request", "body": chunk, "more_body": True}
            exhausted = True
            if not more:
                return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return replay


async def _form_body(
    prefix: _Prefix,
    receive: Receive,
    more: bool,
    limit: int,
    received: int,
    done: asyncio.Event,
    max_upload: int,
) -> AsyncIterator[bytes]:
    """The form for the server: what was read, then the rest as it arrives (the cap still applies)."""
    async for chunk in prefix.chunks():
        yield chunk
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError("client disconnected while sending the form")
        chunk = message.get("body", b"")
        more = bool(message.get("more_body", False))
        received += len(chunk)
        if received > limit:
            raise too_large(max_upload)
        if chunk:
            yield chunk
    done.set()


def _request_headers(scope: Scope, proxy: ProxyService, length: int | None) -> list[tuple[bytes, bytes]]:
    request_id = scope.get("state", {}).get("request_id")
    return request_headers(
        scope["headers"],
        strip_auth=bool(proxy.settings.auth_tokens),
        length=length,
        request_id=str(request_id) if request_id else None,
    )


async def _forward(
    proxy: ProxyService,
    spec: ModelSpec,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    body: bytes | AsyncIterator[bytes] | None,
    body_done: asyncio.Event | None,
    query: list[tuple[str, str]] | None = None,
    length: int | None = None,
) -> None:
    """Send the request to the model's server and stream its answer back; a client that goes away
    (once its body is read) cancels the exchange."""
    if query is None:
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    headers = _request_headers(scope, proxy, length)
    exchange = asyncio.ensure_future(
        _exchange(proxy, spec, scope, send, body=body, query=query, headers=headers)
    )
    watcher = asyncio.ensure_future(_watch_disconnect(receive, body_done))
    try:
        finished, _ = await asyncio.wait({exchange, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if exchange in finished:
            exchange.result()
            return
        exchange.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await exchange
        log.info("model %s: client went away; the exchange with its server was cancelled", spec.slug)
    finally:
        watcher.cancel()
        if not exchange.done():
            exchange.cancel()


async def _watch_disconnect(receive: Receive, body_done: asyncio.Event | None) -> None:
    if body_done is not None:
        await body_done.wait()  # until then the body reader owns the receive channel
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _exchange(
    proxy: ProxyService,
    spec: ModelSpec,
    scope: Scope,
    send: Send,
    *,
    body: bytes | AsyncIterator[bytes] | None,
    query: list[tuple[str, str]],
    headers: list[tuple[bytes, bytes]],
) -> None:
    head, stream = await proxy.open(
        spec, scope["method"], scope["path"], query=query, headers=headers, body=body
    )
    try:
        if head.status >= 500:
            await _send_wrapped_error(spec, head, stream, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": head.status,
                # our RequestContextMiddleware adds our x-request-id: the client gets one
                "headers": response_headers(head.headers),
            }
        )
        async for chunk in stream:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await _aclose(stream)


async def _send_wrapped_error(
    spec: ModelSpec, head: UpstreamHead, stream: AsyncIterator[bytes], send: Send
) -> None:
    excerpt = bytearray()
    async for chunk in stream:
        excerpt += chunk
        if len(excerpt) >= ERROR_EXCERPT_BYTES:
            break
    text = bytes(excerpt[:ERROR_EXCERPT_BYTES]).decode("utf-8", "replace").strip() or "(empty body)"
    message = f"model {spec.slug!r}: its server answered {head.status}: {text}"
    log.warning("%s", message)
    body = envelope(message, "upstream_error", param="model", code=f"upstream_{head.status}")
    response = error_body(head.status, body)
    for message_out in response:
        await send(message_out)


def error_body(status: int, body: dict[str, Any]) -> list[Message]:
    payload = json.dumps(body).encode()
    return [
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        },
        {"type": "http.response.body", "body": payload, "more_body": False},
    ]


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
