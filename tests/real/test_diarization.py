"""Stereo diarization with two real voices: Kokoro's jm_kumo on the left channel, jf_alpha answering on
the right, each channel heard by Whisper base and attributed to its own speaker, in turn order."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from tests.real.helpers import OTHER_VOICE, VOICE, transcribe, wer

LEFT = "The weather is nice today, so we will walk to the park after lunch."  # as test_round_trip's
RIGHT = "That sounds good, I will bring some water and a blanket."
BOUND = 0.25  # test_round_trip.WER_BOUND, for the same reasons


def _pcm(wav_bytes: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav_bytes)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


@pytest.fixture(scope="module")
def dialogue(spoken: Callable[..., bytes]) -> bytes:
    """Left speaks, a pause, then right answers; each channel silent while the other talks."""
    left, rate = _pcm(spoken(LEFT, voice=VOICE))
    right, other_rate = _pcm(spoken(RIGHT, voice=OTHER_VOICE))
    assert rate == other_rate
    pause = np.zeros(rate // 2, "<i2")
    left_channel = np.concatenate([pause, left, pause, np.zeros_like(right), pause])
    right_channel = np.concatenate([pause, np.zeros_like(left), pause, right, pause])
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.stack([left_channel, right_channel], axis=1).tobytes())
    return out.getvalue()


def test_diarized_json_gives_each_voice_its_speaker(client: httpx.Client, dialogue: bytes) -> None:
    body = transcribe(client, dialogue, "dialogue.wav", response_format="diarized_json").json()
    speakers = [s["speaker"] for s in body["segments"]]
    assert set(speakers) == {"A", "B"}, body
    assert speakers == sorted(speakers), body  # A's turn, then B's
    said = {who: " ".join(s["text"] for s in body["segments"] if s["speaker"] == who) for who in "AB"}
    assert wer(LEFT, said["A"]) <= BOUND, said
    assert wer(RIGHT, said["B"]) <= BOUND, said
    first_b = min(s["start"] for s in body["segments"] if s["speaker"] == "B")
    timeline = [(s["speaker"], s["start"], s["end"], s["text"]) for s in body["segments"]]
    assert all(s["start"] <= first_b for s in body["segments"] if s["speaker"] == "A"), timeline  # B answers


def test_diarization_marks_channels_in_verbose_json(client: httpx.Client, dialogue: bytes) -> None:
    body = transcribe(
        client, dialogue, "dialogue.wav", response_format="verbose_json", diarization="true"
    ).json()
    channels = {s["channel"] for s in body["segments"]}
    assert channels == {"L", "R"}, body
    left = " ".join(s["text"] for s in body["segments"] if s["channel"] == "L")
    right = " ".join(s["text"] for s in body["segments"] if s["channel"] == "R")
    assert wer(LEFT, left) <= BOUND, left
    assert wer(RIGHT, right) <= BOUND, right
    assert wer(RIGHT, left) > 0.5, left  # neither channel holds the other's words
    assert wer(LEFT, right) > 0.5, right
