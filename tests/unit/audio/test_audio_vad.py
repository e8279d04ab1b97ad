from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from talkies.audio.decode import decode_audio
from talkies.audio.vad import (
    WINDOW,
    VadOptions,
    model_path,
    regions_from_probabilities,
    speech_probabilities,
    speech_regions,
    split_long_region,
    vad_session,
)
from talkies.engines.base import Region

needs_vad = pytest.mark.skipif(
    importlib.util.find_spec("silero_vad") is None, reason="the vad extra (silero-vad) is not installed"
)
WINDOW_S = WINDOW / 16_000


# --- region splitting (pure) ---------------------------------------------------------------------


def probs_with_silences(length: int, silences: list[tuple[int, int]], low: float = 0.1) -> np.ndarray:
    probs = np.full(length, 0.9)
    for start, end in silences:
        probs[start:end] = low
    return probs


def test_short_region_is_not_split() -> None:
    assert split_long_region(probs_with_silences(100, [(40, 50)]), 0, 100, 100) == [(0, 100)]


def test_split_at_the_longest_silence() -> None:
    probs = probs_with_silences(100, [(20, 22), (30, 35), (60, 62)])
    assert split_long_region(probs, 0, 100, 70) == [(0, 30), (35, 100)]


def test_split_recurses_until_no_span_is_too_long() -> None:
    probs = probs_with_silences(100, [(20, 22), (30, 35), (60, 62)])
    assert split_long_region(probs, 0, 100, 40) == [(0, 30), (35, 60), (62, 100)]


def test_equal_silences_prefer_the_quietest() -> None:
    probs = probs_with_silences(100, [(20, 24), (70, 74)])
    probs[70:74] = 0.01
    assert split_long_region(probs, 0, 100, 90) == [(0, 70), (74, 100)]


def test_without_silence_split_at_the_lowest_probability() -> None:
    probs = np.full(50, 0.95)
    probs[31] = 0.6
    assert split_long_region(probs, 0, 50, 40) == [(0, 31), (32, 50)]


def test_split_respects_the_offset_of_the_region() -> None:
    probs = probs_with_silences(300, [(150, 160)])
    assert split_long_region(probs, 100, 250, 100) == [(100, 150), (160, 250)]


def test_random_probabilities_never_leave_a_span_too_long() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        probs = rng.random(1000)
        spans = split_long_region(probs, 0, 1000, 64)
        assert all(0 < end - start <= 64 for start, end in spans)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


# --- regions from probabilities (pure) -----------------------------------------------------------


def speech_at(length: int, spans: list[tuple[int, int]]) -> np.ndarray:
    probs = np.zeros(length, dtype=np.float32)
    for start, end in spans:
        probs[start:end] = 0.9
    return probs


def test_regions_are_padded_and_in_seconds() -> None:
    probs = speech_at(200, [(50, 100)])
    options = VadOptions(speech_pad_ms=200)
    [region] = regions_from_probabilities(probs, options, 200 * WINDOW)
    assert region.start == pytest.approx(50 * WINDOW_S - 0.2, abs=1e-3)
    assert region.end == pytest.approx(100 * WINDOW_S + 0.2, abs=1e-3)


def test_short_gaps_do_not_separate_regions() -> None:
    probs = speech_at(300, [(20, 60), (70, 120)])  # 10 windows = 320 ms apart
    assert len(regions_from_probabilities(probs, VadOptions(min_silence_ms=500), 300 * WINDOW)) == 1
    assert len(regions_from_probabilities(probs, VadOptions(min_silence_ms=200), 300 * WINDOW)) == 2


def test_close_regions_share_the_gap_instead_of_overlapping() -> None:
    probs = speech_at(300, [(20, 60), (70, 120)])
    first, second = regions_from_probabilities(
        probs, VadOptions(min_silence_ms=200, speech_pad_ms=500), 300 * WINDOW
    )
    assert first.end == pytest.approx(second.start, abs=1e-3)
    assert first.end == pytest.approx(65 * WINDOW_S, abs=1e-3)


def test_blips_shorter_than_250ms_are_dropped() -> None:
    probs = speech_at(300, [(100, 105)])  # 160 ms
    assert regions_from_probabilities(probs, VadOptions(), 300 * WINDOW) == []


def test_regions_clamped_to_the_audio() -> None:
    probs = speech_at(100, [(0, 100)])
    [region] = regions_from_probabilities(probs, VadOptions(), 100 * WINDOW - 100)
    assert region == Region(start=0.0, end=round((100 * WINDOW - 100) / 16_000, 3))


def test_long_speech_is_split_below_max_speech() -> None:
    rng = np.random.default_rng(3)
    probs = (0.6 + 0.4 * rng.random(3000)).astype(np.float32)  # 96 s of speech, no silence
    probs[1200:1210] = 0.05  # one short pause
    options = VadOptions(max_speech_s=28.0, speech_pad_ms=200)
    regions = regions_from_probabilities(probs, options, 3000 * WINDOW)
    assert len(regions) >= 4
    assert all(region.end - region.start <= 28.0 + 1e-6 for region in regions)
    assert any(abs(region.end - 1205 * WINDOW_S) < 0.01 for region in regions)  # cut in the pause
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(regions))


# --- the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def padded_sentence(speech_wav: Path) -> tuple[np.ndarray, float, float]:
    """2 s of silence, the sentence, 2 s of silence (16 kHz) and where the speech lies."""
    speech = decode_audio(speech_wav)
    voiced = np.flatnonzero(np.abs(speech) > 0.02)
    silence = np.zeros(32_000, dtype=np.float32)
    return (np.concatenate([silence, speech, silence]), 2.0 + voiced[0] / 16_000, 2.0 + voiced[-1] / 16_000)


@needs_vad
def test_finds_the_sentence_between_silences(padded_sentence: tuple[np.ndarray, float, float]) -> None:
    pcm, speech_start, speech_end = padded_sentence
    regions = speech_regions(pcm, VadOptions())
    assert regions
    assert regions[0].start == pytest.approx(speech_start - 0.2, abs=0.25)
    assert regions[-1].end == pytest.approx(speech_end + 0.2, abs=0.35)
    assert regions[0].start > 1.0
    assert regions[-1].end < pcm.size / 16_000 - 1.0


@needs_vad
def test_max_speech_applies_to_real_audio(padded_sentence: tuple[np.ndarray, float, float]) -> None:
    pcm, _, _ = padded_sentence
    regions = speech_regions(pcm, VadOptions(max_speech_s=1.0, speech_pad_ms=100))
    assert len(regions) >= 2
    assert all(region.end - region.start <= 1.0 + 1e-6 for region in regions)


@needs_vad
def test_other_sample_rates_are_resampled(speech_wav: Path) -> None:
    speech = decode_audio(speech_wav, sample_rate=8000)
    padded = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(8000, np.float32)])
    regions = speech_regions(padded, VadOptions(), sample_rate=8000)
    assert regions
    assert regions[0].start > 0.5


@needs_vad
def test_nothing_in_silence_or_noise() -> None:
    assert speech_regions(np.zeros(5 * 16_000, np.float32), VadOptions()) == []
    noise = (0.1 * np.random.default_rng(0).standard_normal(5 * 16_000)).astype(np.float32)
    assert speech_regions(noise, VadOptions()) == []
    assert speech_regions(np.zeros(0, np.float32), VadOptions()) == []


@needs_vad
def test_batched_probabilities_equal_the_per_window_loop(
    padded_sentence: tuple[np.ndarray, float, float],
) -> None:
    import onnxruntime

    pcm, _, _ = padded_sentence
    pcm = pcm[: 600 * WINDOW + 123]  # crosses a block boundary (512 windows), ragged tail
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    stock = onnxruntime.InferenceSession(
        str(model_path("silero_vad.onnx")), sess_options=options, providers=["CPUExecutionProvider"]
    )
    padded = np.zeros(-(-pcm.size // WINDOW) * WINDOW, np.float32)
    padded[: pcm.size] = pcm
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    expected = []
    for window in padded.reshape(-1, WINDOW):
        out, state = stock.run(
            None,
            {
                "input": np.concatenate([context, window])[None],
                "state": state,
                "sr": np.array(16_000, np.int64),
            },
        )
        context = window[-64:]
        expected.append(out[0, 0])
    got = speech_probabilities(pcm)
    np.testing.assert_allclose(got, np.array(expected), atol=1e-5)
    assert float(got.max()) > 0.9


@needs_vad
def test_session_is_created_once() -> None:
    assert vad_session() is vad_session()


@needs_vad
def test_vad_imports_neither_torch_nor_silero_python_code() -> None:
    code = (
        "import sys, numpy as np\n"
        "from talkies.audio.vad import speech_regions, VadOptions\n"
        "speech_regions(np.zeros(16000, np.float32), VadOptions())\n"
        "bad = [m for m in ('torch', 'silero_vad') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    src = Path(__file__).resolve().parents[3] / "src"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(src)}, timeout=120)


def test_options_from_settings() -> None:
    from talkies.settings import load_settings

    settings = load_settings(
        vad_threshold=0.4, vad_min_silence_ms=300, vad_speech_pad_ms=50, vad_max_speech="20s"
    )
    assert VadOptions.from_settings(settings) == VadOptions(
        threshold=0.4, min_silence_ms=300, speech_pad_ms=50, max_speech_s=20.0
    )


def test_split_down_to_single_windows() -> None:
    probs = np.full(5, 0.9)
    spans = split_long_region(probs, 0, 5, 1)
    assert all(end - start <= 1 for start, end in spans)
    assert spans[0][0] == 0
    assert spans[-1][1] == 5
