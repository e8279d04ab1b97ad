"""Per-channel transcripts -> OpenAI's `diarized_json` and its `transcript.text.segment` events (pure).

talkies identifies no voices: a speaker is a channel of the file. A stereo file's left channel is speaker
`A` (or the first `known_speaker_names[]` entry), the right one `B` (or the second); a mono file is one
speaker `A`. Each engine segment with text becomes one diarized segment with the engine's times; an engine
without timestamps gives one segment per channel spanning it. Segments are merged by start time (ties: the
earlier channel first) and `text` is the turn lines `A: ...`, one per run of one speaker's segments, as in
OpenAI's example. A segment's id names its channel and its place there (`seg_A_001`), so a streamed event
and the same segment in the JSON answer carry the same id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from talkies.engines.base import Segment, TranscriptionResult
from talkies.formats.events import duration_usage, sse
from talkies.formats.transcript import json_seconds

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class SpeakerSegment:
    id: str
    start: float
    end: float
    text: str
    speaker: str


def speaker_labels(channels: int, names: Sequence[str] = ()) -> list[str]:
    """One label per channel: `names` in channel order, then letters by channel (`A`, `B`, ...)."""
    return [names[index] if index < len(names) else LETTERS[index] for index in range(channels)]


class ChannelSegments:
    """Numbers one channel's segments as they come (streamed or from the finished result)."""

    def __init__(self, channel: int, speaker: str) -> None:
        self.prefix = f"seg_{LETTERS[channel]}_"
        self.speaker = speaker
        self.count = 0

    def take(self, segment: Segment) -> SpeakerSegment | None:
        """The diarized segment for `segment`, or None when it has no text."""
        text = segment.text.strip()
        if not text:
            return None
        self.count += 1
        start = json_seconds(segment.start)
        return SpeakerSegment(
            f"{self.prefix}{self.count:03d}", start, max(json_seconds(segment.end), start), text, self.speaker
        )

    def finish(self, result: TranscriptionResult) -> list[SpeakerSegment]:
        """What is left once the channel is done: its one spanning segment when the engine has no
        timestamps (nothing for an aligned engine, whose segments were all taken)."""
        if result.aligned or self.count:
            return []
        whole = self.take(Segment(start=0.0, end=result.duration, text=result.text))
        return [whole] if whole is not None else []


def channel_segments(result: TranscriptionResult, channel: int, speaker: str) -> list[SpeakerSegment]:
    numbering = ChannelSegments(channel, speaker)
    taken = [numbering.take(segment) for segment in (result.segments if result.aligned else [])]
    return [segment for segment in taken if segment is not None] + numbering.finish(result)


def diarized_json(results: Sequence[TranscriptionResult], speakers: Sequence[str]) -> dict[str, Any]:
    """OpenAI's `TranscriptionDiarized` from one result per channel, labelled by `speakers`."""
    segments = [
        segment
        for channel, (result, speaker) in enumerate(zip(results, speakers, strict=True))
        for segment in channel_segments(result, channel, speaker)
    ]
    segments.sort(key=lambda segment: segment.start)  # stable: the earlier channel first on ties
    return diarized_body(segments, max((result.duration for result in results), default=0.0))


def diarized_body(segments: Sequence[SpeakerSegment], duration: float) -> dict[str, Any]:
    """`TranscriptionDiarized` from segments in time order (channel or acoustic speakers alike)."""
    return {
        "task": "transcribe",
        "duration": json_seconds(duration),
        "text": turn_text(segments),
        "segments": [segment_json(segment) for segment in segments],
        "usage": duration_usage(duration),
    }


def turn_text(segments: Sequence[SpeakerSegment]) -> str:
    """`A: ...` lines, one per run of consecutive segments of one speaker."""
    return "\n".join(
        f"{speaker}: {' '.join(segment.text for segment in run)}"
        for speaker, run in groupby(segments, key=lambda segment: segment.speaker)
    )


def segment_json(segment: SpeakerSegment) -> dict[str, Any]:
    """A diarized segment; the same object is the streamed `transcript.text.segment` event."""
    return {
        "type": "transcript.text.segment",
        "id": segment.id,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "speaker": segment.speaker,
    }


def segment_event(segment: SpeakerSegment) -> bytes:
    return sse(segment_json(segment))
