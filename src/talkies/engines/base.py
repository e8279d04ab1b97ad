"""Engine Protocols, one per capability, and the internal request/result types they share.

These types are internal: the OpenAI wire models live in `talkies.api`, and `talkies.formats` turns a
`TranscriptionResult` into json / text / verbose_json / srt / vtt.

Every engine is constructed cheaply (no heavy imports, no weights) from its registry entry and a
`EngineContext`; `load()` does the expensive part and may import torch, ctranslate2, onnxruntime, ...
`unload()` drops every reference to native memory. The pool calls `load()` / `unload()` off the event
loop, and calls `transcribe()` / `synthesize()` from a worker thread (or a worker process, see
`talkies.engines.host`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

ASR_SAMPLE_RATE = 16_000
"""Every Transcriber receives 16 kHz mono float32 PCM."""

TTS_SAMPLE_RATE = 24_000
"""The server's output rate: every Synthesizer's chunks are resampled to this before encoding."""

Modality = Literal["asr", "tts"]
Task = Literal["transcribe", "translate"]


@dataclass(frozen=True, slots=True)
class EngineContext:
    """What an engine needs from the server besides its registry entry."""

    slug: str
    model_dir: Path  # $TALKIES_DATA_DIR/models/<slug>/ (may not exist for weight-free engines)
    device: str  # "cpu", "cuda" or "cuda:N"
    cpu_threads: int = 0  # 0 = engine picks
    options: dict[str, object] = field(default_factory=dict)  # registry extras, e.g. compute_type


@dataclass(frozen=True, slots=True)
class Region:
    """A span of the input audio, in seconds from the start of the file."""

    start: float
    end: float


@dataclass(slots=True)
class Word:
    word: str
    start: float
    end: float
    probability: float | None = None
    channel: str | None = None


@dataclass(slots=True)
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    audio: npt.NDArray[np.float32]  # 16 kHz mono, [-1, 1]
    language: str | None = None  # ISO-639-1; None = engine default or auto-detect
    prompt: str | None = None
    temperature: float | None = None
    task: Task = "transcribe"
    word_timestamps: bool = True
    regions: tuple[Region, ...] | None = None  # VAD speech regions; None = the whole clip


@dataclass(slots=True)
class TranscriptionResult:
    text: str
    language: str | None
    duration: float  # seconds of input audio
    segments: list[Segment] = field(default_factory=list)
    aligned: bool = True  # False: engine has no timestamps (segments/words are empty by design)


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    text: str
    voice: str
    speed: float = 1.0
    instructions: str | None = None
    language: str | None = None
    options: dict[str, object] = field(default_factory=dict)  # engine-specific sampling knobs


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono PCM as float32 in [-1, 1] at `sample_rate`."""

    pcm: npt.NDArray[np.float32]
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Voice:
    name: str
    default: bool = False
    origin: str | None = None  # "builtin" / "custom" where an engine distinguishes them


@runtime_checkable
class Engine(Protocol):
    """Lifecycle shared by every engine."""

    def load(self) -> None: ...

    def unload(self) -> None: ...


@runtime_checkable
class Transcriber(Engine, Protocol):
    """Speech to text. `can_translate` tells whether `task="translate"` is supported."""

    can_translate: bool
    batches_regions: bool  # True: the engine decodes `request.regions` itself (batched)

    def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult: ...


@runtime_checkable
class Synthesizer(Engine, Protocol):
    """Text to speech. `synthesize` yields PCM chunks as soon as each is ready.

    `voices()` must work before `load()`: the catalog is read from disk or a constant, never from weights.
    """

    def voices(self) -> list[Voice]: ...

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]: ...
