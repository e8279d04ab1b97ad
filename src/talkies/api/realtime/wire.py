"""The Realtime transcription wire format: session configuration in both shapes, and server events.

GA: `session.update` with `session.type = "transcription"` and `session.audio.input.{format, transcription,
turn_detection, noise_reduction}`; answered with `session.updated`. Beta: `transcription_session.update`
with `input_audio_format`, `input_audio_transcription`, `turn_detection`, `input_audio_noise_reduction`;
answered with `transcription_session.updated`. A flat (beta-style) body inside `session.update` is taken
too (speaches and older clients send that). Only the fields present change; `null` clears one
(`turn_detection: null` = manual commit). Unknown fields are ignored; a bad value raises `SessionValueError`
naming the field, and nothing changes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from talkies.api.errors import error_code, status_for
from talkies.api.realtime.buffer import VadConfig
from talkies.audio.stream_input import PCM16_SAMPLE_RATE, InputEncoding
from talkies.errors import BadRequestError, TalkiesError

GA_FORMATS: dict[str, InputEncoding] = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
BETA_FORMATS: dict[str, InputEncoding] = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
# semantic_vad has no model here: its eagerness picks how long a silence ends the turn (docs/realtime.md)
EAGERNESS_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 400}
NOISE_REDUCTION = ("near_field", "far_field")
SESSION_SECONDS = 3600  # what `expires_at` announces; the server's own limit is the idle timeout


class SessionValueError(BadRequestError):
    """A session field with a value talkies cannot take; `param` is its path (`session.audio.input...`)."""


@dataclass(frozen=True, slots=True)
class TurnDetection:
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: str = "auto"

    def vad(self) -> VadConfig:
        if self.type == "semantic_vad":
            return VadConfig(0.5, 300, EAGERNESS_SILENCE_MS[self.eagerness])
        return VadConfig(self.threshold, self.prefix_padding_ms, self.silence_duration_ms)

    def wire(self) -> dict[str, Any]:
        if self.type == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.eagerness}
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True, slots=True)
class SessionConfig:
    model: str = ""
    encoding: InputEncoding = "pcm16"
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = TurnDetection()


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SessionValueError(f"{param} must be an object", param=param)
    return value


def _text(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise SessionValueError(f"{param} must be a string of at most 4096 characters", param=param)
    return value or None


def _number(body: dict[str, Any], key: str, param: str, low: float, high: float, default: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SessionValueError(
            f"{param}.{key} must be a number from {low:g} to {high:g}", param=f"{param}.{key}"
        )
    return float(value)


def parse_turn_detection(value: Any, current: TurnDetection | None, param: str) -> TurnDetection | None:
    if value is None:
        return None
    body = _object(value, param)
    kind = body.get("type", current.type if current else "server_vad")
    if kind == "semantic_vad":
        eagerness = body.get("eagerness") or "auto"
        if eagerness not in EAGERNESS_SILENCE_MS:
            raise SessionValueError(
                f"{param}.eagerness must be one of {', '.join(EAGERNESS_SILENCE_MS)}",
                param=f"{param}.eagerness",
            )
        return TurnDetection(type="semantic_vad", eagerness=eagerness)
    if kind != "server_vad":
        raise SessionValueError(
            f"{param}.type must be server_vad, semantic_vad or null (manual commit), not {kind!r}",
            param=f"{param}.type",
        )
    base = current if current is not None and current.type == "server_vad" else TurnDetection()
    return TurnDetection(
        threshold=_number(body, "threshold", param, 0.0, 1.0, base.threshold),
        prefix_padding_ms=int(_number(body, "prefix_padding_ms", param, 0, 5000, base.prefix_padding_ms)),
        silence_duration_ms=int(
            _number(body, "silence_duration_ms", param, 0, 10_000, base.silence_duration_ms)
        ),
    )


def _transcription(config: SessionConfig, value: Any, param: str) -> SessionConfig:
    if value is None:
        return replace(config, language=None, prompt=None)
    body = _object(value, param)
    changes: dict[str, Any] = {}
    if "model" in body:
        model = _text(body["model"], f"{param}.model")
        changes["model"] = model or ""
    for key in ("language", "prompt"):
        if key in body:
            changes[key] = _text(body[key], f"{param}.{key}")
    return replace(config, **changes)


def _noise_reduction(value: Any, param: str) -> str | None:
    if value is None:
        return None
    kind = _object(value, param).get("type")
    if kind not in NOISE_REDUCTION:
        raise SessionValueError(
            f"{param}.type must be near_field, far_field (or the field null)", param=f"{param}.type"
        )
    return str(kind)


def _include(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SessionValueError("session.include must be a list of strings", param="session.include")
    return tuple(value[:16])


def apply_ga(config: SessionConfig, session: dict[str, Any]) -> SessionConfig:
    """A GA `session.update`'s `session` applied to `config`."""
    kind = session.get("type")
    if kind is None and any(key in session for key in ("input_audio_format", "input_audio_transcription")):
        return apply_beta(config, session)
    if kind not in (None, "transcription"):
        raise SessionValueError(
            f"session.type must be 'transcription': this server has transcription sessions only, "
            f"not {kind!r}",
            param="session.type",
        )
    audio = session.get("audio") or {}
    source = _object(_object(audio, "session.audio").get("input") or {}, "session.audio.input")
    param = "session.audio.input"
    if "format" in source:
        config = replace(config, encoding=_ga_format(source["format"], f"{param}.format"))
    if "transcription" in source:
        config = _transcription(config, source["transcription"], f"{param}.transcription")
    if "turn_detection" in source:
        detection = parse_turn_detection(
            source["turn_detection"], config.turn_detection, f"{param}.turn_detection"
        )
        config = replace(config, turn_detection=detection)
    # Checked, not kept: no noise reduction and no logprobs here; the answer shows both as not in effect.
    if "noise_reduction" in source:
        _noise_reduction(source["noise_reduction"], f"{param}.noise_reduction")
    if "include" in session:
        _include(session["include"])
    return config


def _ga_format(value: Any, param: str) -> InputEncoding:
    if value is None:
        return "pcm16"
    body = _object(value, param)
    kind = body.get("type", "audio/pcm")
    if kind not in GA_FORMATS:
        raise SessionValueError(
            f"{param}.type must be one of {', '.join(GA_FORMATS)}, not {kind!r}", param=f"{param}.type"
        )
    rate = body.get("rate")
    if kind == "audio/pcm" and rate is not None and rate != PCM16_SAMPLE_RATE:
        raise SessionValueError(
            f"{param}.rate must be {PCM16_SAMPLE_RATE} for audio/pcm", param=f"{param}.rate"
        )
    return GA_FORMATS[kind]


def apply_beta(config: SessionConfig, session: dict[str, Any]) -> SessionConfig:
    """A beta `transcription_session.update`'s `session` applied to `config`."""
    if "input_audio_format" in session:
        value = session["input_audio_format"] or "pcm16"
        if value not in BETA_FORMATS:
            raise SessionValueError(
                f"session.input_audio_format must be one of {', '.join(BETA_FORMATS)}, not {value!r}",
                param="session.input_audio_format",
            )
        config = replace(config, encoding=BETA_FORMATS[value])
    if "input_audio_transcription" in session:
        config = _transcription(
            config, session["input_audio_transcription"], "session.input_audio_transcription"
        )
    if "turn_detection" in session:
        detection = parse_turn_detection(
            session["turn_detection"], config.turn_detection, "session.turn_detection"
        )
        config = replace(config, turn_detection=detection)
    if "input_audio_noise_reduction" in session:  # checked, not kept (see apply_ga)
        _noise_reduction(session["input_audio_noise_reduction"], "session.input_audio_noise_reduction")
    if "include" in session:
        _include(session["include"])
    return config


def _transcription_wire(config: SessionConfig) -> dict[str, Any]:
    return {"model": config.model, "language": config.language, "prompt": config.prompt or ""}


def render_ga(config: SessionConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    ga_format = next(k for k, v in GA_FORMATS.items() if v == config.encoding)
    audio_format: dict[str, Any] = {"type": ga_format}
    if ga_format == "audio/pcm":
        audio_format["rate"] = PCM16_SAMPLE_RATE
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": audio_format,
                "transcription": _transcription_wire(config),
                "turn_detection": config.turn_detection.wire() if config.turn_detection else None,
                "noise_reduction": None,  # the effective session: none is applied here
            }
        },
        "include": [],
    }


def render_beta(config: SessionConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "expires_at": expires_at,
        "input_audio_format": next(k for k, v in BETA_FORMATS.items() if v == config.encoding),
        "input_audio_transcription": _transcription_wire(config),
        "turn_detection": config.turn_detection.wire() if config.turn_detection else None,
        "input_audio_noise_reduction": None,  # the effective session: none is applied here
        "include": [],
        "modalities": ["text"],
    }


def event_id() -> str:
    return "event_" + secrets.token_hex(10)


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(10)


def expiry() -> int:
    return int(time.time()) + SESSION_SECONDS


def error_body(
    exc: TalkiesError | None, message: str, *, code: str, client_event_id: str | None
) -> dict[str, Any]:
    """`error.error`: OpenAI's {type, code, message, param, event_id}; from a domain error when given."""
    kind = "invalid_request_error"
    param = None
    if exc is not None:
        kind = status_for(exc)[1]
        param = exc.param
    return {"type": kind, "code": code, "message": message, "param": param, "event_id": client_event_id}


def error_event(
    exc: TalkiesError, *, client_event_id: str | None = None, code: str | None = None
) -> dict[str, Any]:
    body = error_body(exc, exc.message, code=code or error_code(exc), client_event_id=client_event_id)
    return {"type": "error", "event_id": event_id(), "error": body}
