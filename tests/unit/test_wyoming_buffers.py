"""What a Wyoming connection holds between events (issue 25, item 1): streamed synthesis text split into
sentences incrementally and capped, audio capped in bytes and seconds, PCM converted with one float copy."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import pytest

from talkies.api.wyoming import buffers
from talkies.api.wyoming.buffers import AudioBuffer, SentenceBuffer
from talkies.api.wyoming.frames import to_asr_pcm
from talkies.errors import BadRequestError, InvalidAudioError, PayloadTooLargeError

TEXT = "Hello there. How are you today? Fine!  Thanks… Bye.\nNext line 。 And more"


def _whole_split(text: str) -> tuple[list[str], str]:
    *complete, rest = re.split(r"(?<=[.!?…。！？])\s+", text)
    return complete, rest


@pytest.mark.parametrize("seed", range(20))
def test_incremental_split_matches_a_split_of_the_whole_text(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(TEXT)), rng.randint(1, 15)))
    pieces = [TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TEXT)], strict=True)]
    buffer = SentenceBuffer(limit=1000)
    sentences = [s for piece in pieces for s in buffer.add(piece)]
    complete, rest = _whole_split(TEXT)
    # a whitespace run cut in two leaves its second half at the start of the next sentence: spoken alike
    assert [s.strip() for s in sentences if s.strip()] == [s.strip() for s in complete if s.strip()]
    assert buffer.flush().strip() == rest.strip()
    assert buffer.pending == 0


def test_only_new_text_is_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream of chunks without a sentence end costs the size of the chunks, not chunks x pending."""
    scanned = []
    pattern = buffers._SENTENCE_END

    class Counting:
        def finditer(self, text: str, pos: int = 0) -> Any:
            scanned.append(len(text) - pos)
            return pattern.finditer(text, pos)

    monkeypatch.setattr(buffers, "_SENTENCE_END", Counting())
    buffer = SentenceBuffer(limit=1_000_000)
    for _ in range(500):
        assert buffer.add("x" * 1000) == []
    assert buffer.pending == 500_000
    assert sum(scanned) == 500_000
    assert buffer.add(". Done") == ["x" * 500_000 + "."]
    assert buffer.flush() == "Done"


def test_pending_text_over_the_limit_is_refused_and_dropped() -> None:
    buffer = SentenceBuffer(limit=10)
    assert buffer.add("One. Two") == ["One."]
    buffer.add("abc")  # 6 pending
    with pytest.raises(BadRequestError, match="TALKIES_MAX_INPUT_CHARS"):
        buffer.add("12345")
    assert buffer.pending == 0
    assert buffer.add("Ok. ") == ["Ok."]  # spoken sentences do not count against the limit
    assert buffer.add("x" * 10) == []
    assert buffer.pending == 10


def test_audio_is_capped_in_bytes_at_the_declared_format() -> None:
    audio = AudioBuffer(384_000, 4, 8, max_bytes=1000, max_seconds=4 * 3600)
    assert audio.limit == 1000
    audio.add(b"\0" * 600)
    with pytest.raises(PayloadTooLargeError, match="TALKIES_MAX_UPLOAD_BYTES"):
        audio.add(b"\0" * 600)
    assert audio.refused
    assert len(audio.data) == 0  # freed at once
    audio.add(b"\0" * 600)  # the rest of the utterance is dropped without another error
    assert len(audio.data) == 0


def test_audio_is_capped_in_seconds_when_that_is_less() -> None:
    audio = AudioBuffer(16_000, 2, 1, max_bytes=100 * 1024 * 1024, max_seconds=1)
    assert audio.limit == 32_000
    audio.add(b"\0" * 32_000)  # exactly one second
    with pytest.raises(InvalidAudioError, match="TALKIES_MAX_AUDIO_SECONDS"):
        audio.add(b"\0\0")


@pytest.mark.parametrize(
    ("width", "dtype", "scale", "offset"),
    [(1, np.uint8, 128.0, 128.0), (2, np.int16, 32768.0, 0.0), (4, np.int32, 2147483648.0, 0.0)],
)
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_pcm_conversion_per_width_and_channel_count(
    width: int, dtype: Any, scale: float, offset: float, channels: int
) -> None:
    rate = 16_000
    t = np.arange(rate // 10) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t)
    frames = np.repeat(wave[:, None], channels, axis=1)
    frames[:, 0] += 0.1  # channels differ: the result is their mean
    raw = np.round(frames * scale + offset).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    data = bytearray(raw + b"\x01" * (width * channels - 1))  # a trailing partial frame is ignored
    pcm = to_asr_pcm(data, rate, width, channels)
    expected = wave + 0.1 / channels
    assert pcm.dtype == np.float32
    assert pcm.shape == (len(wave),)
    assert np.abs(pcm - expected).max() < 2.0 / 128
    data += b"\0" * 8  # the view into `data` is released: it can be resized afterwards


def test_pcm_conversion_resamples_to_16k() -> None:
    data = (np.zeros(48_000, dtype="<i2")).tobytes()
    assert to_asr_pcm(data, 48_000, 2, 1).shape == (16_000,)
