"""The `sortformer` executor through the same path as sherpa-onnx: a tiny NeMo Sortformer built from a config
(random weights, tests/fixtures/sortformer.py) is the server's TALKIES_DIARIZATION_MODEL; pocketsphinx
transcribes. Its speakers are random (an untrained model), so the test checks the plumbing: the diarized
answer, its speakers, the model in the pool, and the 400s for what Sortformer cannot do."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.audio import TranscriptionDiarized

from talkies.api.app import create_app
from tests.api.audio_helpers import weightfree_settings
from tests.fixtures.diarization import FEMALE, LINES, MALE, conversation
from tests.fixtures.speech import espeak, write_wav
from tests.server import serve

pytest.importorskip("nemo")
pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

ASR = "pocketsphinx-en-us"
DIARIZER = "tiny-sortformer"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.fixtures.sortformer import tiny_sortformer_snapshot

    tmp = tmp_path_factory.mktemp("sortformer-server")
    registry = tmp / "sortformer-models.json"
    models = {ASR: {"executor": "pocketsphinx"}, DIARIZER: {"executor": "sortformer", "repo": "local/tiny"}}
    registry.write_text(json.dumps({"models": models}))
    shutil.copytree(tiny_sortformer_snapshot(), tmp / "data" / "models" / DIARIZER)
    settings = weightfree_settings(tmp, models_file=registry, diarization_model=DIARIZER)
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(
        tmp_path_factory.mktemp("sortformer-audio") / "two.wav", conversation((MALE, FEMALE)).audio
    )


def test_sortformer_diarizes_through_the_same_path(base_url: str, wav: Path) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=600, max_retries=0)
    with wav.open("rb") as f:
        body = sdk.audio.transcriptions.create(model=ASR, file=f, response_format="diarized_json")
    assert isinstance(body, TranscriptionDiarized)
    assert body.segments
    assert all(segment.speaker for segment in body.segments)
    assert body.segments[0].speaker == "A"  # letters in order of appearance
    assert body.segments[0].id == "seg_001"  # acoustic numbering, not a channel's
    ps = {row["model"]: row for row in httpx.get(f"{base_url}/api/ps", timeout=30).json()["models"]}
    assert ps[DIARIZER]["modality"] == "diarization"
    assert ps[DIARIZER]["executor"] == "sortformer"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_speakers": "5"}, "at most 4 speakers"),
        ({"known_speaker_names[]": "agent", "known_speaker_references[]": "REF"}, "cannot match voices"),
    ],
    ids=["five speakers", "references"],
)
def test_what_sortformer_cannot_do_is_a_400(
    base_url: str, wav: Path, fields: dict[str, str], message: str
) -> None:
    import base64
    import io
    import wave

    import numpy as np

    if fields.get("known_speaker_references[]") == "REF":
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes((espeak(LINES[0], MALE) * 32767).astype(np.int16).tobytes())
        fields = {
            **fields,
            "known_speaker_references[]": "data:audio/wav;base64,"
            + base64.b64encode(buffer.getvalue()).decode(),
        }
    with wav.open("rb") as f:
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": ASR, "response_format": "diarized_json", **fields},
            files={"file": ("a.wav", f)},
            timeout=300,
        )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
