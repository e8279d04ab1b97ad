"""The one input that needs no decoder: a 16-bit PCM WAV, mono, already at the rate asked for.

That is what recorders and most scripts send (16 kHz mono s16), and opening
it with PyAV costs more than reading it: `av.open` probes the container (measured 18-35 ms on a loaded
2-core box for a 5 s clip, the whole decode 37-74 ms; reading the data chunk 0.3 ms; bench/real_overhead.py
and BENCHMARKS.md, "Where talkies' time goes on a 5 s clip"). The samples are the data chunk's, scaled as
libswresample scales s16 to float (x / 32768), so the result is bit-identical to the PyAV path.

Anything else, or anything this reader is not sure of, returns None and goes through PyAV as before:
another width, rate or channel count, WAVE_FORMAT_EXTENSIBLE, a header whose data size is 0 or larger
than the file (a WAV written to a pipe, whose length was never filled in), an empty data chunk.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from talkies.errors import AudioTooLongError

MAX_SECONDS_VAR = "TALKIES_MAX_AUDIO_SECONDS"
_SAMPLE_BYTES = 2
_S16_SCALE = np.float32(1 / 32768)


def read_pcm16_mono(
    path: Path, *, sample_rate: int, max_seconds: float | None = None
) -> npt.NDArray[np.float32] | None:
    """The samples of `path` as float32 when it is a 16-bit PCM mono WAV at `sample_rate`, else None.

    Raises AudioTooLongError, like the PyAV path, when it holds more than `max_seconds`."""
    try:
        size = path.stat().st_size
        with wave.open(str(path), "rb") as wav:
            if (
                wav.getnchannels() != 1
                or wav.getsampwidth() != _SAMPLE_BYTES
                or wav.getframerate() != sample_rate
                or wav.getcomptype() != "NONE"
            ):
                return None
            frames = wav.getnframes()
            if frames == 0 or frames * _SAMPLE_BYTES > size:
                return None  # length never written (streamed WAV) or a lying header: libav copes
            if max_seconds is not None and frames > math.floor(max_seconds * sample_rate):
                raise too_long(frames / sample_rate, max_seconds)
            data = wav.readframes(frames)
    except (wave.Error, EOFError, OSError):
        return None
    usable = len(data) - len(data) % _SAMPLE_BYTES
    if usable == 0:
        return None
    samples = np.frombuffer(data, dtype="<i2", count=usable // _SAMPLE_BYTES)
    return samples.astype(np.float32) * _S16_SCALE


def too_long(seconds: float, max_seconds: float) -> AudioTooLongError:
    return AudioTooLongError(
        f"audio is longer than the limit: {seconds:.1f} s > {max_seconds:g} s (set by {MAX_SECONDS_VAR})",
        param="file",
    )
