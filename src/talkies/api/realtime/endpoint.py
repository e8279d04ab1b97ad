"""`GET /v1/realtime?intent=transcription` (WebSocket): OpenAI Realtime transcription sessions.

The bearer token (header, or the browser's `openai-insecure-api-key.<token>` subprotocol) and the Host /
Origin guard are checked by the app's middleware before the handshake is accepted; a refused upgrade is an
HTTP 403. Here: the session cap (one more session gets an `error` event and close code 1013, "try again
later"), the idle timeout (close 1000), one writer task per connection (a client that does not read its
events is closed once `SEND_QUEUE` of them are waiting), and the session's own tasks cancelled when the
client goes away, whatever it was doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from talkies.api.realtime.session import RealtimeSession
from talkies.api.realtime.wire import error_event
from talkies.errors import BadRequestError, ModelNotFoundError, ServiceUnavailableError, TalkiesError
from talkies.services.transcription import TranscriptionOptions

log = logging.getLogger("talkies.api.realtime")
router = APIRouter()
SEND_QUEUE = 1024  # server events waiting for a slow reader before the connection is closed
BROWSER_SUBPROTOCOL = "realtime"
TOKEN_SUBPROTOCOL = "openai-insecure-api-key."


class SessionCount:
    """The open realtime sessions (one owner: the event loop; no await between check and change)."""

    def __init__(self) -> None:
        self.open = 0


class _SlowReaderError(Exception):
    pass


def _subprotocol(websocket: WebSocket) -> str | None:
    offered = [p.strip() for p in websocket.scope.get("subprotocols", [])]
    return BROWSER_SUBPROTOCOL if BROWSER_SUBPROTOCOL in offered else None


def _beta(websocket: WebSocket) -> bool:
    header = websocket.headers.get("openai-beta", "")
    offered = websocket.scope.get("subprotocols", [])
    return "realtime=v1" in header or "openai-beta.realtime-v1" in offered


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    app = websocket.app
    settings = app.state.settings
    sessions: SessionCount = app.state.realtime_sessions
    await websocket.accept(subprotocol=_subprotocol(websocket))
    intent = websocket.query_params.get("intent", "transcription")
    if intent != "transcription":
        refusal = BadRequestError(
            f"intent={intent!r} is not served: talkies has transcription sessions only "
            "(intent=transcription)",
            param="intent",
        )
        await _refuse(websocket, refusal, 1008)
        return
    if sessions.open >= settings.realtime_max_sessions:
        busy = ServiceUnavailableError(
            f"{sessions.open} realtime sessions are open, the limit (TALKIES_REALTIME_MAX_SESSIONS); "
            "retry later"
        )
        await _refuse(websocket, busy, 1013, code="session_limit_reached")
        return
    sessions.open += 1
    try:
        await _serve(websocket, app, settings)
    finally:
        sessions.open -= 1


async def _refuse(websocket: WebSocket, exc: TalkiesError, close_code: int, code: str | None = None) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(json.dumps(error_event(exc, code=code)))
        await websocket.close(close_code, exc.message[:120])


async def _serve(websocket: WebSocket, app: Any, settings: Any) -> None:
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SEND_QUEUE)

    async def send(event: dict[str, Any]) -> None:
        try:
            outbox.put_nowait(event)
        except asyncio.QueueFull:
            raise _SlowReaderError from None

    model = websocket.query_params.get("model", "")
    transcription = app.state.transcription
    model_error: TalkiesError | None = None
    try:
        model = model or transcription.pool.spec(model, kind="asr").slug
        transcription.validate(TranscriptionOptions(model=model, response_format="json"))
    except ModelNotFoundError as exc:
        model_error = exc
    except TalkiesError:
        pass  # anything else about the model is reported with the turn it concerns
    session = RealtimeSession(transcription, settings, send, model=model, beta=_beta(websocket))
    writer = asyncio.create_task(_write(websocket, outbox), name=f"realtime-writer-{session.id}")
    close_code, reason = 1000, ""
    try:
        await session.start(model_error)
        while True:
            try:
                async with asyncio.timeout(settings.realtime_idle_timeout):
                    message = await websocket.receive()
            except TimeoutError:
                if session.busy:
                    continue  # waiting for its own transcription is not idle
                idle = ServiceUnavailableError(
                    f"no message for {settings.realtime_idle_timeout:g} s (TALKIES_REALTIME_IDLE_TIMEOUT); "
                    "session closed"
                )
                await send(error_event(idle, code="idle_timeout"))
                reason = "idle timeout"
                break
            if message["type"] == "websocket.disconnect":
                close_code = 0
                break
            parsed = _parse(message)
            if isinstance(parsed, BadRequestError):
                await send(error_event(parsed, code="invalid_json"))
            else:
                await session.handle(parsed)
            if writer.done():
                break
    except _SlowReaderError:
        close_code, reason = 1008, "client does not read its events"
    except (WebSocketDisconnect, RuntimeError):
        close_code = 0  # gone
    finally:
        await session.close()
        if close_code and not writer.done():
            with contextlib.suppress(asyncio.QueueFull):
                outbox.put_nowait({"type": "__close__", "code": close_code, "reason": reason})
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), 5)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        log.info(
            "realtime session %s closed (%s)",
            session.id,
            reason or ("client left" if not close_code else "end"),
        )


def _parse(message: Mapping[str, Any]) -> dict[str, Any] | BadRequestError:
    text = message.get("text")
    if text is None:
        return BadRequestError("binary frames are not events: send JSON text (audio goes base64 in append)")
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return BadRequestError(f"the message is not JSON: {exc}")
    if not isinstance(parsed, dict):
        return BadRequestError("an event is a JSON object with a `type`")
    return parsed


async def _write(websocket: WebSocket, outbox: asyncio.Queue[dict[str, Any]]) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        while True:
            event = await outbox.get()
            if event.get("type") == "__close__":
                if websocket.client_state == WebSocketState.CONNECTED:
                    await websocket.close(event["code"], event["reason"])
                return
            await websocket.send_text(json.dumps(event, ensure_ascii=False))
