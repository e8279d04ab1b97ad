"""Registry `aliases` / `voice_aliases` and the default model per modality (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkies.engines.espeak import EspeakEngine
from talkies.engines.kokoro.voices import CATALOG as KOKORO_VOICES
from talkies.errors import ConfigError, UnknownVoiceError
from talkies.registry import load_registry
from tests.conftest import REPO_ROOT, write_registry

OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx",
    "nova", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
OPENAI_ASR = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
OPENAI_TTS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


@pytest.mark.parametrize("name", ["models.json", "models-cpu.json"])
def test_shipped_files_map_openai_names_to_the_default_models(name: str) -> None:
    registry = load_registry(REPO_ROOT / name)
    asr, tts = registry.default("asr"), registry.default("tts")
    assert asr is not None
    assert tts is not None
    for alias in OPENAI_ASR:
        assert registry.get(alias) is asr
    for alias in OPENAI_TTS:
        assert registry.get(alias) is tts


@pytest.mark.parametrize("name", ["models.json", "models-cpu.json"])
def test_shipped_voice_aliases_name_real_voices(name: str) -> None:
    registry = load_registry(REPO_ROOT / name)
    for spec in registry.models.values():
        if spec.executor in ("kokoro", "kokoro_nvidia"):
            assert set(spec.voice_aliases) == set(OPENAI_VOICES), spec.slug
            assert set(spec.voice_aliases.values()) <= set(KOKORO_VOICES)
        elif spec.executor == "espeak":
            assert set(spec.voice_aliases) == set(OPENAI_VOICES)
            engine = EspeakEngine(spec, None)  # type: ignore[arg-type]
            for voice in spec.voice_aliases.values():
                engine.check_voice(voice)  # raises for a voice espeak-ng does not have
            with pytest.raises(UnknownVoiceError):
                engine.check_voice("en-us+nobody")


def test_alias_of_a_disabled_model_goes_to_the_default(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "m.json",
        {
            "big": {"executor": "whisper", "repo": "o/r", "aliases": ["whisper-1"]},
            "small": {"executor": "pocketsphinx"},
            "other": {"executor": "pocketsphinx"},
            "voice": {"executor": "espeak", "aliases": ["tts-1"]},
        },
    )
    full = load_registry(path)
    assert full.get("whisper-1") is full.models["big"]
    assert full.aliases_of("big") == ["whisper-1"]
    narrowed = load_registry(path, ("other", "small", "voice"), default_asr="small")
    assert narrowed.get("whisper-1") is narrowed.models["small"]
    assert narrowed.default("asr") is narrowed.models["small"]
    assert load_registry(path, ("other", "small")).get("whisper-1") is not None  # first ASR model
    assert load_registry(path, ("other", "small")).get("tts-1") is None  # no TTS model at all


@pytest.mark.parametrize(
    ("models", "match"),
    [
        ({"a": {"executor": "espeak", "aliases": ["b"]}, "b": {"executor": "espeak"}}, "is also a model"),
        (
            {"a": {"executor": "espeak", "aliases": ["x"]}, "b": {"executor": "espeak", "aliases": ["x"]}},
            "given to both 'a' and 'b'",
        ),
        ({"a": {"executor": "pocketsphinx", "voice_aliases": {"alloy": "x"}}}, "only for text-to-speech"),
        ({"a": {"executor": "espeak", "aliases": [" tts-1"]}}, "without surrounding spaces"),
    ],
)
def test_bad_aliases_stop_start_up(tmp_path: Path, models: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_registry(write_registry(tmp_path / "m.json", models))  # type: ignore[arg-type]


def test_default_model_settings_are_checked(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "m.json", {"s": {"executor": "pocketsphinx"}, "e": {"executor": "espeak"}}
    )
    with pytest.raises(ConfigError, match="TALKIES_DEFAULT_ASR_MODEL='e' is a tts model"):
        load_registry(path, default_asr="e")
    with pytest.raises(ConfigError, match="TALKIES_DEFAULT_TTS_MODEL='zz' is not an enabled model"):
        load_registry(path, default_tts="zz")
