"""G.711 tables against the reference coder (Python 3.11's audioop), and the streaming input decoder."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

from talkies.audio.encode import resample
from talkies.audio.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from talkies.audio.stream_input import StreamDecoder

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


@pytest.fixture(scope="module")
def audioop():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("audioop") is None:
        pytest.skip("audioop is gone (Python 3.13+)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return audioop


def test_decoding_tables_match_the_reference_coder(audioop) -> None:  # type: ignore[no-untyped-def]
    assert np.array_equal(ulaw_to_pcm16(ALL_CODES), np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), np.int16))
    assert np.array_equal(alaw_to_pcm16(ALL_CODES), np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), np.int16))


def test_encoders_match_the_reference_coder_on_every_sample(audioop) -> None:  # type: ignore[no-untyped-def]
    assert pcm16_to_ulaw(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert pcm16_to_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)


def _tone(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12_000).astype(np.int16)


def test_pcm16_in_odd_sized_pieces_equals_the_whole_stream_resampled() -> None:
    tone = _tone(24_000)
    raw = tone.astype("<i2").tobytes()
    decoder = StreamDecoder("pcm16")
    pieces = [decoder.feed(raw[i : i + 777]) for i in range(0, len(raw), 777)]  # odd: splits samples
    streamed = np.concatenate(pieces)
    whole = resample(tone.astype(np.float32) / 32768, 24_000, 16_000)
    assert streamed.size > 0.99 * whole.size  # the resampler holds back its filter delay, no more
    assert np.allclose(streamed, whole[: streamed.size], atol=1e-6)


@pytest.mark.parametrize(("encoding", "encode"), [("pcmu", pcm16_to_ulaw), ("pcma", pcm16_to_alaw)])
def test_g711_streams_decode_to_16_khz(encoding: str, encode) -> None:  # type: ignore[no-untyped-def]
    tone = _tone(8_000)
    decoder = StreamDecoder(encoding)  # type: ignore[arg-type]
    data = encode(tone)
    out = np.concatenate([decoder.feed(data[i : i + 400]) for i in range(0, len(data), 400)])
    reference = resample(tone.astype(np.float32) / 32768, 8_000, 16_000)
    assert out.size > 0.99 * reference.size
    assert np.abs(out - reference[: out.size]).max() < 0.02  # G.711 quantization, nothing else
