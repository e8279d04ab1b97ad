from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from talkies.api.app import create_app
from tests.fakes import FakeFactory
from tests.server import asgi_client

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token-value"


def make_app(make_settings: Any, factory: FakeFactory, token: str = TOKEN, **overrides: Any) -> FastAPI:
    app = create_app(make_settings(auth_token=token, **overrides), engine_factory=factory)

    async def echo_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    sub = Starlette(
        routes=[Route("/ping", lambda r: PlainTextResponse("pong")), WebSocketRoute("/ws", echo_ws)]
    )
    app.mount("/sub", sub)
    return app


async def test_open_when_no_token(make_settings: Any, fake_factory: FakeFactory) -> None:
    async with asgi_client(make_app(make_settings, fake_factory, token="")) as client:
        assert (await client.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer{TOKEN}", "Bearer ", f"Token {TOKEN}"],
)
async def test_rejected(make_settings: Any, fake_factory: FakeFactory, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with asgi_client(make_app(make_settings, fake_factory)) as client:
        response = await client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["error"]["type"] == "authentication_error"
    assert "bearer" in body["detail"].lower()


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_valid_token_any_scheme_case(
    make_settings: Any, fake_factory: FakeFactory, scheme: str
) -> None:
    async with asgi_client(make_app(make_settings, fake_factory)) as client:
        response = await client.get("/api/ps", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200


async def test_several_tokens(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory, token="first-token, second-token")
    async with asgi_client(app) as client:
        for token in ("first-token", "second-token"):
            assert (
                await client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 200
        bad = await client.get("/v1/models", headers={"Authorization": "Bearer first-token, second-token"})
        assert bad.status_code == 401


async def test_healthz_and_preflight_exempt(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory, cors_origins=("http://ui.example",))
    async with asgi_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        preflight = await client.options(
            "/v1/audio/speech",
            headers={"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://ui.example"
        # A plain OPTIONS that is not a preflight is not exempt.
        assert (await client.options("/v1/models")).status_code == 401


async def test_mounted_app_is_covered(make_settings: Any, fake_factory: FakeFactory) -> None:
    async with asgi_client(make_app(make_settings, fake_factory)) as client:
        assert (await client.get("/sub/ping")).status_code == 401
        ok = await client.get("/sub/ping", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.text == "pong"


def test_websocket_rejected_with_1008(make_settings: Any, fake_factory: FakeFactory) -> None:
    app = make_app(make_settings, fake_factory)
    with TestClient(app, base_url="http://localhost") as client:
        with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("ws://localhost/sub/ws"):
            pass
        assert info.value.code == 1008
        with client.websocket_connect(
            "ws://localhost/sub/ws", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            assert ws.receive_text() == "hello"


async def test_websocket_reject_sends_no_http_start() -> None:
    from talkies.api.middleware import BearerAuthMiddleware

    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run for a rejected websocket")

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/mcp", "headers": []}
    await BearerAuthMiddleware(inner, [TOKEN])(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "missing or invalid bearer token"}]
