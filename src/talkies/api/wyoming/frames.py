"""Wyoming framing and audio, without the server: a bounded event reader (a header line, a data block or
a payload over the limits is refused as `ProtocolError` instead of being read into memory, and every read
has an idle timeout), the audio format of `audio-start` / `audio-chunk`, raw PCM to the 16 kHz mono
float32 the ASR engines take, and re-cutting synthesized PCM into `audio-chunk` pieces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

from talkies.engines.base import ASR_SAMPLE_RATE
from talkies.errors import BadRequestError

if TYPE_CHECKING:
    from wyoming.event import Event

    from talkies.services.transcription import PCM

MAX_HEADER_BYTES = 64 * 1024
MAX_DATA_BYTES = 1024 * 1024
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # one audio-chunk; Home Assistant sends ~2 KiB


class ProtocolError(BadRequestError):
    """A malformed or oversized Wyoming event."""


class IdleTimeoutError(ProtocolError):
    """The client sent nothing for TALKIES_WYOMING_IDLE_TIMEOUT within one read."""


async def rechunk(stream: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into pieces of `size` bytes (the last may be shorter); closes the source."""
    buffer = bytearray()
    try:
        async for part in stream:
            buffer += part
            while len(buffer) >= size:
                yield bytes(buffer[:size])
                del buffer[:size]
        if buffer:
            yield bytes(buffer)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def audio_format(data: dict[str, Any]) -> tuple[int, int, int]:
    try:
        rate, width, channels = int(data["rate"]), int(data["width"]), int(data["channels"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("audio events need integer rate, width and channels") from None
    if not (1000 <= rate <= 384_000) or width not in (1, 2, 4) or not (1 <= channels <= 8):
        raise ProtocolError(
            f"unsupported audio format rate={rate} width={width} channels={channels} "
            "(rate 1000-384000 Hz, width 1, 2 or 4 bytes, 1-8 channels)"
        )
    return rate, width, channels


def to_asr_pcm(data: bytes | bytearray, rate: int, width: int, channels: int) -> PCM:
    """Raw little-endian PCM (8-bit unsigned, 16- or 32-bit signed, interleaved) -> 16 kHz mono float32.

    One float32 array of the mono signal is made (channels are averaged straight from the integers) and
    scaled in place; the raw bytes are read where they lie, not copied."""
    from talkies.audio.encode import resample

    usable = len(data) - len(data) % (width * channels)
    dtype = np.dtype("u1" if width == 1 else f"<i{width}")
    with memoryview(data) as view:
        raw = np.frombuffer(view[:usable], dtype=dtype)
        mono: PCM
        if channels > 1:
            mono = raw.reshape(-1, channels).mean(axis=1, dtype=np.float32)
        else:
            mono = raw.astype(np.float32)
        del raw  # releases the view, so the caller may resize or drop `data`
    if width == 1:
        mono -= 128.0
        mono *= 1.0 / 128.0
    else:
        mono *= 1.0 / float(1 << (8 * width - 1))
    if rate == ASR_SAMPLE_RATE:
        return mono
    return resample(mono, rate, ASR_SAMPLE_RATE)


async def read_event(reader: asyncio.StreamReader, idle_timeout: float) -> Event | None:
    """One Wyoming event, or None at the end of the stream. Refuses oversized or malformed frames, and a
    client that sends nothing for `idle_timeout` seconds within one read (a half-sent frame included)."""
    from wyoming.event import Event

    try:
        line = await _idle(reader.readline(), idle_timeout)
    except (ValueError, asyncio.LimitOverrunError):
        raise ProtocolError(f"event header longer than {MAX_HEADER_BYTES} bytes") from None
    if not line:
        return None
    try:
        header = json.loads(line)
    except ValueError:
        raise ProtocolError("event header is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("event header needs a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event 'data' must be an object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    if data_length:
        try:
            extra = json.loads(await _idle(reader.readexactly(data_length), idle_timeout))
        except ValueError:
            raise ProtocolError("event data block is not JSON") from None
        if not isinstance(extra, dict):
            raise ProtocolError("event data block must be an object")
        data.update(extra)
    payload = await _idle(reader.readexactly(payload_length), idle_timeout) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


async def _idle(read: Coroutine[Any, Any, bytes], seconds: float) -> bytes:
    try:
        async with asyncio.timeout(seconds):
            return await read
    except TimeoutError:
        raise IdleTimeoutError(
            f"no data from the client for {seconds:g}s (TALKIES_WYOMING_IDLE_TIMEOUT): closing"
        ) from None


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key) or 0
    if not isinstance(value, int) or value < 0:
        raise ProtocolError(f"event {key} must be a non-negative integer")
    if value > limit:
        raise ProtocolError(f"event {key} {value} exceeds the limit of {limit} bytes")
    return value
