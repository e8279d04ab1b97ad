"""One realtime transcription session: client events in, server events out (`send`), transcription through
the TranscriptionService (so through `pool.acquire`, its queue limits and its admission).

One owner per piece of state: the connection's reader task calls `handle()` for one message at a time
(audio conversion and VAD run in a worker thread, awaited there, so the buffer is never touched by two
threads); committed turns go to the session's own transcriber task, which decodes them in commit order;
a partial decode (interim `delta`s) runs in at most one task per session, only on engines whose
`cheap_partials` says a re-decode of the turn so far costs little. `close()` cancels both tasks: a client
that goes away releases the model as soon as the engine step in progress returns.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from talkies.api.realtime.buffer import (
    PCM,
    BufferEvent,
    BufferTooSmallError,
    Committed,
    InputBuffer,
    Scorer,
    Started,
    Stopped,
    item_ids,
)
from talkies.api.realtime.wire import (
    SessionConfig,
    SessionValueError,
    apply_beta,
    apply_ga,
    error_event,
    event_id,
    expiry,
    new_session_id,
    render_beta,
    render_ga,
)
from talkies.audio.stream_input import StreamDecoder
from talkies.audio.vad_stream import StreamingVad
from talkies.engines.base import ASR_SAMPLE_RATE
from talkies.errors import BadRequestError, QueueFullError, ServiceUnavailableError, TalkiesError
from talkies.services.transcription import TranscriptionOptions, TranscriptionService
from talkies.settings import Settings

log = logging.getLogger("talkies.api.realtime")
Send = Callable[[dict[str, Any]], Awaitable[None]]
TRANSCRIPTION = "conversation.item.input_audio_transcription"
_CODES: dict[type[TalkiesError], str] = {  # OpenAI's codes where talkies' own would differ
    SessionValueError: "invalid_value",
    BufferTooSmallError: "input_audio_buffer_commit_empty",
}
MAX_APPEND_BYTES = 15 * 1024 * 1024  # OpenAI's limit per append event


class AudioBacklogError(BadRequestError):
    """The session holds more audio than TALKIES_REALTIME_MAX_PENDING_SECONDS."""


def _vad_scorer() -> Scorer:
    return StreamingVad().feed


def stable_growth(emitted: str, text: str, *, final: bool) -> str:
    """What a new decode adds to the text already sent as deltas (deltas only append). A partial decode
    holds its last word back (it may still change); a decode that no longer starts with what was sent adds
    nothing (the `completed` transcript is the one to use)."""
    text = " ".join(text.split())
    if not text.startswith(emitted):
        return ""
    rest = text[len(emitted) :]
    if final:
        return rest
    cut = rest.rfind(" ")
    return rest[: cut + 1] if cut >= 0 else ""


class RealtimeSession:
    def __init__(
        self,
        transcription: TranscriptionService,
        settings: Settings,
        send: Send,
        *,
        model: str,
        beta: bool,
    ) -> None:
        self.transcription = transcription
        self.settings = settings
        self.send = send
        self.beta = beta
        self.id = new_session_id()
        self.expires_at = expiry()
        self.config = SessionConfig(model=model)
        self.buffer = InputBuffer(
            max_turn_samples=int(settings.realtime_max_turn_seconds * ASR_SAMPLE_RATE),
            new_item_id=item_ids(),
        )
        self.decoder = StreamDecoder(self.config.encoding)
        self._turns: asyncio.Queue[Committed] = asyncio.Queue()
        self._queued_samples = 0  # audio of committed turns not transcribed yet
        self._transcriber: asyncio.Task[None] | None = None
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0  # open-turn length (samples) at the last partial decode
        self._partial_cost = 0.0  # seconds the last partial decode took
        self._emitted: dict[str, str] = {}  # item id -> text sent as deltas so far
        self._max_pending = int(settings.realtime_max_pending_seconds * ASR_SAMPLE_RATE)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, model_error: TalkiesError | None = None) -> None:
        self.buffer.set_vad(
            self.config.turn_detection.vad() if self.config.turn_detection else None, _vad_scorer
        )
        self._transcriber = asyncio.create_task(self._transcribe_turns(), name=f"realtime-{self.id}")
        kind = "transcription_session.created" if self.beta else "session.created"
        await self.send({"type": kind, "event_id": event_id(), "session": self._render()})
        if model_error is not None:
            await self.send(error_event(model_error, code="model_not_found"))

    async def close(self) -> None:
        """Cancel the transcriber and any partial decode, and wait until they have let go of the model."""
        tasks = [t for t in (self._transcriber, self._partial) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def busy(self) -> bool:
        """Committed turns are still being transcribed."""
        return self._queued_samples > 0

    def _render(self) -> dict[str, Any]:
        render = render_beta if self.beta else render_ga
        return render(self.config, self.id, self.expires_at)

    # --- client events -----------------------------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        client_event = message.get("event_id") if isinstance(message.get("event_id"), str) else None
        try:
            if kind == "input_audio_buffer.append":
                await self._append(message.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self._emit([self.buffer.commit()])
            elif kind == "input_audio_buffer.clear":
                self._emitted.pop(self.buffer.item_id, None)  # its item will never be committed
                self.buffer.clear()
                self._partial_at = 0
                await self.send({"type": "input_audio_buffer.cleared", "event_id": event_id()})
            elif kind in ("session.update", "transcription_session.update"):
                await self._update(kind, message.get("session"))
            else:
                raise BadRequestError(
                    f"unsupported event type {kind!r}: a transcription session takes session.update, "
                    "transcription_session.update and input_audio_buffer.append / commit / clear",
                    param="type",
                )
        except TalkiesError as exc:
            code = _CODES.get(type(exc))
            await self.send(error_event(exc, client_event_id=client_event, code=code))

    async def _update(self, kind: str, session: Any) -> None:
        if not isinstance(session, dict):
            raise SessionValueError("session must be an object", param="session")
        config = (
            apply_beta(self.config, session)
            if kind.startswith("transcription")
            else apply_ga(self.config, session)
        )
        self._check(config, beta=kind.startswith("transcription"))
        if config.encoding != self.config.encoding:
            self.decoder = StreamDecoder(config.encoding)
        self.config = config
        self.beta = kind.startswith("transcription")  # the answer takes the shape of the update
        detection = config.turn_detection
        await anyio.to_thread.run_sync(
            self.buffer.set_vad, detection.vad() if detection else None, _vad_scorer
        )
        updated = "transcription_session.updated" if self.beta else "session.updated"
        await self.send({"type": updated, "event_id": event_id(), "session": self._render()})

    def _check(self, config: SessionConfig, *, beta: bool) -> None:
        """The model, language and prompt as the transcription endpoint would judge them."""
        try:
            self.transcription.validate(self._options(config))
        except QueueFullError:
            pass  # busy now is no reason to refuse a configuration; each turn is admitted on its own
        except TalkiesError as exc:
            where = exc.param if exc.param in ("model", "language", "prompt") else None
            prefix = "session.input_audio_transcription" if beta else "session.audio.input.transcription"
            raise SessionValueError(exc.message, param=f"{prefix}.{where}" if where else exc.param) from exc

    @staticmethod
    def _options(config: SessionConfig) -> TranscriptionOptions:
        return TranscriptionOptions(
            model=config.model, response_format="json", language=config.language, prompt=config.prompt
        )

    async def _append(self, audio: Any) -> None:
        if not isinstance(audio, str) or len(audio) > MAX_APPEND_BYTES * 4 // 3 + 4:
            raise BadRequestError("audio must be a base64 string of at most 15 MiB", param="audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError("audio is not valid base64", param="audio") from None
        pending = self.buffer.buffered + self._queued_samples
        if pending > self._max_pending:
            raise AudioBacklogError(
                f"this session holds {pending / ASR_SAMPLE_RATE:.1f} s of audio not yet transcribed "
                f"(TALKIES_REALTIME_MAX_PENDING_SECONDS={self.settings.realtime_max_pending_seconds:g}); "
                "audio dropped",
                param="audio",
            )
        events, partial = await anyio.to_thread.run_sync(self._feed, data)
        await self._emit(events)
        if partial is not None:
            self._start_partial(*partial)

    def _feed(self, data: bytes) -> tuple[list[BufferEvent], tuple[str, PCM] | None]:
        """Worker thread: convert, score, cut turns; and the open turn's audio when a partial is due."""
        events = self.buffer.append(self.decoder.feed(data))
        interval = self.settings.realtime_delta_interval_ms * ASR_SAMPLE_RATE // 1000
        if not interval or (self._partial is not None and not self._partial.done()) or self._queued_samples:
            return events, None
        if any(isinstance(e, Committed) for e in events):
            self._partial_at = 0
            return events, None
        # a busy engine decodes slowly: wait at least twice the last partial's time, so partials take at
        # most a third of it and the turn's final decode rarely waits behind one
        interval = max(interval, int(2 * self._partial_cost * ASR_SAMPLE_RATE))
        audio = self.buffer.open_turn()
        if audio is None or audio.size - self._partial_at < interval:
            return events, None
        if not self.transcription.cheap_partials(self.config.model):
            return events, None
        self._partial_at = audio.size
        return events, (self.buffer.item_id, audio)

    async def _emit(self, events: list[BufferEvent]) -> None:
        for event in events:
            if isinstance(event, Started):
                body = {"item_id": event.item_id, "audio_start_ms": event.audio_start_ms}
                await self.send({"type": "input_audio_buffer.speech_started", "event_id": event_id(), **body})
            elif isinstance(event, Stopped):
                body = {"item_id": event.item_id, "audio_end_ms": event.audio_end_ms}
                await self.send({"type": "input_audio_buffer.speech_stopped", "event_id": event_id(), **body})
            else:
                await self._committed(event)

    async def _committed(self, turn: Committed) -> None:
        self._partial_at = 0
        if self._partial is not None:
            self._partial.cancel()  # its item is closed; the final decode says the rest
        ids = {"item_id": turn.item_id, "previous_item_id": turn.previous_item_id}
        await self.send({"type": "input_audio_buffer.committed", "event_id": event_id(), **ids})
        item = {
            "id": turn.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        added = "conversation.item.created" if self.beta else "conversation.item.added"
        await self.send(
            {"type": added, "event_id": event_id(), "previous_item_id": turn.previous_item_id, "item": item}
        )
        self._queued_samples += turn.audio.size
        self._turns.put_nowait(turn)

    # --- transcription -----------------------------------------------------------------------------

    async def _transcribe_turns(self) -> None:
        while True:
            turn = await self._turns.get()
            try:
                await self._transcribe(turn)
            finally:
                self._queued_samples -= turn.audio.size
                self._emitted.pop(turn.item_id, None)

    async def _transcribe(self, turn: Committed) -> None:
        ids = {"item_id": turn.item_id, "content_index": 0}
        try:
            transcript = await self.transcription.transcribe_pcm(turn.audio, self._options(self.config))
        except TalkiesError as exc:
            log.info("realtime %s: item %s failed: %s", self.id, turn.item_id, exc.message)
            failed = error_event(exc)["error"]
            await self.send(
                {"type": f"{TRANSCRIPTION}.failed", "event_id": event_id(), **ids, "error": failed}
            )
            if isinstance(exc, QueueFullError | ServiceUnavailableError):
                await self.send(error_event(exc))  # admission: the client should know the server is busy
            return
        text = " ".join(transcript.result.text.split())  # one line per turn, as its deltas
        rest = stable_growth(self._emitted.get(turn.item_id, ""), text, final=True)
        if rest:
            await self.send({"type": f"{TRANSCRIPTION}.delta", "event_id": event_id(), **ids, "delta": rest})
        usage = {"type": "duration", "seconds": round(turn.seconds, 3)}
        done = {
            "type": f"{TRANSCRIPTION}.completed",
            "event_id": event_id(),
            **ids,
            "transcript": text,
            "usage": usage,
        }
        await self.send(done)

    def _start_partial(self, item_id: str, audio: PCM) -> None:
        self._partial = asyncio.create_task(
            self._partial_decode(item_id, audio), name=f"realtime-partial-{self.id}"
        )

    async def _partial_decode(self, item_id: str, audio: PCM) -> None:
        started = time.perf_counter()
        try:
            transcript = await self.transcription.transcribe_pcm(audio, self._options(self.config))
        except TalkiesError as exc:
            log.debug("realtime %s: partial decode skipped: %s", self.id, exc.message)
            return
        finally:
            self._partial_cost = time.perf_counter() - started
        if not self.buffer.is_open(item_id):
            return  # the turn was committed or cleared meanwhile
        emitted = self._emitted.get(item_id, "")
        delta = stable_growth(emitted, transcript.result.text, final=False)
        if delta:
            self._emitted[item_id] = emitted + delta
            ids = {"item_id": item_id, "content_index": 0}
            await self.send({"type": f"{TRANSCRIPTION}.delta", "event_id": event_id(), **ids, "delta": delta})
