"""Pure parts of the whisper engine: region clipping, timeline clean-up, device and option handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkies.engines.base import EngineContext, Region, Segment, Word
from talkies.engines.whisper.engine import WhisperEngine, available_cpu_cores, missing_files
from talkies.engines.whisper.timeline import (
    MAX_CLIP_SECONDS,
    clamp_segment,
    clip_timestamps,
    normalize_timeline,
)
from talkies.errors import UnsupportedLanguageError
from talkies.registry import ModelSpec


def engine(
    device: str = "cpu", compute_type: str | None = None, cpu_threads: int = 0, **options: object
) -> WhisperEngine:
    spec = ModelSpec(slug="w", executor="whisper", repo="org/w", compute_type=compute_type)
    return WhisperEngine(spec, EngineContext("w", Path("/nonexistent"), device, cpu_threads, dict(options)))


def engine_with_options(options: dict[str, object]) -> WhisperEngine:
    spec = ModelSpec(slug="w", executor="whisper", repo="org/w")
    return WhisperEngine(spec, EngineContext("w", Path("/nonexistent"), "cpu", 0, options))


def test_clip_timestamps_clamps_sorts_and_splits_long_regions() -> None:
    regions = (Region(50.0, 120.0), Region(-1.0, 3.0), Region(200.0, 210.0))
    clips = clip_timestamps(regions, duration=150.0, max_gap=0.0)
    assert clips == [
        {"start": 0.0, "end": 3.0},
        {"start": 50.0, "end": 80.0},
        {"start": 80.0, "end": 110.0},
        {"start": 110.0, "end": 120.0},
    ]


def test_clip_timestamps_packs_close_regions_into_30_second_clips() -> None:
    regions = tuple(Region(float(t), t + 4.0) for t in range(0, 60, 6))  # 4 s speech, 2 s pauses
    clips = clip_timestamps(regions, duration=60.0, max_gap=3.0)
    assert clips == [{"start": 0.0, "end": 28.0}, {"start": 30.0, "end": 58.0}]
    assert all(c["end"] - c["start"] <= MAX_CLIP_SECONDS for c in clips)
    far = (Region(0.0, 4.0), Region(10.0, 14.0))  # 6 s of silence: kept apart
    assert clip_timestamps(far, duration=20.0, max_gap=3.0) == [
        {"start": 0.0, "end": 4.0},
        {"start": 10.0, "end": 14.0},
    ]


def test_clip_timestamps_drops_empty_regions() -> None:
    assert clip_timestamps((Region(5.0, 5.001), Region(7.0, 6.0)), duration=10.0) == []


def test_normalize_timeline_orders_clamps_and_keeps_words_inside() -> None:
    segments = [
        Segment(3.0, 25.0, " b", [Word(" b", 2.0, 30.0)]),
        Segment(0.0, 4.0, " a", [Word(" a", 0.5, 1.0), Word(" c", 0.8, 0.9)]),
    ]
    out = normalize_timeline(segments, duration=10.0)
    assert [s.text for s in out] == [" a", " b"]
    assert (out[0].start, out[0].end) == (0.0, 4.0)
    assert (out[1].start, out[1].end) == (4.0, 10.0)  # no overlap, inside the file
    assert (out[1].words[0].start, out[1].words[0].end) == (4.0, 10.0)
    assert out[0].words[1].start >= out[0].words[0].end


def test_clamp_segment_pulls_words_into_the_clip() -> None:
    seg = Segment(1.0, 27.0, " x", [Word(" x", 0.5, 26.0)])
    clamp_segment(seg, 1.5, 20.0)
    assert (seg.start, seg.end) == (1.5, 20.0)
    assert (seg.words[0].start, seg.words[0].end) == (1.5, 20.0)


def test_missing_files_names_each_one(tmp_path: Path) -> None:
    assert missing_files(tmp_path) == [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.json (or vocabulary.txt)",
    ]
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).write_text("x")
    assert missing_files(tmp_path) == []


def test_device_compute_type_and_threads() -> None:
    assert engine("cuda:1").device == ("cuda", 1)
    assert engine("cuda").device == ("cuda", 0)
    assert engine("cpu").compute_type == "int8"
    assert engine("cuda").compute_type == "float16"
    assert engine("cuda", compute_type="int8_float16").compute_type == "int8_float16"
    assert engine_with_options({"compute_type": "float32"}).compute_type == "float32"
    assert engine(cpu_threads=3).cpu_threads == 3
    assert engine().cpu_threads == available_cpu_cores() >= 1


def test_languages_before_load_are_every_whisper_code() -> None:
    eng = engine()
    assert eng.validate_language("yue") == "yue"  # large-v3 knows it; checked again against the model on load
    with pytest.raises(UnsupportedLanguageError, match="valid codes: en, zh"):
        eng.validate_language("klingon")


def test_decode_options_are_passed_and_max_new_tokens_fits_the_decoder() -> None:
    import numpy as np

    from talkies.engines.base import TranscriptionRequest

    eng = engine(beam_size=2, max_new_tokens=400, log_prob_threshold=None)
    kwargs = eng._transcribe_kwargs(TranscriptionRequest(audio=np.zeros(10, np.float32)), "en")
    assert kwargs["beam_size"] == 2
    assert kwargs["log_prob_threshold"] is None
    assert kwargs["max_new_tokens"] == 448 - 228  # previous-text conditioning is on by default
