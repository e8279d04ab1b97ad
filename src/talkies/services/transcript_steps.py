"""The engine side of a transcription as a sync generator of streamable pieces (run one step per
worker-thread call by the service): each `Piece` is the text a `transcript.text.delta` adds and the
segments it covers; the generator returns the whole `TranscriptionResult`.

- An engine with `transcribe_stream` (engines.base.SegmentStreamer): one piece per segment, as decoded.
- Long files on an engine that does not batch regions: one piece per VAD region, as each finishes.
- Otherwise: the pieces of the one result, when the engine returns.

Deltas always concatenate to the result's text, so a streamed answer and a plain one never differ.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

from talkies.engines.base import ASR_SAMPLE_RATE, Region, Segment, TranscriptionRequest, TranscriptionResult
from talkies.engines.base import checkpoint as _checkpoint
from talkies.errors import EngineError
from talkies.formats.timeline import join_texts, stitch

Steps = Generator["Piece", None, TranscriptionResult]


@dataclass(frozen=True, slots=True)
class Piece:
    text: str  # what this piece adds to the transcript text
    segments: tuple[Segment, ...]  # absolute times in the file


def decode_steps(engine: Any, base: TranscriptionRequest, regions: list[Region] | None) -> Steps:
    duration = len(base.audio) / ASR_SAMPLE_RATE
    if regions is None or engine.batches_regions:
        request = base if regions is None else replace(base, regions=tuple(regions))
        result = yield from _engine_pieces(engine, request)
        return checked(result, duration)
    parts: list[tuple[Region, TranscriptionResult]] = []
    said = ""
    for region in regions:
        _checkpoint()
        audio = base.audio[int(region.start * ASR_SAMPLE_RATE) : int(region.end * ASR_SAMPLE_RATE)]
        part = _drain(_engine_pieces(engine, replace(base, audio=audio)))
        part = checked(part, len(audio) / ASR_SAMPLE_RATE)
        parts.append((region, part))
        joined = join_texts([p.text for _, p in parts])
        shifted = stitch([(region, part)], duration)
        yield Piece(joined[len(said) :], tuple(shifted.segments))
        said = joined
    return stitch(parts, duration)


def _engine_pieces(engine: Any, request: TranscriptionRequest) -> Steps:
    stream = getattr(engine, "transcribe_stream", None)
    if stream is None:
        result = checked(engine.transcribe(request), len(request.audio) / ASR_SAMPLE_RATE)
        if result.aligned and "".join(s.text for s in result.segments) == result.text:
            for segment in result.segments:
                yield Piece(segment.text, (segment,))
        elif result.text:
            yield Piece(result.text, tuple(result.segments))
        return result
    generator = stream(request)
    try:
        while True:
            try:
                segment = next(generator)
            except StopIteration as stop:
                return checked(stop.value, len(request.audio) / ASR_SAMPLE_RATE)
            yield Piece(segment.text, (segment,))
    finally:
        generator.close()


def _drain(steps: Steps) -> TranscriptionResult:
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: TranscriptionResult = stop.value
            return result


def next_step(steps: Steps) -> tuple[Piece | None, TranscriptionResult | None]:
    """One step (in a worker thread): (piece, None), or (None, result) at the end."""
    try:
        return next(steps), None
    except StopIteration as stop:
        return None, stop.value


def checked(result: Any, duration: float) -> TranscriptionResult:
    if not isinstance(result, TranscriptionResult):
        raise EngineError(f"engine returned {type(result).__name__}, not a TranscriptionResult")
    return replace(result, duration=duration)
