"""Audio in: any file ffmpeg can decode -> float32 PCM at the ASR rate, in-process with PyAV.

PyAV links ffmpeg's libraries, so decoding costs no process spawn (an `ffmpeg` subprocess costs ~90 ms
before it reads a byte, more than our whole per-request budget on a 5 s clip; see bench/decode_speed.py).
Every function here is sync and CPU-bound: callers run it in a worker thread.

Frames are resampled with `av.AudioResampler` (libswresample) as they are decoded and copied into one
growing float32 buffer, so memory is about the size of the result, not a list of thousands of tiny arrays.

Every failure is an `InvalidAudioError` whose message is one line carrying ffmpeg's reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from talkies.audio.pcm_wav import read_pcm16_mono
from talkies.audio.pcm_wav import too_long as _too_long
from talkies.errors import InvalidAudioError

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer

# Demuxers that read other files or URLs named inside the upload (playlists, concat lists, image
# sequences): an uploaded .m3u8 must not make the server read /etc/passwd or fetch a URL.
_REFERENCING_FORMATS = frozenset({"hls", "concat", "image2", "dash", "tee", "ffconcat"})
# Only the upload itself may be opened; nested opens inherit this whitelist.
_OPEN_OPTIONS = {"protocol_whitelist": "file"}
_INITIAL_SECONDS_CAP = 1800.0


@dataclass(frozen=True)
class AudioInfo:
    channels: int
    duration: float  # seconds; 0.0 when the container does not say and nothing decodes
    sample_rate: int


def probe_audio(path: Path) -> AudioInfo:
    """Channels, duration and native rate of the first audio stream, from the container's header.

    When the header carries no duration (raw streams, some Ogg files) the packets are demuxed (not
    decoded) to sum their durations."""
    with _open(path) as container:
        stream = _audio_stream(container)
        duration = _header_duration(container, stream)
        if duration is None:
            duration = _demuxed_duration(container, stream)
        return AudioInfo(
            channels=stream.codec_context.channels,
            duration=duration,
            sample_rate=stream.codec_context.sample_rate,
        )


def decode_audio(
    path: Path, *, sample_rate: int = 16000, max_seconds: float | None = None
) -> npt.NDArray[np.float32]:
    """Decode to float32 mono at `sample_rate`; multi-channel audio is downmixed by libswresample.

    A 16-bit PCM mono WAV already at `sample_rate` is read as it is (talkies.audio.pcm_wav), same samples."""
    pcm = read_pcm16_mono(path, sample_rate=sample_rate, max_seconds=max_seconds)
    if pcm is not None:
        return pcm
    return _decode(path, sample_rate, max_seconds, split_channels=False)[0]


def decode_channels(
    path: Path, *, sample_rate: int = 16000, max_seconds: float | None = None
) -> list[npt.NDArray[np.float32]]:
    """Decode to one float32 array per channel at `sample_rate` (stereo diarization)."""
    return _decode(path, sample_rate, max_seconds, split_channels=True)


def _decode(
    path: Path, sample_rate: int, max_seconds: float | None, *, split_channels: bool
) -> list[npt.NDArray[np.float32]]:
    import av

    limit = None if max_seconds is None else math.floor(max_seconds * sample_rate)
    with _open(path) as container:
        stream = _audio_stream(container)
        duration = _header_duration(container, stream)
        # Headers may estimate (MP3 without a Xing frame): reject early only when clearly over; the
        # decoded sample count below is the exact check.
        if max_seconds is not None and duration is not None and duration > 1.1 * max_seconds + 1.0:
            raise _too_long(duration, max_seconds)
        channels = stream.codec_context.channels if split_channels else 1
        # Planar float keeps channels apart; packed mono makes swresample downmix.
        resampler = av.AudioResampler(
            format="fltp" if split_channels else "flt",
            layout=None if split_channels else "mono",
            rate=sample_rate,
        )
        # The header's duration sizes the buffer, but a lying header must not allocate gigabytes.
        expected = min(duration or 10.0, max_seconds or _INITIAL_SECONDS_CAP, _INITIAL_SECONDS_CAP)
        buffer = _Buffer(channels, int(expected * sample_rate) + sample_rate)
        last_error: str | None = None
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError as exc:
                    # Like the ffmpeg CLI: a damaged packet is skipped, the rest still decodes.
                    last_error = _reason(exc)
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        buffer.append(out.to_ndarray())
                if limit is not None and buffer.size > limit:
                    raise _too_long(buffer.size / sample_rate, max_seconds or 0.0)
            for out in resampler.resample(None):
                buffer.append(out.to_ndarray())
        except av.FFmpegError as exc:
            raise InvalidAudioError(f"could not decode audio: {_reason(exc)}", param="file") from None
        except ValueError as exc:  # e.g. a channel layout change mid-stream that swresample refuses
            raise InvalidAudioError(f"could not decode audio: {_one_line(str(exc))}", param="file") from None
    if limit is not None and buffer.size > limit:
        raise _too_long(buffer.size / sample_rate, max_seconds or 0.0)
    if buffer.size == 0:
        reason = last_error or "the audio stream holds no samples"
        raise InvalidAudioError(f"could not decode audio: {reason}", param="file")
    return buffer.channels()


class _Buffer:
    """A (channels, capacity) float32 array that doubles when full."""

    def __init__(self, channels: int, capacity: int) -> None:
        self._data = np.empty((channels, max(capacity, 1024)), dtype=np.float32)
        self.size = 0

    def append(self, block: npt.NDArray[Any]) -> None:
        if block.ndim != 2 or block.shape[0] != self._data.shape[0]:
            raise ValueError("the channel count changed mid-stream")
        end = self.size + block.shape[1]
        if end > self._data.shape[1]:
            grown = np.empty((self._data.shape[0], max(end, 2 * self._data.shape[1])), dtype=np.float32)
            grown[:, : self.size] = self._data[:, : self.size]
            self._data = grown
        self._data[:, self.size : end] = block
        self.size = end

    def channels(self) -> list[npt.NDArray[np.float32]]:
        if self._data.shape[1] - self.size <= self.size // 8 + 16_000:
            # Nearly full (sized from the header): views, so a long file is not held twice in memory.
            return [row[: self.size] for row in self._data]
        return [row[: self.size].copy() for row in self._data]  # don't pin a mostly empty buffer


def _open(path: Path) -> InputContainer:
    import av

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidAudioError(f"could not read audio: {exc.strerror}", param="file") from None
    if size == 0:
        raise InvalidAudioError("could not decode audio: the file is empty (0 bytes)", param="file")
    try:
        container = av.open(str(path), mode="r", metadata_errors="replace", container_options=_OPEN_OPTIONS)
    except av.FFmpegError as exc:
        raise InvalidAudioError(f"could not decode audio: {_reason(exc)}", param="file") from None
    if container.format.name in _REFERENCING_FORMATS:
        container.close()
        raise InvalidAudioError(
            f"could not decode audio: {container.format.name} input is not accepted", param="file"
        )
    return container


def _audio_stream(container: InputContainer) -> AudioStream:
    if not container.streams.audio:
        container.close()
        raise InvalidAudioError("could not decode audio: the file has no audio stream", param="file")
    return container.streams.audio[0]


def _header_duration(container: InputContainer, stream: AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _demuxed_duration(container: InputContainer, stream: AudioStream) -> float:
    import av

    ticks = 0
    try:
        for packet in container.demux(stream):
            ticks += packet.duration or 0
    except av.FFmpegError as exc:
        raise InvalidAudioError(f"could not decode audio: {_reason(exc)}", param="file") from None
    return float(ticks * stream.time_base) if stream.time_base is not None else 0.0


def _reason(exc: Exception) -> str:
    """ffmpeg's own words, without the errno and the server-side path PyAV appends."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return _one_line(str(reason))


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"
