"""Transcription: validate -> decode -> VAD slicing -> engine (inside the pool) -> stitch -> render.

Everything that can be refused is refused before any heavy work: the model and its modality, the
response format, translation support, and (from the container header alone) the channel count for
diarization. Decoding, VAD and the engine call run in worker threads; the model is pinned in the pool
only while the engine runs, not while the audio is decoded or sliced.

The input is a `Path` to an audio file already on disk, so an upload, a staged `/v1/files` file and a
downloaded URL all come through `transcribe_file` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

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
from talkies.errors import CapabilityError, DiarizationError, EngineError, WrongModalityError
from talkies.formats.timeline import merge_stereo, stitch
from talkies.formats.transcript import normalize_transcript_format, render_transcript
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, Registry
from talkies.settings import Settings

PCM = npt.NDArray[np.float32]


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


class TranscriptionService:
    def __init__(self, pool: ModelPool, registry: Registry, settings: Settings) -> None:
        self.pool = pool
        self.registry = registry
        self.settings = settings
        self.vad_options = VadOptions(
            threshold=settings.vad_threshold,
            min_silence_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
            max_speech_s=settings.vad_max_speech,
        )

    def validate(self, options: TranscriptionOptions) -> _Plan:
        """Everything that can be refused without reading the audio."""
        spec = self.pool.spec(options.model)
        if spec.kind != "asr":
            raise WrongModalityError(
                f"model {spec.slug!r} is a text-to-speech model; use POST /v1/audio/speech with it, "
                f"or pick a speech-to-text model for transcription",
                param="model",
            )
        fmt = normalize_transcript_format(options.response_format)
        if options.task == "translate" and getattr(_engine_type(spec), "can_translate", True) is False:
            raise CapabilityError(f"model {spec.slug!r} cannot translate", param="model")
        return _Plan(spec=spec, format=fmt, options=options)

    async def transcribe_file(self, path: Path, options: TranscriptionOptions) -> Transcript:
        plan = self.validate(options)
        if options.diarization:
            info = await anyio.to_thread.run_sync(probe_audio, path)
            if info.channels != 2:
                kind = "mono" if info.channels == 1 else f"{info.channels}-channel"
                raise DiarizationError(
                    f"diarization needs a 2-channel (stereo) file; this one is {kind}", param="diarization"
                )
            left, right = await anyio.to_thread.run_sync(self._decode_stereo, path)
            result = merge_stereo(await self._run(plan, left), await self._run(plan, right))
        else:
            pcm = await anyio.to_thread.run_sync(self._decode_mono, path)
            result = await self._run(plan, pcm)
        body, content_type = render_transcript(result, plan.format, task=options.task)
        return Transcript(body=body, content_type=content_type, result=result, format=plan.format)

    def _decode_mono(self, path: Path) -> PCM:
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
        """One channel: VAD slicing when long, then the engine inside the pool."""
        duration = len(pcm) / ASR_SAMPLE_RATE
        regions: list[Region] | None = None
        if duration > self.settings.vad_chunk_threshold:
            regions = await anyio.to_thread.run_sync(speech_regions, pcm, self.vad_options)
            if not regions:
                language = plan.options.language or plan.spec.default_source_lang
                return TranscriptionResult(text="", language=language, duration=duration)
        async with self.pool.acquire(plan.spec.slug) as engine:
            transcriber = cast(Transcriber, engine)
            result = await anyio.to_thread.run_sync(self._call_engine, transcriber, plan, pcm, regions)
        if result.language is None:
            result = replace(result, language=plan.options.language or plan.spec.default_source_lang)
        return result

    @staticmethod
    def _call_engine(
        engine: Transcriber, plan: _Plan, pcm: PCM, regions: list[Region] | None
    ) -> TranscriptionResult:
        options = plan.options
        base = TranscriptionRequest(
            audio=pcm,
            language=options.language,
            prompt=options.prompt,
            temperature=options.temperature,
            task=options.task,
        )
        duration = len(pcm) / ASR_SAMPLE_RATE
        if regions is None:
            return _checked(engine.transcribe(base), duration)
        if engine.batches_regions:
            return _checked(engine.transcribe(replace(base, regions=tuple(regions))), duration)
        parts = []
        for region in regions:
            piece = pcm[int(region.start * ASR_SAMPLE_RATE) : int(region.end * ASR_SAMPLE_RATE)]
            parts.append((region, engine.transcribe(replace(base, audio=piece))))
        return stitch(parts, duration)


def _engine_type(spec: ModelSpec) -> type | None:
    try:
        return engine_class(spec.executor)
    except (LookupError, ImportError):
        return None  # the pool reports why when the model is acquired


def _checked(result: TranscriptionResult, duration: float) -> TranscriptionResult:
    if not isinstance(result, TranscriptionResult):
        raise EngineError(f"engine returned {type(result).__name__}, not a TranscriptionResult")
    return replace(result, duration=duration)
