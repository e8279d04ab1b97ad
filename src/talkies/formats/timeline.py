"""Per-chunk and per-channel transcription results -> one timeline (pure functions).

`stitch` re-assembles VAD chunks: each chunk's segment and word times are offset by the chunk's start in
the source file, so timestamps are absolute. `merge_stereo` implements the contract's stereo diarization:
channel tags, chronological merge, and turn lines (`L: ...` / `R: ...`) as the text.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import groupby

from talkies.engines.base import Region, Segment, TranscriptionResult, Word

LEFT, RIGHT = "L", "R"


def stitch(parts: list[tuple[Region, TranscriptionResult]], duration: float) -> TranscriptionResult:
    """Join chunk results (in source order) into one result spanning `duration` seconds.

    If any chunk comes from an engine without alignment, the result is unaligned too: texts are joined
    with a single space and there are no segments."""
    language = next((result.language for _, result in parts if result.language), None)
    text = join_texts([result.text for _, result in parts])
    if not all(result.aligned for _, result in parts):
        return TranscriptionResult(text=text, language=language, duration=duration, aligned=False)
    segments = [
        _shift_segment(segment, region.start, duration)
        for region, result in parts
        for segment in result.segments
    ]
    return TranscriptionResult(text=text, language=language, duration=duration, segments=segments)


def merge_stereo(left: TranscriptionResult, right: TranscriptionResult) -> TranscriptionResult:
    """Left channel = speaker L, right = R; segments merged by start time, text as turn lines.

    Consecutive segments of one channel collapse into one line, so a speaker's turn is one line however
    many segments it spans. Ties on start time put L first. Inputs are not modified."""
    language = left.language or right.language
    duration = max(left.duration, right.duration)
    if not (left.aligned and right.aligned):
        lines = [
            f"{tag}: {result.text.strip()}"
            for tag, result in ((LEFT, left), (RIGHT, right))
            if result.text.strip()
        ]
        return TranscriptionResult(text="\n".join(lines), language=language, duration=duration, aligned=False)
    tagged = [_tag(segment, LEFT) for segment in left.segments]
    tagged += [_tag(segment, RIGHT) for segment in right.segments]
    tagged.sort(key=lambda segment: segment.start)  # stable: L before R on equal starts
    lines = []
    for channel, run in groupby(tagged, key=lambda segment: segment.channel):
        words = " ".join(segment.text.strip() for segment in run if segment.text.strip())
        if words:
            lines.append(f"{channel}: {words}")
    return TranscriptionResult(text="\n".join(lines), language=language, duration=duration, segments=tagged)


def join_texts(texts: list[str]) -> str:
    """Stripped non-empty texts joined with one space; keeps Whisper's leading space when the first has it."""
    pieces = [text.strip() for text in texts if text.strip()]
    if not pieces:
        return ""
    lead = " " if next(text for text in texts if text.strip())[:1].isspace() else ""
    return lead + " ".join(pieces)


def _shift_segment(segment: Segment, offset: float, duration: float) -> Segment:
    start, end = _shift(segment.start, segment.end, offset, duration)
    words = [_shift_word(word, offset, duration) for word in segment.words]
    return replace(segment, start=start, end=end, words=words)


def _shift_word(word: Word, offset: float, duration: float) -> Word:
    start, end = _shift(word.start, word.end, offset, duration)
    return replace(word, start=start, end=end)


def _shift(start: float, end: float, offset: float, duration: float) -> tuple[float, float]:
    # A chunk's padding can push an engine's last timestamp past the end of the file: clamp it.
    start = min(max(start + offset, 0.0), duration)
    return start, min(max(end + offset, start), duration)


def _tag(segment: Segment, channel: str) -> Segment:
    words = [replace(word, channel=channel) for word in segment.words]
    return replace(segment, channel=channel, words=words)
