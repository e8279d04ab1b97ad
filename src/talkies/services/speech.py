"""Speech: validate -> synthesize (inside the pool) -> resample to 24 kHz -> encode; and the voice catalog.

Every refusal (model, modality, empty input, voice, format) happens before the model is touched. The
engine's sync generator is consumed one chunk at a time in a worker thread, each chunk encoded in that
same thread, so neither synthesis nor encoding blocks the event loop. Those threads are `BlockingSteps`:
a client that hangs up never gets the encoder or the generator closed under a running thread.
`open_stream` returns only once the first chunk is encoded: an engine that fails on its first sentence
still answers with a real error status, and the rest streams while the model stays pinned. `open_events`
is the same stream as OpenAI's server-sent events (`stream_format=sse`): each encoded chunk base64 in a
`speech.audio.delta`, then `speech.audio.done` with `usage`.

Voices are checked against a catalog engine: an unloaded local instance of the model's engine class
(construction is cheap and `voices()` works before `load()`), whether or not the model itself runs in a
worker process. An engine may expose `check_voice(name)` to accept more than its listed names (espeak-ng
variants, voice blends); otherwise the name must be in `voices()`. An engine may also expose
`check_request(request)` for refusals that depend on the whole request (Qwen3 voice design without
instructions, a language the checkpoint does not speak).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

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
from talkies.formats.events import speech_delta, speech_done
from talkies.pool import ModelPool
from talkies.registry import OPENAI_MODEL_NAMES, OPENAI_VOICES, ModelSpec, Registry
from talkies.services.blocking import BlockingSteps
from talkies.services.provider import EngineProvider
from talkies.services.streams import start_stream
from talkies.services.transcription import refuse_external
from talkies.settings import Settings

MIN_SPEED, MAX_SPEED = 0.25, 4.0
STREAM_FORMATS = ("audio", "sse")


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
    stream_format: str | None = None  # OpenAI's: audio (bytes; also the default) or sse (events)


@dataclass(frozen=True, slots=True)
class SpeechPlan:
    spec: ModelSpec
    request: SpeechRequest
    format: str
    sse: bool = False  # stream_format=sse: speech.audio.delta events carrying the encoded bytes
    stream_wav: bool = False  # wav streams behind a header of unknown length (not a whole body)

    @property
    def content_type(self) -> str:
        return SPEECH_FORMATS[self.format]


@dataclass(slots=True)
class SpeechMeter:
    """What a `stream` has encoded so far (`usage` of `speech.audio.done`)."""

    samples: int = 0  # at TTS_SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class VoiceEntry:
    voice: str
    model: str
    default: bool
    origin: str | None = None
    languages: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # registry voice_aliases naming this voice


def check_speed(speed: float) -> float:
    """OpenAI's range: 0.25-4.0; anything else (NaN included) is refused, never clamped."""
    if not (math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED):
        raise BadRequestError(
            f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}", param="speed"
        )
    return speed


class SpeechService:
    def __init__(
        self,
        pool: ModelPool,
        registry: Registry,
        settings: Settings,
        engines: EngineProvider | None = None,
    ) -> None:
        self.pool = pool
        self.engines: EngineProvider = engines or pool  # where the engine runs (the pool, or Ray Serve)
        self.registry = registry
        self.settings = settings
        self._catalog_engines: dict[str, Engine] = {}

    # --- validation ----------------------------------------------------------------------------------

    def validate(self, options: SpeechOptions) -> SpeechPlan:
        spec = self._tts_spec(options.model)
        if not options.input.strip():
            raise BadRequestError("input is empty: give the text to speak", param="input")
        limit = self.settings.max_input_chars
        if len(options.input) > limit:
            raise BadRequestError(
                f"input is {len(options.input)} characters; the limit is {limit} (TALKIES_MAX_INPUT_CHARS)",
                param="input",
            )
        fmt = normalize_speech_format(options.response_format)
        stream_format = check_stream_format(options.stream_format)
        engine = self._catalog_engine(spec)
        speed = check_speed(options.speed)
        asked = options.voice.strip() if options.voice else ""
        # a client that named no model, or OpenAI's, cannot know the voices of the model it got
        openai_request = not options.model.strip() or options.model in OPENAI_MODEL_NAMES
        voice = self._pick_voice(spec, engine, asked, openai_fallback=openai_request)
        request = SpeechRequest(
            text=options.input,
            voice=voice,
            speed=speed,
            instructions=options.instructions,
            language=options.language or spec.default_language,
            options=dict(options.extra),
        )
        check_request = getattr(engine, "check_request", None)
        if callable(check_request):
            check_request(request)  # engine-specific refusals that need no weights (e.g. Qwen3 design)
        stream_wav = stream_format is not None or self.settings.wav_streaming
        return SpeechPlan(
            spec=spec, request=request, format=fmt, sse=stream_format == "sse", stream_wav=stream_wav
        )

    def _tts_spec(self, slug: str) -> ModelSpec:
        spec = self.pool.spec(slug, kind="tts")
        refuse_external(spec)
        if spec.kind != "tts":
            what, use = (
                ("speech-to-text", "use POST /v1/audio/transcriptions with it")
                if spec.kind == "asr"
                else ("diarization", "TALKIES_DIARIZATION_MODEL runs it")
            )
            raise WrongModalityError(
                f"model {spec.slug!r} is a {what} model, not text-to-speech; {use}, "
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

    def _pick_voice(self, spec: ModelSpec, engine: Engine, asked: str, *, openai_fallback: bool) -> str:
        """The voice `asked` names, through the model's `voice_aliases`; nothing asked is the default voice.
        With `openai_fallback` (the request named OpenAI's model or none), an OpenAI voice name (`alloy`,
        ...) the model has neither as a voice nor as an alias speaks its default voice."""
        if not asked:
            return self._default_voice(engine)
        voice = spec.voice_aliases.get(asked, asked)
        try:
            self._check_voice(spec, engine, voice)
        except UnknownVoiceError:
            if not openai_fallback or asked not in OPENAI_VOICES or asked in spec.voice_aliases:
                raise
            voice = self._default_voice(engine)
            self._check_voice(spec, engine, voice)
        return voice

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
        async with contextlib.aclosing(self.stream(plan, whole_body=True)) as stream:
            parts = [part async for part in stream]
        return b"".join(parts), plan.content_type

    async def open_stream(self, plan: SpeechPlan) -> AsyncIterator[bytes]:
        """Start synthesis and return the byte stream once its first chunk is encoded.

        Errors up to that point are raised here (so they become a proper status); the returned iterator
        must be consumed or closed (`aclose`) to release the model."""
        return await start_stream(self.stream(plan))

    async def open_events(self, plan: SpeechPlan) -> AsyncIterator[bytes]:
        """`stream_format=sse`: like `open_stream`, as server-sent events (see `events`)."""
        return await start_stream(self.events(plan))

    async def events(self, plan: SpeechPlan) -> AsyncGenerator[bytes, None]:
        """A `speech.audio.delta` per encoded chunk (base64 of the bytes `stream` would send: the chosen
        `response_format`, so the deltas joined are the streamed file), then one `speech.audio.done` with
        `usage`. The model is released before `done` is sent."""
        meter = SpeechMeter()
        async with contextlib.aclosing(self.stream(plan, meter=meter)) as parts:
            async for part in parts:
                if part:  # the encoder's flush may be empty (pcm, wav)
                    yield speech_delta(part)
        yield speech_done(len(plan.request.text), meter.samples / TTS_SAMPLE_RATE)

    async def stream(
        self, plan: SpeechPlan, *, whole_body: bool = False, meter: SpeechMeter | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Encoded bytes as synthesis proceeds. `whole_body=True` muxes for a complete file instead (MP3
        LAME header, FLAC STREAMINFO), at the cost of sending nothing until the end. A WAV streams only
        when `plan.stream_wav` (and not `whole_body`). `meter`, when given, counts the samples encoded.

        Synthesis and encoding run as `BlockingSteps`: when the consumer goes away (client hung up,
        aclose, cancellation) the step in flight finishes first, then the engine's generator and the
        encoder are closed in a worker thread, then the model is released (never under a thread)."""
        async with self.engines.acquire(plan.spec.slug) as engine:
            steps = BlockingSteps()
            chunks: Iterator[AudioChunk] | None = None
            encoder: SpeechEncoder | None = None
            try:
                encoder = await steps.run(
                    functools.partial(
                        SpeechEncoder,
                        plan.format,
                        TTS_SAMPLE_RATE,
                        stream=not whole_body,
                        stream_wav=plan.stream_wav and not whole_body,
                    )
                )
                chunks = await steps.run(_start_synthesis, engine, plan.request)
                while True:
                    data, done = await steps.run(_next_encoded, chunks, encoder)
                    if meter is not None:
                        meter.samples = encoder.samples
                    if data or done:
                        yield data
                    if done:
                        return
            finally:
                await steps.close(_closer_of(chunks), encoder.close if encoder is not None else None)

    # --- catalog -------------------------------------------------------------------------------------

    def voices(self, model: str | None = None) -> list[VoiceEntry]:
        """Voices across TTS models (each model's default flagged); `model` limits it to one."""
        if model is not None:
            specs = [self._tts_spec(model)]
        else:
            specs = [
                s
                for s in self.registry.models.values()
                if s.kind == "tts" and s.executor != "process" and not s.unlisted
            ]
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
                VoiceEntry(
                    voice=v.name,
                    model=spec.slug,
                    default=v.default,
                    origin=v.origin,
                    languages=v.languages or spec.languages,
                    aliases=tuple(a for a, target in spec.voice_aliases.items() if target == v.name),
                )
                for v in listed
            ]
        return entries


def check_stream_format(value: str | None) -> str | None:
    """None (not sent), `audio` or `sse`; anything else is refused naming the field."""
    if value is None or not value.strip():
        return None
    key = value.strip().lower()
    if key not in STREAM_FORMATS:
        raise BadRequestError(
            f"unsupported stream_format {value!r}; expected one of: {', '.join(STREAM_FORMATS)}",
            param="stream_format",
        )
    return key


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


def _start_synthesis(engine: Engine, request: SpeechRequest) -> Iterator[AudioChunk]:
    return iter(cast(Synthesizer, engine).synthesize(request))


def _closer_of(chunks: Iterator[Any] | None) -> Callable[[], object] | None:
    close = getattr(chunks, "close", None)
    return close if callable(close) else None
