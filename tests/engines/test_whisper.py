"""The whisper engine on real faster-whisper, loading small generated CT2 models (random weights).

Random weights decode nonsense, so decoding is bounded (greedy, few new tokens) and the tests check
structure and timing invariants, not words.
"""

from __future__ import annotations

import gc
import math
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import BatchedInferencePipeline

from talkies.engines import create_engine
from talkies.engines.base import EngineContext, Region, Transcriber, TranscriptionRequest, TranscriptionResult
from talkies.engines.whisper.engine import WHISPER_LANGUAGES, WhisperEngine
from talkies.engines.whisper.timeline import DEFAULT_REGION_GAP, clip_timestamps
from talkies.errors import CapabilityError, EngineError, ModelLoadError, UnsupportedLanguageError
from talkies.registry import ModelSpec
from tests.fixtures.cache import install_snapshot
from tests.fixtures.speech import long_speech, speech_clip
from tests.fixtures.whisper import build_whisper

pytestmark = pytest.mark.slow

BOUNDED = {"beam_size": 1, "max_new_tokens": 12, "condition_on_previous_text": False, "cpu_threads": 1}


def make_engine(model_dir: Path, slug: str = "whisper-micro", **options: Any) -> WhisperEngine:
    spec = ModelSpec(slug=slug, executor="whisper", repo="test/whisper-micro")
    opts = {k: v for k, v in {**BOUNDED, **options}.items() if k != "cpu_threads"}
    context = EngineContext(slug=slug, model_dir=model_dir, device="cpu", cpu_threads=1, options=opts)
    engine = create_engine(spec, context)
    assert isinstance(engine, WhisperEngine)
    return engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WhisperEngine]:
    data_dir = tmp_path_factory.mktemp("data")
    model_dir = install_snapshot(build_whisper("micro"), data_dir, "whisper-micro")
    eng = make_engine(model_dir)
    eng.load()
    yield eng
    eng.unload()


def assert_timeline(result: TranscriptionResult) -> None:
    assert result.segments, "the bounded decoder always emits something"
    previous_end = 0.0
    for seg in result.segments:
        assert 0.0 <= seg.start <= seg.end <= result.duration + 1e-6
        assert seg.start >= previous_end - 1e-6, "segments are monotonic"
        previous_end = seg.end
        word_floor = seg.start
        for word in seg.words:
            assert seg.start - 1e-6 <= word.start <= word.end <= seg.end + 1e-6, "word inside its segment"
            assert word.start >= word_floor - 1e-6, "words in order"
            word_floor = word.end
    assert result.text == "".join(s.text for s in result.segments)


def assert_confidence(result: TranscriptionResult) -> None:
    for seg in result.segments:
        assert isinstance(seg.avg_logprob, float)
        assert math.isfinite(seg.avg_logprob)
        assert seg.avg_logprob <= 0.0
        assert isinstance(seg.compression_ratio, float)
        assert seg.compression_ratio > 0.0
        assert isinstance(seg.no_speech_prob, float)
        assert 0.0 <= seg.no_speech_prob <= 1.0
        assert isinstance(seg.temperature, float)
        for word in seg.words:
            assert isinstance(word.probability, float)
            assert 0.0 <= word.probability <= 1.0


def test_engine_satisfies_the_protocol_and_construction_is_cheap(tmp_path: Path) -> None:
    eng = make_engine(tmp_path / "absent")  # no snapshot, nothing loaded yet: must not fail
    assert isinstance(eng, Transcriber)
    assert eng.batches_regions is True
    assert not eng.loaded


def test_transcribe_short_clip_structure_words_and_confidence(engine: WhisperEngine) -> None:
    audio = speech_clip(6.0)
    result = engine.transcribe(TranscriptionRequest(audio=audio, language="en", temperature=0.0))
    assert result.duration == pytest.approx(6.0)
    assert result.language == "en"
    assert any(seg.words for seg in result.segments), "word timestamps requested by default"
    assert_timeline(result)
    assert_confidence(result)
    assert all(seg.temperature == 0.0 for seg in result.segments)


def test_without_word_timestamps_segments_have_no_words(engine: WhisperEngine) -> None:
    request = TranscriptionRequest(
        audio=speech_clip(4.0), language="en", temperature=0.0, word_timestamps=False
    )
    result = engine.transcribe(request)
    assert_timeline(result)
    assert all(not seg.words for seg in result.segments)


def test_language_is_auto_detected_when_omitted(engine: WhisperEngine) -> None:
    result = engine.transcribe(TranscriptionRequest(audio=speech_clip(4.0), temperature=0.0))
    assert result.language in WHISPER_LANGUAGES
    assert_timeline(result)


def test_invalid_language_is_refused_before_decoding(
    engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded before validating the language")

    monkeypatch.setattr(engine._model, "transcribe", must_not_decode)
    with pytest.raises(UnsupportedLanguageError) as caught:
        engine.transcribe(TranscriptionRequest(audio=speech_clip(2.0), language="xx"))
    assert caught.value.param == "language"
    assert "'xx'" in caught.value.message
    assert "en, zh, de" in caught.value.message  # lists the valid codes


def test_validate_language_normalizes_and_knows_the_models_languages(engine: WhisperEngine) -> None:
    assert engine.validate_language("EN ") == "en"
    assert engine.validate_language("auto") is None
    assert engine.validate_language(None) is None
    assert "yue" not in engine.languages  # a 99-language model (v2 vocabulary) has no Cantonese token
    with pytest.raises(UnsupportedLanguageError):
        engine.validate_language("yue")


def test_prompt_and_temperature_reach_faster_whisper(
    engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    real = engine._model.transcribe

    def spy(audio: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(audio, **kwargs)

    monkeypatch.setattr(engine._model, "transcribe", spy)
    # the sequential path: with cross-request batching a short file with one temperature is batched
    monkeypatch.setattr(engine, "_batcher", None)
    audio = speech_clip(3.0)
    prompted = engine.transcribe(
        TranscriptionRequest(audio=audio, language="en", prompt="Glossary: talkies.", temperature=0.4)
    )
    assert seen[-1]["initial_prompt"] == "Glossary: talkies."
    assert seen[-1]["temperature"] == 0.4
    assert all(seg.temperature == 0.4 for seg in prompted.segments)
    engine.transcribe(TranscriptionRequest(audio=audio, language="en"))
    assert seen[-1]["temperature"] == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # None: Whisper's fallback schedule
    assert seen[-1]["initial_prompt"] is None


def test_translate_task_on_a_multilingual_model(engine: WhisperEngine) -> None:
    assert engine.can_translate
    request = TranscriptionRequest(audio=speech_clip(4.0), language="de", task="translate", temperature=0.0)
    result = engine.transcribe(request)
    assert result.language == "de"  # the source language, as OpenAI reports it
    assert_timeline(result)


def test_english_only_model_cannot_translate(tmp_path: Path) -> None:
    eng = make_engine(install_snapshot(build_whisper("micro-en"), tmp_path, "whisper-micro-en"))
    eng.load()
    try:
        assert not eng.can_translate
        assert eng.languages == ("en",)
        with pytest.raises(CapabilityError, match="cannot translate"):
            eng.transcribe(TranscriptionRequest(audio=speech_clip(2.0), task="translate"))
        with pytest.raises(UnsupportedLanguageError, match=r"valid codes: en$"):
            eng.validate_language("fr")
        result = eng.transcribe(TranscriptionRequest(audio=speech_clip(3.0), temperature=0.0))
        assert result.language == "en"
        assert_timeline(result)
    finally:
        eng.unload()


def test_batched_regions_on_a_multi_minute_file(
    engine: WhisperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = long_speech(180.0)
    regions = tuple(Region(start, end) for start, end in speech.spans)  # one per utterance, as the VAD gives
    clips = clip_timestamps(regions, speech.duration, DEFAULT_REGION_GAP)
    assert len(regions) >= 30
    assert 6 <= len(clips) < len(regions) / 3, "utterances are packed into ~30 s clips"

    def no_sequential(*args: object, **kwargs: object) -> None:
        raise AssertionError("regions must go through the batched pipeline")

    batches: list[int] = []
    forward = BatchedInferencePipeline.forward

    def counting_forward(self: Any, features: Any, *args: Any) -> Any:
        batches.append(len(features))
        return forward(self, features, *args)

    monkeypatch.setattr(engine._model, "transcribe", no_sequential)
    monkeypatch.setattr(BatchedInferencePipeline, "forward", counting_forward)
    monkeypatch.setattr(engine, "_batch_size", 4)
    monkeypatch.setattr(engine, "_batcher", None)  # the per-request path; across requests: *_batching.py
    request = TranscriptionRequest(audio=speech.audio, language="en", temperature=0.0, regions=regions)
    result = engine.transcribe(request)

    assert batches == [4] * (len(clips) // 4) + ([len(clips) % 4] if len(clips) % 4 else [])
    assert result.duration == pytest.approx(180.0)
    assert_timeline(result)
    assert_confidence(result)
    # absolute timestamps: every clip (seconds from the start of the file) holds segments, none outside
    for clip in clips:
        assert any(clip["start"] <= seg.start < clip["end"] for seg in result.segments), clip
    for seg in result.segments:
        assert any(c["start"] - 0.01 <= seg.start and seg.end <= c["end"] + 0.01 for c in clips), seg
    assert result.segments[-1].end > 150.0, "timestamps span the whole file"


def test_batched_regions_auto_detect_language_and_no_speech(engine: WhisperEngine) -> None:
    speech = long_speech(60.0)
    regions = tuple(Region(start, end) for start, end in speech.spans)
    result = engine.transcribe(TranscriptionRequest(audio=speech.audio, temperature=0.0, regions=regions))
    assert result.language in WHISPER_LANGUAGES
    silent = engine.transcribe(TranscriptionRequest(audio=np.zeros(16_000 * 40, np.float32), regions=()))
    assert silent.segments == []
    assert silent.text == ""
    assert silent.duration == pytest.approx(40.0)


def test_snapshot_missing_files_is_a_load_error(tmp_path: Path) -> None:
    model_dir = install_snapshot(build_whisper("micro"), tmp_path, "whisper-broken")
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "vocabulary.json").unlink()
    eng = make_engine(model_dir, slug="whisper-broken")
    with pytest.raises(ModelLoadError) as caught:
        eng.load()
    assert "tokenizer.json" in caught.value.message
    assert "vocabulary.json" in caught.value.message
    assert "model.bin" not in caught.value.message
    assert not eng.loaded


def test_unload_releases_the_model_and_reload_works(tmp_path: Path) -> None:
    eng = make_engine(install_snapshot(build_whisper("micro"), tmp_path, "whisper-micro"))
    eng.load()
    model_ref = weakref.ref(eng._model)
    ct2_ref = weakref.ref(eng._model.model)
    eng.unload()
    gc.collect()
    assert not eng.loaded
    assert model_ref() is None
    assert ct2_ref() is None, "the CTranslate2 model (native weights) is freed"
    with pytest.raises(EngineError, match="not loaded"):
        eng.transcribe(TranscriptionRequest(audio=speech_clip(1.0)))
    eng.load()
    assert_timeline(
        eng.transcribe(TranscriptionRequest(audio=speech_clip(2.0), language="en", temperature=0.0))
    )
    eng.unload()


def test_bad_engine_option_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="beam_size"):
        make_engine(tmp_path, beam_size="five")
    with pytest.raises(ModelLoadError, match="batch_size"):
        make_engine(tmp_path, batch_size=0)


def test_snapshot_is_used_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tmp_path / "models" / "whisper-micro"
    shutil.copytree(build_whisper("micro"), model_dir)
    eng = make_engine(model_dir)
    eng.load()
    assert eng.loaded
    eng.unload()
