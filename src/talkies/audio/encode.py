"""Speech out: float32 PCM -> the contract's six response formats, in-process with PyAV.

The PyAV wheel bundles libmp3lame, libopus, ffmpeg's native AAC and FLAC encoders, so no ffmpeg process
is spawned. `SpeechEncoder` takes PCM chunks as synthesis produces them and hands back the bytes that are
ready, so a response can start streaming before synthesis ends. Everything here is sync and CPU-bound:
callers run it in a worker thread.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt

from talkies.engines.base import TTS_SAMPLE_RATE
from talkies.errors import EngineError, UnsupportedFormatError

if TYPE_CHECKING:
    from av.audio.resampler import AudioResampler
    from av.audio.stream import AudioStream
    from av.container import OutputContainer

SPEECH_FORMATS: Final[dict[str, str]] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "application/octet-stream",
}
"""response_format -> Content-Type, in the contract's order (mp3 is the default)."""

DEFAULT_SPEECH_FORMAT: Final = "mp3"


# format -> (muxer, encoder, bit rate or None, encoder options)
_CODECS: Final[dict[str, tuple[str, str, int | None, dict[str, str]]]] = {
    "mp3": ("mp3", "libmp3lame", 128_000, {}),  # CBR is libmp3lame's default when a bit rate is set
    "opus": ("ogg", "libopus", 64_000, {"vbr": "on", "application": "voip"}),
    "aac": ("adts", "aac", 128_000, {"profile": "aac_low"}),
    "flac": ("flac", "flac", None, {}),
}
_OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
# Ogg holds packets until a page spans 1 s by default; shorter pages let a stream start sooner.
_MUXER_OPTIONS: Final[dict[str, dict[str, str]]] = {"ogg": {"page_duration": "100000"}}


def normalize_speech_format(name: str | None) -> str:
    """The canonical format name; None -> mp3; anything unknown -> UnsupportedFormatError."""
    if name is None:
        return DEFAULT_SPEECH_FORMAT
    key = name.strip().lower()
    if key not in SPEECH_FORMATS:
        raise UnsupportedFormatError(
            f"unsupported response_format {name!r}; expected one of: {', '.join(SPEECH_FORMATS)}",
            param="response_format",
        )
    return key


def to_int16(pcm: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int16]:
    """Float in [-1, 1] -> int16, clipping anything outside instead of wrapping around (NaN -> 0)."""
    scaled = _clean(pcm) * 32767.0
    rounded: npt.NDArray[np.int16] = np.rint(scaled).astype(np.int16)
    return rounded


def _clean(pcm: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    # A misbehaving model can emit NaN / inf; encoders must get finite samples in [-1, 1].
    finite = np.nan_to_num(np.asarray(pcm, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(finite, -1.0, 1.0)


def wav_header(data_bytes: int, sample_rate: int = TTS_SAMPLE_RATE, channels: int = 1) -> bytes:
    """A 44-byte RIFF/WAVE header for s16le PCM with exact RIFF (36 + data) and data sizes."""
    block_align = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


STREAMING_WAV_SIZE: Final = 0xFFFFFFFF
"""RIFF and data sizes of a streamed WAV: unknown length, read to the end (what OpenAI sends)."""


def streaming_wav_header(sample_rate: int = TTS_SAMPLE_RATE, channels: int = 1) -> bytes:
    """A WAV header sent before the audio's length is known: both sizes 0xFFFFFFFF."""
    header = bytearray(wav_header(0, sample_rate, channels))
    header[4:8] = struct.pack("<I", STREAMING_WAV_SIZE)
    header[40:44] = struct.pack("<I", STREAMING_WAV_SIZE)
    return bytes(header)


def resample(pcm: npt.NDArray[np.floating[Any]], from_rate: int, to_rate: int) -> npt.NDArray[np.float32]:
    """Mono float32 resampling with libswresample's windowed-sinc filter (not linear interpolation).

    The output has round(len * to_rate / from_rate) samples: the filter's delay is flushed out."""
    samples = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
    if from_rate == to_rate or samples.size == 0:
        return samples.copy()
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    pieces = [out.to_ndarray().reshape(-1) for out in resampler.resample(_frame(samples, from_rate, 0))]
    pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    result = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    expected = round(samples.size * to_rate / from_rate)
    if result.size < expected:
        result = np.concatenate([result, np.zeros(expected - result.size, dtype=np.float32)])
    return np.ascontiguousarray(result[:expected], dtype=np.float32)


class SpeechEncoder:
    """Incremental encoder: `feed()` float32 mono chunks, send what it returns, then `finish()`.

    With `stream=True` (the default), mp3 / opus / aac / flac / pcm bytes come back as soon as the encoder
    emits them. The muxer then writes to a sink that cannot seek, so FLAC's STREAMINFO carries no total
    sample count or MD5 and MP3 has no Xing/LAME frame (so decoders cannot trim the encoder delay), exactly
    like a piped ffmpeg. `wav` is held back until `finish()` so that its RIFF and data sizes are exact,
    unless `stream_wav=True`: then the first bytes are a header declaring 0xFFFFFFFF for both sizes
    (unknown length, as OpenAI streams WAV) and PCM follows as it comes. `streams` says which it is.

    With `stream=False`, `feed()` returns nothing and `finish()` the whole body, which the muxer could
    revisit: complete FLAC STREAMINFO, MP3 with a Xing/LAME frame.
    """

    def __init__(
        self, fmt: str, sample_rate: int = TTS_SAMPLE_RATE, *, stream: bool = True, stream_wav: bool = False
    ) -> None:
        self.format = normalize_speech_format(fmt)
        self.content_type = SPEECH_FORMATS[self.format]
        self.sample_rate = sample_rate
        self.streams = stream and (self.format != "wav" or stream_wav)
        self.samples = 0  # fed so far, at sample_rate
        self._held: list[bytes] = []  # wav only
        self._held_bytes = 0
        self._header_due = self.streams and self.format == "wav"
        self._finished = False
        self._muxer: _Muxer | None = None
        if self.format in _CODECS:
            self._muxer = _Muxer(self.format, sample_rate, seekable=not stream)

    def feed(self, pcm: npt.NDArray[np.floating[Any]]) -> bytes:
        if self._finished:
            raise RuntimeError("SpeechEncoder.feed() after finish()")
        samples = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.samples += samples.size
        if self._muxer is not None:
            return self._muxer.feed(_clean(samples))
        data = to_int16(samples).tobytes()
        if self.streams:  # pcm, or wav after its streaming header
            return self._take_header() + data
        self._held.append(data)
        self._held_bytes += len(data)
        return b""

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        if self._muxer is not None:
            return self._muxer.finish()
        if self.streams:
            return self._take_header()  # a streamed WAV of no samples is still a WAV
        body = b"".join(self._held)
        self._held.clear()
        if self.format == "pcm":
            return body
        return wav_header(len(body), self.sample_rate) + body

    def _take_header(self) -> bytes:
        if not self._header_due:
            return b""
        self._header_due = False
        return streaming_wav_header(self.sample_rate)

    def close(self) -> None:
        """Release the encoder without producing output (client went away, synthesis failed)."""
        self._finished = True
        self._held.clear()
        if self._muxer is not None:
            self._muxer.close()

    def __enter__(self) -> SpeechEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def encode_speech(
    chunks: Iterable[npt.NDArray[np.floating[Any]]], fmt: str, sample_rate: int = TTS_SAMPLE_RATE
) -> bytes:
    """Encode a whole utterance into one response body."""
    encoder = SpeechEncoder(fmt, sample_rate, stream=False)
    parts: list[bytes] = []
    try:
        parts.extend(encoder.feed(chunk) for chunk in chunks)
        parts.append(encoder.finish())
    finally:
        encoder.close()
    return b"".join(parts)


class _Sink:
    """A write-only file for PyAV: no `seek`, so muxers never rewrite bytes already handed out."""

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        return data


class _SeekableSink(io.BytesIO):
    """The whole body in memory; muxers may seek back to complete headers. Handed out at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.complete = False

    def take(self) -> bytes:
        return self.getvalue() if self.complete else b""


class _Muxer:
    def __init__(self, fmt: str, sample_rate: int, *, seekable: bool) -> None:
        import av

        muxer, codec, bit_rate, options = _CODECS[fmt]
        rate = sample_rate
        if codec == "libopus" and rate not in _OPUS_RATES:
            rate = 48_000
        self._rate_in = sample_rate
        self._sink: _Sink | _SeekableSink = _SeekableSink() if seekable else _Sink()
        self._pts = 0
        try:
            self._container: OutputContainer = av.open(
                self._sink, mode="w", format=muxer, container_options=_MUXER_OPTIONS.get(muxer, {})
            )
            stream = cast("AudioStream", self._container.add_stream(codec, rate=rate, options=options))
            stream.layout = "mono"
            if bit_rate is not None:
                stream.bit_rate = bit_rate
            self._stream: AudioStream = stream
            self._container.start_encoding()
            frame_size = stream.codec_context.frame_size or None
            self._resampler: AudioResampler = av.AudioResampler(
                format=stream.codec_context.format, layout="mono", rate=rate, frame_size=frame_size
            )
        except av.FFmpegError as exc:
            raise EngineError(f"could not start the {fmt} encoder: {exc}") from exc

    def feed(self, samples: npt.NDArray[np.float32]) -> bytes:
        if samples.size == 0:
            return b""
        frame = _frame(samples, self._rate_in, self._pts)
        self._pts += samples.size
        self._encode(self._resampler.resample(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        import av

        try:
            self._encode(self._resampler.resample(None))
            self._mux(self._stream.encode(None))
            self._container.close()
            if isinstance(self._sink, _SeekableSink):
                self._sink.complete = True
        except av.FFmpegError as exc:
            raise EngineError(f"audio encoding failed: {exc}") from exc
        return self._sink.take()

    def close(self) -> None:
        # Closing an already closed container is a no-op in PyAV.
        self._container.close()

    def _encode(self, frames: list[Any]) -> None:
        import av

        try:
            for frame in frames:
                self._mux(self._stream.encode(frame))
        except av.FFmpegError as exc:
            raise EngineError(f"audio encoding failed: {exc}") from exc

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            self._container.mux(packet)


def _frame(samples: npt.NDArray[np.float32], rate: int, pts: int) -> Any:
    from fractions import Fraction

    import av

    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame
