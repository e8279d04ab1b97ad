"""The shipped registries enable the `pyannote-seg3-campp` diarizer, so a mono `diarized_json` request on a
server without its snapshot cannot be diarized: it answers 503 naming both ways out (get the snapshot, or
TALKIES_DIARIZATION_MODEL=none for one speaker per channel), and with `none` the same request answers one
speaker A. The hub is unreachable here (HF_HUB_OFFLINE=1), as on an air-gapped server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from talkies.api.app import create_app
from talkies.settings import Settings
from tests.api.audio_helpers import weightfree_settings
from tests.conftest import REPO_ROOT
from tests.fixtures.diarization import FEMALE, MALE, conversation
from tests.fixtures.speech import write_wav
from tests.server import asgi_client

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.pinned_isolation]

ASR = "pocketsphinx-en-us"
SHIPPED = "pyannote-seg3-campp"


@pytest.fixture(scope="module")
def mono(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("unavailable-audio") / "two.wav"
    return write_wav(path, conversation((MALE, FEMALE)).audio).read_bytes()


def shipped_settings(tmp: Path, **overrides: object) -> Settings:
    """pocketsphinx + the diarizer entry exactly as models-cpu.json ships it; no snapshot in the data dir."""
    shipped = json.loads((REPO_ROOT / "models-cpu.json").read_text())["models"][SHIPPED]
    registry = tmp / "shipped-models.json"
    registry.write_text(json.dumps({"models": {ASR: {"executor": "pocketsphinx"}, SHIPPED: shipped}}))
    return weightfree_settings(tmp, models_file=registry, **overrides)


async def post_diarized(settings: Settings, audio: bytes) -> tuple[int, dict[str, Any]]:
    app = create_app(settings)
    async with asgi_client(app, timeout=600) as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            data={"model": ASR, "response_format": "diarized_json"},
            files={"file": ("two.wav", audio, "audio/wav")},
        )
    return response.status_code, response.json()


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
async def test_a_missing_diarizer_answers_503_naming_both_ways_out(
    tmp_path: Path, mono: bytes, isolation: str
) -> None:
    status, body = await post_diarized(shipped_settings(tmp_path, engine_isolation=isolation), mono)
    assert status == 503, body
    message = body["error"]["message"]
    assert f"needs the diarization model '{SHIPPED}'" in message
    assert f"`talkies pull {SHIPPED}`" in message
    assert f"scripts/diarization_snapshot.py $TALKIES_DATA_DIR/models/{SHIPPED}" in message
    assert "set TALKIES_DIARIZATION_MODEL=none to answer one speaker per channel" in message


async def test_diarization_model_none_answers_one_speaker(tmp_path: Path, mono: bytes) -> None:
    status, body = await post_diarized(shipped_settings(tmp_path, diarization_model="none"), mono)
    assert status == 200, body
    assert body["segments"]
    assert {segment["speaker"] for segment in body["segments"]} == {"A"}
