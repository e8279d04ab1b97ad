"""OpenAI's model names and the default model of a kind (issue 25, item 8): a configured default takes
OpenAI's names from the shipped registry's aliases, an operator's own alias keeps them, and a request with
no model prefers an installed model to the registry's first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from talkies.registry import OPENAI_MODEL_NAMES, ModelSpec, load_registry
from talkies.registry import is_shipped_file as shipped
from tests.conftest import REPO_ROOT, write_registry

ASR_NAMES = [name for name, kind in OPENAI_MODEL_NAMES.items() if kind == "asr"]
TTS_NAMES = [name for name, kind in OPENAI_MODEL_NAMES.items() if kind == "tts"]


@pytest.mark.parametrize("name", ["models.json", "models-cpu.json"])
def test_configured_defaults_take_openai_names_from_the_shipped_file(name: str, tmp_path: Path) -> None:
    path = REPO_ROOT / name
    registry = load_registry(path, default_asr="pocketsphinx-en-us", default_tts="espeak-ng")
    assert registry.shipped
    for alias in ASR_NAMES:
        assert registry.resolve(alias) == "pocketsphinx-en-us"
    for alias in TTS_NAMES:
        assert registry.resolve(alias) == "espeak-ng"
    copy = shutil.copy(path, tmp_path / "copy.json")  # a byte-for-byte copy is still the shipped file
    assert load_registry(Path(copy), default_tts="espeak-ng").resolve("tts-1") == "espeak-ng"
    # one default configured: the other kind keeps the shipped aliases
    only_tts = load_registry(path, default_tts="espeak-ng")
    assert only_tts.resolve("whisper-1") == "whisper-large-v3"
    assert only_tts.resolve("tts-1") == "espeak-ng"


def test_nothing_configured_keeps_the_shipped_aliases() -> None:
    registry = load_registry(REPO_ROOT / "models-cpu.json")
    assert registry.resolve("tts-1") == "kokoro-82m"
    assert registry.resolve("whisper-1") == "whisper-large-v3"


def test_an_alias_in_the_operators_own_registry_wins(tmp_path: Path) -> None:
    edited = json.loads((REPO_ROOT / "models-cpu.json").read_text())
    edited["models"]["kokoro-82m"]["description"] = "mine"
    own = tmp_path / "models-cpu.json"
    own.write_text(json.dumps(edited))
    registry = load_registry(own, default_tts="espeak-ng", default_asr="pocketsphinx-en-us")
    assert not registry.shipped
    assert registry.resolve("tts-1") == "kokoro-82m"
    assert registry.resolve("whisper-1") == "whisper-large-v3"


def test_openai_names_the_own_registry_does_not_mention_go_to_the_configured_default(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "m.json",
        {"s": {"executor": "pocketsphinx"}, "e": {"executor": "espeak"}, "f": {"executor": "espeak"}},
    )
    configured = load_registry(path, default_tts="f")
    assert [configured.resolve(name) for name in TTS_NAMES] == ["f"] * len(TTS_NAMES)
    assert configured.resolve("whisper-1") is None  # no ASR default configured: unknown as before
    assert load_registry(path).resolve("tts-1") is None


def test_the_default_prefers_an_installed_model(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "m.json",
        {
            "big": {"executor": "whisper", "repo": "o/big"},
            "small": {"executor": "pocketsphinx"},
            "voice": {"executor": "kokoro", "repo": "o/voice"},
            "formant": {"executor": "espeak"},
        },
    )
    on_disk = {"small", "formant"}

    def installed(spec: ModelSpec) -> bool:
        return spec.slug in on_disk

    registry = load_registry(path, installed=installed)
    assert registry.default_slug("asr") == "small"
    assert registry.default_slug("tts") == "formant"
    assert registry.default("asr") is registry.models["small"]
    on_disk.update({"big", "voice"})  # pulled while the server runs: the first model again
    assert registry.default_slug("asr") == "big"
    on_disk.clear()  # nothing installed: the registry's first
    assert registry.default_slug("tts") == "voice"
    assert load_registry(path, default_asr="big", installed=installed).default_slug("asr") == "big"


def test_shipped_means_the_same_bytes(tmp_path: Path) -> None:
    assert shipped(REPO_ROOT / "models.json")
    assert not shipped(tmp_path / "missing.json")
    other = tmp_path / "models.json"
    other.write_text((REPO_ROOT / "models.json").read_text() + "\n ")
    assert not shipped(other)
