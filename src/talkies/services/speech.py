"""Speech: validate -> synthesize (inside the pool) -> resample to 24 kHz -> encode; and the voice catalog.

Every refusal (model, modality, empty input, voice, format) happens before the model is touched. The
engine's sync generator is consumed one chunk at a time in a worker thread, each chunk encoded in that
same thread, so neither synthesis nor encoding blocks the event loop. `open_stream` returns only once
the first chunk is encoded: an engine that fails on its first sentence still answers with a real error
status, and the rest streams while the model stays pinned.

Voices are checked against a catalog engine: an unloaded local instance of the model's engine class
(construction is cheap and `voices()` works before `load()`), whether or not the model itself runs in a
worker process. An engine may expose `check_voice(name)` to accept more than its listed names (espeak-ng
variants, voice blends); otherwise the name must be in `voices()`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, cast

import anyio.to_thread

from talkies.audio.encode import SPEECH_FORMATS, SpeechEncoder, normalize_speech_format, resample
from talkies.engines import create_engine
from talkies.engines.base import TTS_SAMPLE_RATE, AudioChunk, Engine, SpeechRequest, Synthesizer, Voice
from talkies.errors import (
    BadRequestError,
    EngineError,
    EngineUnavailableError,
    UnknownVoiceError,
    WrongModalityError,
)
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, Registry
from talkies.settings import Settings

MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    model: str
    input: str
    voice: str | None = None
    response_format: str | None = None
    speed: float = 1.0
    instructions: str | None = None
    language: str | None = None
    extra: dict[str, object] = field(default_factory=dict)  # engine sampling knobs (temperature, top_k, ...)


@dataclass(frozen=True, slots=True)
class SpeechPlan:
    spec: ModelSpec
    request: SpeechRequest
    format: str

    @property
    def content_type(self) -> str:
        return SPEECH_FORMATS[self.format]


@dataclass(frozen=True, slots=True)
class VoiceEntry:
    voice: str
    model: str
    default: bool
    origin: str | None = None


def clamp_speed(speed: float) -> float:
    if not math.isfinite(speed):
        return 1.0
    return min(MAX_SPEED, max(MIN_SPEED, speed))


class SpeechService:
    def __init__(self, pool: ModelPool, registry: Registry, settings: Settings) -> None:
        self.pool = pool
        self.registry = registry
        self.settings = settings
        self._catalog_engines: dict[str, Engine] = {}

    # --- validation ----------------------------------------------------------------------------------

    def validate(self, options: SpeechOptions) -> SpeechPlan:
        spec = self._tts_spec(options.model)
        if not options.input.strip():
            raise BadRequestError("input is empty: give the text to speak", param="input")
        fmt = normalize_speech_format(options.response_format)
        engine = self._catalog_engine(spec)
        voice = (
            options.voice.strip() if options.voice and options.voice.strip() else self._default_voice(engine)
        )
        self._check_voice(spec, engine, voice)
        request = SpeechRequest(
            text=options.input,
            voice=voice,
            speed=clamp_speed(options.speed),
            instructions=options.instructions,
            language=options.language or spec.default_language,
            options=dict(options.extra),
        )
        return SpeechPlan(spec=spec, request=request, format=fmt)

    def _tts_spec(self, slug: str) -> ModelSpec:
        spec = self.pool.spec(slug)
        if spec.kind != "tts":
            raise WrongModalityError(
                f"model {spec.slug!r} is a speech-to-text model; use POST /v1/audio/transcriptions with it, "
                "or pick a text-to-speech model",
                param="model",
            )
        return spec

    def _catalog_engine(self, spec: ModelSpec) -> Engine:
        # Always a local, unloaded instance of the engine class: a model isolated in a worker process is
        # a proxy that forwards no methods but voices(), so its check_voice() would be lost.
        reason = self.pool.unavailable_reason(spec.slug)
        if reason:
            raise EngineUnavailableError(f"model {spec.slug!r} is unavailable: {reason}")
        engine = self._catalog_engines.get(spec.slug)
        if engine is None:
            engine = create_engine(spec, self.pool.engine_context(spec))
            self._catalog_engines[spec.slug] = engine
        return engine

    def _voices_of(self, engine: Engine) -> list[Voice]:
        return list(cast(Synthesizer, engine).voices())

    def _default_voice(self, engine: Engine) -> str:
        voices = self._voices_of(engine)
        for voice in voices:
            if voice.default:
                return voice.name
        if voices:
            return voices[0].name
        raise UnknownVoiceError("this model has no voices to speak with", param="voice")

    def _check_voice(self, spec: ModelSpec, engine: Engine, voice: str) -> None:
        check = getattr(engine, "check_voice", None)
        if callable(check):
            check(voice)
            return
        names = [v.name for v in self._voices_of(engine)]
        if voice not in names:
            raise UnknownVoiceError(
                f"voice {voice!r} is not available for model {spec.slug!r}; voices: {', '.join(names)}",
                param="voice",
            )

    # --- synthesis -----------------------------------------------------------------------------------

    async def synthesize(self, options: SpeechOptions) -> tuple[bytes, str]:
        """The whole utterance encoded in one body, with its content type."""
        plan = self.validate(options)
        parts = [part async for part in self.stream(plan, whole_body=True)]
        return b"".join(parts), plan.content_type

    async def open_stream(self, plan: SpeechPlan) -> AsyncIterator[bytes]:
        """Start synthesis and return the byte stream once its first chunk is encoded.

        Errors up to that point are raised here (so they become a proper status); the returned iterator
        must be consumed or closed (`aclose`) to release the model."""
        stream = self.stream(plan)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await stream.aclose()
            raise
        return _prepend(first, stream)

    async def stream(self, plan: SpeechPlan, *, whole_body: bool = False) -> AsyncGenerator[bytes, None]:
        """Encoded bytes as synthesis proceeds. `whole_body=True` muxes for a complete file instead (MP3
        LAME header, FLAC STREAMINFO), at the cost of sending nothing until the end."""
        async with AsyncExitStack() as stack:
            engine = await stack.enter_async_context(self.pool.acquire(plan.spec.slug))
            chunks = iter(cast(Synthesizer, engine).synthesize(plan.request))
            encoder = SpeechEncoder(plan.format, TTS_SAMPLE_RATE, stream=not whole_body)
            stack.callback(encoder.close)
            stack.callback(_close_generator, chunks)
            while True:
                data, done = await anyio.to_thread.run_sync(_next_encoded, chunks, encoder)
                if data or done:
                    yield data
                if done:
                    return

    # --- catalog -------------------------------------------------------------------------------------

    def voices(self, model: str | None = None) -> list[VoiceEntry]:
        """Voices across TTS models (each model's default flagged); `model` limits it to one."""
        if model is not None:
            specs = [self._tts_spec(model)]
        else:
            specs = [s for s in self.registry.models.values() if s.kind == "tts"]
            specs = [s for s in specs if self.pool.unavailable_reason(s.slug) is None]
        entries = []
        for spec in specs:
            try:
                engine = self._catalog_engine(spec)
                listed = self._voices_of(engine)
            except EngineUnavailableError:
                if model is not None:
                    raise
                continue  # e.g. espeak-ng not installed: the full catalog lists what can speak
            entries += [
                VoiceEntry(voice=v.name, model=spec.slug, default=v.default, origin=v.origin) for v in listed
            ]
        return entries


def _next_encoded(chunks: Iterator[AudioChunk], encoder: SpeechEncoder) -> tuple[bytes, bool]:
    """Synthesize and encode the next chunk (in a worker thread): (bytes ready, finished)."""
    chunk = next(chunks, None)
    if chunk is None:
        return encoder.finish(), True
    if not isinstance(chunk, AudioChunk):
        raise EngineError(f"engine yielded {type(chunk).__name__}, not an AudioChunk")
    pcm = chunk.pcm
    if chunk.sample_rate != TTS_SAMPLE_RATE:
        pcm = resample(pcm, chunk.sample_rate, TTS_SAMPLE_RATE)
    return encoder.feed(pcm), False


def _close_generator(chunks: Iterator[Any]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for part in rest:
            yield part
    finally:
        await rest.aclose()
