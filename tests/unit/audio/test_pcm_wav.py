"""The 16-bit PCM mono WAV reader: the same samples as PyAV, and PyAV for everything it is unsure of."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from tests.unit.audio.samples import tone, write_wav

from talkies.audio import decode
from talkies.audio.decode import decode_audio
from talkies.audio.pcm_wav import read_pcm16_mono
from talkies.errors import AudioTooLongError

RATE = 16_000


def pyav(path: Path, rate: int = RATE) -> np.ndarray:
    return decode._decode(path, rate, None, split_channels=False)[0]


@pytest.fixture
def mono16k(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)  # every s16 value range, not only a smooth tone
    noise = rng.uniform(-1.0, 1.0, RATE).astype(np.float32)
    return write_wav(tmp_path / "mono16k.wav", [np.concatenate([tone(440, 0.5, RATE), noise])], RATE)


def test_samples_are_bit_identical_to_pyav(mono16k: Path) -> None:
    fast = read_pcm16_mono(mono16k, sample_rate=RATE)
    assert fast is not None
    assert fast.dtype == np.float32
    assert np.array_equal(fast, pyav(mono16k))


def test_decode_audio_reads_it_without_pyav(mono16k: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = pyav(mono16k)

    def no_pyav(*_: object, **__: object) -> None:
        raise AssertionError("a 16 kHz mono s16 WAV went through PyAV")

    monkeypatch.setattr(decode, "_decode", no_pyav)
    assert np.array_equal(decode_audio(mono16k, sample_rate=RATE), expected)


@pytest.mark.parametrize(
    ("channels", "rate", "width"),
    [(1, 22_050, 2), (2, RATE, 2), (1, RATE, 1), (1, RATE, 4)],
    ids=["other-rate", "stereo", "8-bit", "32-bit"],
)
def test_other_layouts_go_through_pyav(tmp_path: Path, channels: int, rate: int, width: int) -> None:
    path = tmp_path / "other.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(bytes(channels * width * rate // 10))
    assert read_pcm16_mono(path, sample_rate=RATE) is None
    assert decode_audio(path, sample_rate=RATE).size > 0  # PyAV still decodes (and resamples) it


def test_streamed_wav_of_unknown_length_goes_through_pyav(mono16k: Path, tmp_path: Path) -> None:
    """A WAV written to a pipe never gets its sizes filled in: libav reads to the end of the file."""
    data = bytearray(mono16k.read_bytes())
    struct.pack_into("<I", data, 4, 0xFFFFFFFF)
    struct.pack_into("<I", data, 40, 0xFFFFFFFF)  # the data chunk's size (canonical 44-byte header)
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(bytes(data))
    assert read_pcm16_mono(streamed, sample_rate=RATE) is None
    assert np.array_equal(decode_audio(streamed, sample_rate=RATE), pyav(mono16k))


def test_not_a_wav_is_none(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    assert read_pcm16_mono(junk, sample_rate=RATE) is None
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    assert read_pcm16_mono(text, sample_rate=RATE) is None


def test_too_long_is_refused_like_pyav(mono16k: Path) -> None:
    with pytest.raises(AudioTooLongError) as fast:
        read_pcm16_mono(mono16k, sample_rate=RATE, max_seconds=1.0)
    with pytest.raises(AudioTooLongError) as slow:
        decode._decode(mono16k, RATE, 1.0, split_channels=False)
    for caught in (fast, slow):  # PyAV counts what it decoded before stopping, the header knows it all
        assert caught.value.message.startswith("audio is longer than the limit: ")
        assert caught.value.message.endswith("> 1 s (set by TALKIES_MAX_AUDIO_SECONDS)")
    assert "1.5 s" in fast.value.message
    assert read_pcm16_mono(mono16k, sample_rate=RATE, max_seconds=1.5) is not None  # exactly 1.5 s
