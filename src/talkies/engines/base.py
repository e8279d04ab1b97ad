"""Engine Protocols, one per capability, and the internal request/result types they share.

These types are internal: the OpenAI wire models live in `talkies.api`, and `talkies.formats` turns a
`TranscriptionResult` into json / text / verbose_json / srt / vtt.

Every engine is constructed cheaply (no heavy imports, no weights) from its registry entry and a
`EngineContext`; `load()` does the expensive part and may import torch, ctranslate2, onnxruntime, ...
`unload()` drops every reference to native memory. The pool calls `load()` / `unload()` off the event
loop, and calls `transcribe()` / `synthesize()` from a worker thread (or a worker process, see
`talkies.workers`).

Cooperative cancellation and progress: while an engine call runs, `current_call()` is the `CallControl`
of the request it serves (set by the service in the calling context; a worker process sets its own).
An engine that works in steps (segments, slices of audio, sentences) calls `checkpoint()` between them:
it reports progress (the engine timeout counts time *without* progress) and raises `CallCancelled` once
the request was abandoned, so a client that hung up stops the work at the next step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from talkies.registry.schema import Modality

__all__ = ["Modality"]  # re-exported: engines and services import it from here too

ASR_SAMPLE_RATE = 16_000
"""Every Transcriber receives 16 kHz mono float32 PCM."""

TTS_SAMPLE_RATE = 24_000
"""The server's output rate: every Synthesizer's chunks are resampled to this before encoding."""

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
    languages: tuple[str, ...] = ()  # BCP-47-ish codes the voice speaks ("en-us"), where the engine knows


class CallCancelled(Exception):
    """Raised by `checkpoint()` inside an engine call whose request was abandoned."""


class CallControl:
    """One engine call's cancel flag and progress clock, shared between the caller and the engine."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.last_progress = time.monotonic()
        self.on_progress: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the call to stop at its next step; runs every `when_cancelled` callback once."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    def when_cancelled(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Run `listener` on cancel (at once if already cancelled); returns a function that removes it."""
        with self._lock:
            if not self._cancelled.is_set():
                self._listeners.append(listener)
                return lambda: self._discard(listener)
        listener()
        return lambda: None

    def _discard(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def progress(self) -> None:
        self.last_progress = time.monotonic()
        if self.on_progress is not None:
            self.on_progress()

    def wait_cancelled(self, timeout: float) -> bool:
        return self._cancelled.wait(timeout)


_current_call: ContextVar[CallControl | None] = ContextVar("talkies_current_call", default=None)


def current_call() -> CallControl | None:
    """The control of the engine call running in this context, if a service set one."""
    return _current_call.get()


def bind_call(control: CallControl | None) -> object:
    """Make `control` the current call in this context; returns a token for `unbind_call`."""
    return _current_call.set(control)


def unbind_call(token: object) -> None:
    _current_call.reset(token)  # type: ignore[arg-type]


def call_abandoned() -> bool:
    """Whether the request of the engine call running in this thread was abandoned (no progress report:
    for waits that are not progress, e.g. a unit waiting for its batch)."""
    control = _current_call.get()
    return control is not None and control.cancelled


def checkpoint() -> None:
    """Between two steps of an engine call: report progress, and stop if the request was abandoned."""
    control = _current_call.get()
    if control is None:
        return
    if control.cancelled:
        raise CallCancelled("the request was abandoned")
    control.progress()


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


ASR_REQUEST_OPTIONS = frozenset({"prompt", "temperature", "logprobs"})
"""Optional request fields a Transcriber may or may not honour (see `TranscriberOptions`)."""


@runtime_checkable
class SegmentStreamer(Protocol):
    """Optional on a Transcriber: segments as they are decoded (streamed transcriptions, `stream=true`).

    `transcribe_stream(request)` is a generator: it yields each `Segment` as soon as it is final (times
    absolute in `request.audio`, in order, already clamped to the audio), and *returns* the whole
    `TranscriptionResult` (its segments the ones yielded, its text their texts joined), so that
    `transcribe()` can be `drain(transcribe_stream(request))` and the streamed and plain answers never
    differ. The server takes one `next()` per worker-thread step, so the engine should `checkpoint()` (or
    just yield) between segments; closing the generator must stop the work. An engine without it still
    streams: one event per VAD region (long files) or all segments at the end (short ones).

    Engines may also declare, as class attributes read without loading:
    - `request_options: frozenset[str]`: which of ASR_REQUEST_OPTIONS they honour. A request that sets
      another one answers 400 naming the option and the model. Missing: {"prompt", "temperature"}.
      "logprobs" means `Word.probability` is a token probability (OpenAI's `include[]=logprobs`), filled
      when `request.word_timestamps` is set.
    """

    def transcribe_stream(
        self, request: TranscriptionRequest
    ) -> Generator[Segment, None, TranscriptionResult]: ...


def drain(stream: Generator[Segment, None, TranscriptionResult]) -> TranscriptionResult:
    """Run a `transcribe_stream` generator to its end; its result."""
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            result: TranscriptionResult = stop.value
            return result


@runtime_checkable
class Synthesizer(Engine, Protocol):
    """Text to speech. `synthesize` yields PCM chunks as soon as each is ready.

    `voices()` must work before `load()`: the catalog is read from disk or a constant, never from weights.
    """

    def voices(self) -> list[Voice]: ...

    def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]: ...


@runtime_checkable
class UpstreamServer(Engine, Protocol):
    """An engine whose model is an external HTTP server (the `process` executor): requests are proxied
    to `base_url`, with `model` replaced by `upstream_model` when it is set."""

    base_url: str

    @property
    def upstream_model(self) -> str | None: ...

    def exited_within(self, seconds: float) -> bool: ...
