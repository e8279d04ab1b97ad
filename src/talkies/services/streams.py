"""Streamed answers that start only once their first part is ready, and the server-sent-event streams of
transcriptions (`stream=true`) and speech (`stream_format=sse`).

Everything that can be refused is refused before the first byte: the first part of a stream is awaited
before the response starts (`start_stream`), so a model that cannot load, a full queue or an engine that
fails on its first step still answers with a real status. Errors after that are the API layer's to turn
into an error event (`talkies.api.streaming`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import TYPE_CHECKING

from talkies.engines.base import Segment, TranscriptionResult, Word
from talkies.errors import BadRequestError
from talkies.formats.diarized import ChannelSegments, diarized_body, diarized_json, segment_event
from talkies.formats.events import transcript_delta, transcript_done
from talkies.services.transcript_steps import Piece

if TYPE_CHECKING:
    from pathlib import Path

    from talkies.services.transcription import (
        PCM,
        SpeakerChannels,
        TranscriptionOptions,
        TranscriptionService,
        _Plan,
    )

STREAMABLE_FORMATS = ("json", "text", "diarized_json")


async def start_stream(stream: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Await `stream`'s first part (errors raise here), then return an iterator over all of it; the
    iterator must be consumed or closed (`aclose`) to release what the stream holds."""
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except BaseException:
        await stream.aclose()
        raise
    return _prepend(first, stream)


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for part in rest:
            yield part
    finally:
        await rest.aclose()


async def open_transcript_stream(
    service: TranscriptionService, path: Path, options: TranscriptionOptions
) -> AsyncIterator[bytes]:
    """`stream=true`: a `transcript.text.delta` per piece as decoded, then `transcript.text.done`;
    with `diarized_json`, a `transcript.text.segment` per segment instead of the deltas."""
    plan = service.validate(options)
    if plan.format not in STREAMABLE_FORMATS:
        raise BadRequestError(
            f"stream=true answers transcript.text.* events, which carry json / text / diarized_json only; "
            f"response_format {plan.format!r} cannot be streamed (drop stream, or use json)",
            param="stream",
        )
    if plan.format == "diarized_json":
        if await service.by_voice(plan, path):
            return await start_stream(_acoustic_events(service, plan, path))
        speakers = await service.speaker_channels(plan, path)
        return await start_stream(_segment_events(service, plan, speakers))
    if options.diarization:
        raise BadRequestError(
            "stream=true does not combine with diarization=true; stream response_format=diarized_json",
            param="stream",
        )
    pcm = await service.decode(service.decode_mono, path)
    return await start_stream(_transcript_events(service, plan, pcm))


async def _transcript_events(
    service: TranscriptionService, plan: _Plan, pcm: PCM
) -> AsyncGenerator[bytes, None]:
    events = service.events(plan, pcm)
    with_logprobs = plan.options.logprobs
    try:
        async for event in events:
            if isinstance(event, Piece):
                if event.text:
                    yield transcript_delta(event.text, _words(event.segments) if with_logprobs else None)
            elif isinstance(event, TranscriptionResult):
                words = _words(event.segments) if with_logprobs else None
                yield transcript_done(event.text, event.duration, words)
    finally:
        await events.aclose()


async def _segment_events(
    service: TranscriptionService, plan: _Plan, speakers: SpeakerChannels
) -> AsyncGenerator[bytes, None]:
    """Channel by channel (they are decoded one after the other): each segment with text as the engine
    decodes it, then `done` with the same text as the plain `diarized_json` answer."""
    results: list[TranscriptionResult] = []
    for channel, (speaker, pcm) in enumerate(zip(speakers.speakers, speakers.channels, strict=True)):
        numbering = ChannelSegments(channel, speaker)
        events = service.events(plan, pcm)
        try:
            async for event in events:
                if isinstance(event, Piece):
                    for segment in event.segments:
                        taken = numbering.take(segment)
                        if taken is not None:
                            yield segment_event(taken)
                elif isinstance(event, TranscriptionResult):
                    results.append(event)
                    for taken in numbering.finish(event):
                        yield segment_event(taken)
        finally:
            await events.aclose()
    whole = diarized_json(results, speakers.speakers)
    yield transcript_done(whole["text"], max(result.duration for result in results))


async def _acoustic_events(
    service: TranscriptionService, plan: _Plan, path: Path
) -> AsyncGenerator[bytes, None]:
    """Diarized by voice: the speakers are known only once the whole file is transcribed and diarized, so
    the segment events come together, then `done`; an error before them still answers with its status."""
    from talkies.services.transcription import acoustic_transcript

    result, segments = await acoustic_transcript(service, plan, path)
    for segment in segments:
        yield segment_event(segment)
    yield transcript_done(diarized_body(segments, result.duration)["text"], result.duration)


def _words(segments: Iterable[Segment]) -> list[Word]:
    return [word for segment in segments for word in segment.words]
