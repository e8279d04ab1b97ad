"""Test audio made on the spot: numpy tones written with the stdlib `wave` module."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

SENTENCE = "The quick brown fox jumps over the lazy dog."


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, channels: list[npt.NDArray[np.float32]], rate: int) -> Path:
    interleaved = np.stack(channels, axis=1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(len(channels))
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(interleaved, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def dominant_frequency(pcm: npt.NDArray[np.float32], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[int(np.argmax(spectrum))])
