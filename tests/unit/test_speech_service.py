"""SpeechService validation with fake engines (API shape only; real engines are in tests/api)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import talkies.services.speech as speech_module
from talkies.errors import (
    BadRequestError,
    ModelNotFoundError,
    UnknownVoiceError,
    UnsupportedFormatError,
    WrongModalityError,
)
from talkies.pool import ModelPool
from talkies.registry import load_registry
from talkies.services.speech import SpeechOptions, SpeechService, check_speed
from talkies.settings import Settings
from tests.fakes import FakeFactory


@pytest.fixture
def service(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> SpeechService:
    settings = make_settings()
    factory = FakeFactory()
    monkeypatch.setattr(speech_module, "create_engine", factory)  # catalog engines without check_voice
    assert settings.models_file is not None
    registry = load_registry(settings.models_file)
    return SpeechService(ModelPool(registry, settings, engine_factory=factory), registry, settings)


def options(**kw: Any) -> SpeechOptions:
    return SpeechOptions(**{"model": "tts-a", "input": "hello", **kw})


@pytest.mark.parametrize("speed", [0.25, 1.0, 4.0])
def test_speed_in_openai_range_passes(speed: float) -> None:
    assert check_speed(speed) == speed


@pytest.mark.parametrize("speed", [0.1, 0.2499, 4.01, 9.0, float("nan"), float("inf")])
def test_speed_outside_openai_range_is_refused(speed: float) -> None:
    with pytest.raises(BadRequestError) as info:
        check_speed(speed)
    assert info.value.param == "speed"
    assert "0.25" in info.value.message
    assert "4.0" in info.value.message


def test_defaults(service: SpeechService) -> None:
    plan = service.validate(options())
    assert plan.request.voice == "alpha"  # the catalog's default
    assert plan.request.speed == 1.0
    assert plan.format == "mp3"
    assert plan.content_type == "audio/mpeg"


def test_voice_outside_the_catalog_lists_the_catalog(service: SpeechService) -> None:
    assert service.validate(options(voice="beta")).request.voice == "beta"
    with pytest.raises(UnknownVoiceError) as info:
        service.validate(options(voice="gamma"))
    assert "alpha, beta" in info.value.message


def test_refusals_before_any_engine_work(service: SpeechService) -> None:
    with pytest.raises(ModelNotFoundError):
        service.validate(options(model="nope"))
    with pytest.raises(WrongModalityError):
        service.validate(options(model="asr-a"))
    with pytest.raises(BadRequestError):
        service.validate(options(input=" \n"))
    with pytest.raises(UnsupportedFormatError):
        service.validate(options(response_format="ogg"))


def test_voice_catalog(service: SpeechService) -> None:
    entries = service.voices()
    assert [(e.voice, e.model, e.default) for e in entries] == [
        ("alpha", "tts-a", True),
        ("beta", "tts-a", False),
    ]
    with pytest.raises(ModelNotFoundError):
        service.voices("nope")


@pytest.mark.anyio
async def test_whole_body_mp3_carries_the_lame_header_a_stream_does_not(service: SpeechService) -> None:
    """A complete file (SpeechService.synthesize, MCP `speak`) is muxed seekable: its first MP3 frame is
    the Xing/Info frame with the encoder delay; a streamed response cannot go back to write it."""
    body, content_type = await service.synthesize(options(response_format="mp3"))
    assert content_type == "audio/mpeg"
    streamed = b"".join(
        [part async for part in service.stream(service.validate(options(response_format="mp3")))]
    )
    assert b"Info" in body[:1024] or b"Xing" in body[:1024]
    assert b"Info" not in streamed[:1024]
    assert b"Xing" not in streamed[:1024]
