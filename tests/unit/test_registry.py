from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from talkies.engines import EXECUTORS
from talkies.errors import ConfigError
from talkies.registry import default_models_file, load_registry
from tests.conftest import REPO_ROOT, write_registry

CONTRACT_ASR = [
    "whisper-large-v3",
    "whisper-large-v3-turbo",
    "parakeet-tdt-0.6b-v3",
    "canary-180m-flash",
    "canary-1b-flash",
    "canary-qwen-2.5b",
    "nemotron-3.5-asr-0.6b",
]
CONTRACT_TTS = [
    "kokoro-82m",
    "kokoro-82m-nvidia",
    "qwen3-tts-0.6b",
    "qwen3-tts-1.7b",
    "qwen3-tts-0.6b-custom",
    "qwen3-tts-1.7b-custom",
    "qwen3-tts-1.7b-design",
]


def test_shipped_registry_has_every_contract_slug() -> None:
    registry = load_registry(REPO_ROOT / "models.json")
    for slug in CONTRACT_ASR:
        assert registry.models[slug].kind == "asr"
    for slug in CONTRACT_TTS:
        assert registry.models[slug].kind == "tts"
    assert registry.models["pocketsphinx-en-us"].repo is None
    assert registry.models["espeak-ng"].kind == "tts"


def test_cpu_registry_is_a_subset() -> None:
    full = load_registry(REPO_ROOT / "models.json")
    cpu = load_registry(REPO_ROOT / "models-cpu.json")
    assert set(cpu.models) < set(full.models)
    for slug, spec in cpu.models.items():
        assert spec == full.models[slug]
    assert not any(EXECUTORS[s.executor].cuda_only for s in cpu.models.values())


def test_packaged_copies_match_the_repo_files() -> None:
    # pyproject force-includes both files into the wheel as talkies/data/*.json
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"models.json" = "talkies/data/models.json"' in pyproject
    assert '"models-cpu.json" = "talkies/data/models-cpu.json"' in pyproject


def test_default_file_by_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    assert default_models_file("cpu").name == "models-cpu.json"
    assert default_models_file("cuda:0").name == "models.json"


def test_unknown_executor_lists_valid_choices(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "m.json", {"x": {"executor": "wav2vec", "repo": "a/b"}})
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert "models.x.executor" in info.value.message
    for name in ("whisper", "kokoro", "espeak", "pocketsphinx"):
        assert name in info.value.message


def test_missing_executor_is_named(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "m.json", {"x": {"repo": "a/b"}})
    with pytest.raises(ConfigError, match=r"models\.x\.executor: field is required \(executors: .*whisper"):
        load_registry(path)


def test_missing_repo_for_weighted_executor(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "m.json", {"x": {"executor": "whisper"}})
    with pytest.raises(ConfigError, match="'repo' is required"):
        load_registry(path)


def test_unknown_field_and_bad_modality(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "m.json", {"x": {"executor": "espeak", "voice": "a"}})
    with pytest.raises(ConfigError, match=r"models\.x\.voice"):
        load_registry(path)
    path = write_registry(tmp_path / "m.json", {"x": {"executor": "espeak", "modality": "asr"}})
    with pytest.raises(ConfigError, match="is tts, not asr"):
        load_registry(path)


def test_enabled_models_is_an_ordered_whitelist(tmp_path: Path) -> None:
    models = {s: {"executor": "espeak"} for s in ("a", "b", "c")}
    path = write_registry(tmp_path / "m.json", models, {"g": {"members": ["a", "c"]}})
    registry = load_registry(path, ("c", "a"))
    assert list(registry.models) == ["c", "a"]
    assert registry.group_mates("a") == {"c"}
    with pytest.raises(ConfigError, match=r"unknown models zz; the catalog .* has: a, b, c"):
        load_registry(path, ("a", "zz"))


def test_group_with_unknown_member(tmp_path: Path) -> None:
    path = write_registry(tmp_path / "m.json", {"a": {"executor": "espeak"}}, {"g": {"members": ["a", "q"]}})
    with pytest.raises(ConfigError, match="group 'g' names unknown models"):
        load_registry(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_registry(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(bad)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"models": {}}))
    with pytest.raises(ConfigError, match="models"):
        load_registry(empty)


def test_aliases_resolve_to_their_model(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "m.json",
        {
            "espeak-ng": {"executor": "espeak", "aliases": ["tts-1", "espeak"]},
            "ps": {"executor": "pocketsphinx"},
        },
    )
    registry = load_registry(path)
    assert registry.resolve("tts-1") == "espeak-ng"
    assert registry.resolve("espeak-ng") == "espeak-ng"
    assert registry.resolve("nope") is None
    spec = registry.get("espeak")
    assert spec is not None
    assert spec.slug == "espeak-ng"
    # an alias in TALKIES_ENABLED_MODELS enables its model
    assert list(load_registry(path, ("tts-1",)).models) == ["espeak-ng"]
    # aliases of models that are not enabled do not resolve
    assert load_registry(path, ("ps",)).resolve("tts-1") is None


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            {"a": {"executor": "espeak", "aliases": ["b"]}, "b": {"executor": "espeak"}},
            "alias 'b' of 'a' is also a model",
        ),
        (
            {"a": {"executor": "espeak", "aliases": ["x"]}, "b": {"executor": "espeak", "aliases": ["x"]}},
            "alias 'x' is given to both 'a' and 'b'",
        ),
    ],
)
def test_ambiguous_aliases_are_refused(tmp_path: Path, models: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry(write_registry(tmp_path / "m.json", models))
