"""Wyoming protocol server (Home Assistant's voice pipeline) in the talkies process.

Started with the app when `TALKIES_WYOMING_URI` is set (`tcp://0.0.0.0:10300`, `unix:///path`). One
connection is one task; every request goes through the same services, pool, queue limits and memory
budget as HTTP. Framing and events come from the `wyoming` package; the reader is our own so that a
header line, a data block or a payload larger than the limits is refused with an `error` event instead of
being read into memory.

- `describe` -> `info`: one ASR program (the enabled ASR models) and one TTS program (every TTS model's
  voices, named `<model>/<voice>`), rebuilt on each `describe` so voices added at run time appear.
- `transcribe` (optional model `name`, `language`) -> `audio-start` / `audio-chunk`... / `audio-stop` ->
  (`transcript-start`, one `transcript-chunk` per segment) -> `transcript` -> `transcript-stop`.
  Audio of any rate / width / channels is converted to 16 kHz mono once, at `audio-stop`.
- `synthesize` -> exactly one `audio-start`, chunks as sentences are synthesized, one `audio-stop`
  (Home Assistant stops reading at the first `audio-stop`). Streaming: `synthesize-start` /
  `synthesize-chunk`... / `synthesize-stop` -> one start/chunks/stop per completed sentence, then
  `synthesize-stopped`; a `synthesize` inside a stream (the backwards-compatible copy) is ignored.
- Every failure answers `error{text, code}`; the connection stays open unless the stream is unreadable.

Wyoming has no authentication: bind it to an interface only trusted clients reach (docs/wyoming.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from talkies import __version__
from talkies.api.wyoming.frames import (
    MAX_HEADER_BYTES,
    ProtocolError,
    audio_format,
    read_event,
    rechunk,
    to_asr_pcm,
)
from talkies.engines.base import TTS_SAMPLE_RATE
from talkies.errors import BadRequestError, ConfigError, TalkiesError
from talkies.services.speech import SpeechOptions
from talkies.services.transcription import TranscriptionOptions

if TYPE_CHECKING:
    from wyoming.event import Event

    from talkies.pool import ModelPool
    from talkies.registry import Registry
    from talkies.services.speech import SpeechService
    from talkies.services.transcription import TranscriptionService
    from talkies.settings import Settings

log = logging.getLogger("talkies.api.wyoming")

SAMPLES_PER_CHUNK = 2048  # audio-chunk size for synthesized speech (~85 ms at 24 kHz)
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")
_TALKIES = {"name": "talkies", "url": ""}


@dataclass(slots=True)
class _AudioIn:
    rate: int
    width: int
    channels: int
    data: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _SynthStream:
    voice: dict[str, Any] | None
    pending: str = ""


class WyomingServer:
    """Owns the listening socket; `start()` / `stop()` run with the app's lifespan."""

    def __init__(
        self,
        uri: str,
        *,
        registry: Registry,
        pool: ModelPool,
        transcription: TranscriptionService,
        speech: SpeechService,
        settings: Settings,
    ) -> None:
        self.uri = uri
        self.registry = registry
        self.pool = pool
        self.transcription = transcription
        self.speech = speech
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._zeroconf: Any = None

    @property
    def port(self) -> int | None:
        """The bound TCP port (useful with port 0), None for a Unix socket or before start."""
        if self._server is None:
            return None
        for sock in self._server.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):
                return int(name[1])
        return None

    async def start(self) -> None:
        parsed = urlparse(self.uri)
        if parsed.scheme == "tcp":
            if parsed.hostname is None or parsed.port is None:
                raise ConfigError(f"TALKIES_WYOMING_URI={self.uri!r}: a tcp:// URI needs host and port")
            self._server = await asyncio.start_server(
                self._accept, host=parsed.hostname, port=parsed.port, limit=MAX_HEADER_BYTES
            )
        elif parsed.scheme == "unix":
            if not parsed.path:
                raise ConfigError(f"TALKIES_WYOMING_URI={self.uri!r}: a unix:// URI needs a path")
            self._server = await asyncio.start_unix_server(
                self._accept, path=parsed.path, limit=MAX_HEADER_BYTES
            )
        else:
            raise ConfigError(
                f"TALKIES_WYOMING_URI={self.uri!r}: expected tcp://HOST:PORT or unix:///path/to/socket"
            )
        log.info(
            "wyoming: listening on %s", self.uri if self.port is None else f"{self.uri} (port {self.port})"
        )
        if self.settings.wyoming_zeroconf and parsed.scheme == "tcp":
            await self._announce(parsed.hostname or "", self.port or 0)

    async def stop(self) -> None:
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.unregister_server()
            self._zeroconf = None
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            log.info("wyoming: stopped")

    async def _announce(self, host: str, port: int) -> None:
        try:
            from wyoming.zeroconf import HomeAssistantZeroconf
        except ImportError as exc:
            raise ConfigError(
                "TALKIES_WYOMING_ZEROCONF needs the zeroconf package (pip install 'talkies[wyoming]')"
            ) from exc
        self._zeroconf = HomeAssistantZeroconf(
            name=self.settings.wyoming_zeroconf,
            port=port,
            host=host if host not in ("0.0.0.0", "::") else None,
        )
        await self._zeroconf.register_server()
        log.info("wyoming: announced as %r over zeroconf", self.settings.wyoming_zeroconf)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            await _Connection(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("wyoming: client %s went away", peer)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- what the server offers ------------------------------------------------------------------------

    def default_model(self, modality: str) -> str:
        for slug, spec in self.registry.models.items():
            if spec.kind == modality and self.pool.unavailable_reason(slug) is None:
                return slug
        kind = "speech-to-text" if modality == "asr" else "text-to-speech"
        raise BadRequestError(f"no {kind} model is available on this server")

    def describe(self) -> dict[str, Any]:
        """The `info` event's data: rebuilt on every call."""
        from talkies.engines import engine_class
        from talkies.engines.snapshot import snapshot_present
        from talkies.registry.schema import EXECUTORS

        asr_models = []
        for slug, spec in self.registry.models.items():
            if spec.kind != "asr":
                continue
            languages = list(spec.languages)
            if not languages and spec.default_source_lang:
                languages = [spec.default_source_lang]
            if not languages:
                with contextlib.suppress(LookupError, ImportError):
                    languages = list(getattr(engine_class(spec.executor), "supported_languages", ()))
            present = not EXECUTORS[spec.executor].needs_repo or snapshot_present(
                self.settings.models_dir / slug
            )
            asr_models.append(
                {
                    "name": slug,
                    "attribution": _attribution(spec.repo, spec.executor),
                    "installed": present and self.pool.unavailable_reason(slug) is None,
                    "description": spec.description or f"{slug} ({spec.executor})",
                    "version": __version__,
                    "languages": languages,
                }
            )
        voices = []
        for entry in self.speech.voices():
            voices.append(
                {
                    "name": f"{entry.model}/{entry.voice}",
                    "attribution": _attribution(self.registry.models[entry.model].repo, entry.model),
                    "installed": True,
                    "description": f"{entry.voice} ({entry.model})",
                    "version": __version__,
                    "languages": list(entry.languages),
                    "speakers": None,
                }
            )
        program = {"attribution": _TALKIES, "installed": True, "version": __version__}
        return {
            "asr": [
                {
                    **program,
                    "name": "talkies-asr",
                    "description": "talkies speech-to-text",
                    "models": asr_models,
                    "supports_transcript_streaming": True,
                    "requires_external_vad": True,
                    "prefers_auto_gain_enabled": True,
                    "prefers_noise_reduction_enabled": True,
                }
            ],
            "tts": [
                {
                    **program,
                    "name": "talkies-tts",
                    "description": "talkies text-to-speech",
                    "voices": voices,
                    "supports_synthesize_streaming": True,
                }
            ],
            "handle": [],
            "intent": [],
            "wake": [],
            "mic": [],
            "snd": [],
        }


class _Connection:
    """One client: reads events, answers them in order."""

    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.transcribe: dict[str, Any] = {}  # the last `transcribe` event's data
        self.audio: _AudioIn | None = None
        self.synth: _SynthStream | None = None

    async def run(self) -> None:
        from wyoming.event import Event

        while True:
            try:
                event = await read_event(self.reader)
            except ProtocolError as exc:
                await self.error(exc)
                return  # the stream position is unknown after a bad frame: close
            if event is None:
                return
            try:
                await self.handle(event)
            except TalkiesError as exc:
                self.audio = None
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
            await self.send(Event("info", self.server.describe()))
        elif kind == "ping":
            await self.send(Event("pong", {"text": event.data.get("text")}))
        elif kind == "select-program":
            pass  # one program per domain: nothing to select
        elif kind == "transcribe":
            self.transcribe = dict(event.data)
        elif kind == "audio-start":
            self.audio = _AudioIn(*audio_format(event.data))
        elif kind == "audio-chunk":
            await self.on_audio_chunk(event)
        elif kind == "audio-stop":
            await self.on_audio_stop()
        elif kind == "synthesize":
            if self.synth is None:  # inside a stream it is the backwards-compatible copy: ignored
                await self.speak(str(event.data.get("text") or ""), event.data.get("voice"))
        elif kind == "synthesize-start":
            self.synth = _SynthStream(voice=event.data.get("voice"))
        elif kind == "synthesize-chunk":
            await self.on_synth_chunk(str(event.data.get("text") or ""))
        elif kind == "synthesize-stop":
            await self.on_synth_stop()
        else:
            log.debug("wyoming: ignoring %s", kind)  # the protocol says: drop events you do not know

    # --- speech to text --------------------------------------------------------------------------------

    async def on_audio_chunk(self, event: Event) -> None:
        if self.audio is None:  # a client that skipped audio-start: take the chunk's own format
            self.audio = _AudioIn(*audio_format(event.data))
        audio = self.audio
        if audio_format(event.data) != (audio.rate, audio.width, audio.channels):
            raise ProtocolError("audio-chunk format differs from audio-start; convert before sending")
        payload = event.payload or b""
        limit = self.server.settings.max_audio_seconds * audio.rate * audio.width * audio.channels
        if len(audio.data) + len(payload) > limit:
            self.audio = None
            raise BadRequestError(
                f"audio longer than {self.server.settings.max_audio_seconds:g}s (TALKIES_MAX_AUDIO_SECONDS)"
            )
        audio.data += payload

    async def on_audio_stop(self) -> None:
        from wyoming.event import Event

        audio, self.audio = self.audio, None
        request, self.transcribe = self.transcribe, {}
        model = str(request.get("name") or "") or self.server.default_model("asr")
        language = str(request.get("language") or "") or None
        if audio is None or not audio.data:
            self.server.transcription.validate(TranscriptionOptions(model=model, language=language))
            await self.send(Event("transcript", {"text": "", "language": language}))
            return
        pcm = await asyncio.to_thread(to_asr_pcm, bytes(audio.data), audio.rate, audio.width, audio.channels)
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
        if self.synth is None:
            raise ProtocolError("synthesize-chunk without synthesize-start")
        self.synth.pending += text
        *complete, rest = _SENTENCE_END.split(self.synth.pending)
        self.synth.pending = rest
        for sentence in complete:
            if sentence.strip():
                await self.speak(sentence, self.synth.voice)

    async def on_synth_stop(self) -> None:
        from wyoming.event import Event

        stream, self.synth = self.synth, None
        if stream is None:
            raise ProtocolError("synthesize-stop without synthesize-start")
        if stream.pending.strip():
            await self.speak(stream.pending, stream.voice)
        await self.send(Event("synthesize-stopped"))

    async def speak(self, text: str, voice: Any) -> None:
        """One utterance: audio-start, chunks as the engine produces them, audio-stop."""
        from wyoming.event import Event

        model, voice_name = self.resolve_voice(voice)
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

    def resolve_voice(self, voice: Any) -> tuple[str, str | None]:
        """(model, voice) from a Wyoming voice {name, language, speaker}. Names are `<model>/<voice>`; a
        bare model name takes its default voice; a bare voice is looked up in every TTS model."""
        voice = voice if isinstance(voice, dict) else {}
        if voice.get("speaker"):
            raise BadRequestError(
                "voice speakers are not used by talkies: every speaker is a voice of its own, "
                "name it as <model>/<voice> (see `describe`)"
            )
        name = str(voice.get("name") or "").strip()
        models = self.server.registry.models
        if name:
            model, slash, rest = name.partition("/")
            if slash and model in models:
                return model, rest
            if name in models:
                return name, None
            for entry in self.server.speech.voices():
                if entry.voice == name:
                    return entry.model, name
            raise BadRequestError(f"unknown voice {name!r}; name voices as <model>/<voice> (see `describe`)")
        language = str(voice.get("language") or "").strip().lower()
        if language:
            entries = self.server.speech.voices()
            base = language.split("-")[0]
            for exact in (True, False):  # "en-us" first, then any "en-*"
                for entry in entries:
                    langs = [lang.lower() for lang in entry.languages]
                    if (language in langs) if exact else any(lang.split("-")[0] == base for lang in langs):
                        return entry.model, entry.voice
            raise BadRequestError(f"no voice speaks language {language!r}")
        return self.server.default_model("tts"), None


def _attribution(repo: str | None, fallback: str) -> dict[str, str]:
    """Who made a model: its hub repository when it has one (Home Assistant shows this)."""
    if repo:
        return {"name": repo.split("/")[0], "url": f"https://huggingface.co/{repo}"}
    return {"name": fallback, "url": ""}
