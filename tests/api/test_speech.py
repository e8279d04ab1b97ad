"""POST /v1/audio/speech and GET /v1/audio/voices with the real espeak-ng engine, plus the round trip
through pocketsphinx."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from tests.api.audio_helpers import SENTENCE_A, VOICE, weightfree_settings, word_overlap
from tests.server import asgi_client, serve

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.pinned_isolation]

TTS = "espeak-ng"
SENTENCE = "The weather is nice today. Please call me tomorrow morning."


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(weightfree_settings(tmp_path))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app, timeout=120) as client:
        yield client


async def speak(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/v1/audio/speech", json={"model": TTS, "input": SENTENCE, **body})


async def test_round_trip_speech_to_text(client: httpx.AsyncClient) -> None:
    wav = await speak(client, response_format="wav", voice=VOICE)
    assert wav.status_code == 200, wav.text
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "pocketsphinx-en-us"},
        files={"file": ("speech.wav", wav.content, "audio/wav")},
    )
    assert response.status_code == 200, response.text
    assert word_overlap(SENTENCE, response.json()["text"]) >= 0.6, response.json()["text"]


def _is_adts(data: bytes) -> bool:
    return data[0] == 0xFF and data[1] & 0xF6 == 0xF0


def _is_mp3(data: bytes) -> bool:
    return data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


async def test_six_formats_by_magic_bytes(client: httpx.AsyncClient) -> None:
    bodies = {}
    for fmt, ctype in [
        ("wav", "audio/wav"),
        ("pcm", "application/octet-stream"),
        ("flac", "audio/flac"),
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("mp3", "audio/mpeg"),
    ]:
        response = await speak(client, response_format=fmt)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == ctype
        bodies[fmt] = response.content
    wav, pcm = bodies["wav"], bodies["pcm"]
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"
    assert struct.unpack_from("<I", wav, 4)[0] == len(wav) - 8
    assert wav[36:40] == b"data"
    assert struct.unpack_from("<I", wav, 40)[0] == len(wav) - 44
    assert struct.unpack_from("<I", wav, 24)[0] == 24_000
    assert pcm == wav[44:]  # raw s16le, same samples, no header
    assert len(pcm) % 2 == 0
    assert bodies["flac"][:4] == b"fLaC"
    assert bodies["opus"][:4] == b"OggS"
    assert b"OpusHead" in bodies["opus"][:64]
    assert _is_adts(bodies["aac"])
    assert _is_mp3(bodies["mp3"])


async def test_mp3_is_the_default(client: httpx.AsyncClient) -> None:
    response = await speak(client)
    assert response.headers["content-type"] == "audio/mpeg"
    assert _is_mp3(response.content)


async def test_speed_changes_duration_and_is_refused_outside_openai_range(client: httpx.AsyncClient) -> None:
    lengths = {}
    for speed in (0.5, 1.0, 2.0):
        response = await speak(client, response_format="pcm", speed=speed)
        assert response.status_code == 200
        lengths[speed] = len(response.content)
    assert lengths[0.5] > 1.5 * lengths[1.0]
    assert lengths[2.0] < 0.7 * lengths[1.0]
    for speed in (0.1, 100.0):
        response = await speak(client, response_format="pcm", speed=speed)
        assert response.status_code == 400  # OpenAI's 0.25-4.0, never clamped
        assert response.json()["error"]["param"] == "speed"


async def test_espeak_voices_by_their_own_names(client: httpx.AsyncClient) -> None:
    default = await speak(client, response_format="pcm")
    klatt = await speak(client, response_format="pcm", voice=VOICE)
    french = await speak(client, response_format="pcm", voice="fr-fr")
    assert default.content == klatt.content  # the registry's default voice
    assert french.status_code == 200
    assert french.content != default.content


async def test_request_errors(client: httpx.AsyncClient) -> None:
    for text in ("", "   \n\t"):
        empty = await speak(client, input=text)
        assert empty.status_code == 400
        assert empty.json()["error"]["param"] == "input"
    voice = await speak(client, voice="robot")
    assert voice.status_code == 400
    assert "en-us" in voice.json()["detail"]
    assert "fr-fr" in voice.json()["detail"]
    assert (await speak(client, response_format="ogg")).status_code == 400
    assert (await speak(client, model="nope")).status_code == 404
    asr = await speak(client, model="pocketsphinx-en-us")
    assert asr.status_code == 400
    assert "transcriptions" in asr.json()["detail"]
    missing = await client.post("/v1/audio/speech", json={"model": TTS})
    assert missing.status_code == 422
    assert (await speak(client, temperature=5)).status_code == 422
    extra = await speak(client, response_format="pcm", instructons="typo", whatever=[1, 2])
    assert extra.status_code == 200  # unknown keys are ignored


async def test_voices_catalog(client: httpx.AsyncClient) -> None:
    voices = (await client.get("/v1/audio/voices")).json()["voices"]
    assert {v["model"] for v in voices} == {TTS}
    names = {v["voice"] for v in voices}
    assert {"en-us", "fr-fr", "de", VOICE} <= names
    assert [v["voice"] for v in voices if v["default"]] == [VOICE]
    assert all(set(v) == {"id", "name", "voice", "model", "default", "aliases"} for v in voices)
    assert all(v["id"] == v["name"] == v["voice"] for v in voices)  # Open WebUI reads id / name
    filtered = (await client.get("/v1/audio/voices", params={"model": TTS})).json()["voices"]
    assert filtered == voices
    assert (await client.get("/v1/audio/voices", params={"model": "nope"})).status_code == 404
    assert (await client.get("/v1/audio/voices", params={"model": "pocketsphinx-en-us"})).status_code == 400


def test_openai_client(app: FastAPI, tmp_path: Path) -> None:
    with serve(app) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        speech = client.audio.speech.create(model=TTS, voice=VOICE, input=SENTENCE_A, response_format="wav")
        path = tmp_path / "speech.wav"
        speech.write_to_file(path)
        assert path.read_bytes()[:4] == b"RIFF"
        with path.open("rb") as f:
            text = client.audio.transcriptions.create(
                model="pocketsphinx-en-us", file=f, response_format="text"
            )
        assert word_overlap(SENTENCE_A, str(text)) >= 0.6
        with client.audio.speech.with_streaming_response.create(
            model=TTS, voice="en-us", input=SENTENCE_A, response_format="mp3", speed=1.5
        ) as streamed:
            assert streamed.headers["content-type"] == "audio/mpeg"
            assert len(streamed.read()) > 1000
        with pytest.raises(openai.BadRequestError):
            client.audio.speech.create(model=TTS, voice="robot", input="hello")
