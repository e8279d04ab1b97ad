"""Transcription: validate -> decode -> VAD slicing -> engine (inside the pool) -> stitch -> render.

Everything that can be refused is refused before any heavy work: the model and its modality, the
response format, translation support, a full queue (429; `admit` lets the multipart reader refuse it
before the upload is even stored), and (from the container header alone) the channel count for
diarization. Decoding, VAD and the engine call run in worker threads; the model is pinned in the pool
only while the engine runs, not while the audio is decoded or sliced.

The input is a `Path` to an audio file already on disk, so an upload, a staged `/v1/files` file and a
downloaded URL all come through `transcribe_file` the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar, cast

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from talkies.audio.decode import decode_audio, decode_channels, probe_audio
from talkies.audio.vad import VadOptions, speech_regions
from talkies.engines import engine_class
from talkies.engines.base import (
    ASR_SAMPLE_RATE,
    Region,
    Task,
    Transcriber,
    TranscriptionRequest,
    TranscriptionResult,
)
from talkies.errors import (
    BadRequestError,
    CapabilityError,
    DiarizationError,
    ModelNotFoundError,
    UnsupportedFormatError,
    UnsupportedLanguageError,
    WrongModalityError,
)
from talkies.formats.diarized import SpeakerSegment, diarized_body, diarized_json, speaker_labels
from talkies.formats.speaker_turns import acoustic_segments
from talkies.formats.timeline import merge_stereo
from talkies.formats.transcript import normalize_transcript_format, render_transcript
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, Registry
from talkies.services.blocking import BlockingSteps
from talkies.services.diarization import SpeakerDiarization, SpeakerRequest
from talkies.services.provider import EngineProvider
from talkies.services.transcript_steps import Piece, decode_steps, next_step
from talkies.settings import Settings

PCM = npt.NDArray[np.float32]
T = TypeVar("T")

log = logging.getLogger(__name__)
DEFAULT_REQUEST_OPTIONS = frozenset({"prompt", "temperature"})
DIARIZED = "diarized_json"
MAX_SPEAKERS = 2  # diarized_json's speakers are a file's channels: mono or stereo


def refuse_external(spec: ModelSpec) -> None:
    """A `process` model's server answers on the HTTP audio endpoints only (talkies.api.proxy)."""
    if spec.executor == "process":
        raise CapabilityError(
            f"model {spec.slug!r} is an external server; it is served on the /v1/audio HTTP endpoints only",
            param="model",
        )


@dataclass(frozen=True, slots=True)
class TranscriptionOptions:
    """What a caller asks for besides the audio; `model` and `response_format` as sent on the wire."""

    model: str
    response_format: str | None = None
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    task: Task = "transcribe"
    diarization: bool = False
    word_timestamps: bool = False  # timestamp_granularities[]=word (or logprobs): the engine's word pass
    logprobs: bool = False  # include[]=logprobs
    vad: VadOptions | None = None  # chunking_strategy: VAD with these options whatever the length
    speaker_names: tuple[str, ...] = ()  # known_speaker_names[]: channel labels, or names of references
    speakers: SpeakerRequest = field(
        default_factory=SpeakerRequest
    )  # references, speaker counts, acoustic_diarization


@dataclass(frozen=True, slots=True)
class Transcript:
    body: str
    content_type: str
    result: TranscriptionResult
    format: str


@dataclass(frozen=True, slots=True)
class _Plan:
    spec: ModelSpec
    format: str
    options: TranscriptionOptions


@dataclass(frozen=True, slots=True)
class SpeakerChannels:
    """`diarized_json`'s input: one decoded channel per speaker, in channel order."""

    speakers: list[str]
    channels: list[PCM]


class TranscriptionService:
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
        self.vad_options = VadOptions.from_settings(settings)
        self.diarization = SpeakerDiarization(pool, registry, settings, self.engines)

    def validate(self, options: TranscriptionOptions) -> _Plan:
        """Everything that can be refused without reading the audio."""
        spec = self.pool.spec(options.model, kind="asr")
        refuse_external(spec)
        if spec.kind != "asr":
            what, use = (
                ("text-to-speech", "use POST /v1/audio/speech with it")
                if spec.kind == "tts"
                else ("diarization", "TALKIES_DIARIZATION_MODEL runs it")
            )
            raise WrongModalityError(
                f"model {spec.slug!r} is a {what} model, not speech-to-text; {use}, "
                f"or pick a speech-to-text model for transcription",
                param="model",
            )
        fmt = normalize_transcript_format(options.response_format)
        if options.task == "translate" and getattr(_engine_type(spec), "can_translate", True) is False:
            raise CapabilityError(f"model {spec.slug!r} cannot translate", param="model")
        if options.language:
            self._check_language(spec.slug, options.language)
        self.diarization.check(options.speakers, options.speaker_names, options.prompt, fmt)
        self._check_request_options(spec, options, fmt)
        self._check_speakers(options, fmt)
        self.pool.check_queue(spec.slug)  # a full queue answers 429 before the audio is decoded
        return _Plan(spec=spec, format=fmt, options=options)

    def admit(self, model: str) -> None:
        """The multipart reader calls this with the `model` field as soon as it is read, before the file
        part that follows it is stored: a full queue answers 429 without reading the upload. Anything
        else wrong with the name is left to `validate`, which reports it in its usual order."""
        try:
            spec = self.pool.spec(model, kind="asr")
        except ModelNotFoundError:
            return
        if spec.kind == "asr" and spec.executor != "process":
            self.pool.check_queue(spec.slug)

    @staticmethod
    def _check_speakers(options: TranscriptionOptions, fmt: str) -> None:
        names = options.speaker_names
        if fmt == DIARIZED and options.task == "translate":
            raise UnsupportedFormatError(
                "response_format diarized_json is for transcriptions, not translations",
                param="response_format",
            )
        if not names or options.speakers.references:
            return  # names paired with references: checked by SpeakerDiarization
        if fmt != DIARIZED:
            raise BadRequestError(
                f"known_speaker_names[] needs response_format=diarized_json (got {fmt})",
                param="known_speaker_names",
            )
        if len(names) > MAX_SPEAKERS:
            raise BadRequestError(
                f"known_speaker_names[] takes at most {MAX_SPEAKERS} names (got {len(names)}): talkies' "
                "speakers are the file's channels (mono: 1, stereo: 2)",
                param="known_speaker_names",
            )
        if len(set(speaker_labels(MAX_SPEAKERS, names))) < MAX_SPEAKERS:
            raise BadRequestError(
                f"known_speaker_names[] must be distinct and differ from the letters of unnamed "
                f"channels (got {', '.join(names)})",
                param="known_speaker_names",
            )
        if not all(name.isprintable() for name in names):
            raise BadRequestError("known_speaker_names[] must be printable text", param="known_speaker_names")

    def _check_request_options(self, spec: ModelSpec, options: TranscriptionOptions, fmt: str) -> None:
        """A known OpenAI option this model cannot honour is a 400 naming it and the model, never ignored."""
        if options.word_timestamps and fmt != "verbose_json":
            raise BadRequestError(
                f"timestamp_granularities[]=word needs response_format=verbose_json (got {fmt})",
                param="timestamp_granularities",
            )
        if options.logprobs and fmt != "json":
            raise BadRequestError(
                f"include[]=logprobs needs response_format=json (got {fmt})", param="include"
            )
        honoured = self.request_options(spec)
        asked = {
            "prompt": bool(options.prompt),
            "temperature": options.temperature is not None,
            "logprobs": options.logprobs,
        }
        for name, is_set in asked.items():
            if is_set and name not in honoured:
                field = "include[]=logprobs" if name == "logprobs" else name
                message = f"{field} is not supported by model {spec.slug!r}"
                if name == "logprobs":
                    able = [s.slug for s in self.registry.models.values() if name in self.request_options(s)]
                    message += f"; models that can: {', '.join(able)}" if able else "; no enabled model can"
                raise CapabilityError(message, param="include" if name == "logprobs" else name)

    def request_options(self, spec: ModelSpec) -> frozenset[str]:
        """Which of prompt / temperature / logprobs the model's engine honours (class attribute, no load)."""
        if spec.kind != "asr":
            return frozenset()
        declared = getattr(_engine_type(spec), "request_options", None)
        return frozenset(declared) if declared is not None else DEFAULT_REQUEST_OPTIONS

    def cheap_partials(self, model: str) -> bool:
        """Whether re-decoding a live turn so far is cheap on this model's engine (class attribute
        `cheap_partials`, no load): realtime sessions send interim deltas only then."""
        try:
            spec = self.pool.spec(model, kind="asr")
        except ModelNotFoundError:
            return False
        return spec.kind == "asr" and bool(getattr(_engine_type(spec), "cheap_partials", False))

    def _check_language(self, slug: str, language: str) -> None:
        """Refuse an unknown language before the audio is read, when the model is resident.

        Uses the engine's `languages` data attribute, which a worker-process engine forwards too;
        otherwise the engine checks first thing in its transcribe()."""
        engine = self.pool.peek_engine(slug)
        known = getattr(engine, "languages", None) if engine is not None else None
        code = language.strip().lower()
        if not isinstance(known, tuple) or not known or code in ("", "auto") or code in known:
            return
        raise UnsupportedLanguageError(
            f"language {language!r} is not supported by model {slug!r}; valid codes: {', '.join(known)}",
            param="language",
        )

    async def transcribe_file(self, path: Path, options: TranscriptionOptions) -> Transcript:
        with self.pool.admission_scope():  # the HTTP request's own scope when there is one
            return await self._transcribe_file(path, options)

    async def _transcribe_file(self, path: Path, options: TranscriptionOptions) -> Transcript:
        plan = self.validate(options)
        if plan.format == DIARIZED:
            if await self.by_voice(plan, path):
                result, segments = await acoustic_transcript(self, plan, path)
                body = json.dumps(diarized_body(segments, result.duration), ensure_ascii=False)
                return Transcript(body=body, content_type="application/json", result=result, format=DIARIZED)
            return await self._transcribe_speakers(plan, await self.speaker_channels(plan, path))
        if options.diarization:
            await self._require_stereo(path)
            left, right = await self.decode(self._decode_stereo, path)
            result = merge_stereo(await self._run(plan, left), await self._run(plan, right))
        else:
            pcm = await self.decode(self.decode_mono, path)
            result = await self._run(plan, pcm)
        body, content_type = render_transcript(
            result, plan.format, task=options.task, logprobs=options.logprobs
        )
        return Transcript(body=body, content_type=content_type, result=result, format=plan.format)

    async def by_voice(self, plan: _Plan, path: Path) -> bool:
        """Whether this `diarized_json` request is diarized acoustically (see SpeakerDiarization.acoustic)."""
        info = await anyio.to_thread.run_sync(probe_audio, path)
        options = plan.options
        return self.diarization.acoustic(
            options.speakers, options.speaker_names, info.channels, options.diarization
        )

    async def speaker_channels(self, plan: _Plan, path: Path) -> SpeakerChannels:
        """`diarized_json`: a speaker per channel (mono: one), named by `known_speaker_names[]` in
        channel order; more names than channels, or more than two channels, is a 400."""
        if plan.options.diarization:
            await self._require_stereo(path)
        info = await anyio.to_thread.run_sync(probe_audio, path)
        if info.channels > MAX_SPEAKERS:
            raise DiarizationError(
                f"diarized_json takes a mono or stereo file (one speaker per channel); this one is "
                f"{info.channels}-channel",
                param="response_format",
            )
        names = plan.options.speaker_names
        if len(names) > info.channels:
            raise BadRequestError(
                f"known_speaker_names[] has {len(names)} names but this file has {info.channels} "
                f"channel(s): at most one name per channel",
                param="known_speaker_names",
            )
        if info.channels == 2:
            channels = list(await self.decode(self._decode_stereo, path))
        else:
            channels = [await self.decode(self.decode_mono, path)]
        return SpeakerChannels(speakers=speaker_labels(len(channels), names), channels=channels)

    async def _transcribe_speakers(self, plan: _Plan, speakers: SpeakerChannels) -> Transcript:
        results = [await self._run(plan, pcm) for pcm in speakers.channels]
        body = json.dumps(diarized_json(results, speakers.speakers), ensure_ascii=False)
        merged = results[0] if len(results) == 1 else merge_stereo(*results)
        return Transcript(body=body, content_type="application/json", result=merged, format=DIARIZED)

    async def _require_stereo(self, path: Path) -> None:
        info = await anyio.to_thread.run_sync(probe_audio, path)
        if info.channels != 2:
            kind = "mono" if info.channels == 1 else f"{info.channels}-channel"
            raise DiarizationError(
                f"diarization needs a 2-channel (stereo) file; this one is {kind}", param="diarization"
            )

    async def transcribe_pcm(self, pcm: PCM, options: TranscriptionOptions) -> Transcript:
        """16 kHz mono float32 already in memory (a Wyoming stream): the file path without the decode."""
        with self.pool.admission_scope():
            return await self._transcribe_pcm(pcm, options)

    async def _transcribe_pcm(self, pcm: PCM, options: TranscriptionOptions) -> Transcript:
        plan = self.validate(options)
        result = await self._run(plan, pcm)
        body, content_type = render_transcript(
            result, plan.format, task=options.task, logprobs=options.logprobs
        )
        return Transcript(body=body, content_type=content_type, result=result, format=plan.format)

    async def decode(self, decoder: Callable[[Path], T], path: Path) -> T:
        """Run `decoder` in a worker thread holding one of TALKIES_MAX_DECODES decode slots."""
        async with self.pool.decoding():
            return await anyio.to_thread.run_sync(decoder, path)

    def decode_mono(self, path: Path) -> PCM:
        return decode_audio(path, sample_rate=ASR_SAMPLE_RATE, max_seconds=self.settings.max_audio_seconds)

    def _decode_stereo(self, path: Path) -> tuple[PCM, PCM]:
        channels = decode_channels(
            path, sample_rate=ASR_SAMPLE_RATE, max_seconds=self.settings.max_audio_seconds
        )
        if len(channels) != 2:
            raise DiarizationError(
                f"diarization needs a 2-channel (stereo) file; this one decodes to {len(channels)} channels",
                param="diarization",
            )
        return channels[0], channels[1]

    async def _run(self, plan: _Plan, pcm: PCM) -> TranscriptionResult:
        """One channel, to the end (see `events`)."""
        result: TranscriptionResult | None = None
        async for event in self.events(plan, pcm):
            if isinstance(event, TranscriptionResult):
                result = event
        assert result is not None
        return result

    async def events(self, plan: _Plan, pcm: PCM) -> AsyncGenerator[Piece | TranscriptionResult, None]:
        """One channel: VAD slicing (long files, or a `chunking_strategy`), then the engine inside the pool,
        one step per worker-thread call: each `Piece` as it is decoded, then the whole result.

        A hang-up cancels cooperatively; the model is released only once the engine step has returned."""
        duration = len(pcm) / ASR_SAMPLE_RATE
        regions: list[Region] | None = None
        vad = plan.options.vad
        if vad is not None or duration > self.settings.vad_chunk_threshold:
            regions = await anyio.to_thread.run_sync(speech_regions, pcm, vad or self.vad_options)
            log.debug("%s: %d VAD regions in %.1f s of audio", plan.spec.slug, len(regions), duration)
            if not regions:
                language = plan.options.language or plan.spec.default_source_lang
                yield TranscriptionResult(text="", language=language, duration=duration)
                return
        result: TranscriptionResult | None = None
        async with self.engines.acquire(plan.spec.slug) as engine:
            steps = BlockingSteps()
            generator = decode_steps(cast(Transcriber, engine), self._request(plan, pcm), regions)
            try:
                while result is None:
                    piece, result = await steps.run(next_step, generator)
                    if piece is not None:
                        yield piece
            finally:
                await steps.close(generator.close)
        if result.language is None:
            result = replace(result, language=plan.options.language or plan.spec.default_source_lang)
        yield result

    @staticmethod
    def _request(plan: _Plan, pcm: PCM) -> TranscriptionRequest:
        options = plan.options
        return TranscriptionRequest(
            audio=pcm,
            language=options.language,
            prompt=options.prompt,
            temperature=options.temperature,
            task=options.task,
            word_timestamps=options.word_timestamps or options.logprobs,
        )


def _engine_type(spec: ModelSpec) -> type | None:
    try:
        return engine_class(spec.executor)
    except (LookupError, ImportError):
        return None  # the pool reports why when the model is acquired


async def acoustic_transcript(
    service: TranscriptionService, plan: _Plan, path: Path
) -> tuple[TranscriptionResult, list[SpeakerSegment]]:
    """The file as one mono track: references decoded and checked first, then the ASR model (with word
    times, VAD as usual) and the diarizer on the whole file, one after the other."""
    options = plan.options
    references = await service.diarization.references(options.speakers)
    pcm = await anyio.to_thread.run_sync(service.decode_mono, path)
    result = await service._run(replace(plan, options=replace(options, word_timestamps=True)), pcm)
    diarized = await service.diarization.diarize(pcm, options.speakers, references)
    names = service.diarization.names(diarized, options.speaker_names)
    return result, acoustic_segments(result, diarized.turns, names)
