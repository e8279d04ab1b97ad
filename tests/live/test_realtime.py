"""Realtime transcription sessions against a real `talkies serve` (uvicorn, a socket), pocketsphinx on
espeak-ng speech (`en-us+klatt`) streamed in 50 ms chunks: the official `openai` SDK's realtime client (GA
shape), a raw client in the beta shape, LiveKit Agents' OpenAI STT with `use_realtime=True`, manual
commit, G.711, and error events that leave the socket usable."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.api.audio_helpers import SENTENCE_A, SENTENCE_B, word_overlap
from tests.fixtures.cache import install_snapshot
from tests.live.realtime_helpers import (
    COMMITTED,
    COMPLETED,
    DELTA,
    MODEL,
    POCKETSPHINX,
    SENTENCES,
    WAIT_S,
    check_turns,
    chunks,
    encode,
    open_raw,
    spoken,
    ws_url,
)
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

LIVEKIT_UPDATE = {  # LiveKit Agents 1.8's first message, byte for byte in structure (protocol-notes 2b)
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": MODEL, "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 600,
                    "silence_duration_ms": 350,
                },
            }
        },
    },
}
# 8 kHz speech loses what pocketsphinx's 16 kHz model hears above 4 kHz: sentences it still gets mostly right
# over the telephone band (G.711 itself adds nothing: tests/unit/audio/test_g711_stream.py)
TELEPHONE = (SENTENCE_B, "Good morning, how are you today?")
MANUAL = {
    "type": "session.update",
    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
}


LIVEKIT_DEFAULT_MODEL = "gpt-4o-mini-transcribe"
REAL_MODELS = Path(os.environ.get("TALKIES_REAL_MODELS", Path.home() / ".cache" / "real-models"))
WHISPER_BASE = REAL_MODELS / "whisper-base"  # the real-weight tier (/work/shared/recipes/real-models)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("realtime")
    # LiveKit's default model name, as an alias: a client configured for OpenAI works unchanged
    models: dict[str, dict[str, Any]] = {MODEL: {**POCKETSPHINX, "aliases": [LIVEKIT_DEFAULT_MODEL]}}
    if (WHISPER_BASE / "model.bin").exists() and importlib.util.find_spec("faster_whisper") is not None:
        install_snapshot(WHISPER_BASE, tmp / "live-data", "whisper-base")
        models["whisper-base"] = {
            "executor": "whisper",
            "repo": "Systran/faster-whisper-base",
            "compute_type": "int8",
        }
    with live_server(tmp, models) as running:
        yield running


@pytest.fixture(scope="module")
def two_sentences() -> tuple[bytes, int]:
    return encode(spoken())


def test_openai_sdk_realtime_client_ga_shape(server: LiveServer, two_sentences: tuple[bytes, int]) -> None:
    from openai import AsyncOpenAI

    async def run() -> list[dict[str, Any]]:
        client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="not-checked")
        events: list[dict[str, Any]] = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
            first = await connection.recv()
            assert first.type == "session.created"
            await connection.session.update(session=LIVEKIT_UPDATE["session"])  # type: ignore[arg-type]
            data, size = two_sentences
            for piece in chunks(data, size):
                await connection.input_audio_buffer.append(audio=piece)
            async with asyncio.timeout(WAIT_S):
                async for event in connection:
                    events.append(event.to_dict())
                    if sum(e["type"] == COMPLETED for e in events) == len(SENTENCES):
                        break
        await client.close()
        return events

    events = asyncio.run(run())
    updated = events[0]
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 350
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == MODEL
    check_turns(events, SENTENCES)


def test_raw_client_beta_shape(server: LiveServer, two_sentences: tuple[bytes, int]) -> None:
    async def run() -> list[dict[str, Any]]:
        client = await open_raw(
            ws_url(server.url, "intent=transcription"), additional_headers={"OpenAI-Beta": "realtime=v1"}
        )
        created = await client.next_of("transcription_session.created")
        assert created["session"]["object"] == "realtime.transcription_session"
        await client.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "input_audio_transcription": {"model": MODEL, "language": "en"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
                },
            }
        )
        updated = await client.next_of("transcription_session.updated")
        assert updated["session"]["input_audio_transcription"]["model"] == MODEL
        assert updated["session"]["turn_detection"]["prefix_padding_ms"] == 300  # the default stays
        await client.append(*two_sentences)
        await client.wait_for(lambda e: e["type"] == COMPLETED, count=len(SENTENCES))
        await client.ws.close()
        return client.events

    events = asyncio.run(run())
    assert "conversation.item.created" in [e["type"] for e in events]  # the beta shape's item event
    check_turns(events, SENTENCES)


def test_manual_commit_with_interim_deltas_before_the_commit(server: LiveServer) -> None:
    """With `turn_detection: null` nothing is committed until the client says so; pocketsphinx sends
    interim deltas of the open turn (silence is appended until one arrives, then the client commits)."""
    speech, size = encode(spoken((SENTENCE_A,), gap=0.2))
    quiet, _ = encode(np.zeros(2400, dtype=np.float32))  # 100 ms

    async def run() -> list[dict[str, Any]]:
        client = await open_raw(ws_url(server.url))
        await client.send(MANUAL)
        await client.next_of("session.updated")
        await client.append(speech, size)
        for _ in range(200):  # at most 20 s of silence, under the 30 s turn limit
            if any(e["type"] == DELTA for e in client.events):
                break
            await client.append(quiet, len(quiet))
            await asyncio.sleep(0.1)
        assert any(e["type"] == DELTA for e in client.events), client.types()
        await client.send({"type": "input_audio_buffer.commit"})
        await client.next_of(COMPLETED)
        await client.ws.close()
        return client.events

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" not in kinds
    assert kinds.index(DELTA) < kinds.index(COMMITTED)  # interim text while the turn was open
    check_turns(events, (SENTENCE_A,), vad=False)


@pytest.mark.parametrize(("shape", "encoding"), [("beta", "pcmu"), ("ga", "pcma")])
def test_g711_input(server: LiveServer, shape: str, encoding: str) -> None:
    data, size = encode(spoken(TELEPHONE), encoding)
    if shape == "beta":
        update = {"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}}
    else:
        fmt = {"type": "audio/pcma"}
        update = {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"format": fmt}}},
        }

    async def run() -> list[dict[str, Any]]:
        client = await open_raw(ws_url(server.url))
        await client.send(update)
        await client.wait_for(lambda e: e["type"].endswith("updated"))
        await client.append(data, size)
        await client.wait_for(lambda e: e["type"] == COMPLETED, count=len(TELEPHONE))
        await client.ws.close()
        return client.events

    check_turns(asyncio.run(run()), TELEPHONE, min_overlap=0.6)


def test_errors_are_events_and_the_socket_stays_usable(server: LiveServer) -> None:
    speech, size = encode(spoken((SENTENCE_A,), gap=0.2))

    async def run() -> list[dict[str, Any]]:
        client = await open_raw(ws_url(server.url))
        bad = [
            (
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/flac"}}},
                    },
                },
                "session.audio.input.format.type",
            ),
            (
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 7}}},
                    },
                },
                "session.audio.input.turn_detection.threshold",
            ),
            (
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": {"model": "no-such-model"}}},
                    },
                },
                "session.audio.input.transcription.model",
            ),
            (
                {"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}},
                "session.input_audio_format",
            ),
            ({"type": "session.update", "session": {"type": "realtime"}}, "session.type"),
            ({"type": "input_audio_buffer.append", "audio": "***not base64***"}, "audio"),
            ({"type": "response.create"}, "type"),
        ]
        for event_number, (event, param) in enumerate(bad):
            await client.send({**event, "event_id": f"client_{event_number}"})
            error = (await client.wait_for(lambda e: e["type"] == "error", count=event_number + 1))[-1]
            assert error["error"]["param"] == param, error
            assert error["error"]["event_id"] == f"client_{event_number}"
        await client.ws.send("{not json")
        await client.wait_for(lambda e: e["type"] == "error", count=len(bad) + 1)
        await client.send(MANUAL)
        await client.next_of("session.updated")
        await client.append(speech[:2400], size)  # 50 ms: too short to commit
        await client.send({"type": "input_audio_buffer.commit"})
        short = (await client.wait_for(lambda e: e["type"] == "error", count=len(bad) + 2))[-1]
        assert short["error"]["code"] == "input_audio_buffer_commit_empty"
        assert "at least 100ms" in short["error"]["message"]
        await client.send({"type": "input_audio_buffer.clear"})
        await client.next_of("input_audio_buffer.cleared")
        await client.append(speech, size)
        await client.send({"type": "input_audio_buffer.commit"})
        await client.next_of(COMPLETED)
        await client.ws.close()
        return client.events

    events = asyncio.run(run())
    assert all(e["error"]["type"] == "invalid_request_error" for e in events if e["type"] == "error")
    check_turns(events, (SENTENCE_A,), vad=False)
    assert server.alive


@pytest.mark.skipif(
    importlib.util.find_spec("livekit.plugins.openai") is None,
    reason="livekit-plugins-openai is not installed",
)
def test_livekit_agents_openai_stt_use_realtime(server: LiveServer, two_sentences: tuple[bytes, int]) -> None:
    from livekit import rtc
    from livekit.agents import stt, utils
    from livekit.plugins import openai as livekit_openai

    async def run() -> tuple[list[str], list[str]]:
        interim: list[str] = []
        final: list[str] = []
        async with utils.http_context.open():
            engine = livekit_openai.STT(  # its default model, gpt-4o-mini-transcribe: an alias here
                base_url=f"{server.url}/v1", api_key="not-checked", use_realtime=True, language="en"
            )
            assert engine.model == LIVEKIT_DEFAULT_MODEL
            stream = engine.stream()
            pcm = np.frombuffer(two_sentences[0], dtype="<i2")
            for at in range(0, pcm.size, 480):  # 20 ms frames, as a room track delivers them
                piece = pcm[at : at + 480]
                stream.push_frame(rtc.AudioFrame(piece.tobytes(), 24_000, 1, piece.size))
            async with asyncio.timeout(WAIT_S):
                async for event in stream:
                    if event.type == stt.SpeechEventType.INTERIM_TRANSCRIPT:
                        interim.append(event.alternatives[0].text)
                    elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                        final.append(event.alternatives[0].text)
                        if len(final) == len(SENTENCES):
                            break
            await stream.aclose()
            await engine.aclose()
        return interim, final

    interim, final = asyncio.run(run())
    assert interim
    assert len(final) == len(SENTENCES)
    for sentence, text in zip(SENTENCES, final, strict=True):
        assert word_overlap(sentence, text) >= 0.8, (sentence, text)


def test_a_model_in_the_url_that_does_not_exist_is_named(server: LiveServer) -> None:
    async def run() -> list[dict[str, Any]]:
        client = await open_raw(ws_url(server.url, "intent=transcription&model=nope"))
        await client.wait_for(lambda e: e["type"] == "error")
        await client.ws.close()
        return client.events

    events = asyncio.run(run())
    assert events[0]["type"] == "session.created"
    assert "nope" in events[1]["error"]["message"]
    assert events[1]["error"]["code"] == "model_not_found"


@pytest.mark.skipif(
    not (WHISPER_BASE / "model.bin").exists(), reason="the real-weight tier (whisper-base) is absent"
)
def test_whisper_base_real_weights(server: LiveServer, two_sentences: tuple[bytes, int]) -> None:
    """Whisper sends its delta from the final decode (no interim decodes: not cheap), then `completed`."""

    async def run() -> list[dict[str, Any]]:
        client = await open_raw(ws_url(server.url, "intent=transcription&model=whisper-base"))
        await client.next_of("session.created")
        await client.append(*two_sentences)
        await client.wait_for(lambda e: e["type"] == COMPLETED, count=len(SENTENCES))
        await client.ws.close()
        return client.events

    events = asyncio.run(run())
    transcripts = check_turns(events, SENTENCES)
    for done in (e for e in events if e["type"] == COMPLETED):
        deltas = [e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == done["item_id"]]
        assert deltas == [done["transcript"]]  # one delta, after the turn, from the final decode
    assert transcripts


def test_doubled_v1_prefix_and_conversation_intent(server: LiveServer) -> None:
    base = server.url.replace("http://", "ws://", 1)

    async def run() -> tuple[list[str], dict[str, Any], int | None]:
        doubled = await open_raw(f"{base}/v1/v1/realtime?intent=transcription")  # as other routes allow
        await doubled.next_of("session.created")
        await doubled.ws.close()
        conversation = await open_raw(f"{base}/v1/realtime?model={MODEL}&intent=conversation")
        refused = await conversation.next_of("error")
        await conversation.until_closed()
        return doubled.types(), refused, conversation.ws.close_code

    kinds, refused, code = asyncio.run(run())
    assert kinds[0] == "session.created"
    assert refused["error"]["param"] == "intent"
    assert "transcription sessions only" in refused["error"]["message"]
    assert code == 1008
