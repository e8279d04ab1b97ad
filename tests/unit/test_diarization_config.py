"""The diarizer's configuration: TALKIES_DIARIZATION_MODEL (a start-up error naming it), the registry
modality, a diarization model refused as a transcription model, and the hub layout `talkies pull` fetches
(`model.onnx` + an embedding named by a `repo:file` dependency)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from talkies.api.app import create_app
from talkies.engines import snapshot
from talkies.engines.base import EngineContext
from talkies.engines.diarization.sherpa import SherpaDiarizer
from talkies.errors import ConfigError, WrongModalityError
from talkies.registry.schema import ModelSpec
from talkies.services.transcription import TranscriptionOptions
from talkies.settings import Settings
from tests.conftest import REPO_ROOT
from tests.fixtures.diarization import build_tiny_snapshot

MODELS: dict[str, dict[str, Any]] = {
    "asr-a": {"executor": "pocketsphinx"},
    "diar": {"executor": "sherpa_diarization", "repo": "org/seg"},
    "diar-2": {"executor": "sherpa_diarization", "repo": "org/seg2"},
}


def test_the_first_enabled_diarizer_is_the_default(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(MODELS))
    assert app.state.transcription.diarization.slug == "diar"
    app = create_app(make_settings(MODELS, diarization_model="diar-2"))
    assert app.state.transcription.diarization.slug == "diar-2"
    app = create_app(make_settings(MODELS, diarization_model="none"))
    assert app.state.transcription.diarization.slug is None


@pytest.mark.parametrize(("value", "says"), [("asr-a", "is a asr model"), ("nope", "not an enabled model")])
def test_a_bad_diarization_model_stops_start_up(
    make_settings: Callable[..., Settings], value: str, says: str
) -> None:
    with pytest.raises(ConfigError, match="TALKIES_DIARIZATION_MODEL") as caught:
        create_app(make_settings(MODELS, diarization_model=value))
    assert says in caught.value.message


def test_a_diarizer_is_not_a_transcription_model(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(MODELS))
    with pytest.raises(WrongModalityError, match="diarization model, not speech-to-text"):
        app.state.transcription.validate(TranscriptionOptions(model="diar"))


def test_shipped_registries_have_the_diarizer() -> None:
    from talkies.registry import load_registry

    for name in ("models.json", "models-cpu.json"):
        spec = load_registry(REPO_ROOT / name).models["pyannote-seg3-campp"]
        assert spec.kind == "diarization"
        assert spec.executor == "sherpa_diarization"


def test_pull_dependency_fetches_one_file_of_a_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    calls: list[tuple[str, str]] = []

    def fake_download(repo_id: str, filename: str) -> str:
        calls.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert snapshot.pull_dependency("org/embeddings:campplus.onnx") == tmp_path / "campplus.onnx"
    assert calls == [("org/embeddings", "campplus.onnx")]


def test_the_hub_layout_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """sherpa-onnx's segmentation repository (`model.onnx`) + the embedding file from the dependency."""
    built = build_tiny_snapshot(tmp_path / "built")
    model_dir = tmp_path / "models" / "diar"
    model_dir.mkdir(parents=True)
    shutil.copy(built / "segmentation.onnx", model_dir / "model.onnx")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    shutil.copy(built / "embedding.onnx", cache / "campplus.onnx")
    monkeypatch.setattr(snapshot, "pull_dependency", lambda name: cache / name.partition(":")[2])
    spec = ModelSpec(
        slug="diar", executor="sherpa_diarization", repo="org/seg", dependencies=("org/emb:campplus.onnx",)
    )
    engine = SherpaDiarizer(spec, EngineContext(slug="diar", model_dir=model_dir, device="cpu"))
    engine.load()
    assert engine.files == (model_dir / "model.onnx", cache / "campplus.onnx")
    engine.unload()
