"""Pure ASGI middleware: bearer auth, the Host / Origin guard, and request context (id, one log line,
499 for a client that went away, last-resort 500).

All wrap the whole application, so they cover mounted sub-apps (MCP) and WebSocket scopes too.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from talkies.api.errors import envelope
from talkies.netpolicy import HostPolicy, origin_allowed

log = logging.getLogger("talkies.access")
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
AUTH_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/", "/ui"})
AUTH_EXEMPT_PREFIXES = ("/ui/",)  # the playground's page and files: public, they hold no data
PUBLIC_CATALOG_PATHS = frozenset({"/v1/audio/voices", "/v1/audio/models"})
"""GETs that TALKIES_PUBLIC_CATALOG=true lets through without a token (Open WebUI sends none there)."""
HOST_EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes come with whatever Host the orchestrator uses (a pod IP); they read and change nothing."""
METRICS_PATH = "/metrics"
SUBPROTOCOL_TOKEN_PREFIX = "openai-insecure-api-key."
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


def _public(scope: Scope, metrics_public: bool) -> bool:
    path = scope["path"]
    if (
        path in AUTH_EXEMPT_PATHS
        or path.startswith(AUTH_EXEMPT_PREFIXES)
        or (metrics_public and path == METRICS_PATH)
    ):
        return scope["type"] != "http" or scope["method"] in ("GET", "HEAD")
    return False


class BearerAuthMiddleware:
    """Require `Authorization: Bearer <token>` when tokens are configured.

    The scheme is case-insensitive; every configured token is compared in constant time. The probes
    (/healthz, /readyz) and CORS preflights are exempt, and so are GETs of the playground page and
    its files (`/`, `/ui/...`), and /metrics with TALKIES_METRICS_PUBLIC. A WebSocket may carry the token as
    the subprotocol `openai-insecure-api-key.<token>` (browsers); a rejected one is closed with 1008
    before it is accepted (the client sees HTTP 403).
    """

    def __init__(
        self,
        app: ASGIApp,
        tokens: Sequence[str],
        *,
        public_catalog: bool = False,
        metrics_public: bool = False,
    ) -> None:
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.public_catalog = public_catalog
        self.metrics_public = metrics_public

    def _authorized(self, scope: Scope) -> bool:
        header = _header(scope, b"authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = _subprotocol_token(scope)
            if not token:
                return False
        candidate = token.strip().encode()
        ok = False
        for expected in self.tokens:
            ok |= hmac.compare_digest(candidate, expected)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if not self.tokens or kind not in ("http", "websocket") or _public(scope, self.metrics_public):
            await self.app(scope, receive, send)
            return
        if (
            kind == "http"
            and scope["method"] == "OPTIONS"
            and _header(scope, b"access-control-request-method")
        ):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope) or (
            self.public_catalog
            and kind == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"] in PUBLIC_CATALOG_PATHS
        ):
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


def _subprotocol_token(scope: Scope) -> str:
    """A browser cannot set headers on a WebSocket: OpenAI's Realtime clients send the key as the
    subprotocol `openai-insecure-api-key.<token>` instead (docs/realtime.md)."""
    if scope["type"] != "websocket":
        return ""
    for offered in scope.get("subprotocols", ()):
        if offered.startswith(SUBPROTOCOL_TOKEN_PREFIX):
            return str(offered[len(SUBPROTOCOL_TOKEN_PREFIX) :])
    return ""


class HostOriginGuard:
    """DNS-rebinding and cross-site guard.

    `Host` must be one the server answers to (`HostPolicy`: TALKIES_ALLOWED_HOSTS, or the loopback names on a
    loopback bind), else 421: a page on evil.example whose name was re-pointed at 127.0.0.1 still sends
    `Host: evil.example`. A browser `Origin` on a state-changing request (POST, PUT, PATCH, DELETE, and
    WebSocket handshakes, which CORS does not cover) must be listed in TALKIES_CORS_ORIGINS or be the server
    itself, else 403. Clients that are not browsers send no Origin and are not affected.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy, cors_origins: Sequence[str]) -> None:
        self.app = app
        self.policy = policy
        self.cors_origins = tuple(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in HOST_EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if not self.policy.allows(host):
            allowed = ", ".join(self.policy.names)
            message = (
                f"Host {host!r} is not allowed ({self.policy.reason}: this server answers to {allowed}); "
                "add it to TALKIES_ALLOWED_HOSTS"
            )
            await self._refuse(scope, send, 421, message, "misdirected_request")
            return
        origin = _header(scope, b"origin")
        changes_state = kind == "websocket" or scope["method"] in STATE_CHANGING
        if (
            origin is not None
            and changes_state
            and not origin_allowed(
                origin, host_header=host, scheme=_http_scheme(scope), cors_origins=self.cors_origins
            )
        ):
            method = "WebSocket" if kind == "websocket" else scope["method"]
            message = (
                f"Origin {origin!r} may not make {method} requests here; "
                "add it to TALKIES_CORS_ORIGINS to allow that browser origin"
            )
            await self._refuse(scope, send, 403, message, "origin_not_allowed")
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, message: str, code: str) -> None:
        log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope["path"], message)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send_json(send, status, envelope(message, "invalid_request_error", code=code))


def _http_scheme(scope: Scope) -> str:
    scheme = str(scope.get("scheme", "http"))
    return {"ws": "http", "wss": "https"}.get(scheme, scheme)


def normalize_path(path: str) -> str:
    """`/v1/v1/audio/speech` -> `/v1/audio/speech`, `//v1//audio` -> `/v1/audio`: clients disagree on whether
    the base URL carries `/v1`, and a doubled prefix should not be a 404. Only the prefix is touched:
    what follows it (a /v1/files path, say) is left for the route to judge."""
    match = _PREFIX.match(path)
    if match is None:
        return path
    prefix = "/v1/" if "v1" in match.group(0) else "/"
    return prefix + path[match.end() :]


_PREFIX = re.compile(r"^/+(?:v1/+)*")


class PathNormalizeMiddleware:
    """Rewrite a doubled `/v1/v1/` prefix and repeated slashes before routing (and before auth)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = normalize_path(scope["path"])
            if path != scope["path"]:
                # The raw path gets the same prefix fix on its own bytes (the prefix is plain ASCII), so
                # what follows stays exactly as sent: /v1/files reads names from it, undecoded.
                raw = scope.get("raw_path")
                raw = normalize_path(raw.decode("latin-1")).encode("latin-1") if raw else path.encode()
                scope = {**scope, "path": path, "raw_path": raw}
        await self.app(scope, receive, send)


class RequestContextMiddleware:
    """Give each request an id (X-Request-ID, echoed back), log one line when it ends, and answer an
    unexpected exception with the JSON envelope carrying that id instead of a plain-text 500.

    A client that hung up before the last byte of its response (while its upload was read, while it
    waited, or in the middle of a streamed body) is logged as status 499 on that one line: no
    traceback, and no response is attempted. `observe` (the app's metrics) gets the same final status
    and duration."""

    def __init__(self, app: ASGIApp, observe: Callable[[Scope, int, float], None] | None = None) -> None:
        self.app = app
        self.observe = observe

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
        complete = False
        hung_up = False

        async def receive_noting_disconnect() -> Message:
            nonlocal hung_up
            message = await receive()
            if message["type"] == "http.disconnect":
                hung_up = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())],
                }
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive_noting_disconnect, send_with_id)
        except ClientDisconnect:
            hung_up = True  # the client left while its body was being read
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
            if hung_up and not complete:
                status = 499
            elapsed = time.perf_counter() - started
            if self.observe is not None:
                self.observe(scope, status or 500, elapsed)
            log.info(
                "%s %s model=%s status=%s duration_ms=%.1f request_id=%s",
                scope["method"],
                scope["path"],
                state.get("model", "-"),
                status or "-",
                elapsed * 1000,
                request_id,
            )
