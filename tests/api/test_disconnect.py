"""A queued request whose client disconnects leaves the model's queue (driven at the ASGI level)."""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from typing import Any

import httpx
import pytest

from talkies.api.app import create_app
from tests.fakes import FakeFactory

pytestmark = pytest.mark.anyio


def _wav_bytes(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x10" * int(16000 * seconds))
    return buf.getvalue()


def _multipart(model: str) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://t/", data={"model": model}, files={"file": ("a.wav", _wav_bytes(), "audio/wav")}
    )
    return request.read(), request.headers["content-type"]


async def _call(app: Any, body: bytes, content_type: str, disconnect: asyncio.Event) -> list[dict[str, Any]]:
    """Run one request; `disconnect` set = the client goes away (after its body was sent)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/audio/transcriptions",
        "raw_path": b"/v1/audio/transcriptions",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    sent_body = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages


async def test_disconnected_client_leaves_the_queue(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    app = create_app(make_settings(max_queue=1), engine_factory=fake_factory)
    pool = app.state.pool
    body, content_type = _multipart("asr-a")
    async with app.router.lifespan_context(app):
        stay, leave = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(_call(app, body, content_type, stay))
        for _ in range(500):
            if fake_factory["asr-a"].active == 1:
                break
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(_call(app, body, content_type, leave))
        for _ in range(500):
            if pool.ps()[0]["queued"] == 1:
                break
            await asyncio.sleep(0.01)
        assert pool.ps()[0]["queued"] == 1
        leave.set()  # the queued client hangs up
        await asyncio.wait_for(queued, 10)
        assert pool.ps()[0]["queued"] == 0
        gate.set()
        first = await asyncio.wait_for(running, 10)
    assert first[0]["status"] == 200
    assert fake_factory["asr-a"].calls == 1  # the abandoned request never reached the engine
