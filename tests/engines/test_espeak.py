"""The espeak executor on the real espeak-ng program."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkies.engines.base import TTS_SAMPLE_RATE, EngineContext, SpeechRequest, Synthesizer
from talkies.engines.espeak import EspeakEngine, parse_wav, split_sentences, words_per_minute
from talkies.errors import UnknownVoiceError
from talkies.registry import ModelSpec

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog. It was not amused!"


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    spec = ModelSpec(slug="espeak-ng", executor="espeak")
    engine = EspeakEngine(spec, EngineContext("espeak-ng", Path("/nonexistent"), "cpu"))
    engine.load()
    return engine


def _speak(engine: EspeakEngine, speed: float, voice: str = "en-us") -> np.ndarray:
    chunks = list(engine.synthesize(SpeechRequest(text=SENTENCE, voice=voice, speed=speed)))
    assert chunks
    assert all(chunk.sample_rate == TTS_SAMPLE_RATE for chunk in chunks)
    assert all(chunk.pcm.dtype == np.float32 for chunk in chunks)
    return np.concatenate([chunk.pcm for chunk in chunks])


def test_is_a_synthesizer(engine: EspeakEngine) -> None:
    assert isinstance(engine, Synthesizer)


def test_speaks_english_at_24k(engine: EspeakEngine) -> None:
    pcm = _speak(engine, 1.0)
    seconds = len(pcm) / TTS_SAMPLE_RATE
    assert 2.0 < seconds < 8.0
    assert float(np.sqrt(np.mean(pcm**2))) > 0.02  # speech, not silence


def test_yields_one_chunk_per_sentence(engine: EspeakEngine) -> None:
    chunks = list(engine.synthesize(SpeechRequest(text=SENTENCE, voice="en-us")))
    assert len(chunks) == 2


def test_duration_scales_with_speed(engine: EspeakEngine) -> None:
    slow, normal, fast = (len(_speak(engine, s)) for s in (0.5, 1.0, 2.0))
    assert slow > 1.5 * normal
    assert fast < 0.7 * normal


def test_catalog_uses_espeak_names_with_default(engine: EspeakEngine) -> None:
    voices = {v.name: v for v in engine.voices()}
    assert {"en-us", "fr-fr", "de"} <= voices.keys()
    assert [v.name for v in voices.values() if v.default] == ["en-us"]


def test_variant_voice_is_accepted_and_unknown_refused(engine: EspeakEngine) -> None:
    engine.check_voice("en-us")
    engine.check_voice("en-us+klatt")
    for bad in ("xx-nope", "en-us+nosuch"):
        with pytest.raises(UnknownVoiceError) as info:
            engine.check_voice(bad)
        assert "en-us" in info.value.message


def test_registry_default_voice_is_listed() -> None:
    spec = ModelSpec(slug="espeak-ng", executor="espeak", default_voice="en-us+klatt")
    engine = EspeakEngine(spec, EngineContext("espeak-ng", Path("/nonexistent"), "cpu"))
    voices = engine.voices()
    assert voices[0].name == "en-us+klatt"
    assert voices[0].default


def test_speed_maps_to_espeak_rate() -> None:
    assert words_per_minute(1.0) == 175
    assert words_per_minute(2.0) == 350
    assert words_per_minute(0.25) == 80  # espeak-ng's floor
    assert words_per_minute(4.0) == 700


def test_parse_wav_reads_to_eof_despite_placeholder_sizes() -> None:
    samples = np.array([0, 16384, -16384, 32767], dtype="<i2").tobytes()
    header = (
        b"RIFF\xff\xff\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
        + (22050).to_bytes(4, "little")
        + (44100).to_bytes(4, "little")
        + b"\x02\x00\x10\x00"
        + b"data\xff\xff\xff\x7f"
    )
    pcm, rate = parse_wav(header + samples)
    assert rate == 22050
    np.testing.assert_allclose(pcm, [0.0, 0.5, -0.5, 32767 / 32768])


def test_split_sentences() -> None:
    assert split_sentences("One. Two!  Three?\nFour") == ["One.", "Two!", "Three?", "Four"]
    assert split_sentences("   ") == []
