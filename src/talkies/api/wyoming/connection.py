"""One Wyoming client: reads events (each read bounded in size and idle time), answers them in order.

What a connection holds between events is bounded (`buffers`): streamed synthesis text by
TALKIES_MAX_INPUT_CHARS, audio by TALKIES_MAX_UPLOAD_BYTES and TALKIES_MAX_AUDIO_SECONDS at its declared
format. Catalog work (`describe`, voice and default-model lookups) and audio conversion run in threads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from talkies.api.wyoming.buffers import AudioBuffer, SentenceBuffer
from talkies.api.wyoming.frames import ProtocolError, audio_format, read_event, rechunk, to_asr_pcm
from talkies.engines.base import TTS_SAMPLE_RATE
from talkies.errors import TalkiesError
from talkies.services.speech import SpeechOptions
from talkies.services.transcription import TranscriptionOptions

if TYPE_CHECKING:
    from wyoming.event import Event

    from talkies.api.wyoming.server import WyomingServer

log = logging.getLogger("talkies.api.wyoming")

SAMPLES_PER_CHUNK = 2048  # audio-chunk size for synthesized speech (~85 ms at 24 kHz)


@dataclass(slots=True)
class _SynthStream:
    voice: dict[str, Any] | None
    text: SentenceBuffer
    refused: bool = False  # over TALKIES_MAX_INPUT_CHARS: chunks are dropped until synthesize-stop


class Connection:
    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.settings = server.settings
        self.catalog = server.catalog
        self.reader = reader
        self.writer = writer
        self.transcribe: dict[str, Any] = {}  # the last `transcribe` event's data
        self.audio: AudioBuffer | None = None
        self.synth: _SynthStream | None = None

    async def run(self) -> None:
        from wyoming.event import Event

        while True:
            try:
                event = await read_event(self.reader, self.settings.wyoming_idle_timeout)
            except ProtocolError as exc:
                await self.error(exc)
                return  # the stream position is unknown after a bad frame: close
            if event is None:
                return
            try:
                await self.handle(event)
            except TalkiesError as exc:
                await self.error(exc)
            except Exception as exc:
                log.exception("wyoming: %s failed", event.type)
                self.audio = None
                await self.send(
                    Event("error", {"text": f"internal error: {type(exc).__name__}", "code": "server_error"})
                )

    async def send(self, event: Event) -> None:
        from wyoming.event import async_write_event

        await async_write_event(event, self.writer)

    async def error(self, exc: TalkiesError) -> None:
        from wyoming.event import Event

        from talkies.api.errors import error_code

        log.info("wyoming: error %s: %s", error_code(exc), exc.message)
        await self.send(Event("error", {"text": exc.message, "code": error_code(exc)}))

    async def handle(self, event: Event) -> None:
        from wyoming.event import Event

        kind = event.type
        if kind == "describe":
            await self.send(Event("info", await asyncio.to_thread(self.catalog.describe)))
        elif kind == "ping":
            await self.send(Event("pong", {"text": event.data.get("text")}))
        elif kind == "select-program":
            pass  # one program per domain: nothing to select
        elif kind == "transcribe":
            self.transcribe = dict(event.data)
        elif kind == "audio-start":
            self.audio = self.new_audio(event.data)
        elif kind == "audio-chunk":
            self.on_audio_chunk(event)
        elif kind == "audio-stop":
            await self.on_audio_stop()
        elif kind == "synthesize":
            if self.synth is None:  # inside a stream it is the backwards-compatible copy: ignored
                await self.speak(str(event.data.get("text") or ""), event.data.get("voice"))
        elif kind == "synthesize-start":
            limit = self.settings.max_input_chars
            self.synth = _SynthStream(voice=event.data.get("voice"), text=SentenceBuffer(limit))
        elif kind == "synthesize-chunk":
            await self.on_synth_chunk(str(event.data.get("text") or ""))
        elif kind == "synthesize-stop":
            await self.on_synth_stop()
        else:
            log.debug("wyoming: ignoring %s", kind)  # the protocol says: drop events you do not know

    # --- speech to text --------------------------------------------------------------------------------

    def new_audio(self, data: dict[str, Any]) -> AudioBuffer:
        rate, width, channels = audio_format(data)
        return AudioBuffer(
            rate,
            width,
            channels,
            max_bytes=self.settings.max_upload_bytes,
            max_seconds=self.settings.max_audio_seconds,
        )

    def on_audio_chunk(self, event: Event) -> None:
        if self.audio is None:  # a client that skipped audio-start: take the chunk's own format
            self.audio = self.new_audio(event.data)
        if audio_format(event.data) != self.audio.format:
            self.audio.refuse()
            raise ProtocolError("audio-chunk format differs from audio-start; convert before sending")
        self.audio.add(event.payload or b"")  # past the cap: raises once, then drops the rest

    async def on_audio_stop(self) -> None:
        from wyoming.event import Event

        audio, self.audio = self.audio, None
        request, self.transcribe = self.transcribe, {}
        if audio is not None and audio.refused:
            return  # the error went out when the cap was passed
        model = str(request.get("name") or "") or await asyncio.to_thread(self.catalog.default_model, "asr")
        language = str(request.get("language") or "") or None
        if audio is None or not audio.data:
            self.server.transcription.validate(TranscriptionOptions(model=model, language=language))
            await self.send(Event("transcript", {"text": "", "language": language}))
            return
        pcm = await asyncio.to_thread(to_asr_pcm, audio.data, audio.rate, audio.width, audio.channels)
        del audio  # the raw bytes go as soon as the float copy exists
        options = TranscriptionOptions(model=model, language=language, response_format="verbose_json")
        transcript = await self.server.transcription.transcribe_pcm(pcm, options)
        result = transcript.result
        language = result.language or language
        await self.send(Event("transcript-start", {"language": language}))
        for segment in result.segments:
            if segment.text.strip():
                await self.send(Event("transcript-chunk", {"text": segment.text}))
        await self.send(Event("transcript", {"text": result.text.strip(), "language": language}))
        await self.send(Event("transcript-stop"))

    # --- text to speech --------------------------------------------------------------------------------

    async def on_synth_chunk(self, text: str) -> None:
        stream = self.synth
        if stream is None:
            raise ProtocolError("synthesize-chunk without synthesize-start")
        if stream.refused:
            return
        try:
            sentences = stream.text.add(text)
        except TalkiesError:
            stream.refused = True
            raise
        for sentence in sentences:
            if sentence.strip():
                await self.speak(sentence, stream.voice)

    async def on_synth_stop(self) -> None:
        from wyoming.event import Event

        stream, self.synth = self.synth, None
        if stream is None:
            raise ProtocolError("synthesize-stop without synthesize-start")
        rest = stream.text.flush()
        if rest.strip() and not stream.refused:
            await self.speak(rest, stream.voice)
        await self.send(Event("synthesize-stopped"))

    async def speak(self, text: str, voice: Any) -> None:
        """One utterance: audio-start, chunks as the engine produces them, audio-stop."""
        from wyoming.event import Event

        model, voice_name = await asyncio.to_thread(self.catalog.resolve_voice, voice)
        options = SpeechOptions(model=model, input=text, voice=voice_name, response_format="pcm")
        plan = await asyncio.to_thread(self.server.speech.validate, options)
        fmt = {"rate": TTS_SAMPLE_RATE, "width": 2, "channels": 1}
        started = False
        async for pcm in rechunk(self.server.speech.stream(plan), SAMPLES_PER_CHUNK * 2):
            if not started:
                await self.send(Event("audio-start", {**fmt, "timestamp": 0}))
                started = True
            await self.send(Event("audio-chunk", fmt, payload=pcm))
        if not started:
            await self.send(Event("audio-start", {**fmt, "timestamp": 0}))
        await self.send(Event("audio-stop", {"timestamp": None}))
        log.info("wyoming: spoke %d characters with %s/%s", len(text), model, plan.request.voice)
