"""talkies on Ray Serve, through the official openai client on Serve's HTTP proxy (127.0.0.1): plain and
streamed speech and transcription with the weight-free engines and a generated Whisper model; /readyz and
/api/ps from the model-server replicas; and auth and the 4xx answers exactly as the single-process server
gives them (the same requests against both)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from talkies.api.app import create_app
from talkies.settings import Settings, load_settings
from tests.conftest import REPO_ROOT
from tests.fixtures.cache import install_snapshot
from tests.fixtures.speech import speech_clip, write_wav
from tests.fixtures.whisper import build_whisper
from tests.ray.conftest import APP, RayServe, deploy, replica_states
from tests.ray.engines import bounded_engine
from tests.server import asgi_client

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "ray-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WHISPER = "whisper-micro"
SPHINX = "pocketsphinx-en-us"
ESPEAK = "espeak-ng"
README_TEXT = "Hello from talkies."


def _settings(tmp: Path) -> Settings:
    shipped = json.loads((REPO_ROOT / "models-cpu.json").read_text())["models"]
    models = {slug: shipped[slug] for slug in (SPHINX, ESPEAK)}
    models[WHISPER] = {"repo": "test/whisper-micro", "executor": "whisper"}
    (tmp / "models.json").write_text(json.dumps({"models": models}))
    install_snapshot(build_whisper("micro"), tmp / "data", WHISPER)
    return load_settings(
        models_file=tmp / "models.json",
        data_dir=tmp / "data",
        device="cpu",
        engine_isolation="inprocess",
        sweeper_interval=0,
        auth_token=TOKEN,
        max_input_chars=300,
        max_upload_bytes=2_000_000,
        ray_replica_cpus=0.25,
        ray_min_replicas=2,
        ray_max_replicas=2,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(tmp_path_factory.mktemp("ray-api"))


@pytest.fixture(scope="module")
def url(ray_serve: RayServe, settings: Settings) -> Iterator[str]:
    with deploy(ray_serve, settings, engine_factory=bounded_engine) as base:
        yield base


@pytest.fixture(scope="module")
def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, timeout=300, max_retries=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("ray-clip") / "speech.wav", speech_clip(3.0))


def test_speaks_and_transcribes_the_readme_example(sdk: openai.OpenAI, tmp_path: Path) -> None:
    spoken = sdk.audio.speech.create(model=ESPEAK, voice="alloy", input=README_TEXT)
    path = tmp_path / "hi.mp3"
    spoken.write_to_file(path)
    with path.open("rb") as f:
        text = sdk.audio.transcriptions.create(model=SPHINX, file=f).text
    assert text.strip() == "hello from talkies"


def test_streamed_speech_is_the_plain_speech(sdk: openai.OpenAI) -> None:
    body = {
        "model": ESPEAK,
        "voice": "alloy",
        "input": "One sentence. And another one.",
        "response_format": "pcm",
    }
    plain = sdk.audio.speech.create(**body).content
    with sdk.audio.speech.with_streaming_response.create(**body, extra_body={"stream_format": "audio"}) as r:
        assert r.status_code == 200
        streamed = b"".join(r.iter_bytes())
    assert len(plain) > 24_000  # over half a second of 24 kHz 16-bit audio
    assert streamed == plain


@pytest.mark.parametrize("model", [SPHINX, WHISPER])
def test_streamed_transcription_adds_up_to_the_plain_one(sdk: openai.OpenAI, clip: Path, model: str) -> None:
    with clip.open("rb") as f:
        plain = sdk.audio.transcriptions.create(
            model=model, file=f, temperature=0 if model == WHISPER else None
        )
    with clip.open("rb") as f:
        kwargs: dict[str, Any] = {"temperature": 0} if model == WHISPER else {}
        events = list(sdk.audio.transcriptions.create(model=model, file=f, stream=True, **kwargs))
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == plain.text == deltas


def test_whisper_answers_verbose_json_from_a_model_server(sdk: openai.OpenAI, clip: Path) -> None:
    with clip.open("rb") as f:
        verbose = sdk.audio.transcriptions.create(
            model=WHISPER, file=f, response_format="verbose_json", temperature=0
        )
    assert verbose.duration == pytest.approx(3.0, abs=0.05)
    assert verbose.segments
    assert all(0 <= s.start <= s.end <= 3.05 for s in verbose.segments)


def test_readyz_and_ps_come_from_the_model_server_replicas(url: str, sdk: openai.OpenAI) -> None:
    sdk.audio.speech.create(model=ESPEAK, voice="alloy", input="ready", response_format="wav").read()
    assert httpx.get(f"{url}/readyz", timeout=30).json() == {"ready": True}
    answer = httpx.get(f"{url}/api/ps", headers=AUTH, timeout=60).json()
    rows = answer["models"]
    assert answer["memory"]["used_bytes"] == sum(r["memory_bytes"] or 0 for r in rows)
    deadline = time.monotonic() + 120
    while len(states := replica_states()) < 2:  # a new handle learns the replica set from the controller
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    assert len(states) == 2
    holders = {s["replica"] for s in states if any(m["model"] == ESPEAK for m in s["models"])}
    espeak_rows = [r for r in rows if r["model"] == ESPEAK]
    assert holders
    assert {r["replica"] for r in espeak_rows} == holders
    assert all(r["loaded"] and r["deployment"] == "talkies-models-cpu" and r["node"] for r in espeak_rows)


def test_post_api_ps_loads_on_a_model_server(url: str) -> None:
    answer = httpx.post(f"{url}/api/ps/{SPHINX}", headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    assert any(m["model"] == SPHINX for s in replica_states() for m in s["models"])
    assert SPHINX not in httpx.get(f"{url}/api/ps", headers={}, timeout=30).text  # 401 without the token


def test_the_model_server_reads_a_transcriptions_audio_from_the_object_store(
    sdk: openai.OpenAI, clip: Path
) -> None:
    import ray
    from ray import serve
    from talkies.audio.decode import decode_audio
    from talkies.engines.base import TranscriptionRequest
    from talkies.ray.model_server import NO_AUDIO, AudioCall

    with clip.open("rb") as f:
        over_http = sdk.audio.transcriptions.create(model=SPHINX, file=f).text
    handle = serve.get_deployment_handle("talkies-models-cpu", app_name=APP)
    call = AudioCall(TranscriptionRequest(audio=NO_AUDIO), ray.put(decode_audio(clip, sample_rate=16_000)))
    result = handle.options(multiplexed_model_id=SPHINX).transcribe.remote(call).result(timeout_s=300)
    assert result.text == over_http


# --- the same requests against the single-process server and against Ray ------------------------------

WAV_HEADER_ONLY = b"RIFF\x24\x00\x00\x00WAVEfmt "


def _cases(clip: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    speech = {"model": ESPEAK, "voice": "alloy", "input": "hi"}
    return [
        ("GET", "/v1/models", {}),  # no token
        ("GET", "/v1/models", {"headers": {"Authorization": "Bearer wrong"}}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "model": "nope"}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "model": SPHINX}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "voice": "no-such-voice"}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "input": " "}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "input": "x" * 301}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "response_format": "ogg"}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {**speech, "speed": 9}, "headers": AUTH}),
        ("POST", "/v1/audio/speech", {"json": {"model": ESPEAK}, "headers": AUTH}),
        (
            "POST",
            "/v1/audio/transcriptions",
            {"data": {"model": ESPEAK}, "files": {"file": ("a.wav", clip)}, "headers": AUTH},
        ),
        (
            "POST",
            "/v1/audio/transcriptions",
            {"data": {"model": SPHINX}, "files": {"file": ("a.wav", WAV_HEADER_ONLY)}, "headers": AUTH},
        ),
        (
            "POST",
            "/v1/audio/transcriptions",
            {"data": {"model": SPHINX}, "files": {"file": ("a.wav", b"\0" * 2_100_000)}, "headers": AUTH},
        ),
        (
            "POST",
            "/v1/audio/transcriptions",
            {
                "data": {"model": SPHINX, "response_format": "docx"},
                "files": {"file": ("a.wav", clip)},
                "headers": AUTH,
            },
        ),
        (
            "POST",
            "/v1/audio/translations",
            {"data": {"model": SPHINX}, "files": {"file": ("a.wav", clip)}, "headers": AUTH},
        ),
    ]


def _comparable(response: httpx.Response) -> tuple[int, Any, str | None]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body, response.headers.get("www-authenticate")


@pytest.mark.anyio
async def test_auth_and_4xx_answers_match_the_single_process_server(
    url: str, settings: Settings, clip: Path
) -> None:
    cases = _cases(await anyio.Path(clip).read_bytes())
    local: list[tuple[int, Any, str | None]] = []
    async with asgi_client(create_app(settings)) as client:
        for method, path, kwargs in cases:
            local.append(_comparable(await client.request(method, path, **kwargs)))
    on_ray: list[tuple[int, Any, str | None]] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for method, path, kwargs in cases:
            on_ray.append(_comparable(await client.request(method, path, **kwargs)))
    assert [answer[0] for answer in local] == [
        401,
        401,
        404,
        400,
        400,
        400,
        400,
        400,
        400,
        422,
        400,
        400,
        413,
        400,
        400,
    ]
    assert on_ray == local
