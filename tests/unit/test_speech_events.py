"""Streamed speech (`stream_format=sse`, streamed WAV) with a fake engine that holds its last chunk back:
the first event leaves before synthesis ends, the usage counts the audio, an error after the first event
is an `error` event, and the model is released however the stream ends."""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

import talkies.services.speech as speech_module
from talkies.api.app import create_app
from talkies.audio.encode import STREAMING_WAV_SIZE, SpeechEncoder
from talkies.engines.base import AudioChunk, EngineContext, SpeechRequest
from talkies.errors import BadRequestError, EngineError
from talkies.pool import ModelPool
from talkies.registry import ModelSpec, load_registry
from talkies.services.speech import SpeechOptions, SpeechService
from talkies.settings import Settings
from tests.fakes import FakeEngine, FakeFactory
from tests.server import asgi_client

pytestmark = pytest.mark.anyio

CHUNK = 2400  # samples at 24 kHz: 0.1 s


class HeldBackFactory(FakeFactory):
    """Fake engines that yield one chunk, wait for `release`, then yield a second (or fail)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.fail_second = False
        self.second_yielded = threading.Event()

    def __call__(self, spec: ModelSpec, context: EngineContext) -> FakeEngine:
        factory = self

        class HeldBack(FakeEngine):
            def synthesize(self, request: SpeechRequest) -> Iterator[AudioChunk]:
                yield AudioChunk(np.full(CHUNK, 0.25, dtype=np.float32), 24000)
                assert factory.release.wait(10), "the test never released the second chunk"
                if factory.fail_second:
                    raise EngineError("the engine failed on its second sentence")
                factory.second_yielded.set()
                yield AudioChunk(np.full(CHUNK, -0.25, dtype=np.float32), 24000)

        engine = HeldBack(spec, context, self[spec.slug])
        self.engines.append(engine)
        return engine


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> HeldBackFactory:
    made = HeldBackFactory()
    monkeypatch.setattr(speech_module, "create_engine", made)  # the voice catalog too
    return made


@pytest.fixture
def service(make_settings: Callable[..., Settings], factory: HeldBackFactory) -> SpeechService:
    settings = make_settings()
    assert settings.models_file is not None
    registry = load_registry(settings.models_file)
    return SpeechService(ModelPool(registry, settings, engine_factory=factory), registry, settings)


def options(**kw: Any) -> SpeechOptions:
    return SpeechOptions(**{"model": "tts-a", "input": "hello there", **kw})


def _payloads(events: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        assert event.startswith(b"data: "), event
        assert event.endswith(b"\n\n"), event
        out.append(json.loads(event[6:]))
    return out


async def test_first_event_leaves_before_the_engine_yields_its_last_chunk(
    service: SpeechService, factory: HeldBackFactory
) -> None:
    stream = await service.open_events(service.validate(options(response_format="pcm", stream_format="sse")))
    first = _payloads([await anext(stream)])[0]
    assert not factory.second_yielded.is_set()
    assert first["type"] == "speech.audio.delta"
    assert len(base64.b64decode(first["audio"])) == 2 * CHUNK  # s16le of the first chunk
    factory.release.set()
    rest = _payloads([event async for event in stream])
    assert [p["type"] for p in rest] == ["speech.audio.delta", "speech.audio.done"]
    usage = rest[-1]["usage"]
    assert usage["input_tokens"] == len("hello there")
    assert usage["output_tokens"] == 20  # 0.2 s of audio in 10 ms frames
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert service.pool.ps()[0]["in_flight"] == 0


async def test_sse_carries_the_bytes_of_the_audio_stream(
    service: SpeechService, factory: HeldBackFactory
) -> None:
    factory.release.set()
    for fmt in ("mp3", "opus", "flac", "wav", "pcm"):
        events = await service.open_events(
            service.validate(options(response_format=fmt, stream_format="sse"))
        )
        payloads = _payloads([event async for event in events])
        audio = b"".join(base64.b64decode(p["audio"]) for p in payloads[:-1])
        plain = b"".join(
            [part async for part in service.stream(service.validate(options(response_format=fmt)))]
        )
        if fmt == "wav":  # sse always streams the wav (unknown length); the plain body is exact
            assert audio[:4] == b"RIFF"
            assert struct.unpack("<I", audio[40:44])[0] == STREAMING_WAV_SIZE
            assert audio[44:] == plain[44:]
        elif fmt == "opus":  # each Ogg stream has a random serial number (and so other page checksums)
            assert audio[:4] == b"OggS"
            assert len(audio) == len(plain)
        else:
            assert audio == plain, fmt


async def test_wav_streams_when_the_request_or_the_setting_asks(
    make_settings: Callable[..., Settings], factory: HeldBackFactory
) -> None:
    factory.release.set()

    async def wav(settings: Settings, **kw: Any) -> bytes:
        registry = load_registry(settings.models_file)  # type: ignore[arg-type]
        service = SpeechService(ModelPool(registry, settings, engine_factory=factory), registry, settings)
        plan = service.validate(options(response_format="wav", **kw))
        return b"".join([part async for part in service.stream(plan)])

    whole = await wav(make_settings())
    assert struct.unpack("<II", whole[4:8] + whole[40:44]) == (36 + 4 * CHUNK, 4 * CHUNK)
    for streamed in (
        await wav(make_settings(), stream_format="audio"),
        await wav(make_settings(wav_streaming=True)),
    ):
        assert struct.unpack("<II", streamed[4:8] + streamed[40:44]) == (STREAMING_WAV_SIZE,) * 2
        assert streamed[44:] == whole[44:]


def test_streaming_wav_encoder_sends_its_header_first_even_for_no_audio() -> None:
    encoder = SpeechEncoder("wav", stream_wav=True)
    assert encoder.streams
    first = encoder.feed(np.zeros(10, dtype=np.float32))
    assert first[:4] == b"RIFF"
    assert len(first) == 44 + 20
    assert encoder.feed(np.zeros(5, dtype=np.float32)) == bytes(10)
    assert encoder.finish() == b""
    assert encoder.samples == 15
    empty = SpeechEncoder("wav", stream_wav=True)
    assert len(empty.finish()) == 44
    assert not SpeechEncoder("wav").streams


def test_unknown_stream_format_is_refused_before_any_work(service: SpeechService) -> None:
    with pytest.raises(BadRequestError) as info:
        service.validate(options(stream_format="chunks"))
    assert info.value.param == "stream_format"
    assert "sse" in info.value.message


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], factory: HeldBackFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(make_settings(), engine_factory=factory)
    async with asgi_client(app, timeout=30) as client:
        yield client, app


async def test_error_after_the_first_event_is_an_error_event(
    client: tuple[httpx.AsyncClient, FastAPI], factory: HeldBackFactory
) -> None:
    http, app = client
    factory.fail_second = True
    factory.release.set()
    response = await http.post(
        "/v1/audio/speech",
        json={"model": "tts-a", "input": "hi", "response_format": "pcm", "stream_format": "sse"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = _payloads([b"data: " + part.encode() for part in response.text.split("data: ")[1:]])
    assert [p["type"] for p in payloads] == ["speech.audio.delta", "error"]
    assert "second sentence" in payloads[-1]["error"]["message"]
    assert "event:" not in response.text
    assert app.state.pool.ps()[0]["in_flight"] == 0
