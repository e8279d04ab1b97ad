"""Voice activity on a live stream: the Silero model of `talkies.audio.vad`, fed as audio arrives.

`StreamingVad` scores each complete 32 ms window of 16 kHz audio with the same sequence model and window
layout as `speech_probabilities` (each window prefixed with the previous window's last 64 samples), but
carries the model's LSTM state and the partial window between calls: feeding a stream in 50 ms pieces
gives the probabilities of scoring it whole.

`TurnDetector` turns those probabilities into turns (pure, no model): speech starts at a window at or
above `threshold` once `START_WINDOWS` such windows follow each other, and stops after `silence_ms` of
windows below `threshold - 0.15` (silero's hysteresis). Positions are window indices from the start of
the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from talkies.audio.vad import CONTEXT, NEG_THRESHOLD_GAP, VAD_SAMPLE_RATE, WINDOW, vad_session

WINDOW_MS = WINDOW * 1000 / VAD_SAMPLE_RATE  # 32 ms
START_WINDOWS = 2  # consecutive speech windows (64 ms) before a turn starts: a click is not a turn


class StreamingVad:
    """Speech probability of each complete window of a 16 kHz mono stream, fed in pieces of any size."""

    def __init__(self) -> None:
        self._hidden = np.zeros((1, 1, 128), dtype=np.float32)
        self._cell = np.zeros((1, 1, 128), dtype=np.float32)
        self._tail = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.windows = 0  # windows scored so far

    def feed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Probabilities of the windows completed by `audio` (possibly none)."""
        samples = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32).reshape(-1)])
        count = samples.size // WINDOW
        self._pending = samples[count * WINDOW :].copy()
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        windows = samples[: count * WINDOW].reshape(count, WINDOW)
        block = np.empty((count, CONTEXT + WINDOW), dtype=np.float32)
        block[:, CONTEXT:] = windows
        block[0, :CONTEXT] = self._tail
        block[1:, :CONTEXT] = windows[:-1, -CONTEXT:]
        self._tail = windows[-1, -CONTEXT:].copy()
        values, self._hidden, self._cell = vad_session().run(
            ["speech_probs", "hn", "cn"], {"input": block, "h": self._hidden, "c": self._cell}
        )
        self.windows += count
        return np.asarray(values, dtype=np.float32).reshape(-1)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    window: int  # first speech window


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    window: int  # first window after the speech (where the silence began)


class TurnDetector:
    """Speech start / stop over window probabilities, one `push` per scored window."""

    def __init__(self, threshold: float, silence_ms: int) -> None:
        self.threshold = threshold
        self.neg_threshold = max(threshold - NEG_THRESHOLD_GAP, 0.01)
        self.silence_windows = max(1, round(silence_ms / WINDOW_MS))
        self.in_speech = False
        self._run_start: int | None = None  # candidate start while fewer than START_WINDOWS have passed
        self._run = 0
        self._silence_from: int | None = None

    def reset(self) -> None:
        """Forget an open turn (the buffer was committed or cleared by the client)."""
        self.in_speech = False
        self._run_start = None
        self._run = 0
        self._silence_from = None

    def push(self, window: int, probability: float) -> SpeechStarted | SpeechStopped | None:
        if not self.in_speech:
            if probability >= self.threshold:
                if self._run_start is None:
                    self._run_start = window
                self._run += 1
                if self._run >= START_WINDOWS:
                    self.in_speech = True
                    start, self._run_start, self._run = self._run_start, None, 0
                    return SpeechStarted(start)
            else:
                self._run_start, self._run = None, 0
            return None
        if probability >= self.threshold:
            self._silence_from = None
        elif probability < self.neg_threshold:
            if self._silence_from is None:
                self._silence_from = window
            if window + 1 - self._silence_from >= self.silence_windows:
                stopped = SpeechStopped(self._silence_from)
                self.reset()
                return stopped
        return None
