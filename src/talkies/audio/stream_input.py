"""Raw audio arriving in pieces (a realtime session's `input_audio_buffer.append`) -> 16 kHz mono float32.

`StreamDecoder` keeps what must survive between pieces: an odd trailing byte of 16-bit PCM, and the
resampler's filter state (libswresample through PyAV, stateful across frames), so a stream converted in
50 ms pieces sounds the same as converted whole: no clicks at piece boundaries for the VAD or the engine.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from talkies.audio.g711 import G711_SAMPLE_RATE, alaw_to_pcm16, ulaw_to_pcm16

InputEncoding = Literal["pcm16", "pcmu", "pcma"]
PCM16_SAMPLE_RATE = 24_000  # OpenAI's `audio/pcm` / `pcm16`: 24 kHz mono little-endian, always


class StreamDecoder:
    """One session's input format; `feed(bytes)` returns the 16 kHz float32 samples ready so far."""

    def __init__(self, encoding: InputEncoding, *, out_rate: int = 16_000) -> None:
        self.encoding = encoding
        self.in_rate = PCM16_SAMPLE_RATE if encoding == "pcm16" else G711_SAMPLE_RATE
        self.out_rate = out_rate
        self._odd = b""
        self._resampler: Any = None
        self._pts = 0

    def feed(self, data: bytes) -> npt.NDArray[np.float32]:
        if self.encoding == "pcm16":
            data = self._odd + data
            even = len(data) - len(data) % 2
            self._odd = data[even:]
            samples = np.frombuffer(data[:even], dtype="<i2")
        elif self.encoding == "pcmu":
            samples = ulaw_to_pcm16(data)
        else:
            samples = alaw_to_pcm16(data)
        pcm = samples.astype(np.float32) / 32768.0
        return self._resample(pcm)

    def _resample(self, pcm: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if self.in_rate == self.out_rate or pcm.size == 0:
            return pcm
        import av

        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.in_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.in_rate)
        self._pts += pcm.size
        pieces = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)
