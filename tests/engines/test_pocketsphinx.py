"""The pocketsphinx executor with the model bundled in the wheel, on speech spoken by espeak-ng."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talkies.audio.encode import resample
from talkies.engines.base import (
    ASR_SAMPLE_RATE,
    EngineContext,
    Region,
    Transcriber,
    TranscriptionRequest,
    Word,
)
from talkies.engines.common import group_words
from talkies.engines.espeak import parse_wav
from talkies.engines.pocketsphinx import CDecoder, PocketsphinxEngine, clean_word
from talkies.errors import CapabilityError, EngineError, UnsupportedLanguageError
from talkies.registry import ModelSpec

# espeak-ng's klatt variant is the voice the bundled acoustic model understands best.
SENTENCES = ("The weather is nice today.", "Please call me tomorrow morning.")


def speak_16k(text: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", "en-us+klatt", "-s", "175"],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    pcm, rate = parse_wav(wav)
    return resample(pcm, rate, ASR_SAMPLE_RATE)


def overlap(expected: str, got: str) -> float:
    want = [w.strip(".,!?").lower() for w in expected.split()]
    have = {w.strip(".,!?").lower() for w in got.split()}
    return sum(w in have for w in want) / len(want)


@pytest.fixture(scope="module")
def engine() -> PocketsphinxEngine:
    spec = ModelSpec(slug="pocketsphinx-en-us", executor="pocketsphinx")
    engine = PocketsphinxEngine(spec, EngineContext("pocketsphinx-en-us", Path("/nonexistent"), "cpu"))
    engine.load()
    return engine


@pytest.mark.slow
def test_transcribes_espeak_speech(engine: PocketsphinxEngine) -> None:
    assert isinstance(engine, Transcriber)
    silence = np.zeros(ASR_SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([speak_16k(SENTENCES[0]), silence, speak_16k(SENTENCES[1])])
    result = engine.transcribe(TranscriptionRequest(audio=audio))
    duration = len(audio) / ASR_SAMPLE_RATE
    assert result.language == "en"
    assert result.duration == pytest.approx(duration)
    assert overlap(" ".join(SENTENCES), result.text) >= 0.6, result.text
    assert len(result.segments) >= 2  # the one-second pause splits the phrases
    words = [w for s in result.segments for w in s.words]
    assert words
    for word in words:
        assert word.word.startswith(" ")
        assert "(" not in word.word
        assert "<" not in word.word
        assert 0.0 <= word.start <= word.end <= duration + 0.01
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    for segment in result.segments:
        assert segment.start == segment.words[0].start
        assert segment.end == segment.words[-1].end
        assert segment.text == "".join(w.word for w in segment.words)


@pytest.mark.slow
def test_regions_are_decoded_with_absolute_times(engine: PocketsphinxEngine) -> None:
    speech = speak_16k(SENTENCES[0])
    audio = np.concatenate([np.zeros(2 * ASR_SAMPLE_RATE, dtype=np.float32), speech])
    end = len(audio) / ASR_SAMPLE_RATE
    result = engine.transcribe(TranscriptionRequest(audio=audio, regions=(Region(2.0, end),)))
    assert overlap(SENTENCES[0], result.text) >= 0.6, result.text
    assert result.segments[0].start >= 2.0


@pytest.mark.slow
def test_silence_and_tiny_input_give_empty_text(engine: PocketsphinxEngine) -> None:
    assert engine.transcribe(TranscriptionRequest(audio=np.zeros(10, dtype=np.float32))).text == ""


@pytest.mark.slow
def test_refuses_translation_and_other_languages(engine: PocketsphinxEngine) -> None:
    audio = np.zeros(ASR_SAMPLE_RATE, dtype=np.float32)
    with pytest.raises(CapabilityError):
        engine.transcribe(TranscriptionRequest(audio=audio, task="translate"))
    with pytest.raises(UnsupportedLanguageError):
        engine.transcribe(TranscriptionRequest(audio=audio, language="de"))
    engine.transcribe(TranscriptionRequest(audio=audio, language="en"))


@pytest.mark.slow
def test_the_ctypes_decoder_decodes_exactly_as_the_python_binding() -> None:
    """CDecoder (the C API through ctypes, GIL released) against the binding's own Decoder, both decoding
    twice from the initial CMN as the engine does: the same tokens on the same frames."""
    from pocketsphinx import Decoder

    silence = np.zeros(ASR_SAMPLE_RATE // 2, dtype=np.float32)
    clips = [speak_16k(SENTENCES[0]), np.concatenate([speak_16k(SENTENCES[1]), silence, speak_16k("Hello.")])]
    binding = Decoder(samprate=ASR_SAMPLE_RATE, loglevel="ERROR")
    initial = binding.get_cmn()
    ours = CDecoder(ASR_SAMPLE_RATE)
    try:
        assert ours.frame_rate == int(binding.config["frate"])
        for clip in clips:
            pcm = (np.clip(clip, -1.0, 1.0) * 32767.0).astype("<i2")
            binding.set_cmn(initial)
            for _ in range(2):
                binding.start_utt()
                binding.process_raw(pcm.tobytes(), full_utt=True)
                binding.end_utt()
            expected = [(s.word, s.start_frame, s.end_frame) for s in binding.seg()]
            got = [(s.token, s.start_frame, s.end_frame) for s in ours.decode(pcm)]
            assert got == expected
            assert any(clean_word(token) for token, _, _ in got)  # real words, not just silence
    finally:
        ours.close()
    with pytest.raises(EngineError):
        ours.decode(np.zeros(ASR_SAMPLE_RATE, dtype="<i2"))  # closed: refused, not a crash


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 2])
def test_one_decoder_per_concurrent_request_up_to_max_concurrency(
    monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    """Three requests at once: with max_concurrency 2 two decode together (two decoders, the second made
    on demand), the third waits for a free one; with 1 they take turns on one. Same words either way."""
    import threading

    from talkies.engines import pocketsphinx as module

    made: list[CDecoder] = []
    closed: list[CDecoder] = []
    active = peak = 0
    guard = threading.Lock()

    class Counted(CDecoder):
        def __init__(self, sample_rate: int) -> None:
            super().__init__(sample_rate)
            made.append(self)

        def decode(self, pcm: np.ndarray, *, passes: int = 2) -> list[module.SegmentFrames]:
            nonlocal active, peak
            with guard:
                active += 1
                peak = max(peak, active)
            try:
                return super().decode(pcm, passes=passes)
            finally:
                with guard:
                    active -= 1

        def close(self) -> None:
            closed.append(self)
            super().close()

    monkeypatch.setattr(module, "CDecoder", Counted)
    spec = ModelSpec(slug="ps", executor="pocketsphinx", max_concurrency=concurrency)
    engine = PocketsphinxEngine(spec, EngineContext("ps", Path("/nonexistent"), "cpu"))
    engine.load()
    # ~7 s of speech: each decode takes longer than making a second decoder (~0.5 s), so they overlap
    audio = speak_16k(" ".join(SENTENCES * 2))
    alone = engine.transcribe(TranscriptionRequest(audio=audio)).text
    assert len(made) == 1  # one request at a time: no second decoder
    texts: list[str] = []
    start = threading.Barrier(3)

    def request() -> None:
        start.wait()
        texts.append(engine.transcribe(TranscriptionRequest(audio=audio)).text)

    threads = [threading.Thread(target=request) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert texts == [alone] * 3
    assert peak == concurrency
    assert len(made) == concurrency
    engine.unload()
    assert sorted(map(id, closed)) == sorted(map(id, made))  # every decoder freed
    with pytest.raises(EngineError):
        engine.transcribe(TranscriptionRequest(audio=audio))


def test_clean_word() -> None:
    assert clean_word("read(2)") == "read"
    assert clean_word("hello") == "hello"
    for token in ("<s>", "</s>", "<sil>", "[NOISE]", "++UH++", ""):
        assert clean_word(token) is None


def test_group_words_splits_at_pauses() -> None:
    words = [Word(" a", 0.0, 0.2), Word(" b", 0.25, 0.5), Word(" c", 1.2, 1.4)]
    segments = group_words(words)
    assert [s.text for s in segments] == [" a b", " c"]
    assert (segments[1].start, segments[1].end) == (1.2, 1.4)
