"""A realtime session's input audio buffer and its turns (no I/O, no model: the VAD scorer is injected).

Audio is kept at 16 kHz. Positions are samples since the session started (OpenAI's `audio_start_ms` /
`audio_end_ms` are counted from there). With server VAD a turn starts `prefix_padding_ms` before the
first speech window and ends where the silence that stopped it has lasted `silence_duration_ms` (so the
turn's audio "includes" both, as OpenAI documents); the buffer then holds what came after. Between turns
only the last `prefix_padding_ms` (plus a window) is kept. Manual commit takes the whole buffer.

Bounds: a turn never exceeds `max_turn_samples`: server VAD commits it there, and with manual commit an
append past it raises `BufferFullError` (nothing is appended).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from talkies.audio.vad import WINDOW
from talkies.audio.vad_stream import SpeechStarted, TurnDetector
from talkies.engines.base import ASR_SAMPLE_RATE
from talkies.errors import BadRequestError

PCM = npt.NDArray[np.float32]
MIN_COMMIT_MS = 100  # OpenAI: "buffer too small. Expected at least 100ms of audio"
Scorer = Callable[[PCM], npt.NDArray[np.float32]]


class BufferFullError(BadRequestError):
    """An append would make the turn longer than TALKIES_REALTIME_MAX_TURN_SECONDS (manual commit)."""


class BufferTooSmallError(BadRequestError):
    """A commit of less than 100 ms of audio."""


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class Started:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class Stopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class Committed:
    item_id: str
    previous_item_id: str | None
    audio: PCM = field(repr=False)
    start_ms: int
    end_ms: int

    @property
    def seconds(self) -> float:
        return len(self.audio) / ASR_SAMPLE_RATE


BufferEvent = Started | Stopped | Committed


def _ms(samples: int) -> int:
    return samples * 1000 // ASR_SAMPLE_RATE


class InputBuffer:
    """One owner: the session's audio task. `append` / `commit` / `clear` return the events to send."""

    def __init__(self, *, max_turn_samples: int, new_item_id: Callable[[], str]) -> None:
        self.max_turn_samples = max_turn_samples
        self._new_item_id = new_item_id
        self._chunks: list[PCM] = []
        self.start = 0  # session position of the buffer's first sample
        self.end = 0  # session position after the last sample appended
        self._item_id: str | None = None
        self.last_item_id: str | None = None
        self._scorer: Scorer | None = None
        self._detector: TurnDetector | None = None
        self._vad: VadConfig | None = None
        self._vad_origin = 0  # session position of the scorer's window 0
        self._windows = 0  # windows the scorer returned so far
        self.turn_start: int | None = None  # session position of the open server-VAD turn

    @property
    def item_id(self) -> str:
        """The id the next committed item will have (deltas of an open turn carry it already)."""
        if self._item_id is None:
            self._item_id = self._new_item_id()
        return self._item_id

    @property
    def buffered(self) -> int:
        return self.end - self.start

    def set_vad(self, config: VadConfig | None, scorer: Callable[[], Scorer]) -> None:
        """Server VAD with `config`, or manual commit (None). A scorer is made (`scorer()`) when VAD is
        switched on; new thresholds keep it, so the model's state carries over."""
        if config is None:
            self._scorer = self._detector = self._vad = None
            self.turn_start = None
            return
        if self._scorer is None:
            self._scorer = scorer()
            self._vad_origin, self._windows = self.end, 0
        if config != self._vad:
            self._detector = TurnDetector(config.threshold, config.silence_duration_ms)
            self.turn_start = None
        self._vad = config

    def append(self, pcm: PCM) -> list[BufferEvent]:
        if self._scorer is None and self.buffered + pcm.size > self.max_turn_samples:
            raise BufferFullError(
                "input audio buffer is full: a turn holds at most "
                f"{self.max_turn_samples / ASR_SAMPLE_RATE:g} s (TALKIES_REALTIME_MAX_TURN_SECONDS); "
                "commit or clear it",
                param="audio",
            )
        if pcm.size:
            self._chunks.append(pcm)
            self.end += pcm.size
        if self._scorer is None:
            return []
        events = self._detect(self._scorer(pcm))
        if self.turn_start is not None and self.end - self.turn_start >= self.max_turn_samples:
            events += self._end_turn(self.turn_start + self.max_turn_samples)
            assert self._detector is not None
            self._detector.reset()
        if self.turn_start is None:
            self._trim()
        return events

    def _detect(self, probabilities: npt.NDArray[np.float32]) -> list[BufferEvent]:
        assert self._detector is not None
        assert self._vad is not None
        events: list[BufferEvent] = []
        for probability in probabilities.tolist():
            window = self._windows
            self._windows += 1
            change = self._detector.push(window, probability)
            if change is None:
                continue
            if isinstance(change, SpeechStarted):
                pad = self._vad.prefix_padding_ms * ASR_SAMPLE_RATE // 1000
                self.turn_start = max(self.start, self._vad_origin + change.window * WINDOW - pad)
                events.append(Started(self.item_id, _ms(self.turn_start)))
            elif self.turn_start is not None:
                events += self._end_turn(min(self.end, self._vad_origin + (window + 1) * WINDOW))
        return events

    def _end_turn(self, end: int) -> list[BufferEvent]:
        assert self.turn_start is not None
        item_id = self.item_id
        committed = self._take(self.turn_start, end)
        self.turn_start = None
        return [Stopped(item_id, _ms(end)), committed]

    def commit(self) -> Committed:
        """The whole buffer as one item (`input_audio_buffer.commit`); an open VAD turn ends with it."""
        if self.buffered * 1000 < MIN_COMMIT_MS * ASR_SAMPLE_RATE:
            raise BufferTooSmallError(
                f"buffer too small. Expected at least {MIN_COMMIT_MS}ms of audio, "
                f"but buffer only has {_ms(self.buffered)}ms of audio",
                param="audio",
            )
        if self._detector is not None:
            self._detector.reset()
        self.turn_start = None
        return self._take(self.start, self.end)

    def clear(self) -> None:
        """Drop the buffer; the next turn gets a new item id (a partial decode of this one is stale)."""
        self._item_id = None
        self._chunks = []
        self.start = self.end
        self.turn_start = None
        if self._detector is not None:
            self._detector.reset()

    def is_open(self, item_id: str) -> bool:
        """Whether `item_id` is the turn still open (read-only: safe beside an `append` in its thread)."""
        if self._item_id != item_id:
            return False
        return self.turn_start is not None if self._scorer is not None else self.buffered > 0

    def open_turn(self) -> PCM | None:
        """The audio of the turn still open (server VAD: since speech started; manual: the buffer), for a
        partial decode; None when no turn is open."""
        if self._scorer is not None:
            return None if self.turn_start is None else self._audio(self.turn_start, self.end)
        return self._audio(self.start, self.end) if self.buffered else None

    def _take(self, start: int, end: int) -> Committed:
        audio = self._audio(start, end)
        rest = self._audio(end, self.end)
        self._chunks = [rest] if rest.size else []
        self.start = end
        item_id = self.item_id
        committed = Committed(item_id, self.last_item_id, audio, _ms(start), _ms(end))
        self.last_item_id, self._item_id = item_id, None
        return committed

    def _audio(self, start: int, end: int) -> PCM:
        joined = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._joined_single()
        self._chunks = [joined] if joined.size else []
        return joined[max(0, start - self.start) : max(0, end - self.start)].copy()

    def _joined_single(self) -> PCM:
        return self._chunks[0] if self._chunks else np.zeros(0, dtype=np.float32)

    def _trim(self) -> None:
        """Between turns keep only what a turn's prefix padding can reach back to (plus a window)."""
        assert self._vad is not None
        keep = self._vad.prefix_padding_ms * ASR_SAMPLE_RATE // 1000 + ASR_SAMPLE_RATE // 4  # + detection lag
        if self.buffered > keep + ASR_SAMPLE_RATE:  # trim in 1 s steps, not on every append
            self._audio(self.start, self.start)  # joins the chunks
            cut = self.end - keep
            self._chunks = [self._chunks[0][cut - self.start :]]
            self.start = cut


def item_ids(prefix: str = "item_") -> Callable[[], str]:
    """Unique item ids for one session: `item_<random><counter>`."""
    counter = itertools.count(1)
    salt = secrets.token_hex(4)
    return lambda: f"{prefix}{salt}{next(counter):04d}"
