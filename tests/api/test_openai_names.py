"""OpenAI's names and Open WebUI's calls against the shipped registry (real espeak-ng + pocketsphinx, real
uvicorn, the official `openai` client): model and voice aliases, empty `model`, the README's first example,
the catalog GETs, `/v1/v1/`, strict speed, and the 422 envelope."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.conftest import REPO_ROOT
from tests.server import serve

pytestmark = pytest.mark.slow

WEIGHT_FREE = "pocketsphinx-en-us,espeak-ng"


def shipped_settings(tmp: Path, **overrides: object) -> object:
    return load_settings(
        models_file=REPO_ROOT / "models-cpu.json",
        enabled_models=WEIGHT_FREE,
        data_dir=tmp / "data",
        sweeper_interval=0,
        device="cpu",
        **overrides,
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(create_app(shipped_settings(tmp_path_factory.mktemp("names")))) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_readme_first_example_round_trips(base_url: str, tmp_path: Path) -> None:
    """The README's first code block, run as written (only the port differs): espeak-ng says "Hello from
    talkies." and pocketsphinx gives the words back."""
    readme = (REPO_ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None
    source = code.group(1).replace("http://localhost:8000/v1", f"{base_url}/v1")
    assert base_url in source
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    words = re.findall(r"[a-z]+", out.getvalue().lower())
    assert words == ["hello", "from", "talkies"], out.getvalue()


def test_openai_model_and_voice_names(sdk: openai.OpenAI) -> None:
    # whisper-large-v3 holds whisper-1 but is not enabled: the alias goes to the default ASR model
    audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello from talkies.")
    text = sdk.audio.transcriptions.create(model="whisper-1", file=("hi.mp3", audio.content)).text
    assert "hello" in text.lower()
    for voice in (
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "onyx",
        "nova",
        "sage",
        "shimmer",
        "verse",
        "marin",
    ):
        assert sdk.audio.speech.create(model="gpt-4o-mini-tts", voice=voice, input="Hi.").content  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="voice"):
        sdk.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")  # type: ignore[arg-type]


def test_models_resolve_and_list_aliases(sdk: openai.OpenAI, base_url: str) -> None:
    model = sdk.models.retrieve("whisper-1")
    assert model.id == "pocketsphinx-en-us"
    cards = httpx.get(f"{base_url}/v1/models").json()["data"]
    espeak = next(card for card in cards if card["id"] == "espeak-ng")
    assert espeak["default"] is True
    assert espeak["aliases"] == []  # tts-1 belongs to kokoro-82m in the shipped file, not enabled here
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("whisper-2")


def test_empty_model_field_means_the_default(base_url: str) -> None:
    audio = httpx.post(
        f"{base_url}/v1/audio/speech",
        json={"model": "", "input": "Hello from talkies.", "voice": "alloy"},
        timeout=60,
    )
    assert audio.status_code == 200, audio.text
    assert audio.headers["content-type"] == "audio/mpeg"  # Open WebUI caches it as .mp3
    # Open WebUI's STT call: empty model, no response_format, file without a content type
    reply = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        data={"model": ""},
        files={"file": ("0b7c.mp3", audio.content)},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert "hello" in reply.json()["text"]


def test_open_webui_catalog_calls(base_url: str) -> None:
    voices = httpx.get(f"{base_url}/v1/audio/voices").json()["voices"]
    assert voices
    assert all(isinstance(v["id"], str) and isinstance(v["name"], str) for v in voices)
    robosoft = [v for v in voices if v["id"] == "en-us+klatt"]
    assert robosoft
    assert robosoft[0]["default"]
    assert robosoft[0]["aliases"] == ["alloy"]
    models = httpx.get(f"{base_url}/v1/audio/models").json()["models"]
    assert [m["id"] for m in models] == ["espeak-ng"]  # text-to-speech models only


@pytest.mark.parametrize("prefix", ["/v1/v1", "/v1/v1/v1", "//v1"])
def test_doubled_prefix_is_answered(base_url: str, prefix: str) -> None:
    response = httpx.get(f"{base_url}{prefix}/audio/models")
    assert response.status_code == 200, response.text
    spoken = httpx.post(
        f"{base_url}{prefix}/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy"}
    )
    assert spoken.status_code == 200


def test_speed_outside_openai_range_is_400(sdk: openai.OpenAI) -> None:
    for speed in (0.2, 4.5):
        with pytest.raises(openai.BadRequestError) as info:
            sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=speed)
        assert info.value.param == "speed"  # type: ignore[attr-defined]


def test_422_carries_the_error_object(base_url: str) -> None:
    response = httpx.post(f"{base_url}/v1/audio/speech", json={"model": "tts-1", "input": 5, "voice": ["x"]})
    assert response.status_code == 422
    body = response.json()
    assert isinstance(body["detail"], list)
    assert body["detail"]
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ("input", "voice")
    assert error["param"] in error["message"]


def test_public_catalog_lets_only_the_two_gets_through(tmp_path: Path) -> None:
    settings = shipped_settings(tmp_path, auth_token="s3cret", public_catalog=True)
    with serve(create_app(settings)) as url:  # type: ignore[arg-type]
        assert httpx.get(f"{url}/v1/audio/voices").status_code == 200
        assert httpx.get(f"{url}/v1/audio/models").status_code == 200
        assert httpx.get(f"{url}/v1/v1/audio/voices").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert (
            httpx.post(f"{url}/v1/audio/speech", json={"model": "tts-1", "input": "Hi."}).status_code == 401
        )
    closed = shipped_settings(tmp_path, auth_token="s3cret")
    with serve(create_app(closed)) as url:  # type: ignore[arg-type]
        assert httpx.get(f"{url}/v1/audio/voices").status_code == 401
        assert httpx.get(f"{url}/v1/audio/models").status_code == 401


def test_options_not_served_yet_are_refused_not_ignored(base_url: str, sdk: openai.OpenAI) -> None:
    sse = httpx.post(
        f"{base_url}/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "stream_format": "events"}
    )
    assert sse.status_code == 400
    assert sse.json()["error"]["param"] == "stream_format"
    audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", stream_format="audio")
    for name in ("known_speaker_names[]", "known_speaker_references[]"):
        response = httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            data={"model": "whisper-1", name: "agent"},
            files={"file": ("a.mp3", audio.content)},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == name.removesuffix("[]")
