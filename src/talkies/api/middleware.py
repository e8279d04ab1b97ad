"""Pure ASGI middleware: bearer auth, and request context (id, one log line, last-resort 500).

Both wrap the whole application, so they cover mounted sub-apps (MCP) and WebSocket scopes too.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from talkies.api.errors import envelope

log = logging.getLogger("talkies.access")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
AUTH_EXEMPT_PATHS = frozenset({"/healthz"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def send_json(
    send: Send, status: int, body: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BearerAuthMiddleware:
    """Require `Authorization: Bearer <token>` when tokens are configured.

    The scheme is case-insensitive; every configured token is compared in constant time. /healthz and
    CORS preflights are exempt. A rejected WebSocket is closed with 1008 before it is accepted.
    """

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    def _authorized(self, scope: Scope) -> bool:
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        candidate = token.strip().encode()
        ok = False
        for expected in self.tokens:
            ok |= hmac.compare_digest(candidate, expected)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if not self.tokens or kind not in ("http", "websocket") or scope["path"] in AUTH_EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if (
            kind == "http"
            and scope["method"] == "OPTIONS"
            and _header(scope, b"access-control-request-method")
        ):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or invalid bearer token"})
            return
        message = "missing or invalid bearer token (send 'Authorization: Bearer <token>')"
        await send_json(
            send,
            401,
            envelope(message, "authentication_error", code="unauthorized"),
            [(b"www-authenticate", b"Bearer")],
        )


class RequestContextMiddleware:
    """Give each request an id (X-Request-ID, echoed back), log one line when it ends, and answer an
    unexpected exception with the JSON envelope carrying that id instead of a plain-text 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _SAFE_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s [request_id=%s]", scope["method"], scope["path"], request_id
            )
            if status == 0:
                status = 500
                body = envelope(
                    f"internal server error (request id {request_id})", "server_error", code="internal_error"
                )
                await send_json(send, 500, body, [(b"x-request-id", request_id.encode())])
        finally:
            log.info(
                "%s %s model=%s status=%s duration_ms=%.1f request_id=%s",
                scope["method"],
                scope["path"],
                state.get("model", "-"),
                status or "-",
                (time.perf_counter() - started) * 1000,
                request_id,
            )
