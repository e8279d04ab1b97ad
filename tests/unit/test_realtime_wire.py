"""Realtime session shapes: GA and beta updates applied field by field, bad values named, rendering."""

from __future__ import annotations

from typing import Any

import pytest

from talkies.api.realtime.buffer import VadConfig
from talkies.api.realtime.wire import (
    EAGERNESS_SILENCE_MS,
    SessionConfig,
    SessionValueError,
    TurnDetection,
    apply_beta,
    apply_ga,
    render_beta,
    render_ga,
)

LIVEKIT: dict[str, Any] = {  # what LiveKit Agents 1.8 sends first (protocol-notes 2b)
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "m", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 600,
                "silence_duration_ms": 350,
            },
        }
    },
}


def test_ga_update_as_livekit_sends_it() -> None:
    config = apply_ga(SessionConfig(model="default"), LIVEKIT)
    assert config.model == "m"
    assert config.language == "en"
    assert config.encoding == "pcm16"
    assert config.turn_detection == TurnDetection("server_vad", 0.5, 600, 350)
    rendered = render_ga(config, "sess_1", 0)
    assert rendered["audio"]["input"]["turn_detection"]["prefix_padding_ms"] == 600
    assert rendered["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert rendered["type"] == "transcription"


def test_only_fields_present_change_and_null_means_manual_commit() -> None:
    config = apply_ga(
        SessionConfig(model="m", language="en"), {"type": "transcription", "audio": {"input": {}}}
    )
    assert config == SessionConfig(model="m", language="en")
    manual = apply_ga(config, {"type": "transcription", "audio": {"input": {"turn_detection": None}}})
    assert manual.turn_detection is None
    assert render_ga(manual, "s", 0)["audio"]["input"]["turn_detection"] is None
    partial = apply_ga(config, {"audio": {"input": {"turn_detection": {"silence_duration_ms": 900}}}})
    assert partial.turn_detection == TurnDetection(silence_duration_ms=900)


def test_beta_update_and_g711() -> None:
    session = {
        "input_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "m", "language": "en", "prompt": ""},
        "turn_detection": {"type": "server_vad", "threshold": 0.6},
        "input_audio_noise_reduction": {"type": "near_field"},
        "some_future_field": 1,  # unknown fields are ignored
    }
    config = apply_beta(SessionConfig(), session)
    assert config.encoding == "pcmu"
    assert config.prompt is None
    rendered = render_beta(config, "s", 0)
    # asked for, but not applied here: the effective session says so rather than echoing it
    assert rendered["input_audio_noise_reduction"] is None
    assert rendered["include"] == []
    assert rendered["input_audio_format"] == "g711_ulaw"
    assert rendered["object"] == "realtime.transcription_session"
    assert (
        apply_ga(
            SessionConfig(), {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcma"}}}}
        ).encoding
        == "pcma"
    )


def test_a_flat_session_update_is_read_as_the_beta_shape() -> None:
    config = apply_ga(SessionConfig(), {"input_audio_transcription": {"model": "x"}, "turn_detection": None})
    assert (config.model, config.turn_detection) == ("x", None)


@pytest.mark.parametrize("eagerness", list(EAGERNESS_SILENCE_MS))
def test_semantic_vad_maps_eagerness_to_a_silence(eagerness: str) -> None:
    detection = {"type": "semantic_vad", "eagerness": eagerness}
    config = apply_ga(SessionConfig(), {"audio": {"input": {"turn_detection": detection}}})
    assert config.turn_detection is not None
    assert config.turn_detection.vad() == VadConfig(0.5, 300, EAGERNESS_SILENCE_MS[eagerness])


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime"}, "session.type"),
        ({"audio": {"input": {"format": {"type": "audio/flac"}}}}, "session.audio.input.format.type"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            "session.audio.input.format.rate",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
            "session.audio.input.turn_detection.threshold",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}},
            "session.audio.input.turn_detection.type",
        ),
        (
            {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "x"}}}},
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            {"audio": {"input": {"noise_reduction": {"type": "studio"}}}},
            "session.audio.input.noise_reduction.type",
        ),
        (
            {"audio": {"input": {"transcription": {"language": 5}}}},
            "session.audio.input.transcription.language",
        ),
        ({"include": "x"}, "session.include"),
    ],
)
def test_bad_values_name_their_field(session: dict[str, Any], param: str) -> None:
    with pytest.raises(SessionValueError) as caught:
        apply_ga(SessionConfig(), session)
    assert caught.value.param == param


def test_bad_beta_format_names_its_field() -> None:
    with pytest.raises(SessionValueError) as caught:
        apply_beta(SessionConfig(), {"input_audio_format": "opus"})
    assert caught.value.param == "session.input_audio_format"
