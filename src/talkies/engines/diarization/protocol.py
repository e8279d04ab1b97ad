"""The Diarizer Protocol and its request / result types (no heavy imports: the services use them).

A diarizer takes 16 kHz mono float32 PCM and answers speaker turns, each with a speaker index (`0`,
`1`, ... in the engine's own numbering), plus one embedding per speaker and one per known-speaker
reference when it `embeds_speakers`, so that the service can match references to speakers. Turns are
exclusive: one speaker at a time (overlapped speech goes to one of them), which is what ASR words need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from talkies.engines.base import Engine

PCM = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DiarizationRequest:
    audio: PCM  # 16 kHz mono, the whole file
    num_speakers: int | None = None  # exact count when known
    min_speakers: int | None = None
    max_speakers: int | None = None
    references: tuple[PCM, ...] = ()  # known-speaker samples to embed, 16 kHz mono


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: int


@dataclass(slots=True)
class DiarizationResult:
    turns: list[SpeakerTurn]
    speaker_embeddings: dict[int, list[float]] = field(default_factory=dict)  # speaker -> embedding
    reference_embeddings: list[list[float]] = field(default_factory=list)  # one per request reference


@runtime_checkable
class Diarizer(Engine, Protocol):
    """Who spoke when. Class attributes, read without loading: `max_speakers` (None: any number) and
    `embeds_speakers` (True: `reference_embeddings` and `speaker_embeddings` are filled)."""

    max_speakers: int | None
    embeds_speakers: bool

    def diarize(self, request: DiarizationRequest) -> DiarizationResult: ...


def exclusive_turns(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    """Sorted turns with overlaps removed: where two overlap, the later one starts when the earlier ends
    (a turn left empty is dropped)."""
    result: list[SpeakerTurn] = []
    for turn in sorted(turns, key=lambda t: (t.start, t.end)):
        start = max(turn.start, result[-1].end) if result else turn.start
        if turn.end - start > 1e-3:
            result.append(SpeakerTurn(start, turn.end, turn.speaker))
    return result
