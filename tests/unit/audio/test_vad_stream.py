"""The streaming VAD scores a stream fed in pieces exactly as the whole-file VAD scores it, and the turn
detector's hysteresis (pure)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from talkies.audio.decode import decode_audio
from talkies.audio.vad import speech_probabilities
from talkies.audio.vad_stream import START_WINDOWS, SpeechStarted, SpeechStopped, StreamingVad, TurnDetector

needs_vad = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None, reason="the vad extra (silero-vad) is not installed"
)


@needs_vad
def test_pieces_of_any_size_score_like_the_whole_stream(speech_wav) -> None:  # type: ignore[no-untyped-def]
    audio = np.concatenate([np.zeros(8000, np.float32), decode_audio(speech_wav), np.zeros(9000, np.float32)])
    whole = speech_probabilities(audio)
    vad = StreamingVad()
    sizes = [800, 1, 511, 513, 2400, 37]
    pieces, at = [], 0
    for size in sizes * (audio.size // sum(sizes) + 1):
        pieces.append(vad.feed(audio[at : at + size]))
        at += size
    streamed = np.concatenate(pieces)
    complete = audio.size // 512
    assert streamed.size == complete == vad.windows
    assert np.allclose(streamed, whole[:complete], atol=1e-5)
    assert streamed.max() > 0.9  # there is speech in it
    assert streamed[:10].max() < 0.5  # and silence before it


def _push_all(detector: TurnDetector, probabilities: list[float]) -> list[object]:
    events = [detector.push(i, p) for i, p in enumerate(probabilities)]
    return [e for e in events if e is not None]


def test_a_turn_starts_after_consecutive_speech_and_stops_after_the_silence() -> None:
    detector = TurnDetector(threshold=0.5, silence_ms=320)  # 10 windows
    probabilities = [0.1] * 5 + [0.9] * 20 + [0.05] * 9 + [0.9] * 5 + [0.05] * 10 + [0.1] * 3
    assert _push_all(detector, probabilities) == [SpeechStarted(5), SpeechStopped(39)]
    assert not detector.in_speech


def test_a_single_loud_window_is_not_a_turn() -> None:
    detector = TurnDetector(threshold=0.5, silence_ms=100)
    assert START_WINDOWS > 1
    assert _push_all(detector, [0.1, 0.95, 0.1, 0.1, 0.95, 0.2]) == []


def test_the_band_between_the_thresholds_neither_starts_nor_ends_silence() -> None:
    detector = TurnDetector(threshold=0.5, silence_ms=96)  # 3 windows
    events = _push_all(detector, [0.9, 0.9] + [0.4] * 20 + [0.1] * 3)  # 0.4 >= 0.5 - 0.15: still speech
    assert events == [SpeechStarted(0), SpeechStopped(22)]


def test_reset_forgets_an_open_turn() -> None:
    detector = TurnDetector(threshold=0.5, silence_ms=96)
    assert _push_all(detector, [0.9, 0.9, 0.9]) == [SpeechStarted(0)]
    detector.reset()
    assert [detector.push(i, 0.05) for i in range(3, 10)] == [None] * 7
