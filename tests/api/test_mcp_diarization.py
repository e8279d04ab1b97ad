"""MCP `transcribe` shows who spoke when: a mono two-voice espeak-ng conversation staged with `put_file`,
transcribed by the real pocketsphinx engine and diarized by the real sherpa-onnx engine on the tiny
handcrafted ONNX pair, through the official `mcp` client over Streamable HTTP on a real uvicorn socket."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from talkies.api.app import create_app
from tests.api.test_diarization_http import ASR, diarization_settings
from tests.fixtures.diarization import FEMALE, MALE, conversation
from tests.fixtures.speech import write_wav
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.pinned_isolation]


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    with serve(create_app(diarization_settings(tmp_path / "server"))) as url:
        yield url


@pytest.fixture
def recording(tmp_path: Path) -> bytes:
    return write_wav(tmp_path / "two.wav", conversation((MALE, FEMALE)).audio).read_bytes()


async def _session(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=600)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _transcribe(session: ClientSession, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool("transcribe", {"file_path": "talk.wav", "model": ASR, **arguments})
    assert not result.is_error, result.content
    body: dict[str, Any] = json.loads(result.content[0].text)
    return body


def _turns(body: dict[str, Any]) -> list[str]:
    return [speaker for speaker, _ in groupby(segment["speaker"] for segment in body["segments"])]


async def test_transcribe_shows_the_speakers_of_a_mono_file(base_url: str, recording: bytes) -> None:
    async for session in _session(f"{base_url}/v1/mcp"):
        content = base64.b64encode(recording).decode()
        staged = await session.call_tool("put_file", {"path": "talk.wav", "content_base64": content})
        assert not staged.is_error, staged.content

        found = await _transcribe(session, response_format="diarized_json")
        assert _turns(found) == ["A", "B", "A", "B"]
        assert [line.split(": ", 1)[0] for line in found["text"].splitlines()] == ["A", "B", "A", "B"]

        told = await _transcribe(session, response_format="diarized_json", num_speakers=2)
        assert _turns(told) == ["A", "B", "A", "B"]
        one = await _transcribe(session, response_format="diarized_json", num_speakers=1)
        assert _turns(one) == ["A"]

        plain = await _transcribe(session, response_format="json")
        assert "segments" not in plain
        assert not plain["text"].startswith("A: ")
