"""MCP end to end with the real weight-free engines: put_file an espeak-ng recording, transcribe it with
pocketsphinx, speak with espeak-ng into the staging area, get_file it back and transcribe that too."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from talkies.api.app import create_app
from tests.api.audio_helpers import VOICE, weightfree_settings, word_overlap
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.pinned_isolation]
SENTENCE = "The weather is nice today."
SPOKEN = "Please call me tomorrow morning."


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    with serve(create_app(weightfree_settings(tmp_path))) as url:
        yield url


@pytest.fixture
def recording(tmp_path: Path) -> bytes:
    """A real espeak-ng recording (`espeak-ng -w`), as a user would stage it."""
    path = tmp_path / "weather.wav"
    subprocess.run(["espeak-ng", "-v", VOICE, "-w", str(path), SENTENCE], check=True)
    return path.read_bytes()


async def _session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    text = result.content[0].text
    return text if tool == "transcribe" else json.loads(text)


async def test_put_transcribe_speak_get(base_url: str, recording: bytes) -> None:
    async for session in _session(f"{base_url}/v1/mcp"):
        staged = await _call(
            session, "put_file", path="in/weather.wav", content_base64=base64.b64encode(recording).decode()
        )
        assert staged["size"] == len(recording)

        body = await _call(session, "transcribe", file_path="in/weather.wav", model="pocketsphinx-en-us")
        assert word_overlap(SENTENCE, json.loads(body)["text"]) >= 0.6
        srt = await _call(
            session,
            "transcribe",
            file_path="in/weather.wav",
            model="pocketsphinx-en-us",
            response_format="srt",
        )
        assert "-->" in srt

        models = {m["slug"]: m for m in (await _call(session, "list_models"))["models"]}
        assert models["pocketsphinx-en-us"]["modality"] == "asr"
        assert models["pocketsphinx-en-us"]["loaded"] is True
        assert models["espeak-ng"]["modality"] == "tts"

        voices = (await _call(session, "list_voices", model="espeak-ng"))["voices"]
        assert any(v["voice"] == VOICE for v in voices)

        spoken = await _call(session, "speak", text=SPOKEN, model="espeak-ng", response_format="wav")
        assert spoken["path"].startswith("speech/")
        assert spoken["path"].endswith(".wav")
        assert spoken["format"] == "wav"
        assert 1.0 < spoken["duration"] < 5.0

        got = await _call(session, "get_file", path=spoken["path"])
        audio = base64.b64decode(got["content_base64"])
        assert got["content_type"] == "audio/wav"
        with wave.open(io.BytesIO(audio)) as wav:
            assert abs(wav.getnframes() / wav.getframerate() - spoken["duration"]) < 0.05

        again = await _call(
            session,
            "transcribe",
            file_path=spoken["path"],
            model="pocketsphinx-en-us",
            response_format="text",
        )
        assert word_overlap(SPOKEN, again) >= 0.6

        named = await _call(
            session, "speak", text="Hello.", model="espeak-ng", response_format="mp3", path="out/hello.mp3"
        )
        assert named["path"] == "out/hello.mp3"
        assert named["duration"] > 0.2


async def test_tool_errors_are_clear(base_url: str) -> None:
    async for session in _session(f"{base_url}/v1/mcp"):
        cases = [
            ("transcribe", {"file_path": "nope.wav", "model": "pocketsphinx-en-us"}, "not found"),
            ("transcribe", {"file_path": "nope.wav", "model": "espeak-ng"}, "text-to-speech"),
            ("transcribe", {"file_path": "x.wav", "model": "missing-model"}, "HTTP 404"),
            (
                "transcribe",
                {"file_path": "http://169.254.169.254/", "model": "pocketsphinx-en-us"},
                "cloud-metadata",
            ),
            ("speak", {"text": "hi", "model": "pocketsphinx-en-us"}, "speech-to-text"),
            ("speak", {"text": "hi", "model": "espeak-ng", "voice": "no-such-voice"}, "no-such-voice"),
            ("speak", {"text": "hi", "model": "espeak-ng", "path": "../x.wav"}, "invalid path"),
        ]
        for tool, arguments, needle in cases:
            result = await session.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert needle in result.content[0].text, result.content[0].text
