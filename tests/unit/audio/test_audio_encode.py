from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from tests.unit.audio.samples import dominant_frequency, tone

from talkies.audio.decode import decode_audio
from talkies.audio.encode import (
    SPEECH_FORMATS,
    SpeechEncoder,
    encode_speech,
    normalize_speech_format,
    resample,
    to_int16,
    wav_header,
)
from talkies.errors import UnsupportedFormatError

RATE = 24_000
TONE = tone(440, 0.5, RATE)  # 12,000 samples


def chunks(pcm: np.ndarray, size: int = 2400) -> list[np.ndarray]:
    return [pcm[i : i + size] for i in range(0, pcm.size, size)]


def decode_back(tmp_path: Path, body: bytes, fmt: str) -> np.ndarray:
    path = tmp_path / f"speech.{fmt}"
    path.write_bytes(body)
    return decode_audio(path, sample_rate=RATE)


def test_formats_and_content_types_match_the_contract() -> None:
    assert SPEECH_FORMATS == {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "application/octet-stream",
    }


def test_normalize_speech_format() -> None:
    assert normalize_speech_format(None) == "mp3"
    assert normalize_speech_format(" FLAC ") == "flac"
    with pytest.raises(UnsupportedFormatError) as caught:
        normalize_speech_format("ogg")
    assert caught.value.param == "response_format"
    for name in SPEECH_FORMATS:
        assert name in caught.value.message


def test_wav_has_exact_riff_and_data_sizes() -> None:
    body = encode_speech(chunks(TONE), "wav")
    assert body[:4] == b"RIFF"
    assert body[8:16] == b"WAVE" + b"fmt "
    assert struct.unpack("<I", body[4:8])[0] == len(body) - 8
    assert body[36:40] == b"data"
    assert struct.unpack("<I", body[40:44])[0] == len(body) - 44 == 2 * TONE.size
    fmt_size, codec, channels, rate, byte_rate, align, bits = struct.unpack("<IHHIIHH", body[16:36])
    assert (fmt_size, codec, channels, rate, byte_rate, align, bits) == (16, 1, 1, RATE, 2 * RATE, 2, 16)


def test_wav_header_sizes_for_empty_audio() -> None:
    header = wav_header(0)
    assert len(header) == 44
    assert struct.unpack("<I", header[4:8])[0] == 36
    assert struct.unpack("<I", header[40:44])[0] == 0


def test_streamed_wav_is_held_until_finish_so_sizes_are_exact() -> None:
    encoder = SpeechEncoder("wav")
    assert not encoder.streams
    assert all(encoder.feed(piece) == b"" for piece in chunks(TONE))
    body = encoder.finish()
    assert struct.unpack("<I", body[40:44])[0] == 2 * TONE.size
    assert 0xFFFFFFFF not in struct.unpack("<II", body[4:8] + body[40:44])


def test_pcm_is_raw_s16le_two_bytes_per_sample() -> None:
    body = encode_speech(chunks(TONE), "pcm")
    assert len(body) == 2 * TONE.size
    np.testing.assert_array_equal(np.frombuffer(body, "<i2"), to_int16(TONE))


def test_float_to_int16_clips_instead_of_wrapping() -> None:
    pcm = np.array([0.0, 0.5, 1.0, 1.7, -1.0, -3.0, 1e-6], dtype=np.float32)
    assert to_int16(pcm).tolist() == [0, 16384, 32767, 32767, -32767, -32767, 0]


def test_non_finite_samples_become_silence_or_full_scale(tmp_path: Path) -> None:
    pcm = np.array([np.nan, np.inf, -np.inf, 0.25], dtype=np.float32)
    assert to_int16(pcm).tolist() == [0, 32767, -32767, 8192]
    nan_block = np.full(2400, np.nan, np.float32)
    assert not decode_back(tmp_path, encode_speech([nan_block], "flac"), "flac").any()
    assert not decode_back(tmp_path, encode_speech([nan_block], "opus"), "opus").any()


def test_encoder_as_context_manager() -> None:
    with SpeechEncoder("opus") as encoder:
        head = encoder.feed(TONE)
    assert head[:4] == b"OggS"
    with pytest.raises(RuntimeError):
        encoder.feed(TONE)


def test_flac_magic(tmp_path: Path) -> None:
    body = encode_speech(chunks(TONE), "flac")
    assert body[:4] == b"fLaC"
    np.testing.assert_allclose(decode_back(tmp_path, body, "flac"), TONE, atol=1 / 16_000)


def test_opus_is_ogg_with_opus_head() -> None:
    body = encode_speech(chunks(TONE), "opus")
    assert body[:4] == b"OggS"
    assert b"OpusHead" in body[:100]


def test_aac_is_adts() -> None:
    body = encode_speech(chunks(TONE), "aac")
    assert body[0] == 0xFF
    assert body[1] & 0xF6 == 0xF0  # 12-bit sync, layer 00
    profile = (body[2] >> 6) + 1
    assert profile == 2  # AAC-LC


def test_mp3_starts_with_id3_or_frame_sync() -> None:
    body = encode_speech(chunks(TONE), "mp3")
    assert body[:3] == b"ID3" or (body[0] == 0xFF and body[1] & 0xE0 == 0xE0)
    if body[:3] == b"ID3":  # the first MPEG frame follows the tag
        size = (body[6] << 21) | (body[7] << 14) | (body[8] << 7) | body[9]
        frame = body[10 + size :]
        assert frame[0] == 0xFF
        assert frame[1] & 0xE0 == 0xE0


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_tone_round_trip_keeps_duration_and_pitch(tmp_path: Path, fmt: str) -> None:
    decoded = decode_back(tmp_path, encode_speech(chunks(TONE), fmt), fmt)
    # Opus signals its pre-skip, a whole MP3 carries a LAME frame with delay and padding; raw ADTS
    # cannot signal AAC's priming, so it comes back up to ~2 frames longer.
    tolerance = int(0.07 * RATE) if fmt == "aac" else 0
    assert abs(decoded.size - TONE.size) <= tolerance
    assert dominant_frequency(decoded, RATE) == pytest.approx(440, abs=4)
    assert 0.3 < float(np.abs(decoded).max()) < 0.7


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "pcm"])
def test_streaming_formats_emit_bytes_before_finish(fmt: str) -> None:
    encoder = SpeechEncoder(fmt)
    assert encoder.streams
    early = b"".join(encoder.feed(piece) for piece in chunks(tone(440, 2.0, RATE)))
    late = encoder.finish()
    assert len(early) > len(late)


def test_feed_after_finish_is_an_error() -> None:
    encoder = SpeechEncoder("mp3")
    encoder.feed(TONE)
    encoder.finish()
    assert encoder.finish() == b""
    with pytest.raises(RuntimeError):
        encoder.feed(TONE)


def test_close_without_finish_releases_the_encoder() -> None:
    encoder = SpeechEncoder("aac")
    encoder.feed(TONE)
    encoder.close()
    encoder.close()


def test_encoders_share_nothing_between_instances() -> None:
    first, second = SpeechEncoder("opus"), SpeechEncoder("opus")
    a = first.feed(TONE) + first.finish()
    b = second.feed(TONE) + second.finish()
    assert a[:4] == b[:4] == b"OggS"


def test_resample_length_and_pitch() -> None:
    source = tone(1000, 1.0, 22_050)
    out = resample(source, 22_050, RATE)
    assert out.dtype == np.float32
    assert out.size == RATE
    assert dominant_frequency(out, RATE) == pytest.approx(1000, abs=2)
    np.testing.assert_array_equal(resample(source, 22_050, 22_050), source)
    assert resample(np.zeros(0, np.float32), 16_000, 24_000).size == 0


def test_resample_filters_instead_of_aliasing() -> None:
    # 10 kHz is above the 8 kHz Nyquist of the target: a real resampler removes it, linear
    # interpolation folds it back down to 6 kHz at a large fraction of its amplitude.
    out = resample(tone(10_000, 1.0, RATE, amplitude=0.5), RATE, 16_000)
    steady = out[1000:-1000]
    assert float(np.sqrt(np.mean(steady**2))) < 0.02


def test_mp3_is_128k_cbr() -> None:
    body = encode_speech([tone(440, 1.0, RATE)], "mp3")
    size = (body[6] << 21) | (body[7] << 14) | (body[8] << 7) | body[9]
    frames, offset, bitrates = body[10 + size :], 0, set()
    while offset + 4 <= len(frames):
        header = int.from_bytes(frames[offset : offset + 4], "big")
        assert header >> 21 == 0x7FF  # every frame starts with a sync word
        version, bitrate_index, padding = (header >> 19) & 3, (header >> 12) & 15, (header >> 9) & 1
        assert version == 2  # MPEG-2: 24 kHz
        bitrates.add(bitrate_index)
        offset += 72 * 128_000 // RATE + padding  # frame length of an MPEG-2 layer III frame at 128 kbps
    assert offset == len(frames)
    assert bitrates == {12}  # 128 kbps in MPEG-2 layer III's table, in every frame


@pytest.mark.parametrize("fmt", list(SPEECH_FORMATS))
def test_empty_input_still_encodes(fmt: str) -> None:
    body = encode_speech([], fmt)
    if fmt == "wav":
        assert body == wav_header(0)
    elif fmt == "pcm":
        assert body == b""


def test_whole_body_mode_returns_everything_at_finish() -> None:
    encoder = SpeechEncoder("flac", stream=False)
    assert not encoder.streams
    assert all(encoder.feed(piece) == b"" for piece in chunks(TONE))
    body = encoder.finish()
    assert body[:4] == b"fLaC"
    # STREAMINFO (after the 4-byte block header) holds the total sample count: 36 bits at byte 13.
    info = body[8:42]
    total = int.from_bytes(info[13:18], "big") & 0xFFFFFFFFF
    assert total == TONE.size


def test_streamed_flac_cannot_know_its_length() -> None:
    encoder = SpeechEncoder("flac")
    body = b"".join(encoder.feed(piece) for piece in chunks(TONE)) + encoder.finish()
    assert int.from_bytes(body[8:42][13:18], "big") & 0xFFFFFFFFF == 0


def test_whole_pcm_body() -> None:
    encoder = SpeechEncoder("pcm", stream=False)
    assert encoder.feed(TONE) == b""
    assert len(encoder.finish()) == 2 * TONE.size
