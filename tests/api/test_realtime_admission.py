"""Realtime turns are admitted by the pool like any request: with the model busy and its queue full, a
committed turn gets `...failed` and an `error` event (code `queue_full`) at once, not a wait, and the
socket stays usable; the same turn goes through once the model is free. Fake engines (API shape only),
a real uvicorn socket."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from talkies.api.app import create_app
from tests.fakes import FakeFactory
from tests.server import serve

MANUAL = {
    "type": "session.update",
    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
}
HALF_SECOND = base64.b64encode(bytes(24_000)).decode()  # 0.5 s of 24 kHz PCM16 silence
FAILED = "conversation.item.input_audio_transcription.failed"
COMPLETED = "conversation.item.input_audio_transcription.completed"


async def _next(ws: ClientConnection, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            event = json.loads(await ws.recv())
            if match(event):
                return event


async def _commit_turn(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": HALF_SECOND}))
    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))


async def _wait_active(behaviour: Any) -> None:
    async with asyncio.timeout(60):
        while behaviour.active == 0:  # noqa: ASYNC110 (an engine thread changes it)
            await asyncio.sleep(0.01)


def test_a_full_queue_is_an_error_event_not_a_hang(make_settings: Any, fake_factory: FakeFactory) -> None:
    gate = threading.Event()
    fake_factory["asr-a"].gate = gate
    app = create_app(make_settings(max_queue=0, realtime_delta_interval_ms=0), engine_factory=fake_factory)

    async def run(base: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        url = base.replace("http", "ws") + "/v1/realtime?intent=transcription&model=asr-a"
        async with connect(url, proxy=None) as first, connect(url, proxy=None) as second:
            for ws in (first, second):
                await ws.send(json.dumps(MANUAL))
                await _next(ws, lambda e: e["type"] == "session.updated")
            await _commit_turn(first)
            await _wait_active(fake_factory["asr-a"])  # the first turn holds the model
            await _commit_turn(second)
            failed = await _next(second, lambda e: e["type"] == FAILED)
            error = await _next(second, lambda e: e["type"] == "error")
            gate.set()
            done = await _next(first, lambda e: e["type"] == COMPLETED)
            await _commit_turn(second)  # the same socket, the model free again
            retried = await _next(second, lambda e: e["type"] == COMPLETED)
            return failed, error, done, retried

    with serve(app) as base:
        failed, error, done, retried = asyncio.run(run(base))
    assert failed["error"]["code"] == "queue_full"
    assert error["error"]["code"] == "queue_full"
    assert error["error"]["type"] == "rate_limit_error"
    assert "TALKIES_MAX_QUEUE" in error["error"]["message"]
    assert done["transcript"] == "fake"
    assert retried["transcript"] == "fake"
    assert retried["usage"] == {"type": "duration", "seconds": 0.5}
