"""parakeet_cpp's pure parts: tokens -> words / language, segments at pauses, download patterns, languages."""

from __future__ import annotations

import fnmatch

import pytest

from talkies.engines import snapshot_patterns
from talkies.engines.base import EngineContext
from talkies.engines.common import group_words
from talkies.engines.parakeet_cpp.engine import ParakeetCppEngine
from talkies.engines.parakeet_cpp.timeline import Decoded, language_tags, tag_language, words_and_language
from talkies.errors import UnsupportedLanguageError
from talkies.registry import ModelSpec

FRAME = 0.08


def test_tokens_become_words_with_absolute_times() -> None:
    decoded = Decoded(
        tokens=[" he", "llo", " world", " again"],
        timestamps=[0.0, 0.16, 0.4, 1.6],
        logprobs=[-0.1, -0.1, -0.5, 0.0],
    )
    words, language = words_and_language(decoded, frame=FRAME, offset=10.0)
    assert [w.word for w in words] == [" hello", " world", " again"]
    assert [(w.start, w.end) for w in words] == [(10.0, 10.24), (10.4, 10.48), (11.6, 11.68)]
    assert language is None
    assert words[0].probability == pytest.approx(0.904837, abs=1e-5)  # exp(mean(-0.1, -0.1))
    assert words[2].probability == 1.0


def test_word_end_never_passes_the_next_word_start() -> None:
    decoded = Decoded(tokens=[" a", " b"], timestamps=[0.0, 0.04])
    words, _ = words_and_language(decoded, frame=FRAME)
    assert words[0].end == 0.04
    assert words[0].probability is None


def test_language_tags_are_dropped_and_the_last_one_is_the_language() -> None:
    decoded = Decoded(
        tokens=[" guten", " tag", "<fr-FR>", "<de-DE>"], timestamps=[0.0, 0.5, 0.9, 0.9], logprobs=None
    )
    words, language = words_and_language(decoded, frame=FRAME)
    assert "".join(w.word for w in words) == " guten tag"
    assert language == "de"


def test_language_tag_forms() -> None:
    assert tag_language("<en-US>") == "en"
    assert tag_language("<|fr|>") == "fr"
    assert tag_language("<pt_BR>") == "pt"
    assert tag_language("<blk>") is None
    assert tag_language("<unk>") is None
    assert tag_language(" hello") is None
    assert language_tags({0: "<unk>", 1: " a", 2: "<es-ES>", 3: "<blk>"}) == {2: "es"}


def test_segments_split_at_half_second_pauses() -> None:
    decoded = Decoded(tokens=[" one", " two", " three"], timestamps=[0.0, 0.2, 1.0])
    words, _ = words_and_language(decoded, frame=FRAME)
    segments = group_words(words)
    assert [s.text for s in segments] == [" one two", " three"]
    assert (segments[0].start, segments[0].end) == (0.0, 0.28)


def spec(**fields: object) -> ModelSpec:
    return ModelSpec.model_validate({"slug": "p", "executor": "parakeet_cpp", "repo": "org/p-onnx", **fields})


def test_download_fetches_only_the_chosen_quantization() -> None:
    files = [
        "config.json", "vocab.txt", "nemo128.onnx", "encoder-model.onnx", "encoder-model.onnx.data",
        "decoder_joint-model.onnx", "encoder-model.int8.onnx", "decoder_joint-model.int8.onnx", "README.md",
    ]  # fmt: skip

    def fetched(patterns: list[str] | None) -> list[str]:
        assert patterns
        return [f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]

    assert fetched(snapshot_patterns(spec(compute_type="int8"))) == [
        "config.json", "vocab.txt", "encoder-model.int8.onnx", "decoder_joint-model.int8.onnx",
    ]  # fmt: skip
    assert fetched(snapshot_patterns(spec())) == [
        "config.json", "vocab.txt", "encoder-model.onnx", "encoder-model.onnx.data",
        "decoder_joint-model.onnx",
    ]  # fmt: skip


def test_language_is_checked_against_the_registry_languages(tmp_path: object) -> None:
    from pathlib import Path

    engine = ParakeetCppEngine(spec(languages=["en", "de"]), EngineContext("p", Path("/nonexistent"), "cpu"))
    assert engine.validate_language("DE") == "de"
    assert engine.validate_language("de-DE") == "de"
    assert engine.validate_language("auto") is None
    with pytest.raises(UnsupportedLanguageError, match="valid codes: en, de"):
        engine.validate_language("fr")
