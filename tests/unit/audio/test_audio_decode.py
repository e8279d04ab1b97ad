from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.unit.audio.samples import dominant_frequency, tone, write_wav

from talkies.audio.decode import AudioInfo, decode_audio, decode_channels, probe_audio
from talkies.errors import InvalidAudioError


@pytest.fixture
def stereo_wav(tmp_path: Path) -> Path:
    """1 s at 44.1 kHz: 440 Hz on the left, 1000 Hz on the right."""
    return write_wav(tmp_path / "stereo.wav", [tone(440, 1.0, 44_100), tone(1000, 1.0, 44_100)], 44_100)


def assert_one_line_error(path: Path, *needles: str) -> str:
    with pytest.raises(InvalidAudioError) as caught:
        decode_audio(path)
    message = caught.value.message
    assert "\n" not in message
    assert str(path.parent) not in message  # ffmpeg's reason, not the server's paths
    for needle in needles:
        assert needle in message
    return message


def test_zero_bytes_is_invalid(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_one_line_error(empty, "empty", "0 bytes")
    with pytest.raises(InvalidAudioError):
        probe_audio(empty)


def test_corrupt_bytes_carry_ffmpegs_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(1).bytes(4000))
    assert_one_line_error(corrupt, "could not decode audio", "Invalid data found when processing input")


def test_text_file_renamed_wav_is_invalid(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 20)
    assert_one_line_error(text, "Invalid data found")


def test_header_without_samples_is_invalid(tmp_path: Path, speech_wav: Path) -> None:
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(speech_wav.read_bytes()[:60])
    assert_one_line_error(truncated, "no samples")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI not installed")
def test_file_without_audio_stream_is_invalid(tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=size=32x32:duration=0.2",
            "-c:v",
            "mpeg4",
            str(video),
        ],
        check=True,
        capture_output=True,
    )
    assert_one_line_error(video, "no audio stream")


def test_missing_file_is_invalid(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "absent.wav", "could not read audio")


def test_longer_than_the_cap_names_the_limit_and_variable(speech_wav: Path) -> None:
    with pytest.raises(InvalidAudioError) as caught:
        decode_audio(speech_wav, max_seconds=1.0)
    assert "1 s" in caught.value.message
    assert "TALKIES_MAX_AUDIO_SECONDS" in caught.value.message
    with pytest.raises(InvalidAudioError, match="TALKIES_MAX_AUDIO_SECONDS"):
        decode_channels(speech_wav, max_seconds=1.0)


def test_cap_is_enforced_while_decoding_when_the_header_says_nothing(tmp_path: Path) -> None:
    # A raw ADTS stream carries no duration in its header, so the cap must stop the decoder itself.
    from talkies.audio.encode import encode_speech

    adts = tmp_path / "long.aac"
    adts.write_bytes(encode_speech([tone(300, 3.0, 24_000)], "aac"))
    with pytest.raises(InvalidAudioError, match="TALKIES_MAX_AUDIO_SECONDS"):
        decode_audio(adts, max_seconds=1.5)
    assert decode_audio(adts, max_seconds=5.0).size > 2.9 * 16_000


def test_within_the_cap_decodes(speech_wav: Path) -> None:
    assert decode_audio(speech_wav, max_seconds=60.0).size > 0


def test_probe_reports_channels_rate_and_duration(stereo_wav: Path) -> None:
    assert probe_audio(stereo_wav) == AudioInfo(channels=2, duration=1.0, sample_rate=44_100)


def test_decode_resamples_to_16k_mono_float32(speech_wav: Path) -> None:
    pcm = decode_audio(speech_wav)
    info = probe_audio(speech_wav)
    assert pcm.dtype == np.float32
    assert pcm.ndim == 1
    assert abs(pcm.size - info.duration * 16_000) <= 16  # 1 ms
    assert 0.05 < float(np.abs(pcm).max()) <= 1.0


def test_decode_downmixes_stereo(stereo_wav: Path) -> None:
    mono = decode_audio(stereo_wav)
    assert mono.size == 16_000
    spectrum = np.abs(np.fft.rfft(mono))
    freqs = np.fft.rfftfreq(mono.size, 1 / 16_000)
    for expected in (440, 1000):  # both channels present in the mix
        assert spectrum[np.argmin(np.abs(freqs - expected))] > 0.2 * spectrum.max()


def test_stereo_decode_returns_two_distinct_channels(stereo_wav: Path) -> None:
    left, right = decode_channels(stereo_wav)
    assert left.dtype == right.dtype == np.float32
    assert left.size == right.size == 16_000
    assert dominant_frequency(left, 16_000) == pytest.approx(440, abs=2)
    assert dominant_frequency(right, 16_000) == pytest.approx(1000, abs=2)


def test_decode_channels_of_mono_is_one_channel(speech_wav: Path) -> None:
    channels = decode_channels(speech_wav)
    assert len(channels) == 1
    np.testing.assert_allclose(channels[0], decode_audio(speech_wav), atol=1e-6)


def test_decode_other_rate(stereo_wav: Path) -> None:
    assert decode_audio(stereo_wav, sample_rate=8000).size == 8000


def test_damaged_packets_are_skipped_like_the_ffmpeg_cli(tmp_path: Path) -> None:
    from talkies.audio.encode import encode_speech

    body = bytearray(encode_speech([tone(440, 3.0, 24_000)], "mp3"))
    rng = np.random.default_rng(0)
    for offset in range(len(body) // 3, len(body) // 3 + 5000, 500):
        body[offset : offset + 40] = rng.bytes(40)
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(body))
    pcm = decode_audio(damaged)
    assert 2.0 * 16_000 < pcm.size < 3.2 * 16_000


def test_streamed_wav_with_unknown_sizes_decodes(tmp_path: Path) -> None:
    # What `ffmpeg ... -f wav -` writes to a pipe: RIFF and data sizes of 0xFFFFFFFF.
    from talkies.audio.encode import to_int16, wav_header

    data = to_int16(tone(440, 1.0, 16_000)).tobytes()
    header = bytearray(wav_header(len(data), 16_000))
    header[4:8] = header[40:44] = b"\xff\xff\xff\xff"
    piped = tmp_path / "piped.wav"
    piped.write_bytes(bytes(header) + data)
    assert decode_audio(piped, max_seconds=10.0).size == 16_000


def test_decoding_holds_about_one_copy_of_the_result(tmp_path: Path) -> None:
    # Frames go straight into one buffer sized from the header: no list of small arrays followed by a
    # concatenate (which peaks at twice the result), no second copy at the end.
    import tracemalloc

    from talkies.audio.encode import encode_speech

    long_clip = tmp_path / "long.flac"
    long_clip.write_bytes(encode_speech([tone(300, 60.0, 16_000, amplitude=0.3)], "flac", 16_000))
    tracemalloc.start()
    try:
        pcm = decode_audio(long_clip)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pcm.size == 60 * 16_000
    assert peak < 1.4 * pcm.nbytes
