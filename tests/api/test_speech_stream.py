"""Streamed speech through a real uvicorn server and the official `openai` client, with real espeak-ng:
`stream_format=sse` parsed by the SDK's own server-sent-event decoder, its audio equal to the plain
stream's, and a streamed WAV (header of unknown length) that decoders read and pocketsphinx understands."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from talkies.api.app import create_app
from talkies.audio.decode import decode_audio
from talkies.audio.encode import STREAMING_WAV_SIZE
from tests.api.audio_helpers import SENTENCE_A, VOICE, weightfree_settings, word_overlap
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

TTS = "espeak-ng"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(create_app(weightfree_settings(tmp_path_factory.mktemp("speech-stream")))) as url:
        yield url


@pytest.fixture(scope="module")
def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def _sse_events(sdk: openai.OpenAI, **params: Any) -> tuple[list[Any], str]:
    """The SDK's own call, its body read by the SDK's own SSE decoder (the one `Stream` uses)."""
    with sdk.audio.speech.with_streaming_response.create(
        model=TTS, voice=VOICE, input=SENTENCE_A, stream_format="sse", **params
    ) as response:
        content_type = response.headers["content-type"]
        events = list(sdk._make_sse_decoder().iter_bytes(response.iter_bytes()))
    return events, content_type


@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac", "pcm"])
def test_sse_deltas_join_to_the_plain_stream(sdk: openai.OpenAI, fmt: str) -> None:
    events, content_type = _sse_events(sdk, response_format=fmt)
    assert content_type.startswith("text/event-stream")
    assert all(event.event is None for event in events)  # data: lines only, as OpenAI sends
    payloads = [event.json() for event in events]
    assert [p["type"] for p in payloads[:-1]] == ["speech.audio.delta"] * (len(payloads) - 1)
    assert len(payloads) >= 2
    done = payloads[-1]
    assert done["type"] == "speech.audio.done"
    assert set(done["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
    assert done["usage"]["input_tokens"] == len(SENTENCE_A)
    audio = b"".join(base64.b64decode(p["audio"]) for p in payloads[:-1])
    plain = sdk.audio.speech.create(
        model=TTS, voice=VOICE, input=SENTENCE_A, response_format=fmt, stream_format="audio"
    ).content
    assert audio == plain
    if fmt == "pcm":  # output_tokens: the audio's 10 ms frames
        assert done["usage"]["output_tokens"] == round(len(audio) / 2 / 24000 * 100)


def test_sse_wav_is_a_streamed_wav_that_decodes_and_round_trips(
    sdk: openai.OpenAI, base_url: str, tmp_path: Path
) -> None:
    events, _ = _sse_events(sdk, response_format="wav")
    audio = b"".join(base64.b64decode(e.json()["audio"]) for e in events[:-1])
    assert struct.unpack("<I", audio[40:44])[0] == STREAMING_WAV_SIZE
    path = tmp_path / "sse.wav"
    path.write_bytes(audio)
    pcm = decode_audio(path)  # libav reads to the end of a WAV of unknown length
    assert abs(len(pcm) / 16000 - (len(audio) - 44) / 2 / 24000) < 0.05
    with path.open("rb") as f:
        text = sdk.audio.transcriptions.create(model="pocketsphinx-en-us", file=f, response_format="text")
    assert word_overlap(SENTENCE_A, str(text)) >= 0.6


def test_wav_streams_only_when_asked(sdk: openai.OpenAI) -> None:
    whole = sdk.audio.speech.create(model=TTS, voice=VOICE, input=SENTENCE_A, response_format="wav").content
    assert struct.unpack("<I", whole[40:44])[0] == len(whole) - 44  # the default: exact sizes
    with sdk.audio.speech.with_streaming_response.create(
        model=TTS, voice=VOICE, input=SENTENCE_A, response_format="wav", stream_format="audio"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        streamed = response.read()
    assert struct.unpack("<II", streamed[4:8] + streamed[40:44]) == (STREAMING_WAV_SIZE,) * 2
    assert streamed[44:] == whole[44:]


def test_bad_stream_format_is_refused_naming_it(base_url: str, sdk: openai.OpenAI) -> None:
    response = httpx.post(
        f"{base_url}/v1/audio/speech", json={"model": TTS, "input": "Hi.", "stream_format": "chunks"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream_format"
    with pytest.raises(openai.BadRequestError):  # a refusal is still a status, not an event
        sdk.audio.speech.create(model=TTS, voice="robot", input="Hi.", stream_format="sse")
