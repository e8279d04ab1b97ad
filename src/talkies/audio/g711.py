"""G.711 µ-law and A-law (ITU-T G.711), 8 kHz telephone audio: one byte per sample <-> 16-bit PCM.

Decoding is a 256-entry table lookup built once; encoding (used by tests and benchmarks that make G.711
input) follows the reference segment search. `audioop` did this before Python 3.13 removed it.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

G711_SAMPLE_RATE = 8_000
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8_159  # 14-bit magnitudes
_ULAW_BIAS_14 = 0x21


@functools.cache
def _ulaw_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    magnitude = (((codes & 0x0F) << 3) + _ULAW_BIAS) << exponent
    values = np.where(codes & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    return values.astype(np.int16)


@functools.cache
def _alaw_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = (codes & 0x0F) << 4
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    values = np.where(codes & 0x80, magnitude, -magnitude)
    return values.astype(np.int16)


def ulaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    """µ-law bytes -> int16 samples."""
    return _ulaw_table()[np.frombuffer(data, dtype=np.uint8)]


def alaw_to_pcm16(data: bytes) -> npt.NDArray[np.int16]:
    """A-law bytes -> int16 samples."""
    return _alaw_table()[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples -> µ-law bytes."""
    pcm = np.asarray(samples, dtype=np.int32) >> 2  # 14-bit, as the reference coder
    sign = np.where(pcm < 0, 0x80, 0x00)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS_14
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0, 7)
    mantissa = np.where(magnitude >= 0x2000, 0x0F, (magnitude >> (exponent + 1)) & 0x0F)  # clipped: top code
    return bytes((~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes())


def pcm16_to_alaw(samples: npt.NDArray[np.int16]) -> bytes:
    """int16 samples -> A-law bytes."""
    pcm = np.asarray(samples, dtype=np.int32)
    sign = np.where(pcm >= 0, 0x80, 0x00)
    magnitude = np.minimum(np.where(pcm >= 0, pcm, -pcm - 1), 0x7FFF) >> 3
    exponent = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return bytes(((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes())
