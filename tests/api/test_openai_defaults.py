"""OpenAI names and explicit defaults against the shipped CPU registry with every model enabled (issue 25,
item 8), through the official `openai` SDK, the `wyoming` client and the `mcp` client on a real uvicorn:

- TALKIES_DEFAULT_*_MODEL set: `tts-1` + `alloy` and `whisper-1` reach the configured espeak-ng and
  pocketsphinx, although the shipped file gives those names to Kokoro and Whisper (absent here);
- nothing configured: the shipped aliases still reach Kokoro / Whisper when those are on disk;
- nothing configured and only the weight-free engines on disk: a request naming no model (Wyoming, MCP,
  an empty `model`) goes to an installed model, not to the registry's first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from talkies.api.app import create_app
from talkies.settings import Settings, load_settings
from tests.api.audio_helpers import SENTENCE_A, speak, word_overlap
from tests.conftest import REPO_ROOT, write_registry
from tests.fixtures.cache import install_snapshot
from tests.fixtures.kokoro import install_kokoro
from tests.fixtures.whisper import build_whisper
from tests.server import asgi_client, serve

wyoming = pytest.importorskip("wyoming")

from wyoming.asr import Transcribe  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.tts import Synthesize  # noqa: E402

from tests.wyoming_helpers import read_until, wyoming_client  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TIMEOUT = 300.0
RATE = 16_000


def _shipped(tmp_path: Path, **overrides: Any) -> Settings:
    """The shipped CPU registry, every model enabled, on an empty data dir (nothing downloaded)."""
    return load_settings(
        models_file=REPO_ROOT / "models-cpu.json",
        data_dir=tmp_path / "data",
        sweeper_interval=0,
        device="cpu",
        **overrides,
    )


@contextmanager
def _server(settings: Settings) -> Iterator[tuple[str, openai.OpenAI, int | None]]:
    app = create_app(settings)
    with serve(app) as base:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
        wyoming_server = app.state.wyoming
        yield base, sdk, None if wyoming_server is None else wyoming_server.port


def _loaded(base: str) -> set[str]:
    return {row["model"] for row in httpx.get(f"{base}/api/ps").json()["models"] if row["loaded"]}


def _defaults(base: str) -> dict[str, bool]:
    cards = httpx.get(f"{base}/v1/models").json()["data"]
    # the diarizer (TALKIES_DIARIZATION_MODEL) is marked too; these tests are about speech and transcription
    return {card["id"]: card["default"] for card in cards if card["modality"] in ("asr", "tts")}


def _int16(seconds_of_speech: Any) -> bytes:
    import numpy as np

    return bytes((np.clip(seconds_of_speech, -1, 1) * 32767).astype("<i2").tobytes())


def test_openai_names_reach_the_configured_defaults(tmp_path: Path) -> None:
    settings = _shipped(tmp_path, default_asr_model="pocketsphinx-en-us", default_tts_model="espeak-ng")
    with _server(settings) as (base, sdk, _):
        audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hello from talkies.")
        text = sdk.audio.transcriptions.create(model="whisper-1", file=("hi.mp3", audio.content)).text
        # alloy is espeak-ng's own alias for en-us+klatt: the same audio as naming both directly
        aliased = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="pcm")
        direct = sdk.audio.speech.create(
            model="espeak-ng",
            voice="en-us+klatt",  # type: ignore[arg-type]
            input="Hi.",
            response_format="pcm",
        )
        resolved = {name: sdk.models.retrieve(name).id for name in _OPENAI_NAMES}
        loaded = _loaded(base)
        defaults = _defaults(base)
    assert "hello" in text.lower()
    assert aliased.content == direct.content
    assert resolved == {name: _CONFIGURED[kind] for name, kind in _OPENAI_NAMES.items()}
    assert loaded == {"espeak-ng", "pocketsphinx-en-us"}  # neither Kokoro nor Whisper was tried
    assert {slug for slug, is_default in defaults.items() if is_default} == set(_CONFIGURED.values())


_OPENAI_NAMES = {
    "whisper-1": "asr",
    "gpt-4o-transcribe": "asr",
    "gpt-4o-mini-transcribe": "asr",
    "tts-1": "tts",
    "tts-1-hd": "tts",
    "gpt-4o-mini-tts": "tts",
}
_CONFIGURED = {"asr": "pocketsphinx-en-us", "tts": "espeak-ng"}


def test_with_nothing_configured_the_shipped_aliases_reach_kokoro_and_whisper(tmp_path: Path) -> None:
    settings = _shipped(tmp_path)
    install_kokoro(settings.data_dir, "kokoro-82m")
    install_snapshot(build_whisper("micro"), settings.data_dir, "whisper-large-v3")
    with _server(settings) as (base, sdk, _):
        audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="wav")
        assert _loaded(base) == {"kokoro-82m"}
        sdk.audio.transcriptions.create(model="whisper-1", file=("hi.wav", audio.content))
        loaded = _loaded(base)
        resolved = {name: sdk.models.retrieve(name).id for name in ("tts-1", "whisper-1")}
    assert loaded == {"kokoro-82m", "whisper-large-v3"}
    assert resolved == {"tts-1": "kokoro-82m", "whisper-1": "whisper-large-v3"}
    assert audio.content[:4] == b"RIFF"


@asynccontextmanager
async def _mcp(url: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_without_a_model_name_an_installed_model_answers(tmp_path: Path) -> None:
    """Only the weight-free engines on disk, nothing configured: Home Assistant's `transcribe` (no name)
    and `synthesize` (no voice), MCP without `model` and an empty HTTP `model` all reach pocketsphinx and
    espeak-ng, not the registry's first models (Whisper, Kokoro: not downloaded, offline here)."""
    settings = _shipped(tmp_path, wyoming_uri="tcp://127.0.0.1:0")
    pcm = _int16(speak(SENTENCE_A))
    with _server(settings) as (base, _, port):
        assert port is not None
        async with wyoming_client(port) as client:
            await client.write_event(Synthesize(text="Hello.").event())
            spoken = await read_until(client, "audio-stop")
            await client.write_event(Transcribe().event())
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            for offset in range(0, len(pcm), 2048):
                chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[offset : offset + 2048])
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            heard = await read_until(client, "transcript-stop")
        async with _mcp(f"{base}/v1/mcp") as session:
            staged = await session.call_tool("speak", {"text": SENTENCE_A})
            assert not staged.is_error, staged.content
            path = json.loads(staged.content[0].text)["path"]
            transcribed = await session.call_tool("transcribe", {"file_path": path})
            assert not transcribed.is_error, transcribed.content
        async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
            empty = await http.post("/v1/audio/speech", json={"model": "", "input": "Hi.", "voice": "alloy"})
        loaded = _loaded(base)
        defaults = _defaults(base)
    assert [e.type for e in spoken if e.type != "audio-chunk"] == ["audio-start", "audio-stop"]
    assert sum(len(e.payload or b"") for e in spoken) > 0
    transcript = next(e for e in heard if e.type in ("transcript", "error"))
    assert transcript.type == "transcript", transcript.data
    assert word_overlap(SENTENCE_A, transcript.data["text"]) >= 0.6
    assert word_overlap(SENTENCE_A, json.loads(transcribed.content[0].text)["text"]) >= 0.6
    assert empty.status_code == 200, empty.text
    assert loaded == {"espeak-ng", "pocketsphinx-en-us"}
    assert {slug for slug, is_default in defaults.items() if is_default} == loaded


async def test_openai_voice_without_an_alias_speaks_the_default_voice(tmp_path: Path) -> None:
    """A model whose registry entry maps no OpenAI voices, reached through `tts-1` or an empty `model`:
    `alloy` is its default voice. Named by its slug, or with a voice that is not OpenAI's: still a 400."""
    registry = write_registry(
        tmp_path / "models.json", {"formant": {"executor": "espeak", "default_voice": "en-us+klatt"}}
    )
    settings = load_settings(
        models_file=registry, data_dir=tmp_path / "data", sweeper_interval=0, default_tts_model="formant"
    )
    body = {"model": "tts-1", "input": "Hi.", "response_format": "pcm"}
    async with asgi_client(create_app(settings), timeout=TIMEOUT) as client:
        openai_voice = await client.post("/v1/audio/speech", json={**body, "voice": "alloy"})
        default = await client.post("/v1/audio/speech", json={**body, "voice": ""})
        unknown = await client.post("/v1/audio/speech", json={**body, "voice": "nobody"})
        no_model = await client.post("/v1/audio/speech", json={**body, "model": "", "voice": "alloy"})
        by_slug = await client.post("/v1/audio/speech", json={**body, "model": "formant", "voice": "alloy"})
    assert openai_voice.status_code == 200, openai_voice.text
    assert openai_voice.content == default.content
    assert no_model.content == default.content
    for refused in (unknown, by_slug):  # a client that names the model is told its voices
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "voice"
